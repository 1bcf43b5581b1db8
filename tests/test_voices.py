"""Voices of other synthesizers (issue 20): flite, festival and pico clips, manifest.csv, `s2emu eval --by`."""

from __future__ import annotations

import csv
import io
import json
import shutil
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest
from s2emu.host import synth
from s2emu.host.audio import read_wav

ROOT = Path(__file__).resolve().parents[1]
S2EmuError = synth.S2EmuError


def _has_pico() -> bool:
    try:
        import ttspico  # noqa: F401
    except ImportError:
        return False
    return True


def _installed(engine: str) -> str | None:
    """Why an engine cannot run here, or None."""
    if engine != "espeak-ng" and shutil.which("sox") is None:
        return "sox is not installed (apt-get install sox)"
    tools = {"espeak-ng": ("espeak-ng", "espeak-ng"), "flite": ("flite", "flite"),
             "festival": ("text2wave", "festival")}
    if engine == "pico":
        return None if _has_pico() else "SVOX pico is not installed (pip install ttspico)"
    tool, pkg = tools[engine]
    if shutil.which(tool) is None:
        return f"{engine} is not installed (apt-get install {pkg})"
    try:
        synth.engine_version(engine, synth.ENGINE_VOICES.get(engine, {}).get("test", ()))
    except S2EmuError as e:
        return str(e)
    return None


def needs(*engines):
    why = [w for w in map(_installed, engines) if w]
    return pytest.mark.skipif(bool(why), reason="; ".join(why))


def files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def rows(root: Path) -> list[dict]:
    return list(csv.DictReader(io.StringIO((root / "manifest.csv").read_text())))


@pytest.mark.parametrize("engine", ["flite", "festival", "pico"])
def test_an_engine_makes_valid_clips_deterministic_from_the_seed(engine, tmp_path):
    if why := _installed(engine):
        pytest.skip(why)
    voice = f"{engine}:{synth.ENGINE_VOICES[engine]['test'][0]}"  # festival's diphone voice: fast
    knobs = {"voices_train": (), "voices_test": (voice,), "unknown_per_voice": 1, "noisy_fraction": 0.5}
    synth.synthesize(tmp_path / "a", seed=3, workers=2, **knobs)
    synth._engine_audio.cache_clear()  # the engine itself runs again, not only sox
    synth.synthesize(tmp_path / "b", seed=3, workers=1, **knobs)
    synth.synthesize(tmp_path / "c", seed=4, workers=2, **knobs)
    a, b, c = files(tmp_path / "a"), files(tmp_path / "b"), files(tmp_path / "c")
    assert a == b
    clips = sorted(k for k in a if k.endswith(".wav") and not k.startswith("_background_noise_/"))
    assert len(clips) == len(synth.COMMANDS) + 1
    common = [k for k in clips if k in c]
    assert common and all(a[k] != c[k] for k in common)  # the seed draws tempo, pitch, level, onset, noise
    for rel in clips:
        x = read_wav(tmp_path / "a" / rel, rate=16000).samples
        assert x.shape == (16000,) and np.abs(x).max() > 0.01, rel
    table = rows(tmp_path / "a")
    assert sorted(r["path"] for r in table) == clips
    for r in table:
        assert (r["engine"], r["voice"], r["split"]) == (engine, voice, "test")
        assert 0.8 <= float(r["tempo"]) <= 1.25 * 1.25 ** 5 and -300 <= int(r["pitch_cents"]) <= 300
        assert r["speed"] == "" and r["noise"] in ("", *synth.NOISES)
    m = json.loads((tmp_path / "a" / "MANIFEST.json").read_text())
    assert set(m["engines"]) == {engine} and m["espeak_ng"] is None and m["voices"]["test"] == {
        synth.speaker_id(voice): voice}


@needs("espeak-ng")
def test_the_default_still_makes_the_bundled_corpus(tmp_path):
    """espeak-ng alone, default knobs: the first train and test voice's clips are the bundled archive's bytes,
    and MANIFEST.json has no key it did not have (the bundled corpus stays remakeable)."""
    out = tmp_path / "kws_synth"
    m = synth.synthesize(out, voices_train=synth.VOICES_TRAIN[:1], voices_test=synth.VOICES_TEST[:1])
    assert "engines" not in m and m["licence"] == synth.LICENCE
    made = {k: v for k, v in files(out).items() if k.endswith(".wav")}
    with tarfile.open(ROOT / "data" / "kws_synth.tar.xz") as tar:
        bundled = {n.removeprefix("kws_synth/"): tar.extractfile(n).read() for n in tar.getnames()
                   if n.removeprefix("kws_synth/") in made}
    assert len(made) == 2 * 13 + len(synth.NOISES) and bundled == made
    table = rows(out)
    assert len(table) == 26 and {r["engine"] for r in table} == {"espeak-ng"}
    assert all(r["speed"] and r["pitch"] and r["amplitude"] and r["tempo"] == "" for r in table)


