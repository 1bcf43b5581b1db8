"""`s2emu detect`: keywords in continuous audio (a long recording, standard input, the microphone), as they come.

Continuous audio has no clip boundaries, and the model was trained on 1 s clips normalised per clip. So a window
of one clip slides over the audio with a hop (default 0.25 s), and each window runs through the chip as a clip
of its own (T + 2 = 102 ticks; s2emu/streaming.py `run_feed`, host/stream.py's feed windows). The chip thus needs
(T + 2) / hop ticks per second of audio: 408 at the default hop, a real-time factor of 4.08, which the ray
engine's unpaced 5.7 (13 PEs, a process each; 10.8 with --pes-per-process 4) and the local engine's 43 keep.

Detection (Detector): a window's scores become class probabilities (softmax). A command word w is detected when
w is the most probable class, with probability >= threshold, in `consecutive` windows in a row; a run of such
windows fires once. After a detection, none fires for `refractory` seconds (one spoken word, one detection).
_silence_ and _unknown_ never fire. A detection's `time` is the mean centre of the windows that fired it (where
the word is heard); `at` is the end of the last of them (when it is known: the audio time, before the chip's
own hop of processing).

Scoring against the truth (score_detections; a CSV of start, end, word per utterance, as `s2emu longform`
writes; utterances that end after the audio heard are left out): a detection of w is a hit if its time lies
within [start - 0.5 s, end + 0.5 s] of an utterance of w not yet hit: with 1 s windows, that is where windows
overlapping the word are centred. Another detection of an utterance already hit is a false alarm (counted also
as `same_word_again`); every other detection is a false alarm too, by cause: on an unknown word, on another
command, or on no word (silence and noise). A command utterance not hit is a miss. False alarms per hour are
over the whole recording.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import S2EmuError

HOP = 0.25  # seconds between windows: 4 windows per second of audio, each a 1 s clip of 102 ticks
THRESHOLD = 0.7
CONSECUTIVE = 2
REFRACTORY = 1.0  # seconds
TOLERANCE = 0.5  # a hit is within [start - TOLERANCE, end + TOLERANCE] of the utterance

# `s2emu detect --json`: every key and what it means (docs/cli.md's JSON section for `s2emu detect` is this list)
JSON_KEYS = {
    "recipe, engine, model": "as for stream",
    "source": "what was heard: a WAV file, '-' (standard input) or 'mic'",
    "truth": "the CSV of true utterances scored against (null: no scoring, the counts below are null)",
    "audio": "`format` (file, wav, raw, mic), `rate` and `channels` as read (resampled and mixed to the recipe's; "
             "channels null for a file), `device` (mic only: its name), `seconds` of audio heard, `padded_seconds` "
             "of zeros after its end to fill the last window",
    "hop, window_seconds": "seconds between windows; seconds per window (the recipe's clip)",
    "threshold, consecutive, refractory": "the detection rule (s2emu/detect.py): probability, windows in a row, "
                                          "seconds without a detection after one",
    "windows": "windows run through the chip",
    "detections[]": "per detection: `word`, `time` (s, where it was heard: the mean centre of its windows), `at` "
                    "(s, the end of its last window: when it was known), `score` (its mean probability)",
    "utterances, unknown_utterances": "command utterances in the truth; utterances of other words",
    "hits, misses, false_alarms": "overall counts (rules in s2emu/detect.py)",
    "false_alarms_per_hour": "false alarms / hours of audio",
    "recall, precision": "hits / utterances; hits / detections (null when undefined)",
    "false_alarm_causes": "false alarms by cause: `same_word_again` (an utterance already hit), `unknown_word`, "
                          "`other_command` (on an utterance of another command), `no_word` (silence and noise)",
    "latency_seconds_median": "median over hits of `at` minus the utterance's end",
    "per_word[]": "per command word: `word`, `utterances`, `hits`, `misses`, `false_alarms`, "
                  "`false_alarms_per_hour`, `recall`, `precision`",
    "pes, window": "as for stream",
    "paced, ticks, wall_seconds, ticks_per_second": "as for stream",
    "real_time_factor": "emulated ticks per second / 100",
    "required_real_time_factor": "what keeping up needs: (T + 2) / 100 / hop, 4.08 at a hop of 0.25 s",
    "capacity_factor": "as for stream",
    "lag_ms_max, lag_ms_first_half_max, lag_ms_second_half_max, lag_ms_final": "as for stream",
    "packets_per_second": "as for stream",
    "per_pe[]": "as for stream: `pe`, `population`, `spike_rate_hz`, `packets_out` (null when live audio ended "
                "the run early)",
    "phases": "as for run",
}


def softmax(scores) -> np.ndarray:
    s = np.asarray(scores, np.float64)
    e = np.exp(s - np.max(s, axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


@dataclass(frozen=True)
class Rule:
    hop: float = HOP
    window: float = 1.0
    threshold: float = THRESHOLD
    consecutive: int = CONSECUTIVE
    refractory: float = REFRACTORY

    def check(self) -> "Rule":
        if not 0 < self.hop <= self.window:
            raise S2EmuError(f"--hop {self.hop:g}: must be > 0 and at most the window ({self.window:g} s)")
        if not 0 <= self.threshold <= 1:
            raise S2EmuError(f"--threshold {self.threshold:g}: a probability, in [0, 1]")
        if self.consecutive < 1:
            raise S2EmuError(f"--consecutive {self.consecutive}: must be >= 1")
        if self.refractory < 0:
            raise S2EmuError(f"--refractory {self.refractory:g}: must be >= 0 seconds")
        return self


class Detector:
    """Window scores in, detections out, one window at a time (the rule in the module docstring)."""

    def __init__(self, classes, commands, rule: Rule):
        self.classes, self.rule = list(classes), rule
        self.commands = {self.classes.index(w) for w in commands}
        self.word, self.run, self.last_at = None, [], None

    def push(self, k: int, scores) -> dict | None:
        p = softmax(scores)
        c = int(np.argmax(p)) if np.isfinite(p).all() else -1
        ok = c in self.commands and p[c] >= self.rule.threshold
        if not ok:
            self.word, self.run = None, []
            return None
        if c != self.word:
            self.word, self.run = c, []
        self.run.append((k, float(p[c])))
        if len(self.run) != self.rule.consecutive:  # a run fires once, when it is long enough
            return None
        r = self.rule
        at = k * r.hop + r.window
        if self.last_at is not None and at - self.last_at < r.refractory - 1e-9:
            return None
        self.last_at = at
        centre = float(np.mean([j * r.hop for j, _ in self.run])) + r.window / 2
        return {"word": self.classes[c], "time": round(centre, 4), "at": round(at, 4),
                "score": round(float(np.mean([q for _, q in self.run])), 4)}


def detections(scores, classes, commands, rule: Rule) -> list[dict]:
    """Every detection in a sequence of window scores [windows, classes]."""
    d = Detector(classes, commands, rule)
    return [e for k, s in enumerate(scores) if (e := d.push(k, s)) is not None]


# ----------------------------------------------------------------------------------------------- scoring


def read_truth(path) -> list[dict]:
    """Utterances from a CSV with columns start, end, word (seconds; more columns are kept but not used)."""
    p = Path(path)
    try:
        with p.open(newline="") as f:
            rows = list(csv.DictReader(f))
    except OSError as e:
        raise S2EmuError(f"--truth {p}: cannot read ({e.strerror})") from None
    out = []
    for i, r in enumerate(rows, start=2):
        try:
            u = {"start": float(r["start"]), "end": float(r["end"]), "word": str(r["word"]).strip()}
        except (KeyError, TypeError, ValueError):
            raise S2EmuError(f"--truth {p}, line {i}: expected columns start,end,word (seconds, seconds, a word)") \
                from None
        if not (math.isfinite(u["start"]) and math.isfinite(u["end"]) and u["start"] <= u["end"]) or not u["word"]:
            raise S2EmuError(f"--truth {p}, line {i}: start {r['start']!r} .. end {r['end']!r} of {r['word']!r} is "
                             f"not an interval of a word")
        out.append(u)
    return out


def _ratio(a, b):
    return a / b if b else None


def score_detections(dets, truth, commands, seconds: float, tolerance: float = TOLERANCE) -> dict:
    """Hits, misses and false alarms, overall and per command word (rules in the module docstring)."""
    commands = list(commands)
    hours = seconds / 3600.0
    hit_by = {}  # utterance index -> the detection that hit it
    causes = {"same_word_again": 0, "unknown_word": 0, "other_command": 0, "no_word": 0}
    fa = {w: 0 for w in commands}
    latency = []
    for d in sorted(dets, key=lambda d: d["at"]):
        near = [i for i, u in enumerate(truth) if u["start"] - tolerance <= d["time"] <= u["end"] + tolerance]
        same = [i for i in near if truth[i]["word"] == d["word"]]
        free = [i for i in same if i not in hit_by]
        if free:
            i = min(free, key=lambda i: abs((truth[i]["start"] + truth[i]["end"]) / 2 - d["time"]))
            hit_by[i] = d
            latency.append(d["at"] - truth[i]["end"])
            continue
        fa[d["word"]] = fa.get(d["word"], 0) + 1
        if same:
            causes["same_word_again"] += 1
        elif any(truth[i]["word"] in commands for i in near):
            causes["other_command"] += 1
        elif near:
            causes["unknown_word"] += 1
        else:
            causes["no_word"] += 1
    per_word = []
    for w in commands:
        n = sum(u["word"] == w for u in truth)
        h = sum(truth[i]["word"] == w for i in hit_by)
        per_word.append({"word": w, "utterances": n, "hits": h, "misses": n - h, "false_alarms": fa[w],
                         "false_alarms_per_hour": _ratio(fa[w], hours), "recall": _ratio(h, n),
                         "precision": _ratio(h, h + fa[w])})
    n = sum(p["utterances"] for p in per_word)
    hits, fas = len(hit_by), sum(fa.values())
    return {"utterances": n, "unknown_utterances": sum(u["word"] not in commands for u in truth),
            "hits": hits, "misses": n - hits, "false_alarms": fas, "false_alarms_per_hour": _ratio(fas, hours),
            "recall": _ratio(hits, n), "precision": _ratio(hits, hits + fas), "false_alarm_causes": causes,
            "latency_seconds_median": float(np.median(latency)) if latency else None, "per_word": per_word}


NO_SCORE = {"utterances": None, "unknown_utterances": None, "hits": None, "misses": None, "false_alarms": None,
            "false_alarms_per_hour": None, "recall": None, "precision": None, "false_alarm_causes": None,
            "latency_seconds_median": None, "per_word": []}


# ----------------------------------------------------------------------------------------------- the run


class DetectView:
    """The live view of a detection run (rich Live on stderr): the chip's pace, the last window heard, the
    detections so far."""

    def __init__(self, console, classes, rule: Rule, ticks_per_window: int):
        self.console, self.classes, self.rule, self.tpw = console, list(classes), rule, ticks_per_window
        self.live, self.last, self.prev = None, 0.0, None
        self.window_scores, self.events = None, []

    def attach(self, status):
        pass

    def start(self):
        from rich.live import Live
        self.live = Live(console=self.console, refresh_per_second=4, transient=False)
        self.live.start()

    def stop(self):
        if self.live is not None:
            self.live.stop()

    def heard(self, k, scores, event):
        self.window_scores = (k, scores)
        if event is not None:
            self.events.append(event)

    def update(self, pacer):
        import time

        from rich.table import Table

        now = time.perf_counter()
        if self.live is None or now - self.last < 0.25:
            return
        self.last = now
        t = Table(title="s2emu detect", show_header=False)
        t.add_column(style="bold")
        t.add_column()
        ticks0, t0 = self.prev or (0, now)
        rate = (pacer.ticks - ticks0) / max(now - t0, 1e-9)
        lag = 1000 * pacer.lags[-1][1] if pacer.lags else 0.0
        t.add_row("chip", f"{pacer.ticks:,} ticks   {rate:,.0f} ticks/s   real-time factor {rate / 100:.2f}   "
                          f"lag {lag:.0f} ms")
        if self.window_scores is not None:
            k, s = self.window_scores
            p = softmax(s)
            top = np.argsort(-p)[:3]
            t.add_row("audio", f"{k * self.rule.hop + self.rule.window:.2f} s heard")
            t.add_row("last window", "  ".join(f"{self.classes[c]} {p[c]:.2f}" for c in top))
        t.add_row("detections", f"{len(self.events)}" + "".join(
            f"\n  {e['time']:8.2f} s  [bold]{e['word']}[/] ({e['score']:.2f})" for e in self.events[-6:]))
        self.prev = (pacer.ticks, now)
        self.live.update(t)


def detect(recipe, source, *, truth=None, rule: Rule = Rule(), engine="local", address=None, transport="channels",
           weights=None, pace=True, seconds=None, rate=16000, channels=1, console=None, live=True, pes_per_process=1,
           window=1, stdin=None) -> dict:
    """Detect the recipe's command words in `source` (a WAV file, '-' or 'mic'); score them against `truth` (a
    CSV path) if given. Returns `s2emu detect --json`'s object."""
    from .host.datasets import feature_spec
    from .host.live import open_source
    from .streaming import check_recipe, recipe_classes, run_feed

    check_recipe(recipe)
    spec = feature_spec(recipe.data)
    rule = Rule(rule.hop, spec.clip_samples / spec.sample_rate, rule.threshold, rule.consecutive,
                rule.refractory).check()
    hop = round(rule.hop * spec.sample_rate)
    if hop < 1:
        raise S2EmuError(f"--hop {rule.hop:g}: shorter than a sample")
    rule = Rule(hop / spec.sample_rate, rule.window, rule.threshold, rule.consecutive, rule.refractory)
    if seconds is not None and seconds <= 0:
        raise S2EmuError(f"--seconds {seconds:g}: must be > 0")
    utterances = read_truth(truth) if truth is not None else None
    src = open_source(str(source), target_rate=spec.sample_rate, rate=rate, channels=channels, stdin=stdin)
    classes, commands = recipe_classes(recipe), list(recipe.data["words"])
    live_detector = Detector(classes, commands, rule)
    view = []

    def make_view(b):
        if live and console is not None:
            view.append(DetectView(console, classes, rule, b.clock.ticks_per_sample))
            return view[0]
        return None

    def on_window(k, scores):
        event = live_detector.push(k, scores)
        if view:
            view[0].heard(k, scores, event)

    out = run_feed(recipe, src, hop=hop, engine=engine, address=address, transport=transport, weights=weights,
                   pace=pace, max_samples=None if seconds is None else round(seconds * spec.sample_rate),
                   pes_per_process=pes_per_process, window=window, on_window=on_window, make_view=make_view,
                   console=console)
    heard = out["samples"] / spec.sample_rate
    dets = detections(out["scores"], classes, commands, rule)
    if utterances is not None:  # the utterances the audio heard holds whole (--seconds may end it early)
        utterances = [u for u in utterances if u["end"] <= heard]
    scored = score_detections(dets, utterances, commands, heard) if utterances is not None else dict(NO_SCORE)
    return {"recipe": recipe.name, "engine": engine, "source": str(source),
            "truth": None if truth is None else str(truth),
            "audio": {**src.describe(), "seconds": heard, "padded_seconds":
                      ((out["windows"] - 1) * hop + spec.clip_samples - out["samples"]) / spec.sample_rate},
            "hop": rule.hop, "window_seconds": rule.window, "threshold": rule.threshold,
            "consecutive": rule.consecutive, "refractory": rule.refractory, "windows": out["windows"],
            "detections": dets, **scored, "pes": out["pes"], "window": out["window"], **out["timing"],
            "required_real_time_factor": out["required_real_time_factor"],
            "packets_per_second": out["packets_per_second"], "per_pe": out["per_pe"], "phases": out["phases"],
            "_scores": out["scores"]}  # every window's scores (not in the JSON: keys with _ are left out)


