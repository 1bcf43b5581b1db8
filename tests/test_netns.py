"""Real nodes on one machine: a Ray cluster of three nodes, each in a network namespace of its own with its own
address, joined by veth pairs to a bridge (tests/netns.py), started with `ray start` and Ray's token
authentication as on three machines. The driver runs `s2emu run --engine ray --address HEAD:PORT` in the head's
namespace with the venv's Python. Checked from the outside (the kernel's view, not the engine's word): which
namespace each router and PE process runs in, which TCP connections the routers hold across the links, the
links' byte counters, and the local engine's digest.

Skipped where namespaces cannot be made (not root, no `ip`). Every namespace, veth, bridge and Ray process the
test made is removed at the end, also when it fails; what a killed earlier run left is removed at the start.
"""

from __future__ import annotations

import collections
import json
import re
import secrets
import subprocess
import threading
import time
from pathlib import Path

import pytest

from s2emu.build import build
from s2emu.recipe import load_recipe
from s2emu.runner import run

import netns

pytestmark = pytest.mark.ray

ROOT = Path(__file__).resolve().parents[1]
CHIPS, PES_PER_CHIP = 3, 2  # smoke's 5 PEs and host over 3 chips in a row: links 0-1 and 1-2
ARGS = ["smoke", "--chips", str(CHIPS), "--pes-per-chip", str(PES_PER_CHIP), "--epochs", "1"]
# Ray's GCS takes a node that answers no health check for ~5 x (1 + 2) s for dead (by default ~5 x (3 + 10) s)
HEALTH_CHECK = {"RAY_health_check_period_ms": "1000", "RAY_health_check_timeout_ms": "2000",
                "RAY_health_check_failure_threshold": "5"}
NOTICE_BOUND = 40.0  # seconds from a node's link going down to the run's restart (the health check's ~15 s, and slack)


def _recipe():
    return load_recipe("smoke").with_overrides(chips=CHIPS, pes_per_chip=PES_PER_CHIP, epochs=1)


@pytest.fixture(scope="module")
def cluster(request):
    why = netns.unavailable()
    if why:
        pytest.skip(why)
    netns.sweep_leftovers()
    c = netns.NetnsCluster(nodes=3, cpus=1, ray_env=HEALTH_CHECK)

    def remove():
        problems = c.close()
        left = [ns for ns in netns.namespaces() if ns.startswith(c.tag)]
        assert not problems and not left, (problems, left)
    request.addfinalizer(remove)  # before start(): a start that fails half-way is removed too
    c.start()
    return c


@pytest.fixture(scope="module")
def local_digest():
    return run(_recipe())["state_digest"]


def drive(c: netns.NetnsCluster, *args, timeout=240, **kw) -> subprocess.CompletedProcess:
    """The CLI as a driver in the head node's namespace, joining the cluster at its address."""
    return c.run(0, [c.python, "-m", "s2emu", "run", *ARGS, "--engine", "ray", "--address", c.address, "--json",
                     "--out", "-", "--quiet", *args], cwd=ROOT, timeout=timeout, **kw)


class Watch:
    """Samples, every `every` seconds while a run goes, each node's processes of the emulation (Ray workers
    whose title names the router or the endpoint actor) and the TCP connections they hold (`ss`, with bytes)."""

    SS = re.compile(r"^\S+\s+\S+\s+(?P<local>\S+)\s+(?P<peer>\S+)\s+users:.*?pid=(?P<pid>\d+)")

    def __init__(self, c: netns.NetnsCluster, every: float = 0.4):
        self.c, self.every = c, every
        self.roles = [{} for _ in c.ns]  # per node: pid -> "router" | "endpoint"
        self.conns = [{} for _ in c.ns]  # per node: (local, peer) -> {"pid", "bytes_sent", "bytes_received"}
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._loop, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join()

    def _loop(self):
        while not self.stop.wait(self.every):
            for i, ns in enumerate(self.c.ns):
                for pid, cmd in self.c.processes(i).items():
                    if cmd.startswith("ray::RouterActor"):
                        self.roles[i][pid] = "router"
                    elif cmd.startswith("ray::EndpointActor"):
                        self.roles[i][pid] = "endpoint"
                out = subprocess.run(["ip", "netns", "exec", ns, "ss", "-tnpiH", "state", "established"],
                                     capture_output=True, text=True, check=False).stdout
                last = None
                for line in out.splitlines():
                    if (m := self.SS.match(line)) and not line[:1].isspace():
                        last = (m["local"], m["peer"])
                        self.conns[i].setdefault(last, {"pid": int(m["pid"])})
                    elif last is not None:
                        for key in ("bytes_sent", "bytes_received"):
                            if (b := re.search(rf"\b{key}:(\d+)", line)):
                                self.conns[i][last][key] = max(int(b[1]), self.conns[i][last].get(key, 0))

    def owned(self, i: int, role: str) -> dict:
        """Node i's connections held by processes of `role`."""
        return {k: v for k, v in self.conns[i].items() if self.roles[i].get(v["pid"]) == role}


def _host(addr: str) -> str:
    return addr.rsplit(":", 1)[0]


