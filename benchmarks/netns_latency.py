"""What network latency costs a ray run spread over nodes: ms per tick against the latency between nodes.

    python benchmarks/netns_latency.py [--delays 0,0.1,0.5,2] [--windows 1,4] [--repeats 3] [--link auto]

Three Ray nodes on this machine, each in a network namespace of its own (tests/netns.py; root only), token
authentication on. The smoke network with every projection's delay set to 4 ticks (so that windows of up to 4
ticks are exact), 16 training and 8 test samples per class, one epoch, over 3 chips in a row (--chips 3
--pes-per-chip 2): one chip per node, 2 hop rounds between routers per tick. The driver runs the CLI in the
head's namespace. For each added one-way delay D between nodes and each window K (ticks per exchange), the
median over repeats of the exchange loop's time per tick (`phases.run` / ticks), and the round trip a
TCP ping-pong between two nodes measures at that delay.

The delay: `tc netem delay D` on every node's link where the kernel has netem (`--link bridge`), else a relay
process between TUN devices that holds each packet D ms (`--link relay`; `auto` picks). A simple model is
fitted by least squares: ms per tick = compute + (exchange + exposure x hop rounds x one-way latency) / K, where
one-way latency is half the measured round trip, and a window of K ticks crosses the links once per hop round
(engines/ray_engine/router_actor.py `_route_ticks`). Writes netns_latency.json and netns_latency.md.
"""

from __future__ import annotations

import datetime
import json
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

from _results import arguments, write_results

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

import netns  # tests/netns.py, the namespaced nodes

CHIPS, PES_PER_CHIP, DELAY_TICKS = 3, 2, 4

PING = """
import socket, statistics, sys, time
s = socket.create_connection((sys.argv[1], int(sys.argv[2])))
s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
ts = []
for _ in range(int(sys.argv[3])):
    t = time.perf_counter(); s.sendall(b"x" * 64); s.recv(64); ts.append(time.perf_counter() - t)
print(statistics.median(ts) * 1000)
"""
ECHO = """
import socket, sys
srv = socket.create_server((sys.argv[1], int(sys.argv[2])))
while True:
    c, _ = srv.accept()
    c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        while (d := c.recv(64)):
            c.sendall(d)
    except OSError:
        pass
    c.close()
"""


def recipe_file(folder: Path) -> Path:
    """recipes/smoke.toml with every projection's delay DELAY_TICKS and a smaller data set."""
    text = (ROOT / "recipes" / "smoke.toml").read_text()
    text = re.sub(r"(?m)^(init_scale = [\d.]+)", rf"\1\ndelay = {DELAY_TICKS}", text)
    text = re.sub(r"(?m)^train_per_class = \d+", "train_per_class = 16", text)
    text = re.sub(r"(?m)^test_per_class = \d+", "test_per_class = 8", text)
    path = folder / "smoke_delay4.toml"
    path.write_text(text)
    return path


def fit(rows: list[dict], hops: int) -> dict:
    """Least squares over every run of: ms per tick = compute + (exchange + exposure x hops x one-way latency) / K.
    compute: the ticks' own work, whatever the window; exchange: what an exchange costs besides the latency
    (the barriers between a router and its endpoints, the hop rounds' own work); exposure: the share of the
    latency the run waits for (1 where nothing else can run meanwhile)."""
    import numpy as np

    a = np.array([[1.0, 1 / r["window"], hops * r["one_way_ms"] / r["window"]]
                  for r in rows for _ in r["runs_ms_per_tick"]])
    y = np.array([ms for r in rows for ms in r["runs_ms_per_tick"]])
    (compute, exchange, exposure), *_ = np.linalg.lstsq(a, y, rcond=None)
    pred = [float(compute + (exchange + exposure * hops * r["one_way_ms"]) / r["window"]) for r in rows]
    return {"compute_ms": float(compute), "exchange_ms": float(exchange), "latency_exposure": float(exposure),
            "runs": len(y),
            "worst_error": max(abs(p - r["ms_per_tick"]) / r["ms_per_tick"] for p, r in zip(pred, rows)),
            "predicted_ms_per_tick": pred}


