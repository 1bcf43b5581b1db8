"""host/synth.py: a Speech-Commands-style corpus synthesized with espeak-ng, bit-identical for a seed."""

from __future__ import annotations

import json
import shutil
import tarfile
from pathlib import Path

import numpy as np
import pytest
from s2emu.host import synth
from s2emu.host.audio import read_wav

S2EmuError = synth.S2EmuError

needs_espeak = pytest.mark.skipif(shutil.which("espeak-ng") is None,
                                  reason="espeak-ng is not installed (apt-get install espeak-ng)")

TINY = {"voices_train": ("en-us+m3", "en-gb+f2"), "voices_test": ("en-gb-scotland+f4",), "repeats": 1,
        "unknown_per_voice": 2, "noise_seconds": 10.0, "noisy_fraction": 0.5}


def files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """The same tiny corpus twice (2 threads, then 1), and once with another seed."""
    base = tmp_path_factory.mktemp("synth")
    a = synth.synthesize(base / "a", seed=7, workers=2, **TINY)
    synth.synthesize(base / "b", seed=7, workers=1, **TINY)
    synth.synthesize(base / "c", seed=8, workers=2, **TINY)
    return base, a


@needs_espeak
def test_same_seed_same_bytes_other_seed_other_audio(tiny):
    base, _ = tiny
    a, b, c = files(base / "a"), files(base / "b"), files(base / "c")
    assert a == b  # bit-identical whatever the number of threads
    assert set(a) >= {"testing_list.txt", "validation_list.txt", "MANIFEST.json", "yes/"
                      + synth.speaker_id("en-us+m3") + "_nohash_0.wav"}
    common = [k for k in a if k.endswith(".wav") and k in c]
    assert common and all(a[k] != c[k] for k in common)  # every clip and noise file changes with the seed


@needs_espeak
def test_layout(tiny):
    base, manifest = tiny
    root = base / "a"
    for word in synth.COMMANDS:
        assert (root / word).is_dir(), word
    assert sorted(p.name for p in (root / "_background_noise_").iterdir()) == sorted(
        f"{k}.wav" for k in synth.NOISES)
    for p in (root / "_background_noise_").iterdir():
        assert len(read_wav(p, rate=16000).samples) == 160000  # noise_seconds = 10

    clips = sorted(p.relative_to(root).as_posix() for p in root.glob("*/*_nohash_*.wav"))
    n_voices = len(TINY["voices_train"]) + len(TINY["voices_test"])
    assert len(clips) == n_voices * (len(synth.COMMANDS) + TINY["unknown_per_voice"])
    assert {c.split("/")[0] for c in clips} - set(synth.COMMANDS) <= set(synth.UNKNOWN_WORDS)
    for rel in clips:
        x = read_wav(root / rel, rate=16000).samples
        assert x.shape == (16000,), rel
        assert np.abs(x).max() > 0.01, rel  # the word is in the clip
        steps = x.astype(np.float64) * 32768 / 2 ** (16 - 10)  # rounded to 10 bits (the default)
        assert np.array_equal(steps, np.round(steps)), rel

    testing = (root / "testing_list.txt").read_text().split()
    validation = (root / "validation_list.txt").read_text().split()
    assert validation == []  # no voices_val
    assert testing == sorted(testing) and set(testing) <= set(clips)
    voices = {**manifest["voices"]["train"], **manifest["voices"]["test"]}
    test_ids = {p.split("/")[1][:8] for p in testing}
    train_ids = {p.split("/")[1][:8] for p in set(clips) - set(testing)}
    assert test_ids == {synth.speaker_id(v) for v in TINY["voices_test"]}
    assert train_ids == {synth.speaker_id(v) for v in TINY["voices_train"]}
    variant = {sid: voices[sid].split("+")[1] for sid in voices}
    assert not {variant[s] for s in test_ids} & {variant[s] for s in train_ids}

    on_disk = json.loads((root / "MANIFEST.json").read_text())
    assert on_disk == manifest and manifest["complete"] and manifest["seed"] == 7
    assert manifest["totals"] == {"train": 24, "validation": 0, "test": 12}
    assert sum(c["test"] for c in manifest["counts"].values()) == len(testing)
    assert "licence" in manifest and "espeak" in manifest["espeak_ng"].lower()


@needs_espeak
def test_pack_is_reproducible_and_readable(tiny, tmp_path):
    base, _ = tiny
    one = synth.pack(base / "a", tmp_path / "kws.tar.xz", preset=1)
    (tmp_path / "sub").mkdir()
    two = synth.pack(base / "b", tmp_path / "sub" / "kws.tar.xz", preset=1)  # same corpus made elsewhere: same archive
    assert one.read_bytes() == two.read_bytes()
    with tarfile.open(one) as tar:
        names = tar.getnames()
        assert names[0] == "kws" and all(n.startswith("kws/") for n in names[1:])
        assert len([n for n in names if n.endswith(".wav")]) == len(list((base / "a").rglob("*.wav")))
        member = tar.extractfile("kws/testing_list.txt")
        assert member.read() == (base / "a" / "testing_list.txt").read_bytes()
    with pytest.raises(S2EmuError, match=r"\.tar\.xz"):
        synth.pack(base / "a", tmp_path / "kws.tgz")


