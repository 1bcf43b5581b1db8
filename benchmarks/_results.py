"""How every benchmark takes its command line (arguments) and leaves its figures: <name>.json (the full
results) and <name>.md (a table) in one folder, and the JSON object on stdout. And the figures of one run split over PEs, shared by the scaling
benchmarks."""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

RESULTS = Path(__file__).parent / "results"


def arguments(doc: str | None = None, repeats: int | None = None) -> argparse.ArgumentParser:
    """A benchmark's command line, to which it adds its own options: --out (where its JSON and Markdown land)
    and, for one that repeats its runs, --repeats (the medians are over these)."""
    ap = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    if repeats is not None:
        ap.add_argument("--repeats", type=int, default=repeats)
    ap.add_argument("--out", default=str(RESULTS))
    return ap


def write_results(out_dir, name: str, out: dict, md_lines: list[str]) -> None:
    d = Path(out_dir)
    d.mkdir(parents=True, exist_ok=True)
    (d / f"{name}.json").write_text(json.dumps(out, indent=1) + "\n")
    (d / f"{name}.md").write_text("\n".join(md_lines) + "\n")
    print(json.dumps(out))


def split_row(r: dict, engine: str, samples: int, walls: list[float]) -> dict:
    """Per-sample figures of a run (runner.run's result) over `samples` samples; walls: its repeats' wall times."""
    wall = statistics.median(walls)
    per_pe = [p["bytes"] for p in r["per_pe"]]
    return {"pes": r["pes"], "engine": engine, "repeats": len(walls), "samples": samples,
            "chip_ticks_per_sample": r["ticks_per_sample"],
            "ms_per_sample": 1000 * wall / samples, "ticks_per_second": r["ticks"] / wall,
            "sram_max_pe_bytes": max(per_pe), "sram_mean_pe_bytes": sum(per_pe) / len(per_pe),
            "total_bytes": r["total_bytes"], "per_pe": per_pe,
            "packets_per_sample": r["router"]["routed"] / samples,
            "packets_in_per_pe_per_sample": [c["packets_in"] / samples for c in r["pe_counters"]],
            "macs_per_sample": sum(c["macs"] for c in r["pe_counters"]) / samples,
            "busiest_pe_macs_per_sample": max(c["macs"] for c in r["pe_counters"]) / samples,
            "accuracy": r["accuracy"], "state_digest": r["state_digest"]}


# ------------------------------------------------------------------ process memory (Linux /proc)

def process_memory(pid: int) -> dict:
    """rss, pss and uss bytes of one process (/proc/PID/smaps_rollup)."""
    fields = {}
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()[1:]:
        name, value = line.split(":", 1)
        fields[name] = int(value.split()[0]) * 1024
    return {"rss": fields["Rss"], "pss": fields["Pss"],
            "uss": fields["Private_Clean"] + fields["Private_Dirty"]}


def mem_available() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no MemAvailable in /proc/meminfo")
