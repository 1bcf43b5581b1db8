"""BPTT on the keyword network (recipes/tlbptt_kws.toml, 80 -> 120 ALIF -> 12) whole on one PE and split over
P PEs (column slices of the hidden layer, backward sums chained from PE to PE, the readout on one more PE;
cores/bptt_pe.py), full and truncated: SRAM per PE against the chip's 128 KB, chip ticks per sample, packets
and MACs, side by side in one run.

    python benchmarks/bptt_scaling.py [--pes 1,4,8,12] [--truncation all,10] [--train 64] [--test 32]

Writes bptt_scaling.json and bptt_scaling.md. The work is one epoch over `train` bundled clips then a test pass,
batch 32; wall times are medians over repeats on the local engine. Rows of one truncation must carry the same
state_digest (the split does not change a bit); "fits" says whether the largest PE fits a 128 KB SpiNNaker 2 PE.
"""

from __future__ import annotations

import dataclasses
import sys
import time
from pathlib import Path

from _results import arguments, split_row, write_results

from s2emu.recipe import load_recipe
from s2emu.runner import run

RECIPE = Path(__file__).resolve().parents[1] / "recipes" / "tlbptt_kws.toml"
PE_SRAM = 128 * 1024  # a SpiNNaker 2 PE


def main() -> None:
    ap = arguments(__doc__, repeats=1)
    ap.add_argument("--pes", default="1,4,8,12")
    ap.add_argument("--truncation", default="all,10")
    ap.add_argument("--train", type=int, default=64)
    ap.add_argument("--test", type=int, default=32)
    ap.add_argument("--engine", default="local")
    args = ap.parse_args()
    base = load_recipe(str(RECIPE)).with_overrides(epochs=1)
    base = dataclasses.replace(base, data={**base.data, "max_train": args.train, "max_test": args.test})
    samples = args.train + args.test
    rows = []
    for trunc in args.truncation.split(","):
        k = 0 if trunc == "all" else int(trunc)
        for pes in (int(p) for p in args.pes.split(",")):
            recipe = base.with_overrides(pes=pes)
            recipe = dataclasses.replace(recipe, learning=dataclasses.replace(recipe.learning, truncation=k))
            results = [run(recipe, engine=args.engine) for _ in range(args.repeats)]
            row = {"truncation": trunc, **split_row(results[0], args.engine, samples,
                                                    [x["wall_seconds"] for x in results])}
            row["fits_128k"] = row["sram_max_pe_bytes"] <= PE_SRAM
            rows.append(row)
            print(f"K={trunc} {row['pes']} PEs: {row['chip_ticks_per_sample']} ticks/sample, largest PE "
                  f"{row['sram_max_pe_bytes']:,} B, {row['packets_per_sample']:,.0f} packets/sample, "
                  f"{row['ms_per_sample']:.1f} ms/sample", file=sys.stderr)
    same = all(len({r["state_digest"] for r in rows if r["truncation"] == t}) == 1
               for t in args.truncation.split(","))
    out = {"benchmark": "bptt_scaling", "date": time.strftime("%Y-%m-%d"), "recipe": "tlbptt_kws",
           "train_samples": args.train, "test_samples": args.test, "batch": base.schedule.batch, "rows": rows,
           "digests_identical_per_truncation": same}
    md = [f"BPTT on the keyword network (80 -> 120 ALIF -> 12), one epoch over {args.train} bundled clips + "
          f"{args.test} test clips, batch {base.schedule.batch}, engine {args.engine}, {out['date']}. "
          "Command: `python benchmarks/bptt_scaling.py`. PEs counts the readout's own PE when split.", "",
          "| truncation | PEs | chip ticks / sample | largest PE SRAM B | fits 128 KB | total SRAM B | "
          "packets / sample | MACs / sample | MACs / sample, busiest PE | ms / sample (wall) | digest |",
          "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        md.append(f"| {r['truncation']} | {r['pes']} | {r['chip_ticks_per_sample']:,} | {r['sram_max_pe_bytes']:,} | "
                  f"{'yes' if r['fits_128k'] else 'no'} | {r['total_bytes']:,} | {r['packets_per_sample']:,.0f} | "
                  f"{r['macs_per_sample']:,.0f} | {r['busiest_pe_macs_per_sample']:,.0f} | {r['ms_per_sample']:.1f} | "
                  f"`{r['state_digest'][:12]}` |")
    md.append(f"\nDigests identical on every split, per truncation: {same}.")
    write_results(args.out, "bptt_scaling", out, md)


if __name__ == "__main__":
    main()
