"""Streaming: features computed as audio arrives give the same answers as offline evaluation."""

import dataclasses

import numpy as np
import pytest

from corpus import make_tone_corpus
from s2emu.host.audio import write_wav
from s2emu.recipe import load_recipe
from s2emu.runner import run
from s2emu.streaming import stream


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = make_tone_corpus(tmp_path_factory.mktemp("corpus"), train_speakers=3, test_speakers=1)
    r = load_recipe("eprop_kws").with_overrides(data=root, epochs=3, batch=8)
    r = dataclasses.replace(r, learning=dataclasses.replace(r.learning, lr=0.02))
    return r, run(r)["_arrays"]["weights"]


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("S2EMU_CACHE", str(tmp_path / "cache"))


def test_stream_hears_what_eval_hears(trained):
    recipe, weights = trained
    offline = run(recipe.with_overrides(epochs=0, batch=4), weights=weights)
    live = stream(recipe, None, weights=weights, pace=False, console=None)
    assert live["clips"] == offline["n_test"]
    assert live["accuracy"] == offline["accuracy"]
    # same clips, streamed in another order: the confusion matrices must agree exactly
    names = offline["classes"]
    got = np.zeros((len(names), len(names)), int)
    for r in live["results"]:
        got[names.index(r["label"]), names.index(r["heard"])] += 1
    np.testing.assert_array_equal(got, np.asarray(offline["confusion"]))
    assert live["real_time_factor"] > 0 and live["paced"] is False and live["weight_updates"] == 0


def test_a_windowed_stream_hears_what_a_tick_by_tick_stream_hears(trained):
    """Every projection delayed 2 ticks: the endpoints may advance 2 ticks between exchanges, and what the chip
    hears is the same, clip for clip (the window only moves when packets arrive, never when they act)."""
    recipe, weights = trained
    projs = tuple(dataclasses.replace(p, delay=2) for p in recipe.network.projections)
    delayed = dataclasses.replace(recipe, network=dataclasses.replace(recipe.network, projections=projs))
    each = stream(delayed, None, weights=weights, pace=False, console=None, clips=4)
    windowed = stream(delayed, None, weights=weights, pace=False, console=None, clips=4, window="auto")
    assert (each["window"], windowed["window"]) == (1, 2)
    assert windowed["results"] == each["results"] and windowed["ticks"] == each["ticks"] + 1
    assert windowed["packets_per_second"] > 0 and windowed["missing_outputs"] == 0


def test_stream_a_wav_file_without_labels(trained, tmp_path):
    recipe, weights = trained
    x = 0.3 * np.sin(2 * np.pi * 700 * np.arange(40000) / 16000)  # 2.5 s: three clips, the last zero-padded
    write_wav(tmp_path / "long.wav", x, 16000)
    out = stream(recipe, tmp_path / "long.wav", weights=weights, pace=False, console=None)
    assert out["clips"] == 3 and out["accuracy"] is None and out["n_labelled"] == 0
    assert all(r["label"] is None and r["heard"] in recipe_classes() for r in out["results"])


def recipe_classes():
    from s2emu.host.speech_commands import class_names
    return class_names()


def test_stream_learning_online_updates_weights(trained):
    recipe, weights = trained
    out = stream(recipe, None, weights=weights, pace=False, console=None, learn=True, clips=3)
    assert out["learn"] and out["clips"] == 3 and out["missing_outputs"] == 0
    assert out["weight_updates"] > 0  # every PE applied Adam steps while streaming
    frozen = stream(recipe, None, weights=weights, pace=False, console=None, clips=3)
    assert frozen["weight_updates"] == 0


def test_looped_stream_repeats_clips_without_copying_their_audio(trained):
    recipe, weights = trained
    once = stream(recipe, None, weights=weights, pace=False, console=None)
    n = once["clips"]
    looped = stream(recipe, None, weights=weights, pace=False, console=None, clips=2 * n + 1, loop=True)
    assert looped["clips"] == 2 * n + 1
    heard = [r["heard"] for r in looped["results"]]
    assert heard == [r["heard"] for r in once["results"]] * 2 + [once["results"][0]["heard"]]
    # the host is handed each distinct clip's audio once, however long the loop (no growth in a soak)
    from s2emu.host.stream import open_source
    from s2emu.streaming import feature_spec
    src = open_source(recipe.data["path"], feature_spec(recipe.data), words=recipe.data["words"],
                      clips=5 * n, seed=recipe.seed, loop=True)
    assert len(src.audio) == n and len(src.labels) == 5 * n and list(src.order[:n + 1]) == [*range(n), 0]
