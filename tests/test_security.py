"""A private local Ray is closed to other processes: they need its token to join; the emulation's own
channels listen on loopback only."""

import dataclasses
import os
import random
import socket
import stat
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

JOIN = ("import logging, ray\n"
        "from ray._private import ray_constants as c\n"
        "c.NUM_REDIS_GET_RETRIES = 3\n"
        "ray.init(address='{gcs}', logging_level=logging.ERROR)\n"
        "print('JOINED')\n")


@pytest.mark.ray
def test_a_process_without_the_token_cannot_join_a_local_run(ray_local, tmp_path):
    gcs = ray_local.get_runtime_context().gcs_address
    assert os.environ["RAY_AUTH_MODE"] == "token"
    token = Path(os.environ.get("RAY_AUTH_TOKEN_PATH") or Path.home() / ".ray" / "auth_token")
    assert stat.S_IMODE(token.stat().st_mode) & 0o077 == 0  # readable by its owner only

    def join(env):
        e = {k: v for k, v in os.environ.items() if not k.startswith("RAY_AUTH_TOKEN")}
        p = subprocess.run([sys.executable, "-c", JOIN.format(gcs=gcs)], env={**e, **env}, capture_output=True,
                           text=True, timeout=120)
        return "JOINED" in p.stdout

    assert join({})  # the owner, with the token: joins (so the refusals below are about the token)
    assert not join({"HOME": str(tmp_path), "RAY_AUTH_MODE": "disabled"})
    assert not join({"HOME": str(tmp_path), "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": "0" * 32})


@pytest.mark.ray
def test_the_router_channels_listen_on_loopback(ray_local):
    from s2emu.engines.ray_engine.cluster import channel_host
    from s2emu.engines.ray_engine.run import actor_classes
    from s2emu.router.router import Router
    from s2emu.router.table import MulticastTable

    _, RouterActor = actor_classes()
    router = RouterActor.remote(Router(MulticastTable([], capacity=4), 1), [None], ["nobody"])
    (host, port), authkey = ray_local.get(router.open_channels.remote(channel_host()))
    assert host == "127.0.0.1" and len(authkey) == 32
    ray_local.kill(router)


# ------------------------------------------------ strangers on the channel port while a run connects its channels

HANDSHAKE_BOUND = 5.0  # seconds a stranger may hold a connection: door.READ_TIMEOUT (2 s), and slack for a busy machine


def _oversize(s):
    s.recv(64)  # the router's challenge
    s.sendall(struct.pack("!i", 1 << 30))  # "my answer is 1 GiB long"


ATTACKS = {
    "oversize": _oversize,
    "silent": lambda s: None,  # connects and says nothing
    "garbage": lambda s: s.sendall(b"GET / HTTP/1.1\r\n\r\n" + random.Random(22).randbytes(4096)),  # a port scanner
}


class Stranger(threading.Thread):
    """A local process without the authkey: connects to the channel port, attacks, then waits to be dropped;
    `dropped_after` is how long the router kept the connection (None: never, within 60 s)."""

    def __init__(self, address, attack):
        super().__init__(daemon=True)
        self.sock = socket.create_connection(tuple(address), timeout=60)
        self.t0, self.attack, self.dropped_after = time.monotonic(), attack, None
        self.start()

    def run(self):
        try:
            self.attack(self.sock)
            while self.sock.recv(4096):
                pass
        except TimeoutError:
            return
        except OSError:
            pass  # reset by the router: dropped too
        self.dropped_after = time.monotonic() - self.t0
        self.sock.close()


@pytest.mark.ray
@pytest.mark.parametrize("attack", ATTACKS)
def test_a_stranger_on_the_channel_port_is_dropped_and_the_run_goes_on(attack, ray_local, monkeypatch):
    """A connection without the authkey (an oversize length header, silence, garbage) at the head of the
    router's accept queue: dropped within the handshake bound, no restart, the undisturbed digest."""
    from conftest import smoke

    from s2emu.build import build
    from s2emu.engines import run_engine
    from s2emu.engines.ray_engine import run as ray_run
    from s2emu.runner import assemble_spikes, assemble_weights, state_digest

    r = smoke(epochs=1)
    b = build(dataclasses.replace(r, data={**r.data, "train_per_class": 8, "test_per_class": 4}))
    strangers, open_channels = [], ray_run._Chips.open_channels

    def open_then_attack(chips, host):  # learns the listener's address only; the attack is a real socket
        open_channels(chips, host)
        for address, _ in chips.addresses.values():
            strangers.append(Stranger(address, ATTACKS[attack]))  # in the accept queue before the endpoints

    monkeypatch.setattr(ray_run._Chips, "open_channels", open_then_attack)
    raw = ray_run.run_ray(b, max_restarts=1)
    assert strangers and raw.restarts == 0
    for s in strangers:
        s.join(60)
        assert s.dropped_after is not None and s.dropped_after < HANDSHAKE_BOUND
    digest = state_digest(assemble_weights(b, raw), assemble_spikes(b, raw))
    local = run_engine("local", b)
    assert digest == state_digest(assemble_weights(b, local), assemble_spikes(b, local))


def test_the_door_hands_over_every_channel_whole_among_strangers():
    """The router's listener alone (no Ray), many rounds: 16 endpoints and 6 strangers connect at once; every
    endpoint's channel comes out of accept() usable, also when the door closes right after the last one while
    handshake threads are still finishing (SlowBell), and the strangers hold nothing up."""
    from multiprocessing.connection import Client

    from s2emu.engines.ray_engine.door import Door

    def endpoint(address, authkey, i):
        with Client(address, family="AF_INET", authkey=authkey) as c:
            c.send_bytes(struct.pack("<q", i))
            c.send_bytes(c.recv_bytes() + b" back")

    class SlowBell:  # a handshake thread slow to ring after handing its channel over: accept() may have it
        def __init__(self, sock):
            self.sock = sock

        def send(self, data):
            time.sleep(0.2)
            return self.sock.send(data)

        def close(self):
            self.sock.close()

    for n in range(20):
        door = Door("127.0.0.1", backlog=32)
        if n % 2:
            door.waker = SlowBell(door.waker)
        threads = [threading.Thread(target=endpoint, args=(door.address, door.authkey, i)) for i in range(16)]
        strangers = [Stranger(door.address, attack) for attack in (*ATTACKS.values(), *ATTACKS.values())]
        t0 = time.monotonic()
        for t in threads:
            t.start()
        got = dict(reversed(door.accept()) for _ in threads)
        door.close()
        assert sorted(got) == list(range(16)) and time.monotonic() - t0 < 1.5
        for i, c in got.items():
            c.send_bytes(b"%d" % i)
            assert c.recv_bytes() == b"%d back" % i
            c.close()
        for t in (*threads, *strangers):
            t.join(10)
        assert all(s.dropped_after is not None for s in strangers)