def test_voice_splits_keep_speakers_apart(tmp_path):
    for engine in ("espeak-ng", "flite", "festival", "pico"):
        train, test = synth.default_voices([engine], "train"), synth.default_voices([engine], "test")
        assert train and test and not {synth._variant(v) for v in train} & {synth._variant(v) for v in test}
    assert synth.default_voices(["espeak-ng"], "test") == synth.VOICES_TEST  # the default corpus's voices
    with pytest.raises(S2EmuError, match="share the variant"):  # flite's kal16 is festival's kal_diphone
        synth.synthesize(tmp_path / "x", voices_train=("flite:kal16",), voices_test=("festival:kal_diphone",))
    with pytest.raises(S2EmuError, match="ENGINE:NAME"):
        synth.synthesize(tmp_path / "x", voices_test=("mbrola:us1",))
    assert synth.main([str(tmp_path / "x"), "--engines", "espeak-ng,mbrola"]) == 2
    assert not (tmp_path / "x").exists()


def test_a_missing_engine_names_what_to_install(tmp_path, monkeypatch):
    knobs = {"voices_train": (), "unknown_per_voice": 0}
    monkeypatch.setattr(synth.shutil, "which", lambda name: None)
    for voice, hint in (("flite:slt", "apt-get install (sox|flite)"), ("festival:ked_diphone", "apt-get install")):
        with pytest.raises(S2EmuError, match=hint):
            synth.synthesize(tmp_path / "x", voices_test=(voice,), **knobs)
    monkeypatch.setattr(synth.shutil, "which", lambda name: f"/usr/bin/{name}")
    monkeypatch.setattr(synth, "FESTIVAL_VOICE_DIRS", (str(tmp_path),))
    with pytest.raises(S2EmuError, match="apt-get install festvox-kdlpc16k"):
        synth.synthesize(tmp_path / "x", voices_test=("festival:ked_diphone",), **knobs)
    monkeypatch.setitem(sys.modules, "ttspico", None)  # import fails
    with pytest.raises(S2EmuError, match=r"pip install ttspico"):
        synth.synthesize(tmp_path / "x", voices_test=("pico:en-GB",), **knobs)
    assert not (tmp_path / "x").exists()


@needs("espeak-ng", "flite")
def test_eval_by_engine_counts_add_up(tmp_path, capsys):
    from s2emu.cli import main

    corpus = tmp_path / "two"
    synth.synthesize(corpus, voices_train=(), voices_test=("en-gb+f4", "flite:slt"), unknown_per_voice=2)
    capsys.readouterr()
    args = ["eval", "eprop_kws", "--data", str(corpus), "--quiet", "--json"]
    assert main([*args, "--by", "engine"]) == 0, capsys.readouterr().err[-2000:]
    out = json.loads(capsys.readouterr().out)
    by = out["by"]
    assert set(by) == {"espeak-ng", "flite", "_silence_"}
    assert by["espeak-ng"]["n"] == by["flite"]["n"] == 12 and sum(g["n"] for g in by.values()) == out["n_test"]
    assert sum(g["n"] * g["accuracy"] for g in by.values()) == pytest.approx(out["accuracy"] * out["n_test"])
    for g in by.values():
        assert set(g) == {"n", "accuracy", "balanced_accuracy"} and 0 <= g["balanced_accuracy"] <= 1

    assert main([*args, "--by", "voice"]) == 0
    assert set(json.loads(capsys.readouterr().out)["by"]) == {"en-gb+f4", "flite:slt", "_silence_"}

    archive = synth.pack(corpus, tmp_path / "two.tar.xz", preset=0)  # the manifest travels in the archive
    assert main(["eval", "eprop_kws", "--data", str(archive), "--quiet", "--json", "--by", "engine"]) == 0
    assert json.loads(capsys.readouterr().out)["by"] == by

    (corpus / "manifest.csv").unlink()
    assert main([*args, "--by", "engine"]) == 2
    err = capsys.readouterr().err
    assert "no manifest.csv" in err and len(err.strip().splitlines()) == 1


def test_sox_varies_tempo_and_pitch():
    # sox writes float WAV; host.audio reads it (the path every clip of flite, festival and pico takes)
    if shutil.which("sox") is None:
        pytest.skip("sox is not installed (apt-get install sox)")
    x = 0.5 * np.sin(np.arange(1600) / 5.0)
    y, rate = synth._sox_vary(x.astype(np.float32), 16000, 1.0, 0)
    assert rate == 16000 and abs(len(y) - 1600) < 200 and np.abs(y).max() > 0.1
