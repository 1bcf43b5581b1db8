"""Smoke-recipe figures: accuracy, digest agreement and ticks per second on both engines, side by side.

    python benchmarks/smoke.py [--repeats 3] [--out benchmarks/results]

Writes smoke.json and smoke.md. Medians over repeats; the machine is shared and noisy, so compare ratios
measured in one run rather than absolute figures across runs.
"""

from __future__ import annotations

import statistics
import sys
import time

from _results import arguments, write_results

from s2emu.recipe import load_recipe
from s2emu.runner import run


def main() -> None:
    ap = arguments(__doc__, repeats=3)
    args = ap.parse_args()
    recipe = load_recipe("smoke")
    rows = []
    for engine, pes, repeats in (("local", 1, args.repeats), ("local", 4, args.repeats), ("ray", 4, 1)):
        results = []
        for _ in range(repeats):
            r = run(recipe.with_overrides(pes=pes), engine=engine)
            results.append(r)
            print(f"{engine} pes={pes}: {r['ticks_per_second']:.0f} ticks/s, accuracy {r['accuracy']:.3f}",
                  file=sys.stderr)
        tps = statistics.median(r["ticks_per_second"] for r in results)
        rows.append({"engine": engine, "pes_hidden": pes, "pes_total": results[0]["pes"], "repeats": repeats,
                     "ticks": results[0]["ticks"], "ticks_per_second": tps,
                     "accuracy": results[0]["accuracy"], "balanced_accuracy": results[0]["balanced_accuracy"],
                     "chance": results[0]["chance"], "state_digest": results[0]["state_digest"],
                     "total_bytes": results[0]["total_bytes"], "phases": results[0]["phases"]})
    out = {"benchmark": "smoke", "date": time.strftime("%Y-%m-%d"), "rows": rows,
           "digests_identical": len({r["state_digest"] for r in rows}) == 1,
           "ray_over_local_ratio": rows[2]["ticks_per_second"] / rows[1]["ticks_per_second"]}
    md = ["| engine | PEs (hidden/total) | ticks | ticks/s (median) | accuracy | balanced | chance | SRAM B | digest |",
          "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        md.append(f"| {r['engine']} | {r['pes_hidden']}/{r['pes_total']} | {r['ticks']} | {r['ticks_per_second']:.0f} "
                  f"| {r['accuracy']:.3f} | {r['balanced_accuracy']:.3f} | {r['chance']:.2f} | {r['total_bytes']:,} "
                  f"| `{r['state_digest'][:12]}` |")
    md.append(f"\nDigests identical: {out['digests_identical']}. Ray / local (4 PEs) tick-rate ratio: "
              f"{out['ray_over_local_ratio']:.3f}.")
    write_results(args.out, "smoke", out, md)


if __name__ == "__main__":
    main()
