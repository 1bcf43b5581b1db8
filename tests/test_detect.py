"""Continuous detection (s2emu/detect.py): the rule on constructed window scores, the scoring, the truth file, the
long recording (host/longform.py), and detection end to end on a generated recording (local; ray marked)."""

import io
import re
import shutil

import numpy as np
import pytest

from s2emu.detect import (JSON_KEYS, Detector, Rule, detect, detections, read_truth, score_detections)
from s2emu.errors import S2EmuError
from s2emu.host.speech_commands import COMMANDS, class_names

CLASSES = class_names()
needs_espeak = pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng is not installed")


def window(word: str, p: float) -> np.ndarray:
    """Readout scores whose softmax gives `word` probability p, the rest spread evenly."""
    q = np.full(len(CLASSES), (1 - p) / (len(CLASSES) - 1))
    q[CLASSES.index(word)] = p
    return np.log(q)


def test_the_rule_needs_agreeing_windows_fires_once_and_waits():
    seq = (["_silence_"] * 4 + ["yes", "yes", "yes"]  # 4-6: fires at 5 (at 2.25 s), once for the run
           + ["no", "no"]  # 7-8: a run, but 0.75 s after the first detection: within the refractory second
           + ["_silence_", ("yes", 0.65), "yes", "yes"]  # 10 below the threshold: the run starts at 11, fires at 12
           + ["_unknown_", "_unknown_", "up", "down", "_silence_"])  # unknown never fires; up, down: runs of one
    scores = [window(*(w if isinstance(w, tuple) else (w, 0.9))) for w in seq]
    got = detections(scores, CLASSES, COMMANDS, Rule(hop=0.25, threshold=0.7, consecutive=2, refractory=1.0))
    assert [(d["word"], d["time"], d["at"]) for d in got] == [("yes", 1.625, 2.25), ("yes", 3.375, 4.0)]
    assert got[0]["score"] == pytest.approx(0.9)
    # the second run of "no" fires once the refractory period is shorter than the time since the first
    got = detections(scores, CLASSES, COMMANDS, Rule(hop=0.25, threshold=0.7, consecutive=2, refractory=0.5))
    assert [d["word"] for d in got] == ["yes", "no", "yes"]
    # one window suffices with consecutive 1: up and down fire too, unknown and silence still never
    got = detections(scores, CLASSES, COMMANDS, Rule(hop=0.25, threshold=0.7, consecutive=1, refractory=0.0))
    assert [d["word"] for d in got] == ["yes", "no", "yes", "up", "down"]
    # streaming the same scores one window at a time gives the same events
    d = Detector(CLASSES, COMMANDS, Rule(consecutive=1, refractory=0.0))
    assert [e["word"] for k, s in enumerate(scores) if (e := d.push(k, s))] == [x["word"] for x in got]


def test_scoring_counts_hits_misses_and_false_alarms_by_cause():
    truth = [{"start": 1.2, "end": 1.5, "word": "yes"}, {"start": 3.0, "end": 3.3, "word": "yes"},
             {"start": 5.0, "end": 5.4, "word": "no"}, {"start": 6.0, "end": 6.3, "word": "bed"}]
    dets = [{"word": "yes", "time": 1.6, "at": 2.25}, {"word": "yes", "time": 1.7, "at": 2.5},  # hit, again
            {"word": "yes", "time": 3.4, "at": 4.0},  # hit: within 0.5 s after the end
            {"word": "no", "time": 3.2, "at": 4.5},  # on a "yes"
            {"word": "up", "time": 6.1, "at": 7.0},  # on an unknown word
            {"word": "go", "time": 9.0, "at": 9.5},  # on no word
            {"word": "no", "time": 5.95, "at": 6.5}]  # 0.55 s after "no" ends (and on "bed"): not a hit
    s = score_detections(dets, truth, COMMANDS, seconds=1800.0)
    assert (s["utterances"], s["unknown_utterances"], s["hits"], s["misses"], s["false_alarms"]) == (3, 1, 2, 1, 5)
    assert s["false_alarm_causes"] == {"same_word_again": 1, "unknown_word": 2, "other_command": 1, "no_word": 1}
    assert s["false_alarms_per_hour"] == 10.0 and s["recall"] == pytest.approx(2 / 3)
    assert s["precision"] == pytest.approx(2 / 7)
    assert s["latency_seconds_median"] == pytest.approx(0.725)  # the median of 2.25 - 1.5 and 4.0 - 3.3
    by = {p["word"]: p for p in s["per_word"]}
    assert (by["yes"]["hits"], by["yes"]["misses"], by["yes"]["false_alarms"]) == (2, 0, 1)
    assert (by["no"]["hits"], by["no"]["misses"], by["no"]["false_alarms"], by["no"]["recall"]) == (0, 1, 2, 0.0)
    assert by["stop"]["utterances"] == 0 and by["stop"]["recall"] is None and by["go"]["false_alarms_per_hour"] == 2.0


def test_a_truth_file_is_read_or_refused_in_one_line(tmp_path):
    p = tmp_path / "t.csv"
    p.write_text("start,end,word,voice\n0.5,0.9,yes,v1\n1.5,1.8,bed,v2\n")
    assert read_truth(p) == [{"start": 0.5, "end": 0.9, "word": "yes"}, {"start": 1.5, "end": 1.8, "word": "bed"}]
    for text, says in (("start,stop,word\n1,2,yes\n", "expected columns start,end,word"),
                       ("start,end,word\n2,1,yes\n", "not an interval"), ("start,end,word\nx,1,yes\n", "line 2")):
        p.write_text(text)
        with pytest.raises(S2EmuError, match=says):
            read_truth(p)
    with pytest.raises(S2EmuError, match="cannot read"):
        read_truth(tmp_path / "missing.csv")