def test_chips_on_namespaced_nodes_exchange_over_the_links_with_the_local_digest(cluster, local_digest):
    c = cluster
    before = c.link_bytes()
    with Watch(c) as w:
        p = drive(c)
    after = c.link_bytes()
    assert p.returncode == 0, p.stderr[-3000:]
    d = json.loads(p.stdout)
    assert d["state_digest"] == local_digest and d["router"]["dropped"] == 0

    # placement, as Ray reports it: each chip on a node of its own
    ips = [c.node_ids[n] for n in d["chip_nodes"]]
    assert sorted(ips) == sorted(c.ips), (ips, c.node_ids)
    node_of = [c.ips.index(ip) for ip in ips]  # chip -> node index

    # ... and as the kernel sees it: each node's namespace holds its chip's router and endpoint processes
    m = build(_recipe(), plan_memory=False).mapping
    per_chip = collections.Counter(m.endpoint_chips)  # endpoints (PEs, and the host on chip 0) per chip
    for chip, i in enumerate(node_of):
        roles = collections.Counter(w.roles[i].values())
        assert roles == {"router": 1, "endpoint": per_chip[chip]}, (chip, i, roles)

    # the routers' link channels cross the links: for each pair of neighbouring chips, a connection held by
    # one node's router whose other end is held by the other node's router, and bytes went over it
    for chip in range(CHIPS):
        for nb in m.neighbours(chip).values():
            if nb < chip:
                continue
            a, b = node_of[chip], node_of[nb]
            pairs = [(k, v) for k, v in w.owned(a, "router").items()
                     if _host(k[1]) == c.ips[b] and (k[1], k[0]) in w.owned(b, "router")]
            assert len(pairs) == 1, (chip, nb, w.conns[a], w.roles[a])
            (_, info), = pairs
            assert info.get("bytes_sent", 0) > 10_000 and info.get("bytes_received", 0) > 10_000, info

    # the channels between a router and its chip's endpoints stay on the node (a chip never straddles two)
    for i in range(len(c.ns)):
        for local, peer in w.owned(i, "endpoint"):
            if (peer, local) in w.owned(i, "router"):
                assert _host(local) == _host(peer) == c.ips[i]
        channels = [k for k in w.owned(i, "endpoint") if (k[1], k[0]) in w.owned(i, "router")]
        assert len(channels) == collections.Counter(w.roles[i].values())["endpoint"], (i, channels)

    # what went over each node's link while the run went (Ray's own traffic included): the exchange's bytes
    moved = [{k: a[k] - b[k] for k in a} for a, b in zip(after, before)]
    for i, mv in enumerate(moved):
        assert mv["tx_bytes"] > 100_000 and mv["rx_bytes"] > 100_000, (i, moved)


@pytest.mark.parametrize("how", ["another token", "no authentication"])
def test_a_driver_without_the_clusters_token_is_refused(cluster, tmp_path, how):
    """Token authentication is on across the nodes: a driver with another token, or with authentication off,
    cannot join; the CLI says so in one line."""
    wrong = tmp_path / "token"
    wrong.write_text(secrets.token_hex(32))
    env = {"RAY_AUTH_TOKEN_PATH": str(wrong)} if how == "another token" else {"RAY_AUTH_MODE": "disabled"}
    p = drive(cluster, env=env, timeout=120)
    lines = p.stderr.strip().splitlines()
    assert p.returncode == 2 and "Traceback" not in p.stderr, p.stderr[-2000:]
    assert lines[-1].startswith(f"error: cannot join the Ray cluster at {cluster.address}"), lines[-3:]
    assert "InvalidAuthToken" in p.stderr  # Ray's own word on why


@pytest.mark.slow
def test_a_node_cut_off_mid_run_is_noticed_and_the_run_ends_on_the_others_with_the_same_digest(
        cluster, local_digest, tmp_path):
    """A worker node's link goes down after the first checkpoint: its processes live on, unreachable, and no
    channel closes (the routers next to it just wait). Ray's health check takes the node for dead, the run
    restarts every actor on the two nodes left from the last checkpoint and ends with the local digest. The
    node comes back as a new Ray node afterwards, whatever happened."""
    c, ck = cluster, tmp_path / "run.s2ckpt"
    out, err = tmp_path / "stdout", tmp_path / "stderr"
    victim = 2  # a worker: the head holds the GCS and the driver
    with open(out, "w") as o, open(err, "w") as e:
        p = c.popen(0, [c.python, "-m", "s2emu", "run", *ARGS, "--engine", "ray", "--address", c.address, "--json",
                        "--out", "-", "--quiet", "--checkpoint", str(ck), "--checkpoint-every", "100",
                        "--max-restarts", "2"], cwd=ROOT, stdout=o, stderr=e)
    try:
        deadline = time.monotonic() + 120
        while not ck.exists() and p.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)
        assert ck.exists(), f"no checkpoint after 120 s: {err.read_text()[-2000:]}"
        old_ips = dict(c.node_ids)
        c.cut_link(victim)
        cut = time.monotonic()
        noticed = None
        while p.poll() is None and time.monotonic() - cut < 240:
            if noticed is None and "restarting every actor" in err.read_text():
                noticed = time.monotonic() - cut
            time.sleep(0.2)
        assert p.poll() == 0, err.read_text()[-3000:]
        noticed = noticed if noticed is not None else time.monotonic() - cut
        d = json.loads(out.read_text())
        assert noticed < NOTICE_BOUND, (noticed, err.read_text()[-2000:])
        assert "its node has died" in err.read_text() or "closed its channel" in err.read_text()
        assert d["state_digest"] == local_digest
        assert d["restarts"] == 1 and d["restarted_from_ticks"][0] >= 100 and d["restarted_from_ticks"][0] % 100 == 0
        assert c.ips[victim] not in {old_ips.get(n) for n in d["chip_nodes"]}  # all on the nodes left
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
        c.restore_node(victim)