@needs_espeak
def test_the_speech_commands_loader_reads_it(tiny, tmp_path):
    from s2emu.host.features import FeatureSpec
    from s2emu.host.speech_commands import COMMANDS, Corpus, index_splits, load_split

    base, manifest = tiny
    archive = synth.pack(base / "a", tmp_path / "kws_synth.tar.xz", preset=1)
    for corpus in (Corpus(base / "a"), Corpus(archive)):
        index = index_splits(corpus)
        for split, n, voices in (("train", 24, 2), ("test", 12, 1)):
            clips = index[split]
            n_silence = sum(p is None for p in clips.paths)
            assert len(clips.paths) - n_silence == n and n_silence == voices  # as many as a command word
            audio, _ = load_split(corpus, clips, split, FeatureSpec(), seed=0)
            assert audio.shape == (n + n_silence, 16000) and np.isfinite(audio).all()
        assert set(index["test"].speakers) - {"_silence_"} == set(manifest["voices"]["test"])
    assert COMMANDS == synth.COMMANDS


def test_refuses_a_non_empty_dir(tmp_path):
    out = tmp_path / "corpus"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    with pytest.raises(S2EmuError, match="not empty"):
        synth.synthesize(out, **TINY)
    with pytest.raises(S2EmuError, match="refusing to delete"):  # force only overwrites an earlier corpus
        synth.synthesize(out, force=True, **TINY)
    assert (out / "notes.txt").read_text() == "mine"
    assert synth.main([str(out), "--voices-train", "en-us+m3", "--voices-test", "en-gb+f4"]) == 2


@needs_espeak
def test_force_overwrites_an_earlier_corpus(tmp_path):
    out = tmp_path / "corpus"
    small = {**TINY, "voices_train": ("en-us+m3",), "voices_test": (), "unknown_per_voice": 0}
    synth.synthesize(out, **small)
    stale = out / "yes" / "deadbeef_nohash_0.wav"
    stale.write_bytes(b"stale")
    (out / "notes.txt").write_text("mine")
    with pytest.raises(S2EmuError, match="not empty"):
        synth.synthesize(out, **small)
    m = synth.synthesize(out, force=True, **small)
    assert not stale.exists() and (out / "notes.txt").exists()
    assert m["totals"] == {"train": 10, "validation": 0, "test": 0}


def test_bad_knobs_and_missing_espeak(tmp_path, monkeypatch):
    with pytest.raises(S2EmuError, match="share the variant"):
        synth.synthesize(tmp_path / "x", voices_train=("en-us+f4",), voices_test=("en-gb+f4",))
    with pytest.raises(S2EmuError, match="bits"):
        synth.synthesize(tmp_path / "x", bits=17, **TINY)
    with pytest.raises(S2EmuError, match="snr_db"):
        synth.synthesize(tmp_path / "x", snr_db=(30, 10), **TINY)
    for knob, value in (("repeats", 10**11), ("unknown_per_voice", 10**11), ("workers", 10**6)):
        with pytest.raises(S2EmuError, match=f"{knob} must be an int in"):  # not a plan of 10**14 clips
            synth.synthesize(tmp_path / "x", **{**TINY, knob: value})
    monkeypatch.setattr(synth.shutil, "which", lambda name: None)
    with pytest.raises(S2EmuError, match="apt-get install espeak-ng"):
        synth.synthesize(tmp_path / "x", **TINY)
    assert not (tmp_path / "x").exists()  # nothing written before the checks pass


def test_noise_types_are_unit_rms_and_seeded():
    for kind in synth.NOISES:
        x = synth.noise(kind, 16000, synth._rng(0, kind))
        assert x.shape == (16000,) and np.isfinite(x).all()
        assert abs(np.sqrt(np.mean(x * x)) - 1.0) < 1e-6
        assert np.array_equal(x, synth.noise(kind, 16000, synth._rng(0, kind)))
    with pytest.raises(S2EmuError, match="unknown noise"):
        synth.noise("pop", 100, synth._rng(0))


def test_stream_header_fixed():
    body = np.arange(-50, 50, dtype="<i2").tobytes()
    fake = (b"RIFF" + (0x7FFFF000).to_bytes(4, "little") + b"WAVEfmt " + (16).to_bytes(4, "little")
            + bytes.fromhex("0100 0100 2256 0000 44ac 0000 0200 1000".replace(" ", ""))
            + b"data" + (0x7FFFF000).to_bytes(4, "little") + body)
    from s2emu.host.audio import parse_wav

    audio = parse_wav(synth._fix_stream_header(fake))
    assert audio.rate == 22050 and len(audio.samples) == 100