def main() -> None:
    ap = arguments(__doc__, repeats=3)
    ap.add_argument("--delays", default="0,0.1,0.5,2", help="added one-way delays between nodes, ms")
    ap.add_argument("--windows", default="1,4")
    ap.add_argument("--link", choices=["auto", "bridge", "relay"], default="auto")
    args = ap.parse_args()
    if why := netns.unavailable():
        raise SystemExit(f"error: {why}")
    link = args.link
    if link == "auto":
        link = "bridge" if netns.netem_unavailable() is None else "relay"
    elif link == "bridge" and (why := netns.netem_unavailable()):
        raise SystemExit(f"error: --link bridge needs tc netem: {why}")
    delays = [float(d) for d in args.delays.split(",")]
    windows = [int(w) for w in args.windows.split(",")]
    netns.sweep_leftovers()
    t0 = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="s2emu-netns-") as tmp, \
            netns.NetnsCluster(nodes=3, cpus=1, link=link) as c:
        recipe = recipe_file(Path(tmp))
        echo = c.popen(2, [c.python, "-c", ECHO, c.ips[2], "7"])
        time.sleep(0.5)

        def ping(n=200) -> float:
            p = c.run(1, [c.python, "-c", PING, c.ips[2], "7", str(n)], timeout=60)
            if p.returncode:
                raise SystemExit(f"error: the ping between nodes failed: {p.stderr[-500:]}")
            return float(p.stdout)

        def one(window: int) -> dict:
            p = c.run(0, [c.python, "-m", "s2emu", "run", str(recipe), "--engine", "ray", "--address", c.address,
                          "--chips", str(CHIPS), "--pes-per-chip", str(PES_PER_CHIP), "--epochs", "1",
                          "--window", str(window), "--json", "--out", "-", "--quiet"], cwd=ROOT, timeout=300)
            if p.returncode:
                raise SystemExit(f"error: the run failed: {p.stderr[-2000:]}")
            return json.loads(p.stdout)

        rtt, runs, meta = {}, {(d, w): [] for d in delays for w in windows}, {}
        for rep in range(args.repeats):
            for d in delays:  # interleaved: drift of the shared machine spreads over every delay alike
                c.set_delay(d)
                rtt.setdefault(d, []).append(ping())
                for w in windows:
                    r = one(w)
                    runs[(d, w)].append(r)
                    meta = {k: r[k] for k in ("ticks", "hops", "chips", "pes", "mesh", "streams")}
                    print(f"rep {rep + 1} delay {d} ms window {w}: {1000 * r['phases']['run'] / r['ticks']:.2f} "
                          f"ms/tick", file=sys.stderr, flush=True)
        c.set_delay(0)
        echo.kill()
        digests = {r["state_digest"] for rs in runs.values() for r in rs}
        nodes = {ip: chips for ip, chips in _placement(c, runs).items()}
    rows = []
    for (d, w), rs in runs.items():
        ms = [1000 * r["phases"]["run"] / r["ticks"] for r in rs]
        rows.append({"delay_ms": d, "window": w, "rtt_ms": statistics.median(rtt[d]),
                     "one_way_ms": statistics.median(rtt[d]) / 2, "ms_per_tick": statistics.median(ms),
                     "runs_ms_per_tick": ms, "ticks": rs[0]["ticks"],
                     "router_busy_ms_per_tick": statistics.median(1000 * r["phases"]["router_busy"] / r["ticks"]
                                                                  for r in rs)})
    model = fit(rows, meta["hops"])
    for row, p in zip(rows, model.pop("predicted_ms_per_tick")):
        row["model_ms_per_tick"] = p
    out = {"benchmark": "netns_latency", "date": datetime.date.today().isoformat(),
           "command": "python benchmarks/netns_latency.py" + ("" if args.repeats == 3 else f" --repeats {args.repeats}"),
           "link": link, "nodes": 3, "cpus_per_node": 1, "delay_ticks": DELAY_TICKS, **meta,
           "repeats": args.repeats, "same_digest": len(digests) == 1, "state_digest": sorted(digests),
           "chips_per_node": nodes, "model": model, "rows": rows, "seconds": time.monotonic() - t0}
    how = ("`tc netem delay` on every node's link" if link == "bridge" else
           "a relay between TUN devices holding each packet (this kernel has no netem)")
    md = [(f"Ray engine over 3 namespaced nodes on one machine (token auth on), smoke with every delay {DELAY_TICKS} "
           f"ticks, {meta['chips']} chips in a row (one per node), {meta['hops']} hop rounds per tick, {meta['ticks']} "
           f"ticks, batch {meta['streams']}; added one-way delay by {how}; median of {args.repeats}; same digest in "
           f"every run: {len(digests) == 1}"), "",
          "| added delay (ms, one way) | measured round trip (ms) | window K | ms per tick | model | runs |",
          "|---|---|---|---|---|---|"]
    md += [f"| {r['delay_ms']:g} | {r['rtt_ms']:.2f} | {r['window']} | {r['ms_per_tick']:.2f} | "
           f"{r['model_ms_per_tick']:.2f} | {', '.join(f'{x:.2f}' for x in r['runs_ms_per_tick'])} |" for r in rows]
    md += ["", (f"Model (least squares over all runs): ms per tick = {model['compute_ms']:.2f} + "
                f"({model['exchange_ms']:.2f} + {model['latency_exposure']:.2f} x {meta['hops']} hop rounds x one-way "
                f"latency) / K; worst error {100 * model['worst_error']:.0f}% on a row's median."),
           f"Command: `{out['command']}`"]
    write_results(args.out, "netns_latency", out, md)


def _placement(c, runs) -> dict:
    """node address -> the chips it ran, in the last run (chip_nodes, through the cluster's node ids)."""
    last = next(reversed(runs.values()))[-1]
    out: dict = {}
    for chip, node in enumerate(last["chip_nodes"]):
        out.setdefault(c.node_ids.get(node, node), []).append(chip)
    return out


if __name__ == "__main__":
    main()
