"""The ray engine's per-tick exchange: ticks per second on the local engine, on ray over Ray actor calls
(transport "calls") and on ray over direct channels (transport "channels", the default), side by side.

    python benchmarks/ray_transport.py [--repeats 3] [--pes 4,12,14] [--epochs 1] [--out benchmarks/results]

The smoke recipe at batch 1 (one stream, as on the chip), its hidden population split with --pes (the
readout adds one PE, the host one endpoint: --pes 12 gives 10 hidden PEs of 4 neurons, 14 gives 14 of 3).
Writes ray_transport.json and ray_transport.md. Two rates per run: `stepping` = ticks / time spent
advancing ticks (what the transport changes), `overall` = ticks / wall time including starting the actors
(what `s2emu run` reports as ticks_per_second). Medians over repeats, runs interleaved (local, calls,
channels, local, ...) so that the load of a shared machine spreads over all three; compare ratios measured
in one run rather than absolute figures across runs.
"""

from __future__ import annotations

import os
import statistics
import sys
import time

from _results import arguments, write_results

from s2emu.engines import run_engine
from s2emu.engines.ray_engine import start_ray

from s2emu.build import build
from s2emu.recipe import load_recipe
from s2emu.runner import assemble_spikes, assemble_weights, state_digest

CONFIGS = (("local", None), ("ray", "calls"), ("ray", "channels"))


def one_run(recipe, engine, transport) -> dict:
    b = build(recipe)
    raw = run_engine(engine, b, transport=transport or "channels")
    stepping = raw.phases["run"] if engine == "ray" else raw.phases["step"] + raw.phases["route"]
    return {"ticks": raw.ticks, "stepping": raw.ticks / stepping, "overall": raw.ticks / raw.wall_seconds,
            "start_actors": raw.phases.get("start_actors", 0.0),
            "digest": state_digest(assemble_weights(b, raw), assemble_spikes(b, raw))}


def main() -> None:
    ap = arguments(__doc__, repeats=3)
    ap.add_argument("--pes", default="4,12,14", help="comma-separated --pes splits of the smoke recipe")
    ap.add_argument("--epochs", type=int, default=1)
    args = ap.parse_args()
    started = start_ray()  # one Ray for every run; each run starts and kills its own actors
    load_before = os.getloadavg()
    rows = []
    for pes in (int(p) for p in args.pes.split(",")):
        recipe = load_recipe("smoke").with_overrides(pes=pes, batch=1, epochs=args.epochs)
        b = build(recipe)
        runs = {c: [] for c in CONFIGS}
        for rep in range(args.repeats):
            for c in CONFIGS:
                r = one_run(recipe, *c)
                runs[c].append(r)
                print(f"pes={pes} {c[0]}{'+' + c[1] if c[1] else ''} #{rep + 1}: {r['stepping']:.0f} ticks/s "
                      f"stepping, {r['overall']:.0f} overall, start {r['start_actors']:.1f} s",
                      file=sys.stderr, flush=True)
        for (engine, transport), rs in runs.items():
            rows.append({
                "engine": engine, "transport": transport, "pes_arg": pes,
                "pes_hidden": b.mapping.n_pes - 1, "pes_total": b.mapping.n_pes,
                "processes": b.mapping.n_pes + 2 if engine == "ray" else 1,
                "ticks": rs[0]["ticks"], "repeats": len(rs),
                "ticks_per_second_stepping": statistics.median(r["stepping"] for r in rs),
                "ticks_per_second_overall": statistics.median(r["overall"] for r in rs),
                "start_actors_seconds": statistics.median(r["start_actors"] for r in rs),
                "all_stepping": [round(r["stepping"], 1) for r in rs],
                "digests_identical": len({r["digest"] for r in rs}) == 1,
                "state_digest": rs[0]["digest"],
            })
    if started:
        import ray
        ray.shutdown()

    def row(pes, transport):
        return next(r for r in rows if r["pes_arg"] == pes and r["transport"] == transport)

    ratios = {}
    for pes in sorted({r["pes_arg"] for r in rows}):
        ch, ca = row(pes, "channels"), row(pes, "calls")
        ratios[str(pes)] = {k: ch[f"ticks_per_second_{k}"] / ca[f"ticks_per_second_{k}"]
                            for k in ("stepping", "overall")}
    out = {"benchmark": "ray_transport", "date": time.strftime("%Y-%m-%d"), "recipe": "smoke", "batch": 1,
           "epochs": args.epochs, "cpus": os.cpu_count(),
           "load_average_1_5_15": {"before": load_before, "after": os.getloadavg()}, "rows": rows, "channels_over_calls": ratios,
           "digests_identical": all(r["digests_identical"] for r in rows) and all(
               len({r["state_digest"] for r in rows if r["pes_arg"] == int(p)}) == 1 for p in ratios)}
    la = out["load_average_1_5_15"]
    md = [(f"Smoke recipe, batch 1, {args.epochs} epoch(s), median of {args.repeats}; {os.cpu_count()} cores, "
           f"load average (1/5/15 min) {'/'.join(f'{x:.1f}' for x in la['before'])} before and "
           f"{'/'.join(f'{x:.1f}' for x in la['after'])} after (the benchmark itself included)."),
          "",
          ("| --pes | PEs (hidden/total) | processes | engine | transport | ticks | ticks/s stepping | "
           "ticks/s overall | actor start s | digest |"),
          "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        md.append(f"| {r['pes_arg']} | {r['pes_hidden']}/{r['pes_total']} | {r['processes']} | {r['engine']} "
                  f"| {r['transport'] or '-'} | {r['ticks']} | {r['ticks_per_second_stepping']:.0f} "
                  f"| {r['ticks_per_second_overall']:.0f} | {r['start_actors_seconds']:.1f} "
                  f"| `{r['state_digest'][:12]}` |")
    md.append("")
    for p, q in ratios.items():
        md.append(f"Channels / calls at --pes {p}: {q['stepping']:.2f}x stepping, {q['overall']:.2f}x overall.")
    md.append(f"\nDigests identical (every engine, transport and repeat per split): {out['digests_identical']}.")
    write_results(args.out, "ray_transport", out, md)


if __name__ == "__main__":
    main()
