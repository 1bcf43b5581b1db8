"""A whole SpiNNaker 2 board: 48 chips on an 8 x 6 mesh, 7,296 PEs, every one of them in use, on the local engine
and on the ray engine (a router actor per chip, the PEs of a chip in one process), the same state_digest on both.

    python benchmarks/board.py [--chips 48] [--engines local,ray] [--pes-per-process 152] [--name board]
    python benchmarks/board.py --write-recipe      # (re)writes recipes/board48.toml from recipes/board_chip.toml
    python benchmarks/board.py --costs [--chips 48]  # what a PE object and a router cost in memory (one process)

The network is recipes/board_chip.toml (16 analog inputs -> 302 recurrent ALIF neurons on 151 PEs -> 4 readouts,
a full chip) once per chip (s2emu/scale.py tile): the host's inputs go to every chip, each chip's neurons also
project to the neurons of its six neighbouring chips, and the readout, on the last chip's 152nd PE, reads the last
chip's; inference, 12 test samples, 265 ticks. With --chips 48 that is recipes/board48.toml exactly.

Each engine runs in a child process of its own, so its memory is its own: per engine, the start-up (build, and on
ray the actors up), ticks per second, memory (local: the process's peak RSS and PSS; ray: RSS, PSS and USS of every
actor process, read from /proc once all are up, and of the driver, which holds the build), packets per tick (all,
and those crossing a wire between two chips) and the chip model's time and energy per tick (s2emu/chipmodel.py).
Writes board.json and board.md (with --chips N other than 48: board_<N>chips.*).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

from _results import arguments, mem_available, process_memory, write_results

ROOT = Path(__file__).resolve().parents[1]
MIB = 1024 * 1024
BOARD = ROOT / "recipes" / "board48.toml"


# ------------------------------------------------------------------------------------------- the network

def board_recipe(chips: int):
    """recipes/board_chip.toml once per chip of a `chips`-chip board (recipes/board48.toml for 48)."""
    from s2emu.recipe import load_recipe
    from s2emu.scale import tile

    return tile(load_recipe(str(ROOT / "recipes" / "board_chip.toml")), chips, name=f"board{chips}")


HEADER = """A whole SpiNNaker 2 board: 48 chips on an 8 x 6 mesh (one board, no wrap-around), 7,296 PEs, all in use.
Written by `python benchmarks/board.py --write-recipe` from recipes/board_chip.toml (s2emu/scale.py tile): do not
edit by hand. Chip c < 47 holds hidden_cC (304 ALIF neurons on its 152 PEs), chip 47 holds hidden (302 neurons on
151 PEs) and the readout; every chip's neurons are fed by the host's 16 inputs and project to the neurons of their
own chip and of its (up to six) neighbours. Inference: 12 test samples, 265 ticks.
Run: s2emu run recipes/board48.toml (local engine), or add --engine ray --pes-per-process 152 (the PEs of a chip in
one process, a router actor per chip). benchmarks/board.py measures both."""


def write_recipe(chips: int = 48, path: Path = BOARD) -> None:
    """recipes/board48.toml; or, with another chip count, the board of that many chips to `path` (to run it on
    code without s2emu/scale.py's tile, as the before-and-after figures did)."""
    import dataclasses

    from s2emu.recipe import load_recipe
    from s2emu.snn import Network

    r = board_recipe(chips)
    if chips == 48:
        r = dataclasses.replace(r, description="a whole board: recipes/board_chip.toml on each of 48 chips (8 x 6), "
                                "joined chip to chip; 7,296 PEs, inference")
    Network.from_recipe(r).to_recipe(path, HEADER if chips == 48 else f"{chips} chips of recipes/board_chip.toml "
                                     "(benchmarks/board.py --write-recipe)")
    back = load_recipe(str(path))
    assert back.network == r.network and back.record_spikes == r.record_spikes and back.machine == r.machine
    print(f"wrote {path}: {len(back.network.populations)} populations, {len(back.network.projections)} projections")


# ------------------------------------------------------------------------------------------- memory

class Peak:
    """The largest RSS and PSS this process reaches while it runs, sampled every `every` seconds."""

    def __init__(self, every: float = 0.5):
        self.every, self.peak, self._stop = every, {"rss": 0, "pss": 0, "uss": 0}, threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.sample()

    def sample(self):
        m = process_memory(os.getpid())
        for k in self.peak:
            self.peak[k] = max(self.peak[k], m[k])

    def _watch(self):
        while not self._stop.wait(self.every):
            self.sample()


# ------------------------------------------------------------------------------------------- one engine

def figures(b, raw, engine: str) -> dict:
    """What both engines report: digest, ticks, packets, the chip model."""
    from s2emu.runner import assemble_spikes, assemble_weights, run_chip_model, state_digest

    weights, spikes = assemble_weights(b, raw), assemble_spikes(b, raw)
    pe_counters, cm = run_chip_model(b, raw)
    samples = int((b.plan.idx >= 0).sum())
    rc = raw.router_counters
    neurons = sum(p.size for p in b.recipe.network.populations if p.is_neuron)
    n_spikes = sum(len(s) for s in spikes.values())
    return {"engine": engine, "state_digest": state_digest(weights, spikes), "ticks": raw.ticks,
            "samples": samples, "spikes": n_spikes, "spikes_per_neuron_per_tick": n_spikes / neurons / raw.ticks,
            "packets_sent_per_tick": sum(c["packets_out"] for c in pe_counters) / raw.ticks,
            "packets_routed_per_tick": rc["routed"] / raw.ticks,
            "packets_delivered_per_tick": sum(rc["delivered"]) / raw.ticks,
            "link_packets_per_tick": sum(rc["link_sent"].values()) / raw.ticks,
            "dropped": rc["dropped"], "accuracy": raw.host_results["accuracy"],
            "chip_seconds_per_tick_peak": cm["seconds_per_tick_peak"],
            "chip_seconds_per_tick_mean": cm["seconds_per_tick_mean"], "chip_real_time": cm["real_time"],
            "chip_energy_joules": cm["energy_joules"], "chip_energy_per_tick_joules": cm["energy_joules"] / raw.ticks,
            "chip_dynamic_joules": cm["dynamic_joules"], "chip_static_joules": cm["static_joules"],
            "chip_energy_per_sample_joules": cm["energy_per_sample_joules"], "bottleneck_pe": cm["bottleneck_pe"]}


def load(chips: int, recipe: str | None):
    """The board of `chips` chips, or the recipe file given instead (--recipe)."""
    if recipe is None:
        return board_recipe(chips)
    from s2emu.recipe import load_recipe

    return load_recipe(recipe)


def run_one(engine: str, chips: int, pes_per_process: int, recipe: str | None = None) -> dict:
    """One engine's run of the board, in this process; the figures as a dict."""
    base = process_memory(os.getpid())  # after the imports above: Python, numpy
    t0 = time.perf_counter()
    from s2emu.build import build

    imports = process_memory(os.getpid())
    r = load(chips, recipe)
    t1 = time.perf_counter()
    b = build(r)
    t_build = time.perf_counter() - t1
    built = process_memory(os.getpid())
    out = {"pes": b.mapping.n_pes, "chips": len(b.mapping.tables), "mesh": [r.machine.geometry.width,
           r.machine.geometry.height], "hops": b.mapping.hops, "router_entries": b.mapping.router_entries,
           "sram_bytes": b.total_bytes, "sram_max_pe_bytes": max(m["total"] for m in b.memory),
           "neurons": sum(p.size for p in r.network.populations if p.is_neuron),
           "synapses": r.network.n_weights, "projections": len(r.network.projections),
           "build_seconds": t_build, "imports_seconds": t1 - t0,
           "driver_after_imports": imports, "driver_after_build": built, "driver_before_imports": base}
    if engine == "local":
        from s2emu.engines import run_engine

        with Peak() as peak:
            raw = run_engine("local", b)
        out.update(run_seconds=raw.wall_seconds, start_seconds=t_build, peak=peak.peak,
                   ticks_per_second=raw.ticks / raw.wall_seconds, phases=raw.phases,
                   memory_total_pss_bytes=peak.peak["pss"], memory_total_rss_bytes=peak.peak["rss"],
                   memory_per_pe_bytes=(peak.peak["pss"] - imports["pss"]) / b.mapping.n_pes)
    else:
        import ray

        from s2emu.engines.ray_engine import run_ray, start_ray

        avail = mem_available()
        t2 = time.perf_counter()
        started = start_ray(num_cpus=2)
        t_ray = time.perf_counter() - t2
        seen = {}

        def on_ready(pids):
            seen["avail"] = mem_available()
            seen["pes"] = [process_memory(p) for p in sorted(set(pids["pes"]))]
            seen["routers"] = [process_memory(p) for p in pids["routers"]]
            seen["host"] = process_memory(pids["host"])
            seen["driver"] = process_memory(os.getpid())
            print(f"{len(seen['pes'])} PE processes and {len(seen['routers'])} routers up", file=sys.stderr)

        try:
            raw = run_ray(b, on_ready=on_ready, pes_per_process=pes_per_process)
        finally:
            if started:
                ray.shutdown()
        actors = [*seen["pes"], *seen["routers"], seen["host"]]
        med = {f"{who}_{k}": statistics.median(m[k] for m in seen[who]) for who in ("pes", "routers")
               for k in ("rss", "pss", "uss")}
        out.update(pes_per_process=pes_per_process, pe_processes=len(seen["pes"]), router_processes=len(seen["routers"]),
                   processes=len(actors), ray_init_seconds=t_ray, start_actors_seconds=raw.phases["start_actors"],
                   start_seconds=t_build + t_ray + raw.phases["start_actors"], run_seconds=raw.phases["run"],
                   ticks_per_second=raw.ticks / raw.phases["run"], median=med, host=seen["host"],
                   driver=seen["driver"], actors_pss_bytes=sum(m["pss"] for m in actors),
                   actors_rss_bytes=sum(m["rss"] for m in actors), actors_uss_bytes=sum(m["uss"] for m in actors),
                   pe_processes_pss_bytes=sum(m["pss"] for m in seen["pes"]),
                   routers_pss_bytes=sum(m["pss"] for m in seen["routers"]),
                   memory_total_pss_bytes=sum(m["pss"] for m in actors) + seen["driver"]["pss"],
                   memory_total_rss_bytes=sum(m["rss"] for m in actors) + seen["driver"]["rss"],
                   memory_per_pe_bytes=sum(m["pss"] for m in seen["pes"]) / b.mapping.n_pes,
                   mem_available_drop_bytes=avail - seen["avail"])
    out.update(figures(b, raw, engine))
    return out


# ------------------------------------------------------------------------------------------- costs

def costs(chips: int, recipe: str | None = None) -> dict:
    """What is not the PEs' own state, in one process (local engine): bytes per PE object beyond the SRAM its
    ledger holds, and per chip router, by tracemalloc (numpy's arrays included)."""
    import gc
    import tracemalloc

    from s2emu.build import build
    from s2emu.cores.group import make_pes
    from s2emu.router.mesh import Mesh

    b = build(load(chips, recipe))
    gc.collect()
    tracemalloc.start()
    a = tracemalloc.get_traced_memory()[0]
    pes, groups = make_pes(b.pe_configs)
    gc.collect()
    made = tracemalloc.get_traced_memory()[0] - a
    sram = b.total_bytes
    a = tracemalloc.get_traced_memory()[0]
    mesh = Mesh(b.mapping, 1)
    gc.collect()
    routers = tracemalloc.get_traced_memory()[0] - a
    tracemalloc.stop()
    n = len(pes)
    return {"chips": chips, "pes": n, "groups": len(groups), "pe_objects_bytes": made, "sram_bytes": sram,
            "pe_object_bytes_per_pe": made / n, "beyond_sram_bytes_per_pe": (made - sram) / n,
            "router_bytes_per_chip": routers / len(mesh.routers),
            "config_bytes_per_pe": _config_bytes(b.pe_configs) / n}


class _Probe:
    """A Ray actor that loads what a process of the emulation loads, step by step, and reports its memory."""

    def memory(self):
        return process_memory(os.getpid())

    def load_router(self):
        from s2emu.engines.ray_engine import router_actor  # noqa: F401 - what a router process imports
        from s2emu.router.mesh import Mesh  # noqa: F401
        return self.memory()

    def load_pe(self):
        from s2emu.cores.group import make_pes  # noqa: F401 - what a PE process imports
        from s2emu.engines.ray_engine import endpoint  # noqa: F401
        return self.memory()

    def load_numba(self):
        from s2emu.cores.kernels import warm_kernels  # what a process of learning PEs loads besides

        warm_kernels()
        return self.memory()

    def make_pes(self, configs):
        from s2emu.cores.group import make_pes

        self.pes = make_pes(configs)
        import gc

        gc.collect()
        return self.memory()


def process_costs(chips: int, recipe: str | None = None) -> dict:
    """What one process of the ray engine costs, in a private Ray: a bare actor process; after the router's imports;
    after the PEs' (numpy, numba and its compiled kernels); then holding chip 0's PEs (USS: private to it)."""
    import ray

    from s2emu.build import build
    from s2emu.engines.ray_engine import start_ray

    b = build(load(chips, recipe))
    chip0 = [c for c, ch in zip(b.pe_configs, b.mapping.endpoint_chips) if ch == 0]
    started = start_ray(num_cpus=2)
    try:
        Probe = ray.remote(num_cpus=0)(_Probe)
        a, r = Probe.remote(), Probe.remote()
        bare = ray.get(a.memory.remote())
        router = ray.get(r.load_router.remote())
        pe = ray.get(a.load_pe.remote())
        full = ray.get(a.make_pes.remote(chip0))
        numba = ray.get(a.load_numba.remote())
    finally:
        if started:
            ray.shutdown()
    return {"bare_actor": bare, "router_imports": router, "pe_imports": pe, "with_chip_pes": full,
            "with_numba": numba, "chip_pes": len(chip0),
            "sram_bytes_chip": sum(m["total"] for m, ch in zip(b.memory, b.mapping.endpoint_chips) if ch == 0),
            "uss_per_pe_bytes": (full["uss"] - pe["uss"]) / len(chip0)}


def _config_bytes(configs) -> int:
    import numpy as np

    seen, total = set(), 0

    def walk(x):
        nonlocal total
        if isinstance(x, np.ndarray):
            if id(x) not in seen:
                seen.add(id(x))
                total += x.nbytes
        elif isinstance(x, dict):
            for v in x.values():
                walk(v)
        elif isinstance(x, (list, tuple)):
            for v in x:
                walk(v)

    walk(configs)
    return total


# ------------------------------------------------------------------------------------------- main

def _child(args, engine: str) -> dict:
    cmd = [sys.executable, __file__, "--one", engine, "--chips", str(args.chips),
           "--pes-per-process", str(args.pes_per_process)] + (["--recipe", args.recipe] if args.recipe else [])
    p = subprocess.run(cmd, stdout=subprocess.PIPE, text=True)
    if p.returncode:
        raise SystemExit(f"{engine}: the run failed ({p.returncode})")
    return json.loads(p.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = arguments(__doc__)
    ap.add_argument("--chips", type=int, default=48)
    ap.add_argument("--engines", default="local,ray")
    ap.add_argument("--pes-per-process", type=int, default=152)
    ap.add_argument("--write-recipe", nargs="?", const=str(BOARD), metavar="PATH",
                    help="write the board of --chips chips as a recipe (default: recipes/board48.toml)")
    ap.add_argument("--recipe", help="run this recipe file instead of the board of --chips chips")
    ap.add_argument("--costs", action="store_true", help="measure what a PE object, a router and a process cost")
    ap.add_argument("--before", metavar="JSON", help="with --costs: the figures of an earlier code (--costs's "
                    "output there) to set beside these; writes board_costs.json and .md")
    ap.add_argument("--before-runs", metavar="JSON,JSON", help="with --before: --one local and --one ray outputs of "
                    "the earlier code, set beside board.json's runs")
    ap.add_argument("--one", help=argparse.SUPPRESS)  # run one engine in this process (main's children)
    ap.add_argument("--name", default="board")
    ap.add_argument("--rewrite", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.write_recipe:
        return write_recipe(args.chips, Path(args.write_recipe))
    if args.one:
        print(json.dumps(run_one(args.one, args.chips, args.pes_per_process, args.recipe)))
        return
    if args.costs:
        now = {**costs(args.chips, args.recipe), "process": process_costs(args.chips, args.recipe)}
        if args.before is None:
            print(json.dumps(now))  # (what --before reads)
        else:
            runs = {}
            for f in (args.before_runs or "").split(","):
                if f:
                    d = json.loads(Path(f).read_text().strip().splitlines()[-1])
                    runs[d["engine"]] = d
            write_costs(args, json.loads(Path(args.before).read_text().strip().splitlines()[-1]), now, runs)
        return
    if args.rewrite:  # the report again from board.json's runs (after a change to the report alone)
        runs = json.loads((Path(args.out) / f"{args.name}.json").read_text())["runs"]
    else:
        runs = {e: _child(args, e) for e in args.engines.split(",")}
    write_report(args, runs)


def write_costs(args, before: dict, after: dict, before_runs: dict) -> None:
    """board_costs.{json,md}: the memory costs of the --before code and of this one, side by side; and the whole
    board's runs before (--before-runs) and now (board.json)."""
    now_runs = json.loads((Path(args.out) / "board.json").read_text())["runs"] if before_runs else {}
    out = {"benchmark": "board_costs", "date": time.strftime("%Y-%m-%d"), "chips": after["chips"],
           "pes": after["pes"], "before": before, "after": after, "runs_before": before_runs,
           "runs_after": {e: now_runs[e] for e in before_runs if e in now_runs},
           "command": "python benchmarks/board.py --costs --before BEFORE.json (BEFORE.json: the same with --costs "
                      "alone on the code before the cuts)"}
    kib = 1024

    def pair(f):
        return f"{f(before)} | {f(after)}"

    rows = [
        ("a PE object in one process (local engine), bytes per PE",
         pair(lambda d: f"{d['pe_object_bytes_per_pe'] / kib:.1f} KiB")),
        ("  of which its SRAM state (the ledger's arrays)", pair(lambda d: f"{d['sram_bytes'] / d['pes'] / kib:.1f} KiB")),
        ("  of which the rest (key maps, decoding tables, Python objects)",
         pair(lambda d: f"{d['beyond_sram_bytes_per_pe'] / kib:.1f} KiB")),
        ("a PE's configuration as built (numpy arrays)", pair(lambda d: f"{d['config_bytes_per_pe'] / kib:.1f} KiB")),
        (f"all {after['pes']:,} PE objects", pair(lambda d: f"{d['pe_objects_bytes'] / MIB:,.0f} MiB")),
        ("a chip's router object", pair(lambda d: f"{d['router_bytes_per_chip'] / kib:.0f} KiB")),
        ("a Ray actor process, bare (USS)", pair(lambda d: f"{d['process']['bare_actor']['uss'] / MIB:.1f} MiB")),
        ("a router process's imports (USS)", pair(lambda d: f"{d['process']['router_imports']['uss'] / MIB:.1f} MiB")),
        ("a PE process with chip 0's 152 PEs (USS)",
         pair(lambda d: f"{d['process']['with_chip_pes']['uss'] / MIB:.1f} MiB")),
        ("  per PE, beyond the process's imports (USS; before: numba's load included)",
         pair(lambda d: f"{(d['process']['with_chip_pes']['uss'] - d['process']['pe_imports']['uss']) / 152 / kib:.1f} KiB")),
    ]
    md = [f"What is not the PEs' own state: the board of {after['chips']} chips ({after['pes']:,} PEs), before and after "
          f"the cuts; {out['date']}. Command: `python benchmarks/board.py --costs --before BEFORE.json`, BEFORE.json "
          f"being `python benchmarks/board.py --costs --recipe recipes/board48.toml` on the code before them. Bytes "
          f"by tracemalloc (numpy's included) in one process; process memory from /proc (USS: private to it) in "
          f"a private Ray.", "", "| cost | before | after |", "|---|---|---|"]
    md += [f"| {a} | {b} |" for a, b in rows]
    md += ["", "Before, every PE process loaded numba (about 34 MiB of it private); after, a process of PEs that only "
           "infer does not (cores/kernels.py), and the per-PE figures are the board's cuts: one key map and its "
           "decoding layout per population instead of per PE (cores/pe.py KeyMapShare), the group's joint "
           "decoding table made only when its members get different packets (cores/group.py), and no PE "
           "holding its configuration's copy of its weights (cores/pe.py _release_config)."]
    if out["runs_after"]:
        md += ["", "The whole board (`python benchmarks/board.py`; before: the same runs on the code before the cuts):",
               "", "| figure | " + " | ".join(f"{e}, before | {e}, after" for e in out["runs_after"]) + " |",
               "|---|" + "---|---|" * len(out["runs_after"])]

        def row(name, f):
            md.append(f"| {name} | " + " | ".join(f"{f(before_runs[e])} | {f(r)}" for e, r in out["runs_after"].items())
                      + " |")

        row("build (start-up on local)", lambda r: f"{r['build_seconds']:.0f} s")
        row("start-up in all", lambda r: f"{r['start_seconds']:.0f} s")
        row("stepping", lambda r: f"{r['ticks_per_second']:.2f} ticks/s")
        row("memory in all, PSS", lambda r: f"{r['memory_total_pss_bytes'] / MIB:,.0f} MiB")
        row("a PE process (152 PEs), median USS", lambda r: f"{r['median']['pes_uss'] / MIB:.0f} MiB"
            if "median" in r else "")
        row("state digest", lambda r: f"`{r['state_digest'][:12]}`")
    write_results(args.out, "board_costs", out, md)


def write_report(args, runs: dict) -> None:
    first = next(iter(runs.values()))
    digests = {e: r["state_digest"] for e, r in runs.items()}
    out = {"benchmark": "board", "date": time.strftime("%Y-%m-%d"), "chips": first["chips"], "mesh": first["mesh"],
           "pes": first["pes"], "neurons": first["neurons"], "synapses": first["synapses"], "ticks": first["ticks"],
           "digests_identical": len(set(digests.values())) == 1, "runs": runs, "load_average": os.getloadavg()}
    cmd = "python benchmarks/board.py" + (f" --chips {args.chips}" if args.chips != 48 else "") \
        + (f" --engines {args.engines}" if args.engines != "local,ray" else "") \
        + (f" --pes-per-process {args.pes_per_process}" if args.pes_per_process != 152 else "")
    m = first["mesh"]
    md = [f"A {'whole board' if first['chips'] == 48 else str(first['chips']) + '-chip board'}: {first['chips']} chips "
          f"({m[0]} x {m[1]} mesh, {first['hops']} hop rounds a tick), {first['pes']:,} PEs, {first['neurons']:,} ALIF "
          f"neurons, {first['synapses']:,} synapses, {first['ticks']} ticks (inference); {out['date']}. "
          f"Command: `{cmd}`.", "",
          "| figure | " + " | ".join(runs) + " |", "|---|" + "---|" * len(runs)]

    def row(name, f):
        md.append(f"| {name} | " + " | ".join(f(r) for r in runs.values()) + " |")

    row("processes", lambda r: "1" if r["engine"] == "local" else
        f"{r['pe_processes']} PE ({r['pes_per_process']} PEs each) + {r['router_processes']} router + host")
    row("start-up (build; ray: + Ray + actors up)", lambda r: f"{r['start_seconds']:.0f} s" + (
        f" ({r['build_seconds']:.0f} + {r['ray_init_seconds']:.0f} + {r['start_actors_seconds']:.0f})"
        if r["engine"] == "ray" else ""))
    row("stepping", lambda r: f"{r['ticks_per_second']:.2f} ticks/s ({r['run_seconds']:.0f} s)")
    row("memory in all, PSS (RSS)", lambda r: f"{r['memory_total_pss_bytes'] / MIB:,.0f} MiB "
        f"({r['memory_total_rss_bytes'] / MIB:,.0f} MiB)")
    row("memory in all per PE", lambda r: f"{r['memory_total_pss_bytes'] / r['pes'] / 1024:.0f} KiB")
    row("the PEs' processes (ray) / PEs", lambda r: "" if r["engine"] == "local" else
        f"{r['pe_processes_pss_bytes'] / r['pes'] / 1024:.0f} KiB PSS")
    row("a PE process, median RSS / PSS / USS", lambda r: "" if r["engine"] == "local" else
        f"{r['median']['pes_rss'] / MIB:.0f} / {r['median']['pes_pss'] / MIB:.0f} / {r['median']['pes_uss'] / MIB:.0f} MiB")
    row("a router process, median RSS / PSS / USS", lambda r: "" if r["engine"] == "local" else
        f"{r['median']['routers_rss'] / MIB:.0f} / {r['median']['routers_pss'] / MIB:.0f} / "
        f"{r['median']['routers_uss'] / MIB:.0f} MiB")
    row("driver (holds the build), PSS", lambda r: f"{r['driver_after_build']['pss'] / MIB:,.0f} MiB")
    row("MemAvailable drop with the actors up", lambda r: "" if r["engine"] == "local" else
        f"{r['mem_available_drop_bytes'] / MIB:,.0f} MiB")
    row("SRAM in use (largest PE)", lambda r: f"{r['sram_bytes'] / MIB:.0f} MiB ({r['sram_max_pe_bytes']:,} B)")
    row("packets sent / routed / delivered per tick", lambda r: f"{r['packets_sent_per_tick']:,.0f} / "
        f"{r['packets_routed_per_tick']:,.0f} / {r['packets_delivered_per_tick']:,.0f}")
    row("packets crossing a wire between chips per tick", lambda r: f"{r['link_packets_per_tick']:,.0f}")
    row("spikes per neuron per tick", lambda r: f"{r['spikes_per_neuron_per_tick']:.3f}")
    row("chip model: busiest PE's tick, peak (mean)", lambda r: f"{1e6 * r['chip_seconds_per_tick_peak']:.0f} us "
        f"({1e6 * r['chip_seconds_per_tick_mean']:.0f} us) of 1 ms")
    row("chip model: energy per tick (dynamic + static, board)", lambda r: f"{1e3 * r['chip_energy_per_tick_joules']:.2f} mJ")
    row("state digest", lambda r: f"`{r['state_digest'][:12]}`")
    md += ["", f"Same digest on every engine: {out['digests_identical']}."]
    name = args.name + (f"_{args.chips}chips" if args.chips != 48 else "")
    write_results(args.out, name, out, md)


if __name__ == "__main__":
    main()
