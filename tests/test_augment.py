"""Training-time augmentation (host/augment.py) and the corpus a recipe synthesizes on first use ([data.synth])."""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import numpy as np
import pytest
from s2emu.errors import RecipeError, S2EmuError
from s2emu.host import augment, synth
from s2emu.host.datasets import corpus_path, load_dataset
from s2emu.host.features import FeatureSpec, batch_features, mel_filterbank, vtlp_warp
from s2emu.recipe import load_recipe

RATE = 16_000
SPEC = FeatureSpec()


def word_like(seed=0, n=RATE):
    """A 'word': 300 ms of a harmonic tone with a formant-ish envelope, at 0.4 s."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(0.3 * RATE)) / RATE
    w = sum(np.sin(2 * np.pi * 140 * h * t) / h for h in range(1, 20)) * np.hanning(len(t))
    x = np.zeros(n)
    x[int(0.4 * RATE):int(0.4 * RATE) + len(t)] = w
    return 0.3 * x / np.abs(x).max() + 1e-4 * rng.standard_normal(n)


def one(names, seed=1, **kw):
    rng = np.random.default_rng(seed)
    return augment.augment_clip(word_like(), rng, names, rate=RATE, noises=[], babble=lambda r, n: word_like(9, n), **kw)


def test_deterministic_and_seeded():
    audio = np.stack([word_like(i) for i in range(6)]).astype(np.float32)
    labels = np.array([0, 1, 2, 3, 4, 5])
    a = augment.augmented_features(audio, labels, SPEC, copies=2, names=augment.AUGMENTATIONS, seed=3)
    b = augment.augmented_features(audio, labels, SPEC, copies=2, names=augment.AUGMENTATIONS, seed=3)
    c = augment.augmented_features(audio, labels, SPEC, copies=2, names=augment.AUGMENTATIONS, seed=4)
    assert a[0].shape == (12, SPEC.frames, SPEC.channels) and a[1].tolist() == labels.tolist() * 2
    assert np.array_equal(a[0], b[0])
    assert not np.array_equal(a[0], c[0])
    assert not np.array_equal(a[0][:6], a[0][6:])  # the two copies differ


def test_the_numbers_do_not_depend_on_the_threads(monkeypatch):
    """Augmentation runs on a thread per CPU (host/augment.py _in_threads): one CPU or four, every copy
    of every clip is the same, in the same place. 150 clips: three 64-clip blocks in flight."""
    import os
    audio = np.stack([word_like(i) for i in range(150)]).astype(np.float32)
    labels = np.arange(150) % 12
    got = []
    for cpus in ({0}, {0, 1, 2, 3}):
        monkeypatch.setattr(augment, "usable_cpus", lambda cpus=cpus: len(cpus))
        x, _ = augment.augmented_features(audio, labels, SPEC, copies=2, names=augment.AUGMENTATIONS, seed=5)
        got.append(x)
    assert np.array_equal(got[0], got[1])


def test_nothing_named_changes_nothing_but_level():
    x = word_like()
    y = one(())
    assert np.allclose(y, x * min(np.abs(x).max(), 0.99) / np.abs(x).max())


def test_each_augmentation_changes_the_clip_and_leaves_the_others_draws():
    base = one(("shift",))
    for name in ("speed", "reverb", "band", "noise"):  # each drawn with its probability: some seed draws it
        assert any(not np.allclose(one(("shift", name), s), one(("shift",), s)) for s in range(8)), name
    x = word_like()
    onset = lambda y: int(np.argmax(np.abs(y) > 0.05 * np.abs(y).max()))  # noqa: E731
    assert onset(base) != onset(x)  # shift moved it
    # leaving an augmentation out leaves the others' draws as they were: the shift drawn (the lag of the best
    # match with the word; the channel filter is zero-phase) is the same with and without "band"
    def lag(y):
        c = np.fft.irfft(np.fft.rfft(y, 2 * RATE) * np.conj(np.fft.rfft(x, 2 * RATE)), 2 * RATE)
        return int(np.argmax(c))
    lags = [(lag(one(("shift",), s)), lag(one(("shift", "band"), s))) for s in range(6)]
    assert all(a == b for a, b in lags) and len({a for a, _ in lags}) > 1


def test_reverb_adds_a_tail_and_band_removes_energy():
    x = word_like()
    end = int(0.7 * RATE)
    tails = [np.sum(one(("reverb",), s)[end:] ** 2) for s in range(12)]
    assert max(tails) > 100 * np.sum(x[end:] ** 2)
    spectra = [np.abs(np.fft.rfft(one(("band",), s))) for s in range(12)]
    ref = np.abs(np.fft.rfft(x))
    f = np.fft.rfftfreq(RATE, 1 / RATE)
    changed = [np.abs(np.log((s[(f > 100) & (f < 6000)] + 1e-9) / (ref[(f > 100) & (f < 6000)] + 1e-9))).mean()
               for s in spectra]
    assert max(changed) > 0.1


def test_noise_at_the_drawn_snr():
    x = word_like()
    got = []
    for s in range(20):
        y = one(("noise",), s)
        quiet = np.r_[y[:int(0.35 * RATE)], y[int(0.75 * RATE):]]
        got.append(np.sqrt(np.mean(quiet ** 2)))
    assert max(got) > 20 * np.sqrt(np.mean(np.r_[x[:int(0.35 * RATE)], x[int(0.75 * RATE):]] ** 2))


def test_vtlp_moves_a_tone_up_the_mel_bands():
    assert np.allclose(vtlp_warp(np.array([0.0, 1000.0, 8000.0]), 1.0, 8000.0), [0, 1000, 8000])
    assert vtlp_warp(np.array([8000.0]), 1.1, 8000.0)[0] == pytest.approx(8000.0)  # Nyquist stays put
    bin_1k = round(1000 * SPEC.n_fft / SPEC.sample_rate)  # the FFT bin of a 1 kHz tone
    band = lambda a: float(np.argmax(mel_filterbank(SPEC, a)[:, bin_1k]))  # noqa: E731
    assert band(0.88) < band(1.0) < band(1.12)  # heard as a lower / higher tone
    tone = np.sin(2 * np.pi * 1000 * np.arange(RATE) / RATE)[None].astype(np.float32)
    assert not np.array_equal(batch_features(tone, SPEC, vtlp=1.1), batch_features(tone, SPEC))
    assert not np.array_equal(mel_filterbank(SPEC, 1.1), mel_filterbank(SPEC))


def test_mask_zeroes_bands_with_their_deltas():
    f = np.ones((SPEC.frames, SPEC.channels), np.float32)
    for s in range(20):
        g = augment.mask_features(f.copy(), np.random.default_rng(s), SPEC.n_mels)
        zero_cols = np.flatnonzero((g == 0).all(axis=0))
        assert set(zero_cols % SPEC.n_mels) == set(zero_cols[zero_cols < SPEC.n_mels]) | set(
            zero_cols[zero_cols >= SPEC.n_mels] - SPEC.n_mels)
    masked = [augment.mask_features(f.copy(), np.random.default_rng(s), SPEC.n_mels) for s in range(20)]
    assert any((m == 0).all(axis=1).any() for m in masked)  # a span of frames
    assert any((m == 0).all(axis=0).any() for m in masked)  # a band


def test_unknown_augmentation_is_refused_by_name(tmp_path):
    with pytest.raises(S2EmuError, match="unknown augmentation 'echo'"):
        augment.check_names(["echo"])
    text = (Path(__file__).parents[1] / "recipes" / "eprop_kws.toml").read_text()
    r = tmp_path / "r.toml"
    r.write_text(text.replace("deltas = true", 'deltas = true\naugment = ["speed", "echo"]')
                 .replace('model = "../models/eprop_kws.npz"', ""))  # (refused before any data is read)
    with pytest.raises(RecipeError, match="data.augment"):
        load_recipe(str(r))


def _recipe(tmp_path, data_lines: str, synth_table: str | None = None):
    text = (Path(__file__).parents[1] / "recipes" / "eprop_kws.toml").read_text()
    text = text.replace('model = "../models/eprop_kws.npz"', "")
    text = text[:text.index("\n[data.synth]")] + "\n" + text[text.index("\n[[populations]]"):]  # not its corpus
    text = text.replace('kind = "speech_commands"\n', f'kind = "speech_commands"\n{data_lines}\n', 1)
    if synth_table is not None:
        text += "\n[data.synth]\n" + synth_table + "\n"
    r = tmp_path / "r.toml"
    r.write_text(text)
    return load_recipe(str(r))


def test_augmented_copies_join_the_training_split(tmp_path, monkeypatch):
    monkeypatch.setenv("S2EMU_CACHE", str(tmp_path / "cache"))
    archive = Path(__file__).parents[1] / "data" / "kws_synth.tar.xz"
    plain = _recipe(tmp_path, f'path = "{archive}"\nmax_train = 0\nmax_test = 10').with_overrides()
    plain = dataclasses.replace(plain, data={**plain.data, "augment_copies": 0})
    aug = _recipe(tmp_path, f'path = "{archive}"\nmax_train = 0\nmax_test = 10')
    d0 = load_dataset(plain.data, plain.seed)
    d1 = load_dataset(aug.data, aug.seed)
    n = len(d1.y_train) // 2
    assert len(d1.y_train) == 2 * n and np.array_equal(d1.y_train[:n], d1.y_train[n:])
    assert np.array_equal(d1.x_train[:n], d0.x_train)  # the clips themselves, then their copies
    assert not np.array_equal(d1.x_train[:n], d1.x_train[n:])
    assert np.array_equal(d0.x_test, d1.x_test)  # the test split is never augmented
    again = load_dataset(aug.data, aug.seed)  # from the cache
    assert np.array_equal(again.x_train, d1.x_train)
    assert len(list((tmp_path / "cache").glob("features-*-train-aug*.npz"))) == 1


def test_data_needs_a_path_or_a_synth_table(tmp_path):
    with pytest.raises(RecipeError, match=r"'data.path' .* or a \[data.synth\] table"):
        _recipe(tmp_path, "")
    with pytest.raises(RecipeError, match="not both"):
        _recipe(tmp_path, 'path = "x.tar.xz"', 'engines = ["flite"]')


@pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng is not installed (apt-get install espeak-ng)")
def test_synth_corpus_is_made_once_and_reused(tmp_path, monkeypatch):
    monkeypatch.setenv("S2EMU_CACHE", str(tmp_path / "cache"))
    lines = 'engines = ["espeak-ng"]\nvoices_train = ["en-us+f3", "en-gb+m3"]\nvoices_test = ["en-us+f4"]\nunknown_per_voice = 2'
    r = _recipe(tmp_path, "", lines)
    first = Path(corpus_path(r.data, progress=False))
    assert (first / "manifest.csv").is_file() and first.parent == tmp_path / "cache" / "corpora"
    stamp = (first / "MANIFEST.json").stat().st_mtime_ns
    assert Path(corpus_path(r.data, progress=False)) == first
    assert (first / "MANIFEST.json").stat().st_mtime_ns == stamp  # reused, not made again
    assert [p.name for p in first.parent.iterdir()] == [first.name]  # no temporary folder left
    other = _recipe(tmp_path, "", lines.replace("unknown_per_voice = 2", "unknown_per_voice = 1"))
    assert Path(corpus_path(other.data, progress=False)) != first  # other parameters: another corpus


def test_a_failed_generation_leaves_nothing_that_looks_complete(tmp_path, monkeypatch):
    monkeypatch.setenv("S2EMU_CACHE", str(tmp_path / "cache"))
    calls = []

    def failing(out, **kw):
        calls.append(out)
        (Path(out) / "yes").mkdir(parents=True)
        raise synth.SynthError("espeak-ng failed: simulated")

    monkeypatch.setattr(synth, "synthesize", failing)
    monkeypatch.setattr(synth, "engine_version", lambda engine, names: "test")
    r = _recipe(tmp_path, "", 'engines = ["espeak-ng"]\nvoices_train = ["en-us+f3"]\nvoices_test = ["en-us+f4"]')
    with pytest.raises(S2EmuError, match="simulated"):
        corpus_path(r.data, progress=False)
    assert calls and not any((tmp_path / "cache" / "corpora").iterdir())


def test_counts_per_engine_in_the_plan_and_on_the_command_line():
    assert synth._counts("3") == 3
    assert synth._counts("espeak-ng=2,flite=40") == {"espeak-ng": 2, "flite": 40}
    plan = synth._plan(("en-us+f3", "flite:kal"), ("flite:slt",), (), {"espeak-ng": 2, "flite": 5},
                       {"espeak-ng": 1, "flite": 3}, seed=0)
    by_voice = {v: [w for _, vv, w, _ in plan if vv == v] for v in ("en-us+f3", "flite:kal", "flite:slt")}
    assert len(by_voice["en-us+f3"]) == 10 * 2 + 1
    assert len(by_voice["flite:kal"]) == len(by_voice["flite:slt"]) == 10 * 5 + 3
    with pytest.raises(S2EmuError, match=r"repeats: unknown engine 'flute'"):
        synth.synthesize(Path("/nonexistent/never-made"), voices_train=("en-us+f3",), voices_test=("en-us+f4",),
                         repeats={"flute": 2})
