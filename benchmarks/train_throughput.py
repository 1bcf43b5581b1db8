"""Training throughput of the keyword recipe on the local engine: samples per second and seconds per epoch.

    python benchmarks/train_throughput.py [--train 256] [--test 64] [--repeats 3]

recipes/eprop_kws.toml (80-120-12 ALIF, e-prop, Adam; 12 hidden PEs + the readout PE) on a seeded subset of
the recipe's corpus, at the recipe's batch (32 streams) and at the chip's batch 1. Each repeat runs one epoch
(train, then test) and a test pass alone on the same clips; the difference is the training time, so
samples_per_second counts training samples (forward, eligibility traces, learning signal, Adam) only.
seconds_per_epoch scales that to the whole training set (17,248 samples an epoch with the recipe's corpus).
Engine wall time only (data loading and feature extraction are not counted). Medians over repeats. Writes
train_throughput.json and .md.
"""

from __future__ import annotations

import dataclasses
import statistics
import sys
import time
from pathlib import Path

from _results import arguments, write_results

from s2emu.host.datasets import load_dataset
from s2emu.recipe import load_recipe
from s2emu.runner import run

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = arguments(__doc__, repeats=3)
    ap.add_argument("--train", type=int, default=256)
    ap.add_argument("--test", type=int, default=64)
    args = ap.parse_args()
    full = load_recipe(str(ROOT / "recipes" / "eprop_kws.toml"))
    n_train_all = len(load_dataset(full.data, full.seed).y_train)
    base = dataclasses.replace(full, data={**full.data, "max_train": args.train, "max_test": args.test})
    rows = []
    for batch in (full.schedule.batch, 1):
        train_s, test_s, ticks = [], [], None
        for rep in range(args.repeats):
            both = run(base.with_overrides(epochs=1, batch=batch))
            alone = run(base.with_overrides(epochs=0, batch=batch))
            train_s.append(both["wall_seconds"] - alone["wall_seconds"])
            test_s.append(alone["wall_seconds"])
            ticks = both["ticks"]
            print(f"batch {batch} #{rep + 1}: train {train_s[-1]:.1f} s, test {test_s[-1]:.1f} s", file=sys.stderr)
        sps = args.train / statistics.median(train_s)
        rows.append({"batch": batch, "train_samples": args.train, "test_samples": args.test, "ticks": ticks,
                     "repeats": args.repeats, "samples_per_second": sps,
                     "test_samples_per_second": args.test / statistics.median(test_s),
                     "seconds_per_epoch": n_train_all / sps, "train_seconds": train_s, "test_seconds": test_s})
    out = {"benchmark": "train_throughput", "recipe": "eprop_kws", "engine": "local",
           "train_set": n_train_all, "date": time.strftime("%Y-%m-%d"), "rows": rows}
    md = [f"Training throughput of recipes/eprop_kws.toml on the local engine ({out['date']}); "
          f"`python benchmarks/train_throughput.py --train {args.train} --test {args.test} --repeats {args.repeats}`; "
          f"medians of {args.repeats}.", "",
          f"| batch (streams) | training samples/s | seconds per epoch ({n_train_all:,} samples) | test samples/s |",
          "|---|---|---|---|"]
    for r in rows:
        md.append(f"| {r['batch']} | {r['samples_per_second']:.1f} | {r['seconds_per_epoch']:.0f} | "
                  f"{r['test_samples_per_second']:.1f} |")
    write_results(args.out, "train_throughput", out, md)


if __name__ == "__main__":
    main()
