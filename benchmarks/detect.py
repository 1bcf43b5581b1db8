"""Keywords in continuous audio: hits, misses and false alarms per hour, and the real-time factor.

    python benchmarks/detect.py [--minutes 10] [--seed 0] [--ray-minutes 2]

A recording of --minutes (host/longform.py: the held-out test voices saying command and other words, gaps of
silence, five kinds of background noise at 10-30 dB SNR; seed --seed) goes through `s2emu detect` with the
shipped model (models/eprop_kws.npz) and the default rule, on the local engine, unpaced: per keyword hits, misses,
false alarms and false alarms per hour (s2emu/detect.py states the rule and the scoring). The same window scores
give the other operating points: other thresholds and window counts, and hops of 0.5 s and 1 s (every 2nd and
4th window of the 0.25 s hop are exactly the windows of those hops). Then the first --ray-minutes of it on the
ray engine, unpaced, with a process per PE and with four PEs to a process: the real-time factor against the
4.08 that a hop of 0.25 s needs, and whether the ray engine heard what the local one did; beside it, the same
engine streaming 1 s clips (benchmarks/stream_rtf.py's run) in the same minutes, as the machine may be shared.
Writes detect.json and detect.md.

The rule's defaults were chosen on another recording (seed 11, 4 minutes), not on this one.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

from _results import arguments, write_results

from s2emu.detect import Rule, detect, detections, read_truth, score_detections
from s2emu.engines.ray_engine import start_ray
from s2emu.host.longform import make_longform
from s2emu.model import load_model
from s2emu.recipe import load_recipe
from s2emu.streaming import recipe_classes, stream

ROOT = Path(__file__).resolve().parents[1]
THRESHOLDS = (0.5, 0.6, 0.7, 0.8, 0.9, 0.95)
# (hop, windows in a row): words last under a second, so a hop of 1 s never has two windows in a row on one word
POINTS = ((0.25, 1), (0.25, 2), (0.25, 3), (0.5, 1), (0.5, 2), (1.0, 1))


def main() -> None:
    ap = arguments(__doc__)
    ap.add_argument("--minutes", type=float, default=10.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--ray-minutes", type=float, default=2.0, help="0: no ray rows")
    args = ap.parse_args()
    command = "python benchmarks/detect.py" + "".join(
        f" --{k.replace('_', '-')} {v:g}" for k, v in (("minutes", args.minutes), ("seed", args.seed),
                                                       ("ray_minutes", args.ray_minutes))
        if v != ap.get_default(k))
    recipe = load_recipe(str(ROOT / "recipes" / "eprop_kws.toml"))
    weights, meta = load_model(ROOT / "models" / "eprop_kws.npz", recipe.network)
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        t = time.perf_counter()
        rec = make_longform(Path(tmp) / "longform.wav", minutes=args.minutes, seed=args.seed)
        print(f"recording: {rec['utterances']} utterances in {time.perf_counter() - t:.0f} s", file=sys.stderr)
        rule = Rule()
        local = detect(recipe, rec["wav"], truth=rec["csv"], rule=rule, weights=weights, pace=False, console=None)
        print(f"local: recall {local['recall']:.3f}, {local['false_alarms_per_hour']:.1f} false alarms per hour, "
              f"real-time factor {local['real_time_factor']:.2f}", file=sys.stderr)
        truth = read_truth(rec["csv"])
        classes, commands = recipe_classes(recipe), list(recipe.data["words"])
        points = []
        for hop, k in POINTS:
            scores = local["_scores"][::round(hop / rule.hop)]  # the windows of that hop
            for th in THRESHOLDS:
                dets = detections(scores, classes, commands, Rule(hop, 1.0, th, k, rule.refractory))
                s = score_detections(dets, truth, commands, local["audio"]["seconds"])
                points.append({"hop": hop, "consecutive": k, "threshold": th, "recall": s["recall"],
                               "false_alarms_per_hour": s["false_alarms_per_hour"], "hits": s["hits"],
                               "false_alarms": s["false_alarms"]})
        rays = []
        if args.ray_minutes > 0:
            seconds = min(args.ray_minutes * 60, rec["seconds"])
            every = Rule(threshold=0.0, consecutive=1, refractory=0.0)  # every command window: a strict comparison
            want = detect(recipe, rec["wav"], rule=every, weights=weights, pace=False, console=None, seconds=seconds)
            started = start_ray()
            try:
                for ppp in (1, 4):
                    r = detect(recipe, rec["wav"], rule=every, engine="ray", pes_per_process=ppp, weights=weights,
                               pace=False, console=None, seconds=seconds)
                    # the same engine streaming 1 s clips of the corpus in the same minutes (benchmarks/stream_rtf.py's
                    # run): on a shared machine, what the load leaves of the engine's speed
                    base = stream(recipe, str(ROOT / "data" / "kws_synth.tar.xz"), engine="ray", pes_per_process=ppp,
                                  weights=weights, clips=60, pace=False, console=None, live=False)
                    rays.append({"engine": "ray" if ppp == 1 else "ray ppp4", "pes_per_process": ppp,
                                 "seconds": seconds, "windows": r["windows"], "ticks": r["ticks"],
                                 "real_time_factor": r["real_time_factor"],
                                 "required_real_time_factor": r["required_real_time_factor"],
                                 "stream_real_time_factor": base["real_time_factor"],
                                 "same_as_local": r["detections"] == want["detections"]})
                    print(f"{rays[-1]['engine']}: real-time factor {r['real_time_factor']:.2f} (streaming clips "
                          f"{base['real_time_factor']:.2f})", file=sys.stderr)
            finally:
                if started:
                    import ray
                    ray.shutdown()
    keep = ("hits", "misses", "false_alarms", "false_alarms_per_hour", "recall", "precision", "utterances",
            "unknown_utterances", "false_alarm_causes", "latency_seconds_median", "per_word", "windows", "ticks",
            "real_time_factor", "required_real_time_factor")
    out = {"benchmark": "detect", "date": time.strftime("%Y-%m-%d"), "command": command,
           "model": "models/eprop_kws.npz", "model_state_digest": meta.get("state_digest"),
           "recording": {k: rec[k] for k in ("seconds", "seed", "utterances", "command_utterances",
                                             "unknown_utterances", "voices")},
           "rule": {"hop": rule.hop, "window_seconds": 1.0, "threshold": rule.threshold,
                    "consecutive": rule.consecutive, "refractory": rule.refractory},
           "local": {k: local[k] for k in keep}, "operating_points": points, "ray": rays,
           "load_average_before": load_before, "load_average_after": os.getloadavg()}
    write_results(args.out, "detect", out, markdown(out))


def _f(x, fmt=".2f"):
    return "-" if x is None else format(x, fmt)


def markdown(out: dict) -> list[str]:
    loc, rec, rule = out["local"], out["recording"], out["rule"]
    md = [f"Keywords in a generated recording of {rec['seconds'] / 60:g} min (seed {rec['seed']}: "
          f"{rec['command_utterances']} command words and {rec['unknown_utterances']} other words by "
          f"{rec['voices']} held-out voices, noise at 10-30 dB SNR), the shipped model, local engine; rule: hop "
          f"{rule['hop']:g} s, probability >= {rule['threshold']:g} in {rule['consecutive']} windows in a row, "
          f"{rule['refractory']:g} s refractory. {out['date']}; load average before "
          f"{out['load_average_before'][0]:.1f}. Command: `{out['command']}`.", "",
          "| word | utterances | hits | misses | false alarms | false alarms per hour | recall |",
          "|---|---|---|---|---|---|---|"]
    for p in loc["per_word"]:
        md.append(f"| {p['word']} | {p['utterances']} | {p['hits']} | {p['misses']} | {p['false_alarms']} | "
                  f"{_f(p['false_alarms_per_hour'], '.1f')} | {_f(p['recall'])} |")
    md.append(f"| **all** | {loc['utterances']} | {loc['hits']} | {loc['misses']} | {loc['false_alarms']} | "
              f"**{_f(loc['false_alarms_per_hour'], '.1f')}** | **{_f(loc['recall'], '.3f')}** |")
    c = loc["false_alarm_causes"]
    md += ["", f"False alarms by cause: {c['other_command']} on another command word, {c['unknown_word']} on an "
               f"unknown word, {c['no_word']} on silence or noise, {c['same_word_again']} on a word already "
               f"detected. Precision {_f(loc['precision'], '.3f')}; median latency from the end of a word to the end "
               f"of the window that detects it {_f(loc['latency_seconds_median'])} s. Local engine, unpaced: "
               f"real-time factor {loc['real_time_factor']:.1f} (keeping up needs "
               f"{loc['required_real_time_factor']:.2f}).", "",
           "Other operating points, from the same window scores (recall / false alarms per hour):", "",
           "| hop | windows in a row | " + " | ".join(f"p >= {t:g}" for t in THRESHOLDS) + " |",
           "|---|---|" + "---|" * len(THRESHOLDS)]
    for hop, k in POINTS:
        cells = [p for p in out["operating_points"] if p["hop"] == hop and p["consecutive"] == k]
        md.append(f"| {hop:g} s | {k} | " + " | ".join(
            f"{_f(p['recall'])} / {_f(p['false_alarms_per_hour'], '.0f')}" for p in cells) + " |")
    if out["ray"]:
        md += ["", f"The first {out['ray'][0]['seconds'] / 60:g} min on the ray engine, unpaced:", "",
               "| engine | windows | ticks | real-time factor | keeping up needs | streaming 1 s clips, same minutes "
               "| same windows heard as local |", "|---|---|---|---|---|---|---|"]
        for r in out["ray"]:
            md.append(f"| {r['engine']} | {r['windows']:,} | {r['ticks']:,} | {r['real_time_factor']:.2f} | "
                      f"{r['required_real_time_factor']:.2f} | {r['stream_real_time_factor']:.2f} | "
                      f"{'yes' if r['same_as_local'] else '**no**'} |")
        md.append("\nThe column before last: the same engine streaming 60 clips of the corpus right after (the run of "
                  "benchmarks/stream_rtf.py), which shows what the machine's load left of its speed. "
                  "benchmarks/results/stream_rtf.md has that run on a quieter machine.")
    return md


if __name__ == "__main__":
    main()
