"""The ray engine's two transports (direct channels, the default, and one Ray call per endpoint per tick)
give the local engine's bits, surface a PE's error, and end promptly when an actor's process is killed."""

import dataclasses
import os
import signal
import time

import pytest
from conftest import forget_key, smoke, with_learning
from s2emu.engines import run_engine

from s2emu.build import build
from s2emu.errors import PacketError, S2EmuError
from s2emu.runner import assemble_spikes, assemble_weights, state_digest

pytestmark = pytest.mark.ray


def small(**overrides):
    """The smoke recipe on a quarter of its data: a few hundred ticks, still learning and spiking."""
    r = smoke(epochs=1, **overrides)
    return dataclasses.replace(r, data={**r.data, "train_per_class": 8, "test_per_class": 4})


def outcome(b, engine, transport="channels"):
    raw = run_engine(engine, b, transport=transport)
    return state_digest(assemble_weights(b, raw), assemble_spikes(b, raw)), raw.router_counters


@pytest.mark.parametrize("pes, batch, variant", [
    (1, 4, {}),  # 2 PEs (and the 4-PE split in test_equivalence.py)
    (12, 8, {"signal": "online"}),  # 11 PEs; error packets every tick
])
def test_channels_calls_and_local_give_the_same_digest(ray_local, pes, batch, variant):
    b = build(with_learning(small(pes=pes, batch=batch), **variant))
    local = outcome(b, "local")
    assert outcome(b, "ray", "channels") == local
    assert outcome(b, "ray", "calls") == local


def test_pes_sharing_processes_give_the_same_bits(ray_local):
    """--pes-per-process 4: 11 PEs in 3 processes (4+4+3, each process stepping its PEs in
    turn over one channel)."""
    from s2emu.engines.ray_engine import run_ray

    b = build(small(pes=12, batch=2))
    seen = {}
    raw = run_ray(b, pes_per_process=4, on_ready=seen.update)
    assert state_digest(assemble_weights(b, raw), assemble_spikes(b, raw)) == outcome(b, "local")[0]
    assert len(seen["pes"]) == b.mapping.n_pes == 11 and len(set(seen["pes"])) == 3
    assert seen["host"] not in seen["pes"]
    with pytest.raises(S2EmuError, match="--pes-per-process must be an int >= 1"):
        run_ray(b, pes_per_process=0)


def test_an_error_of_a_pe_sharing_a_process_names_that_pe(ray_local):
    """PE 6 (the third of its process's four) forgets a key: the run raises its PacketError, as the local
    engine does, though PE 6 answers over its process's one channel."""
    def broken():
        return forget_key(build(small(pes=12, batch=2)), pe=6, proj=0)

    with pytest.raises(PacketError) as local:
        run_engine("local", broken())
    with pytest.raises(PacketError) as remote:
        run_engine("ray", broken(), pes_per_process=4)
    assert str(remote.value) == str(local.value) and "PE 6" in str(local.value)


def test_unknown_transport_is_refused():
    with pytest.raises(S2EmuError, match="unknown ray transport 'pigeons'"):
        run_engine("ray", build(small(batch=4)), transport="pigeons")


def broken_build():
    """PE 1 forgets the key of hidden neuron 0, so it raises PacketError when that neuron first spikes."""
    return forget_key(build(small(pes=4, batch=4)), pe=1, proj=1)


def test_a_pe_error_reaches_the_driver_as_on_the_local_engine(ray_local):
    with pytest.raises(PacketError) as local:
        run_engine("local", broken_build())
    assert "received key" in str(local.value)
    for transport in ("channels", "calls"):
        with pytest.raises(PacketError) as remote:
            run_engine("ray", broken_build(), transport=transport)
        assert str(remote.value) == str(local.value), transport


def test_killed_pe_process_ends_the_run_with_an_error(ray_local):
    from s2emu.engines.ray_engine import run_ray

    b = build(smoke(pes=4, epochs=1, batch=8))  # ~550 ticks: still running when the kill lands
    pids, killed = {}, []

    def progress(_ticks):
        if not killed:  # the first chunk is done and the next is queued: kill PE 2 mid-run
            os.kill(pids["pes"][2], signal.SIGKILL)
            killed.append(time.monotonic())

    with pytest.raises(S2EmuError, match="an actor of the emulation died"):
        run_ray(b, transport="channels", progress=progress, on_ready=pids.update)
    assert killed, "the run ended before the kill"
    assert time.monotonic() - killed[0] < 30


@pytest.mark.parametrize("engine", ["local", "ray"])
def test_a_live_view_sees_the_counters_the_run_ends_with(ray_local, engine):
    """The observer's status, read after the run, holds the final router counters, and each hidden PE's
    multicast packets are the spikes it counted, at batch 1, where a spike is one packet (the stream view's
    spike rates rest on this)."""
    b = build(small(pes=4, batch=1))
    seen = []
    raw = run_engine(engine, b, observer=seen.append)
    assert len(seen) == 1
    status = seen[0]()
    assert status.routed == raw.router_counters["routed"] > 0
    assert status.mc_sent == raw.router_counters["mc_sent"]
    hidden = [c["pe_id"] for c in b.pe_configs if c["role"] == "neuron"]
    assert [status.mc_sent[pe] for pe in hidden] == [raw.pe_counters[pe]["spikes"] for pe in hidden]
