"""A private local Ray is closed to other processes: they need its token to join; the emulation's own
channels listen on loopback only."""

import os
import stat
import subprocess
import sys
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
