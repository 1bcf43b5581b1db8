"""DEEP R LeNet-300-100 split over 1, 2, 4, 8 PEs (SCIENCE.md seed B's scaling study): time per sample, SRAM
per PE, packets per sample, on the local engine and on the ray engine (one process per PE), side by side.

    python benchmarks/deepr_scaling.py [--pes 1,2,4,8] [--train 300] [--test 100] [--repeats 3]

Writes deepr_scaling.json and deepr_scaling.md. The work is one epoch over `train` bundled digits then a test
pass; times are medians over repeats (local) or one run (ray). Every row must carry the same state_digest.
"Chip ticks per sample" is the emulated latency: 3 on one PE, 6 + 2P split (cores/mlp.py); wall times are this
machine's, not the chip's (the chip's time model is issue 5's); the MACs of the busiest PE per sample show how
the arithmetic divides.
"""

from __future__ import annotations

import dataclasses
import sys
import time
from pathlib import Path

from _results import arguments, split_row, write_results

from s2emu.recipe import load_recipe
from s2emu.runner import run

RECIPE = Path(__file__).resolve().parents[1] / "recipes" / "deepr_mnist.toml"


def main() -> None:
    ap = arguments(__doc__, repeats=3)
    ap.add_argument("--pes", default="1,2,4,8")
    ap.add_argument("--train", type=int, default=300)
    ap.add_argument("--test", type=int, default=100)
    ap.add_argument("--engines", default="local,ray")
    args = ap.parse_args()
    base = load_recipe(str(RECIPE)).with_overrides(epochs=1)
    base = dataclasses.replace(base, data={**base.data, "max_train": args.train, "max_test": args.test})
    samples = args.train + args.test
    rows = []
    for pes in (int(p) for p in args.pes.split(",")):
        recipe = base.with_overrides(pes=pes)
        for engine in args.engines.split(","):
            results = [run(recipe, engine=engine) for _ in range(args.repeats if engine == "local" else 1)]
            row = split_row(results[0], engine, samples, [x["wall_seconds"] for x in results])
            rows.append(row)
            print(f"{engine} {pes} PEs: {row['ms_per_sample']:.2f} ms/sample, {row['chip_ticks_per_sample']} ticks, "
                  f"max PE {row['sram_max_pe_bytes']:,} B, {row['packets_per_sample']:.0f} packets/sample",
                  file=sys.stderr)
    out = {"benchmark": "deepr_scaling", "date": time.strftime("%Y-%m-%d"), "recipe": "deepr_mnist",
           "train_samples": args.train, "test_samples": args.test, "rows": rows,
           "digests_identical": len({r["state_digest"] for r in rows}) == 1}
    md = [f"DEEP R LeNet-300-100, one epoch over {args.train} bundled digits + {args.test} test digits, "
          f"{out['date']}. Command: `python benchmarks/deepr_scaling.py`.", "",
          "| PEs | engine | chip ticks / sample | ms / sample (wall) | largest PE SRAM B | mean PE SRAM B | total SRAM B "
          "| packets / sample | MACs / sample, busiest PE | digest |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        md.append(f"| {r['pes']} | {r['engine']} | {r['chip_ticks_per_sample']} | {r['ms_per_sample']:.2f} | "
                  f"{r['sram_max_pe_bytes']:,} | {r['sram_mean_pe_bytes']:,.0f} | {r['total_bytes']:,} | "
                  f"{r['packets_per_sample']:,.0f} | {r['busiest_pe_macs_per_sample']:,.0f} | "
                  f"`{r['state_digest'][:12]}` |")
    md.append(f"\nDigests identical on every split and engine: {out['digests_identical']}.")
    write_results(args.out, "deepr_scaling", out, md)


if __name__ == "__main__":
    main()
