"""Windowed exchange on the ray engine: the same bits with K times fewer barriers, and what that buys.

    python benchmarks/window.py [--delay 4] [--windows 1,2,4] [--train 16] [--test 8] [--repeats 3]

recipes/eprop_kws.toml (12 hidden PEs, the readout PE and the host, one process each) with every projection
given a delay of `delay` ticks: a different network from the published one (whose delays are all 1, so it
exchanges every tick), the kind of network windows are for. Trained for one epoch on a seeded subset and
tested, on the ray engine with each window (ticks per exchange, s2emu/build.py window_bound), repeats
interleaved. Per window: ticks per second (median), its ratio to window 1, and the state digest, which must
not change. Writes window.json and window.md.
"""

from __future__ import annotations

import dataclasses
import statistics
from pathlib import Path

from _results import arguments, write_results

from s2emu.engines.ray_engine import start_ray
from s2emu.recipe import load_recipe
from s2emu.runner import run

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = arguments(__doc__, repeats=3)
    ap.add_argument("--delay", type=int, default=4)
    ap.add_argument("--windows", default="1,2,4")
    ap.add_argument("--train", type=int, default=16)
    ap.add_argument("--test", type=int, default=8)
    ap.add_argument("--pes-per-process", type=int, default=1)
    args = ap.parse_args()
    windows = [int(w) for w in args.windows.split(",")]
    r = load_recipe(str(ROOT / "recipes" / "eprop_kws.toml")).with_overrides(epochs=1, batch=1)
    net = r.network
    r = dataclasses.replace(
        r, network=dataclasses.replace(net, projections=tuple(dataclasses.replace(p, delay=args.delay)
                                                              for p in net.projections)),
        data={**r.data, "max_train": args.train, "max_test": args.test})
    start_ray(num_cpus=2)
    rates = {w: [] for w in windows}
    digests = {w: set() for w in windows}
    ticks = {}
    for _ in range(args.repeats):
        for w in windows:
            res = run(r, engine="ray", window=w, pes_per_process=args.pes_per_process)
            rates[w].append(res["ticks"] / res["phases"]["run"])
            digests[w].add(res["state_digest"])
            ticks[w] = res["ticks"]
    base = statistics.median(rates[windows[0]])
    rows = [{"window": w, "ticks": ticks[w], "ticks_per_second": statistics.median(rates[w]),
             "runs": rates[w], "ratio": statistics.median(rates[w]) / base, "state_digest": sorted(digests[w])}
            for w in windows]
    same = len({d for w in windows for d in digests[w]}) == 1
    out = {"benchmark": "window", "delay": args.delay, "pes": res["pes"], "pes_per_process": args.pes_per_process,
           "train": args.train, "test": args.test, "repeats": args.repeats, "same_digest": same, "rows": rows}
    md = [f"Windowed exchange, ray engine, keyword network with every delay {args.delay} ticks, {res['pes']} PEs "
          f"({args.pes_per_process} per process), {args.train} training + {args.test} test clips, median of "
          f"{args.repeats}; same digest in every run: {same}", "",
          "| window (ticks per exchange) | ticks/s (exchange loop) | vs window 1 | runs |", "|---|---|---|---|"]
    md += [f"| {row['window']} | {row['ticks_per_second']:.0f} | {row['ratio']:.2f}x | "
           f"{', '.join(f'{x:.0f}' for x in row['runs'])} |" for row in rows]
    write_results(args.out, "window", out, md)


if __name__ == "__main__":
    main()
