"""A full SpiNNaker 2 chip on the ray engine: 152 PE actors (151 hidden slices and the readout), the router and
the host, one process each, started and run on this machine. Start-up time, memory per actor process, and the
run's digest against the local engine.

    python benchmarks/full_chip.py [--pes 151] [--per-pe 2] [--transport channels] [--pes-per-process K]
                                   [--chips N]

Writes full_chip.json and full_chip.md (full_chip_ppp4.* with --pes-per-process 4: the PEs four to a
process, as SpiNNaker 2's quad-PEs; full_chip_2chips* etc. with --chips 2 and --pes 303: two full chips, a
router actor each). The network is the smoke recipe's with its hidden layer grown to
pes x per_pe ALIF neurons, per_pe on each PE, on a short stretch of its task (one training batch, one test
batch). Memory per process, read from /proc once every actor is up: RSS (resident, counting shared pages in
full), USS (private to the process: what one more actor costs) and PSS (shared pages split among their users:
the processes' PSS add up to what they take together); and MemAvailable before Ray starts against while the
actors are up, which includes Ray's own daemons.
"""

from __future__ import annotations

import dataclasses
import os
import statistics
import sys
import time

from _results import arguments, mem_available, process_memory, write_results

from s2emu.build import build
from s2emu.engines import run_engine
from s2emu.engines.ray_engine import run_ray, start_ray
from s2emu.recipe import load_recipe
from s2emu.runner import assemble_spikes, assemble_weights, state_digest

MIB = 1024 * 1024


def chip_recipe(pes: int, per_pe: int, chips: int = 1):
    r = load_recipe("smoke")
    pops = tuple(dataclasses.replace(p, size=pes * per_pe) if p.name == "hidden" else p
                 for p in r.network.populations)
    r = dataclasses.replace(r, network=dataclasses.replace(r.network, populations=pops),
                            data={**r.data, "train_per_class": 2, "test_per_class": 2})
    return r.with_overrides(pes=pes, epochs=1, batch=8, chips=chips)


def main() -> None:
    ap = arguments(__doc__)
    ap.add_argument("--pes", type=int, default=151, help="hidden PEs (one more holds the readout)")
    ap.add_argument("--per-pe", type=int, default=2, help="hidden neurons per PE")
    ap.add_argument("--transport", default="channels")
    ap.add_argument("--pes-per-process", type=int, default=1)
    ap.add_argument("--chips", type=int, default=1)
    args = ap.parse_args()
    recipe = chip_recipe(args.pes, args.per_pe, args.chips)
    b = build(recipe)
    local = run_engine("local", b)
    digest_local = state_digest(assemble_weights(b, local), assemble_spikes(b, local))
    avail_before = mem_available()
    t0 = time.perf_counter()
    started = start_ray()
    t_ray = time.perf_counter() - t0
    seen = {}

    def on_ready(pids):
        seen["avail"] = mem_available()
        seen["pes"] = [process_memory(p) for p in sorted(set(pids["pes"]))]  # PE processes
        seen["host"] = process_memory(pids["host"])
        seen["router"] = process_memory(pids["router"])  # chip 0's
        print(f"{len(pids['pes'])} PE actors up", file=sys.stderr)

    try:
        raw = run_ray(b, transport=args.transport, on_ready=on_ready, pes_per_process=args.pes_per_process)
    finally:
        if started:
            import ray
            ray.shutdown()
    digest_ray = state_digest(assemble_weights(b, raw), assemble_spikes(b, raw))
    pe_mem = seen["pes"]
    med = {k: statistics.median(m[k] for m in pe_mem) for k in ("rss", "uss", "pss")}
    actors = [*pe_mem, seen["host"], seen["router"]]
    k = args.pes_per_process
    out = {"benchmark": "full_chip", "date": time.strftime("%Y-%m-%d"), "transport": args.transport,
           "pes": b.mapping.n_pes, "chips": len(b.mapping.tables), "pes_per_process": k,
           "processes": len(pe_mem) + 1 + len(b.mapping.tables),
           "hidden_neurons": args.pes * args.per_pe,
           "ticks": raw.ticks, "ray_init_seconds": t_ray, "start_actors_seconds": raw.phases["start_actors"],
           "run_seconds": raw.phases["run"], "ticks_per_second": raw.ticks / raw.phases["run"],
           "pe_actor_rss_median_bytes": med["rss"], "pe_actor_uss_median_bytes": med["uss"],
           "pe_actor_pss_median_bytes": med["pss"], "actors_pss_total_bytes": sum(m["pss"] for m in actors),
           "uss_per_pe_bytes": sum(m["uss"] for m in pe_mem) / b.mapping.n_pes,
           "actors_rss_total_bytes": sum(m["rss"] for m in actors),
           "mem_available_drop_bytes": avail_before - seen["avail"],
           "host_actor": seen["host"], "router_actor": seen["router"],
           "state_digest": digest_ray, "digest_matches_local": digest_ray == digest_local,
           "load_average": os.getloadavg()}
    md = [f"{'A full chip' if out['chips'] == 1 else str(out['chips']) + ' chips'} on the ray engine "
          f"({args.transport}): {out['pes']} PEs in {len(pe_mem)} actor processes ({k} per process) + "
          f"{out['chips']} router(s) + host, "
          f"{out['hidden_neurons']} hidden ALIF neurons, {out['ticks']} ticks; {out['date']}. "
          f"Command: `python benchmarks/full_chip.py" + (f" --pes {args.pes} --chips {args.chips}" if args.chips > 1
                                                          else "")
          + (f" --pes-per-process {k}" if k > 1 else "") + "`.", "",
          "| figure | value |", "|---|---|",
          f"| Ray start | {t_ray:.1f} s |",
          f"| actors up (start-up) | {out['start_actors_seconds']:.1f} s "
          f"({1000 * out['start_actors_seconds'] / out['processes']:.0f} ms per actor) |",
          f"| PE actor process memory, median RSS / PSS / USS | {med['rss'] / MIB:.1f} / {med['pss'] / MIB:.1f} / "
          f"{med['uss'] / MIB:.1f} MiB |",
          f"| private memory (USS) per PE | {out['uss_per_pe_bytes'] / MIB:.1f} MiB |",
          f"| all actors, PSS total (RSS total) | {out['actors_pss_total_bytes'] / MIB:,.0f} MiB "
          f"({out['actors_rss_total_bytes'] / MIB:,.0f} MiB) |",
          f"| MemAvailable drop with the actors up (Ray's daemons included) | "
          f"{out['mem_available_drop_bytes'] / MIB:,.0f} MiB |",
          f"| stepping | {out['ticks_per_second']:.1f} ticks/s |",
          f"| digest same as the local engine | {out['digest_matches_local']} (`{digest_ray[:12]}`) |"]
    name = "full_chip" + (f"_{args.chips}chips" if args.chips > 1 else "") + (f"_ppp{k}" if k > 1 else "")
    write_results(args.out, name, out, md)


if __name__ == "__main__":
    main()