# ----------------------------------------------------------------------------------------------- command line


def add_live_audio_options(sp) -> None:
    """--rate, --channels, --seconds: how standard input is read (`stream` and `detect`)."""
    sp.add_argument("--rate", type=int, default=16000, metavar="HZ",
                    help="raw PCM on standard input: its sample rate (default 16000; resampled to the recipe's)")
    sp.add_argument("--channels", type=int, default=1, metavar="N",
                    help="raw PCM on standard input, or the microphone: interleaved channels, averaged to mono "
                         "(default 1)")
    sp.add_argument("--seconds", type=float, metavar="S",
                    help="hear at most S seconds of the source, then end as at its end")


def add_parsers(sub, common, engine_options) -> None:
    """`s2emu detect` and `s2emu longform`."""
    sp = sub.add_parser("detect", help="detect keywords in continuous audio (a long WAV, standard input, the "
                        "microphone) with a sliding window; score them against the true word times")
    common(sp, overrides=False)
    sp.add_argument("--source", required=True, metavar="FILE.wav|-|mic",
                    help="a WAV file, '-' (standard input: a WAV stream or raw 16-bit PCM) or 'mic'")
    sp.add_argument("--truth", metavar="FILE.csv", help="the true utterances (start,end,word per row, as `s2emu "
                    "longform` writes): score hits, misses and false alarms")
    sp.add_argument("--hop", type=float, default=HOP, metavar="S",
                    help=f"seconds between 1 s windows (default {HOP:g}: needs a real-time factor of 4.08)")
    sp.add_argument("--threshold", type=float, default=THRESHOLD, metavar="P",
                    help=f"a window counts for a word whose probability is >= P (default {THRESHOLD:g})")
    sp.add_argument("--consecutive", type=int, default=CONSECUTIVE, metavar="K",
                    help=f"windows in a row that must agree to detect (default {CONSECUTIVE})")
    sp.add_argument("--refractory", type=float, default=REFRACTORY, metavar="S",
                    help=f"seconds after a detection in which no other fires (default {REFRACTORY:g})")
    add_live_audio_options(sp)
    sp.add_argument("--model", metavar="FILE.npz", help="the model (default: the one the recipe names)")
    sp.add_argument("--no-pace", action="store_true", help="run as fast as possible instead of at the audio rate")
    engine_options(sp)
    sp.add_argument("--quiet", action="store_true", help="no live view")
    sp = sub.add_parser("longform", help="write a long recording of spoken words, silences and noise with the "
                        "true word times (OUT.wav, OUT.csv) for s2emu detect")
    sp.add_argument("out", metavar="OUT.wav", help="the recording; the word times go to OUT.csv beside it")
    sp.add_argument("--minutes", type=float, default=10.0, help="its length (default 10)")
    sp.add_argument("--seed", type=int, default=0, help="everything drawn follows from it (default 0)")
    sp.add_argument("--json", action="store_true", help="print one JSON object on stdout")


