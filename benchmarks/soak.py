"""Soak: stream keyword audio through the ray engine (13 PE actors, router, host; the shipped e-prop model)
paced to real time for a long stretch, and record every process's memory and the lag behind the audio clock
over time. A leak shows as memory that keeps growing; falling behind as lag that keeps growing.

    python benchmarks/soak.py [--minutes 30] [--sample-every 5] [--engine ray]

Writes soak.json, soak.md and soak.png (memory per process and lag against time). Memory is each process's
resident set (VmRSS from /proc), sampled by a thread of this driver; "growth" compares the median of the last
quarter of the run with the median of its second quarter (the first quarter is warm-up: imports, caches).
"""

from __future__ import annotations

import sys
import threading
import time
from pathlib import Path

import numpy as np
from _results import arguments, write_results

from s2emu.model import load_model
from s2emu.recipe import load_recipe
from s2emu.streaming import stream

ROOT = Path(__file__).resolve().parents[1]


def _descends_from_driver(pid: str) -> bool:
    """Is the process a descendant of this driver (its Ray session's workers are: driver -> raylet -> worker)?"""
    for _ in range(6):
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            return False
        pid = stat.rsplit(")", 1)[1].split()[1]  # the field after the state letter: the parent's pid
        if int(pid) == _DRIVER:
            return True
        if pid in ("0", "1"):
            return False
    return False


def rss_by_process() -> dict[str, int]:
    """{label: resident bytes} of this driver and every actor process of its Ray session."""
    out = {}
    for p in Path("/proc").iterdir():
        if not p.name.isdigit():
            continue
        try:
            cmd = (p / "cmdline").read_bytes().split(b"\0")[0].decode(errors="replace")
            status = (p / "status").read_text()
        except OSError:
            continue
        if int(p.name) == _DRIVER:
            label = "driver"
        elif (cmd.startswith("ray::EndpointActor") or cmd.startswith("ray::RouterActor")) \
                and _descends_from_driver(p.name):
            label = f"{cmd.split()[0].split('.')[0]} {p.name}"
        else:
            continue
        for line in status.splitlines():
            if line.startswith("VmRSS:"):
                out[label] = int(line.split()[1]) * 1024
    return out


_DRIVER = 0


class Sampler(threading.Thread):
    def __init__(self, every: float):
        super().__init__(daemon=True)
        self.every, self.samples, self.stop_flag, self.t0 = every, [], threading.Event(), time.monotonic()

    def run(self):
        while not self.stop_flag.wait(self.every):
            self.samples.append((time.monotonic() - self.t0, rss_by_process()))


def growth(series: list[float]) -> float:
    """Median of the last quarter minus the median of the second quarter."""
    n = len(series)
    if n < 4:
        return 0.0
    return float(np.median(series[3 * n // 4:]) - np.median(series[n // 4:n // 2]))


def main() -> None:
    global _DRIVER
    import os
    _DRIVER = os.getpid()
    ap = arguments(__doc__)
    ap.add_argument("--minutes", type=float, default=30.0)
    ap.add_argument("--sample-every", type=float, default=5.0, help="seconds between memory samples")
    ap.add_argument("--engine", default="ray")
    args = ap.parse_args()
    recipe = load_recipe(str(ROOT / "recipes" / "eprop_kws.toml"))
    weights, _ = load_model(str(ROOT / "models" / "eprop_kws.npz"), recipe.network)
    clips = max(1, int(round(args.minutes * 60)))  # 1 s clips, paced to real time
    sampler = Sampler(args.sample_every)
    sampler.start()
    print(f"soak: {clips} clips ({args.minutes:g} min) on the {args.engine} engine", file=sys.stderr)
    res = stream(recipe, None, engine=args.engine, weights=weights, clips=clips, loop=True, console=None,
                 live=False)
    sampler.stop_flag.set()
    sampler.join()
    samples = [(t, m) for t, m in sampler.samples if m]
    labels = sorted({k for _, m in samples for k in m})
    per_process = {}
    for k in labels:
        series = [m[k] for _, m in samples if k in m]
        per_process[k] = {"samples": len(series), "rss_first_bytes": series[0], "rss_last_bytes": series[-1],
                          "rss_max_bytes": max(series), "growth_bytes": growth(series)}
    lag = res["lag_timeline"]
    lag_ms = [v for _, v in lag]
    q = max(1, len(lag_ms) // 4)
    out = {"benchmark": "soak", "date": time.strftime("%Y-%m-%d"), "engine": args.engine, "minutes": args.minutes,
           "clips": res["clips"], "ticks": res["ticks"], "wall_seconds": res["wall_seconds"],
           "real_time_factor": res["real_time_factor"], "accuracy": res["accuracy"],
           "lag_ms_max": res["lag_ms_max"], "lag_ms_final": res["lag_ms_final"],
           "lag_ms_first_quarter_max": max(lag_ms[:q]) if lag_ms else 0.0,
           "lag_ms_last_quarter_max": max(lag_ms[-q:]) if lag_ms else 0.0,
           "processes": len(per_process), "per_process": per_process,
           "total_rss_growth_bytes": sum(p["growth_bytes"] for p in per_process.values()),
           "max_process_growth_bytes": max((p["growth_bytes"] for p in per_process.values()), default=0.0),
           "memory_timeline": [[t, sum(m.values())] for t, m in samples], "lag_timeline": lag}
    _plot(out, samples, labels, Path(args.out) / "soak.png")
    md = [f"Soak: {res['clips']} keyword clips ({args.minutes:g} min of audio) streamed through the {args.engine} "
          f"engine paced to real time, {out['date']}. Command: `python benchmarks/soak.py --minutes {args.minutes:g}`.",
          "", "| figure | value |", "|---|---|",
          f"| processes sampled | {out['processes']} |",
          f"| real-time factor | {out['real_time_factor']:.3f} |",
          f"| lag max / final | {out['lag_ms_max']:.0f} ms / {out['lag_ms_final']:.0f} ms |",
          f"| lag max, first / last quarter | {out['lag_ms_first_quarter_max']:.0f} ms / "
          f"{out['lag_ms_last_quarter_max']:.0f} ms |",
          f"| RSS growth, all processes (last quarter vs second) | {out['total_rss_growth_bytes'] / 2**20:+.2f} MiB |",
          f"| RSS growth, largest of one process | {out['max_process_growth_bytes'] / 2**20:+.2f} MiB |",
          f"| accuracy | {out['accuracy']:.3f} |", "", "![soak](soak.png)"]
    write_results(args.out, "soak", out, md)


def _plot(out, samples, labels, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path.parent.mkdir(parents=True, exist_ok=True)
    fig, (a, b) = plt.subplots(2, 1, figsize=(8, 6), sharex=False)
    t = [s[0] / 60 for s in samples]
    for k in labels:
        a.plot(t, [m.get(k, np.nan) / 2**20 for _, m in samples], lw=0.8)
    a.set_ylabel("resident memory per process (MiB)")
    a.set_xlabel("minutes")
    a.set_title(f"soak: {out['processes']} processes, {out['minutes']:g} min")
    lag = np.array(out["lag_timeline"]) if out["lag_timeline"] else np.zeros((1, 2))
    b.plot(lag[:, 0] / 100 / 60, lag[:, 1], lw=0.8)
    b.set_ylabel("lag behind the audio (ms)")
    b.set_xlabel("minutes of audio")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    main()
