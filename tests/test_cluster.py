"""A real multi-node Ray cluster on this machine (Ray's own test cluster utility: a head and two worker nodes,
each a raylet of its own): a network spanning three chips runs with each chip's actors on one node, the chips
spread over the nodes, and gives the local engine's bits."""

import contextlib
import http.server
import json
import socket
import subprocess
import sys
import textwrap
import threading
import time

import pytest

pytestmark = pytest.mark.ray

SCRIPT = textwrap.dedent("""
    import dataclasses, json, sys
    sys.path.insert(0, "tests")
    from conftest import smoke
    from ray.cluster_utils import Cluster
    from s2emu.build import build
    from s2emu.engines import run_engine
    from s2emu.engines.ray_engine import run_ray
    from s2emu.runner import assemble_spikes, assemble_weights, state_digest

    r = smoke(epochs=1, batch=2, pes=8, chips=3, pes_per_chip=3)
    r = dataclasses.replace(r, data={**r.data, "train_per_class": 8, "test_per_class": 4})
    b = build(r)

    def digest(raw):
        return state_digest(assemble_weights(b, raw), assemble_spikes(b, raw))

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
    for _ in range(2):
        cluster.add_node(num_cpus=1)
    cluster.wait_for_nodes()
    seen = {}
    try:
        raw = run_ray(b, address=cluster.address, on_ready=seen.update)
    finally:
        cluster.shutdown()
    print(json.dumps({"ray": digest(raw), "local": digest(run_engine("local", b)), "chip_nodes": raw.chip_nodes,
                      "nodes": seen["nodes"], "chip_of": list(b.mapping.endpoint_chips),
                      "dropped": raw.router_counters["dropped"]}))
""")


def test_chips_spread_over_the_nodes_of_a_cluster_with_each_chip_on_one_node():
    out = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    d = json.loads(out.stdout.strip().splitlines()[-1])
    assert d["ray"] == d["local"] and d["dropped"] == 0
    chip_nodes, nodes, chip_of = d["chip_nodes"], d["nodes"], d["chip_of"]
    assert len(chip_nodes) == 3 and len(set(chip_nodes)) == 3  # SPREAD: one chip per node here
    assert nodes["pes"] == [chip_nodes[c] for c in chip_of[:-1]]  # every PE on its chip's node
    assert nodes["host"] == chip_nodes[chip_of[-1]] == chip_nodes[0]
    assert nodes["routers"] == chip_nodes


# ------------------------------------------------ --address naming something that is not a Ray cluster


class _Plain(http.server.BaseHTTPRequestHandler):
    """Answers every request with a small page; serves no files."""

    def do_GET(self):
        self.send_response(200)
        self.end_headers()
        self.wfile.write(b"hello")

    def log_message(self, *args):
        pass


@contextlib.contextmanager
def _not_a_cluster(kind):
    """HOST:PORT of a real local HTTP server (http.server in a thread) or of a socket that listens and never
    answers (the kernel completes the connections, nobody reads them)."""
    if kind == "http":
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Plain)
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        try:
            yield f"127.0.0.1:{server.server_address[1]}"
        finally:
            server.shutdown()
            server.server_close()
    else:
        with socket.create_server(("127.0.0.1", 0), backlog=16) as listener:
            yield f"127.0.0.1:{listener.getsockname()[1]}"


@pytest.mark.parametrize("kind", ["http", "silent"])
def test_an_address_that_is_not_a_ray_cluster_fails_within_10_s(kind):
    with _not_a_cluster(kind) as address:
        t0 = time.monotonic()
        try:
            p = subprocess.run([sys.executable, "-m", "s2emu", "run", "smoke", "--engine", "ray", "--address", address,
                                "--out", "-", "--quiet"], capture_output=True, text=True, timeout=30)
        except subprocess.TimeoutExpired:
            pytest.fail(f"--address {address} ({kind}) still running after 30 s")
        took = time.monotonic() - t0
    lines = p.stderr.strip().splitlines()
    assert p.returncode == 2 and took < 8, (p.returncode, took, p.stderr[-2000:])
    assert "Traceback" not in p.stderr and lines[-1].startswith("error: ") and address in lines[-1]
    assert ("not a Ray cluster" if kind == "http" else "did not answer") in lines[-1]