def documented_keys() -> set[str]:
    words = set()
    for k, v in JSON_KEYS.items():
        words |= set(re.findall(r"\w+", k))
        words |= {w for span in re.findall(r"`([^`]+)`", v) for w in re.findall(r"\w+", span)}
    return words


def interface_keys(obj, path="") -> set[str]:
    keys = set()
    if isinstance(obj, dict) and path != "phases":
        for k, v in obj.items():
            if not k.startswith("_"):  # the CLI leaves these out of its JSON
                keys |= {k} | interface_keys(v, k)
    elif isinstance(obj, list):
        for v in obj[:3]:
            keys |= interface_keys(v, path)
    return keys


@pytest.fixture(scope="module")
def recording(tmp_path_factory):
    """20 s of words, gaps and noise from the held-out voices, and its truth."""
    from s2emu.host.longform import make_longform

    out = tmp_path_factory.mktemp("longform") / "rec.wav"
    return make_longform(out, minutes=1 / 3, seed=3)


@pytest.fixture(scope="module")
def shipped():
    from s2emu.cli import _trained_model
    from s2emu.recipe import load_recipe

    recipe = load_recipe("eprop_kws")
    return recipe, _trained_model(recipe, None)[1]


@needs_espeak
def test_the_long_recording_is_deterministic_and_holds_its_words(recording, tmp_path):
    from s2emu.host.audio import read_wav
    from s2emu.host.longform import make_longform

    again = make_longform(tmp_path / "again.wav", minutes=1 / 3, seed=3)
    assert open(again["wav"], "rb").read() == open(recording["wav"], "rb").read()
    assert open(again["csv"]).read() == open(recording["csv"]).read()
    other = make_longform(tmp_path / "other.wav", minutes=1 / 3, seed=4)
    assert open(other["csv"]).read() != open(recording["csv"]).read()
    from test_docs import assert_documented
    assert_documented("longform", recording)  # `s2emu longform --json` prints make_longform's dict
    x = read_wav(recording["wav"]).samples
    truth = read_truth(recording["csv"])
    assert len(x) == 320000 and recording["utterances"] == len(truth) >= 5
    assert recording["command_utterances"] >= 2 and {u["word"] for u in truth} - set(COMMANDS)  # unknown words too
    inside = np.zeros(len(x), bool)
    for u in truth:
        inside[int(u["start"] * 16000):int(u["end"] * 16000)] = True
        assert u["end"] - u["start"] < 1.0
    assert np.sqrt(np.mean(x[inside] ** 2)) > 3 * np.sqrt(np.mean(x[~inside] ** 2))  # words over the noise


@needs_espeak
def test_detect_finds_command_words_in_a_generated_recording(recording, shipped):
    recipe, weights = shipped
    out = detect(recipe, recording["wav"], truth=recording["csv"], weights=weights, pace=False, console=None)
    assert out["windows"] == 77 and out["audio"]["seconds"] == 20.0 and out["required_real_time_factor"] == 4.08
    assert out["utterances"] == recording["command_utterances"] and out["hits"] >= 1
    assert out["hits"] + out["misses"] == out["utterances"]
    assert out["false_alarms"] == sum(p["false_alarms"] for p in out["per_word"]) == sum(
        out["false_alarm_causes"].values())
    assert all(d["word"] in COMMANDS for d in out["detections"])
    missing = sorted(interface_keys(out) - documented_keys())
    assert not missing, f"s2emu/detect.py JSON_KEYS does not describe {missing}"


@needs_espeak
def test_detect_hears_stdin_as_it_hears_the_file(recording, shipped):
    """The first 6 s through standard input (a WAV stream, read as it arrives) and through --seconds 6 of the
    file: the same windows, hence the same detections (every command window counts, to compare them all)."""
    from s2emu.host.audio import read_wav, wav_bytes

    recipe, weights = shipped
    every = Rule(threshold=0.0, consecutive=1, refractory=0.0)
    x = read_wav(recording["wav"]).samples[:6 * 16000]
    a = detect(recipe, "-", rule=every, weights=weights, pace=False, console=None,
               stdin=io.BytesIO(wav_bytes(x, 16000)))
    b = detect(recipe, recording["wav"], rule=every, weights=weights, pace=False, console=None, seconds=6)
    assert a["windows"] == b["windows"] == 21 and a["detections"] == b["detections"] and a["detections"]
    assert a["audio"]["format"] == "wav" and a["truth"] is None and a["hits"] is None


@pytest.mark.ray
@pytest.mark.slow
@needs_espeak
def test_detect_on_the_ray_engine_hears_what_local_hears(recording, shipped, ray_local):
    recipe, weights = shipped
    every = Rule(threshold=0.0, consecutive=1, refractory=0.0)
    kw = dict(rule=every, weights=weights, pace=False, console=None, seconds=5)
    local = detect(recipe, recording["wav"], **kw)
    ray = detect(recipe, recording["wav"], engine="ray", **kw)
    assert ray["detections"] == local["detections"] and ray["windows"] == local["windows"] == 17
    assert ray["real_time_factor"] > 0 and ray["capacity_factor"] is None