def _recipe_and_model(args):
    """The recipe and the trained model's weights (as s2emu/cli.py's eval and stream take them; this module is
    imported by cli.py, so it does not import it back)."""
    from .model import load_model
    from .recipe import load_recipe

    recipe = load_recipe(args.recipe)
    path = args.model or recipe.model
    if not path:
        raise S2EmuError(f"recipe {recipe.name} names no trained model: pass --model PATH")
    return recipe, path, load_model(path, recipe.network)[0]


def cmd_detect(args) -> dict:
    from rich.console import Console
    from rich.table import Table

    from .progress import err_console

    out_console = Console()
    recipe, path, weights = _recipe_and_model(args)
    if not args.quiet:
        where = {"-": "standard input", "mic": "the microphone"}.get(args.source, args.source)
        err_console.print(f"[bold]detecting[/] keywords in {where} with {recipe.name} on the {args.engine} "
                          f"engine")
    rule = Rule(args.hop, 1.0, args.threshold, args.consecutive, args.refractory)
    out = detect(recipe, args.source, truth=args.truth, rule=rule, engine=args.engine, address=args.address,
                 transport=args.transport, weights=weights, pace=not args.no_pace, seconds=args.seconds,
                 rate=args.rate, channels=args.channels, console=err_console, live=not args.quiet,
                 pes_per_process=args.pes_per_process, window=args.window)
    out = {"recipe": out.pop("recipe"), "engine": out.pop("engine"), "model": str(path), **out}
    if not args.json:
        t = Table(title=f"detect: {out['audio']['seconds']:.1f} s of audio, {out['windows']} windows, hop "
                        f"{out['hop']:g} s, on {out['engine']}")
        for col in ("word", "utterances", "hits", "misses", "false alarms", "FA/hour", "recall"):
            t.add_column(col, justify="right")
        for p in out["per_word"]:
            t.add_row(p["word"], str(p["utterances"]), str(p["hits"]), str(p["misses"]), str(p["false_alarms"]),
                      f"{p['false_alarms_per_hour']:.1f}", "-" if p["recall"] is None else f"{p['recall']:.2f}")
        if out["truth"] is not None:
            t.add_row("all", str(out["utterances"]), str(out["hits"]), str(out["misses"]), str(out["false_alarms"]),
                      f"{out['false_alarms_per_hour']:.1f}", "-" if out["recall"] is None else f"{out['recall']:.2f}")
            out_console.print(t)
        else:
            for d in out["detections"]:
                out_console.print(f"{d['time']:9.2f} s  {d['word']}  ({d['score']:.2f})")
        out_console.print(f"real-time factor {out['real_time_factor']:.2f} (keeping up needs "
                          f"{out['required_real_time_factor']:.2f}); lag max {out['lag_ms_max']:.0f} ms")
    return out


def cmd_longform(args) -> dict:
    from rich.console import Console

    from .host.longform import make_longform
    from .progress import ProgressBar

    bar = ProgressBar(f"synthesizing {args.out}", unit="s of audio", enabled=not args.json)
    bar.start(round(args.minutes * 60))
    done = [0]

    def progress(seconds):
        bar.advance(int(seconds) - done[0])
        done[0] = int(seconds)

    try:
        out = make_longform(args.out, minutes=args.minutes, seed=args.seed, progress=progress)
    finally:
        bar.stop()
    if not args.json:
        Console().print(f"wrote {out['wav']} ({out['seconds']:.1f} s: {out['command_utterances']} commands, "
                          f"{out['unknown_utterances']} other words) and {out['csv']}")
    return out
