"""Streaming keyword spotting, unpaced: how many times real time the emulated chip runs on each engine.

    python benchmarks/stream_rtf.py [--clips 60] [--repeats 3]

The shipped e-prop model (recipes/eprop_kws.toml: 12 hidden PEs + the readout PE, the host; 15 processes on
the ray engine with the router), batch 1, exact per-tick exchange, clips of the bundled corpus streamed as
fast as the engine goes (`s2emu stream --no-pace`). real_time_factor = ticks per second / 100 (a tick is a
10 ms frame). Also the router actor's busy time per tick (decoding, routing, encoding: the serial part of
the exchange). A third row, `ray ppp4`, runs the ray engine with the PEs four to a process
(--pes-per-process 4: 13 PEs in 4 processes, each stepping its PEs in turn over one channel). Writes stream_rtf.json and
stream_rtf.md; medians over repeats, engines interleaved.
"""

from __future__ import annotations

import os
import statistics
import sys
import time
from pathlib import Path

from _results import arguments, write_results

from s2emu.engines.ray_engine import start_ray
from s2emu.model import load_model
from s2emu.recipe import load_recipe
from s2emu.streaming import stream

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = arguments(__doc__, repeats=3)
    ap.add_argument("--clips", type=int, default=60)
    args = ap.parse_args()
    recipe = load_recipe(str(ROOT / "recipes" / "eprop_kws.toml"))
    weights, _ = load_model(ROOT / "models" / "eprop_kws.npz", recipe.network)
    started = start_ray()
    load_before = os.getloadavg()
    runs = {"local": [], "ray": [], "ray ppp4": []}
    try:
        for rep in range(args.repeats):
            for engine in runs:
                r = stream(recipe, None, engine=engine.split()[0], weights=weights, clips=args.clips, pace=False,
                           console=None, live=False, pes_per_process=4 if engine == "ray ppp4" else 1)
                runs[engine].append(r)
                print(f"{engine} #{rep + 1}: real-time factor {r['real_time_factor']:.2f}", file=sys.stderr)
    finally:
        if started:
            import ray
            ray.shutdown()
    rows = []
    for engine, rs in runs.items():
        busy = [r["phases"].get("router_busy") for r in rs]
        rows.append({"engine": engine, "pes": rs[0]["pes"], "clips": args.clips, "ticks": rs[0]["ticks"],
                     "repeats": len(rs), "real_time_factor": statistics.median(r["real_time_factor"] for r in rs),
                     "real_time_factors": [r["real_time_factor"] for r in rs],
                     "router_busy_ms_per_tick": (statistics.median(1000 * b / rs[0]["ticks"] for b in busy)
                                                 if busy[0] is not None else None),
                     "accuracy": rs[0]["accuracy"]})
    out = {"benchmark": "stream_rtf", "date": time.strftime("%Y-%m-%d"), "rows": rows,
           "load_average_before": load_before, "load_average_after": os.getloadavg(),
           "same_answers": len({tuple(x["heard"] for x in r["results"]) for rs in runs.values() for r in rs}) == 1}
    md = [f"Streaming keyword spotting unpaced, {args.clips} clips, median of {args.repeats}; "
          f"{out['date']}; load average before {load_before[0]:.1f}. Command: `python benchmarks/stream_rtf.py`.", "",
          "| engine | PEs | ticks | real-time factor (median) | all repeats | router busy ms/tick | accuracy |",
          "|---|---|---|---|---|---|---|"]
    for r in rows:
        busy = "-" if r["router_busy_ms_per_tick"] is None else f"{r['router_busy_ms_per_tick']:.2f}"
        md.append(f"| {r['engine']} | {r['pes']} | {r['ticks']:,} | {r['real_time_factor']:.2f} | "
                  f"{', '.join(f'{x:.2f}' for x in r['real_time_factors'])} | {busy} | {r['accuracy']:.3f} |")
    md.append(f"\nSame word heard for every clip on both engines and every repeat: {out['same_answers']}.")
    write_results(args.out, "stream_rtf", out, md)


if __name__ == "__main__":
    main()
