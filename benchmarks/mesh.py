"""The keyword network on one chip and spread over a mesh of chips: same bits, and what the links cost.

    python benchmarks/mesh.py [--train 16] [--test 16] [--repeats 3] [--engines local,ray]

recipes/eprop_kws.toml (12 hidden PEs + the readout PE + the host) trained for one epoch on a seeded subset,
placed on one 152-PE chip, then with 4, 2 and 1 PEs per chip on machines of 4, 8 and 16 chips (2x2, 4x2 and
4x4 meshes, the 4x4 as a torus, --wrap, and the 4x4 with one busy wire failing at tick 0, --link-fails, which
the routers detour around, or down from tick 1000 until 2000 only; the ray engine runs one router actor per
chip in use). Per row: chips, mesh, hops per tick, router entries over all chips, packets sent on links per tick, default-routed and emergency-routed
packets, wall ms per tick (median of the repeats, engines and layouts interleaved) and the state digest,
which must not change. Writes mesh.json and mesh.md.
"""

from __future__ import annotations

import dataclasses
import statistics
import sys
import time
from pathlib import Path

from _results import arguments, write_results

from s2emu.engines.ray_engine import start_ray
from s2emu.recipe import load_recipe
from s2emu.runner import run

ROOT = Path(__file__).resolve().parents[1]
# (chips, PEs per chip, wrap-around, failing wires): meshes 1x1, 2x2, 4x2, 4x4, the 4x4 torus, and the 4x4 with
# chip 5's E wire failing from the start (inside the mesh: both ends have their detour), and down from tick 1000
# until 2000 only
LAYOUTS = ((1, 152, False, ()), (4, 4, False, ()), (8, 2, False, ()), (16, 1, False, ()), (16, 1, True, ()),
           (16, 1, False, ("5:E@0",)), (16, 1, False, ("5:E@1000-2000",)))


def main() -> None:
    ap = arguments(__doc__, repeats=3)
    ap.add_argument("--train", type=int, default=16)
    ap.add_argument("--test", type=int, default=16)
    ap.add_argument("--engines", default="local,ray")
    args = ap.parse_args()
    base = load_recipe(str(ROOT / "recipes" / "eprop_kws.toml")).with_overrides(epochs=1, batch=1)
    base = dataclasses.replace(base, data={**base.data, "max_train": args.train, "max_test": args.test})
    engines = args.engines.split(",")
    started = start_ray() if "ray" in engines else False
    walls, last = {}, {}
    try:
        for rep in range(args.repeats):
            for engine in engines:
                for layout in LAYOUTS:
                    chips, per_chip, wrap, failing = layout
                    r = run(base.with_overrides(chips=chips, pes_per_chip=per_chip, wrap=wrap,
                                                failing_links=failing or None), engine=engine)
                    walls.setdefault((engine, layout), []).append(r["wall_seconds"] / r["ticks"])
                    last[(engine, layout)] = r
                    print(f"{engine} {_name(r, wrap, failing)} #{rep + 1}: "
                          f"{1000 * walls[(engine, layout)][-1]:.2f} ms/tick", file=sys.stderr)
    finally:
        if started:
            import ray

            ray.shutdown()
    rows = []
    for (engine, (chips, per_chip, wrap, failing)), ws in walls.items():
        r = last[(engine, (chips, per_chip, wrap, failing))]
        ro = r["router"]
        rows.append({"engine": engine, "chips": r["chips"], "pes_per_chip": per_chip, "layout": _name(r, wrap, failing),
                     "mesh": r["mesh"], "wrap": wrap, "failing_links": list(failing), "hops": r["hops"],
                     "router_entries": r["router_entries"],
                     "link_packets_per_tick": sum(ro["link_sent"].values()) / r["ticks"],
                     "default_routed_per_tick": ro["default_routed"] / r["ticks"],
                     "emergency_routed_per_tick": ro["emergency_routed"] / r["ticks"],
                     "ms_per_tick": 1000 * statistics.median(ws), "repeats": len(ws),
                     "state_digest": r["state_digest"], "accuracy": r["accuracy"]})
    digests = {row["state_digest"] for row in rows}
    out = {"recipe": "eprop_kws", "train": args.train, "test": args.test, "rows": rows,
           "digests_identical": len(digests) == 1, "date": time.strftime("%Y-%m-%d")}
    md = [f"# The keyword network over a mesh of chips ({out['date']})", "",
          f"`python benchmarks/mesh.py --train {args.train} --test {args.test} --repeats {args.repeats}`; "
          f"one epoch, batch 1; medians of {args.repeats}. Same digest in every row: {out['digests_identical']}.", "",
          "| engine | mesh | chips in use | PEs/chip | hops | router entries | link packets/tick | "
          "default-routed/tick | emergency-routed/tick | ms/tick | vs 1 chip |",
          "|---|---|---|---|---|---|---|---|---|---|---|"]
    for row in rows:
        one = next(x for x in rows if x["engine"] == row["engine"] and x["chips"] == 1)
        md.append(f"| {row['engine']} | {row['layout']} | {row['chips']} | {row['pes_per_chip']} | "
                  f"{row['hops']} | {row['router_entries']} | "
                  f"{row['link_packets_per_tick']:.1f} | {row['default_routed_per_tick']:.1f} | "
                  f"{row['emergency_routed_per_tick']:.1f} | "
                  f"{row['ms_per_tick']:.2f} | {row['ms_per_tick'] / one['ms_per_tick']:.2f}x |")
    write_results(args.out, "mesh", out, md)


def _name(result: dict, wrap: bool, failing: tuple) -> str:
    """A layout as the table names it: 4x4, 4x4 torus, 4x4, 5:E fails, 4x4, 5:E down 1000-2000."""
    mesh = f"{result['mesh'][0]}x{result['mesh'][1]}{' torus' if wrap else ''}"
    return mesh + "".join(f", {wire} down {when}" if "-" in when else f", {wire} fails"
                          for wire, _, when in (f.partition("@") for f in failing))


if __name__ == "__main__":
    main()
