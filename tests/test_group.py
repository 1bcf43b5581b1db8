"""PEs stepped together (cores/group.py) are, bit for bit, the same PEs stepped alone: states, counters, packets,
recordings and errors."""

import dataclasses
import pickle

import numpy as np
import pytest

from s2emu.build import build
from s2emu.cores.group import make_pes
from s2emu.cores.pe import KIND_ERROR, KIND_SYNAPSE
from s2emu.engines.local import run_local
from s2emu.errors import PacketError
from s2emu.recipe import load_recipe
from s2emu.router.packets import PacketBatch, encode

from conftest import forget_key, smoke, with_learning, with_population


def _kws_small():
    r = load_recipe("recipes/eprop_kws.toml").with_overrides(epochs=1, batch=1)
    return dataclasses.replace(r, data={**r.data, "max_train": 3, "max_test": 2})


VARIANTS = {
    "kws ALIF per-synapse, batch 1": _kws_small,
    "online random feedback per-source, batch 1": lambda: with_learning(
        smoke(epochs=1, batch=1, pes=4), signal="online", feedback="random", eligibility_layout="per_source"),
    "unequal slices (groups of two sizes), batch 3": lambda: smoke(epochs=2, batch=3, pes=3),
    "LIF, voltages recorded, batch 2": lambda: dataclasses.replace(
        with_population(smoke(epochs=1, batch=2), "hidden", model="lif"), record_voltage=("hidden",)),
}


@pytest.mark.parametrize("variant", VARIANTS)
def test_a_grouped_run_equals_pes_stepped_alone(variant):
    r = VARIANTS[variant]()
    grouped, alone = (run_local(build(r), group=g) for g in (True, False))
    for field in ("weights", "recordings", "pe_counters", "router_counters", "host_results", "ticks"):
        assert pickle.dumps(getattr(grouped, field)) == pickle.dumps(getattr(alone, field)), field


def test_the_kws_recipe_forms_one_group_of_its_twelve_hidden_pes():
    b = build(_kws_small())
    pes, groups = make_pes(b.pe_configs)
    assert [g.endpoints for g in groups] == [list(range(12))]
    # each member's arrays are its row of the group's: a write through one is seen by the other
    g = groups[0]
    pes[5].W[1][0, 0] = 123.0
    assert g.W[1][5, 0, 0] == 123.0


@pytest.mark.parametrize("streams", [1, 2])
def test_random_inbound_gives_each_member_what_it_gives_alone(streams):
    """Members fed different packets each tick (spikes, payloads, learning signals, some repeated keys that
    send the whole tick to each PE's careful path) answer and end exactly as the same PEs stepped alone."""
    b = build(with_learning(smoke(epochs=1, batch=streams, pes=4), signal="online"), streams=streams)
    (grouped, groups), (alone, _) = make_pes(b.pe_configs), make_pes(b.pe_configs, group=False)
    g = groups[0]
    members = [alone[e] for e in g.endpoints]
    rng = np.random.default_rng(1)
    n_ticks = 3 * (members[0].T + 2)  # three samples: starts, ends and learning updates
    alone_steps = []  # ticks a grouped member stepped on its own (the group's path refused the tick)
    for e in g.endpoints:
        step = grouped[e].step
        grouped[e].step = lambda tick, ib, step=step: (alone_steps.append(tick), step(tick, ib))[1]
    for tick in range(n_ticks):
        inbounds = []
        for pe in members:
            syn = pe.km_keys[pe.km_kind == KIND_SYNAPSE]
            err = pe.km_keys[pe.km_kind == KIND_ERROR]
            pick = rng.permutation(syn)
            k = rng.integers(0, 6)
            mc = pick[:k]
            mcp = np.concatenate([pick[k:k + rng.integers(0, 6)], err[rng.random(len(err)) < 0.5],
                                  pick[:1] if tick % 7 == 3 else []]).astype(np.uint32)  # a key sent twice
            inbounds.append(PacketBatch.make(99, tick, streams, mc_keys=np.sort(mc), mcp_keys=mcp,
                                             mcp_payload=rng.normal(size=(len(mcp), streams)).astype(np.float32))
                            if rng.random() < 0.9 else None)
        outs = g.step(tick, inbounds)
        ref = [pe.step(tick, ib) for pe, ib in zip(members, inbounds)]
        assert [encode(o) for o in outs] == [encode(o) for o in ref], tick
    assert 0 < len(set(alone_steps)) < n_ticks // 3  # most ticks took the group's path, not all
    for e, pe in zip(g.endpoints, members):
        assert pickle.dumps(grouped[e].snapshot()) == pickle.dumps(pe.snapshot())


def test_a_bad_packet_to_one_member_names_that_pe():
    b = forget_key(build(smoke(epochs=1, batch=1, pes=4)), pe=2, proj=0)
    with pytest.raises(PacketError, match=r"PE 2 \(hidden"):
        run_local(b)
