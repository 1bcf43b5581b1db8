"""PEs stepped together (cores/group.py) are, bit for bit, the same PEs stepped alone: states, counters, packets,
recordings and errors."""

import dataclasses
import pickle
from pathlib import Path

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


BUNDLED = Path(__file__).resolve().parents[1] / "data" / "kws_synth.tar.xz"


def _kws_small():
    r = load_recipe("recipes/eprop_kws.toml").with_overrides(epochs=1, batch=1, data=BUNDLED)
    return dataclasses.replace(r, data={**r.data, "max_train": 3, "max_test": 2, "augment_copies": 0})


VARIANTS = {
    "kws ALIF per-synapse, batch 1": _kws_small,
    "online random feedback, batch 1": lambda: with_learning(
        smoke(epochs=1, batch=1, pes=4), signal="online", feedback="random"),
    "unequal slices (groups of two sizes), batch 3": lambda: smoke(epochs=2, batch=3, pes=3),
    "LIF, voltages recorded, batch 2": lambda: dataclasses.replace(
        with_population(smoke(epochs=1, batch=2), "hidden", model="lif"), record_voltage=("hidden",)),
    "voltages recorded, batch 1": lambda: dataclasses.replace(smoke(epochs=1, batch=1, pes=4),
                                                             record_voltage=("hidden",)),
}


@pytest.mark.parametrize("variant", VARIANTS)
def test_a_grouped_run_equals_pes_stepped_alone(variant):
    r = VARIANTS[variant]()
    assert make_pes(build(r).pe_configs)[1]  # some PEs do step together
    grouped, alone = (run_local(build(r), group=g) for g in (True, False))
    for field in ("weights", "recordings", "pe_counters", "router_counters", "host_results", "ticks"):
        assert pickle.dumps(getattr(grouped, field)) == pickle.dumps(getattr(alone, field)), field


def test_pes_with_per_source_traces_step_alone():
    r = with_learning(smoke(epochs=1, batch=1, pes=4), eligibility_layout="per_source")
    assert make_pes(build(r, load_data=False).pe_configs)[1] == []


def test_the_kws_recipe_forms_one_group_of_its_twelve_hidden_pes():
    b = build(_kws_small())
    pes, groups = make_pes(b.pe_configs)
    assert [g.endpoints for g in groups] == [list(range(12))]
    # each member's arrays are its columns of the group's: a write through one is seen by the other
    g = groups[0]
    pes[5].W[1][0, 0] = 123.0
    assert g.W[1][0, 5 * 10] == 123.0 and (g.W[1] == 123.0).sum() == 1


def test_a_sample_start_with_every_members_learning_signal_steps_as_the_group(monkeypatch):
    """Tick 0 of a sample brings each member its end-of-sample learning signal, and the weights change: one
    Adam step over the group's arrays, not a step of each PE alone (the same bits: the variants above)."""
    from s2emu.cores.group import NeuronGroup
    from s2emu.cores.eprop_pe import NeuronPE

    b = build(_kws_small())
    alone, updates = [], []
    step, update = NeuronPE.step, NeuronGroup._update
    monkeypatch.setattr(NeuronPE, "step", lambda pe, tick, ib: (alone.append(tick), step(pe, tick, ib))[1])
    monkeypatch.setattr(NeuronGroup, "_update", lambda g, sample: (updates.append(sample), update(g, sample))[1])
    run_local(b)
    assert updates == list(range(3))  # the three training samples
    assert alone and not any(t % b.clock.ticks_per_sample == 0 for t in alone)


@pytest.mark.parametrize("streams", [1, 2])
def test_random_inbound_gives_each_member_what_it_gives_alone(streams):
    """Members fed random packets each tick answer and end exactly as the same PEs stepped alone: the same
    spikes and payloads for all (as the router delivers a population's input), each its own learning
    signals or none, and now and then a tick the group must leave to each PE (one member's input differs, a
    key comes twice, an empty batch)."""
    b = build(with_learning(smoke(epochs=1, batch=streams, pes=4), signal="online"), streams=streams)
    (grouped, groups), (alone, _) = make_pes(b.pe_configs), make_pes(b.pe_configs, group=False)
    g = groups[0]
    members = [alone[e] for e in g.endpoints]
    alone_steps = []  # ticks a grouped member stepped on its own (the group's path refused the tick)
    for e in g.endpoints:
        step = grouped[e].step
        grouped[e].step = lambda tick, ib, step=step: (alone_steps.append(tick), step(tick, ib))[1]
    rng = np.random.default_rng(1)
    syn = members[0].km_keys[members[0].km_kind == KIND_SYNAPSE]
    n_ticks = 3 * (members[0].T + 2)  # three samples: starts, ends and learning updates
    for tick in range(n_ticks):
        pick = rng.permutation(syn)
        k, m = rng.integers(0, 6), rng.integers(0, 6)
        mc, mcp = np.sort(pick[:k]), pick[k:k + m]
        if tick % 7 == 3:
            mcp = np.append(mcp, pick[:1])  # a key sent twice
        values = rng.normal(size=(len(mcp), streams)).astype(np.float32)
        odd = rng.integers(len(members)) if rng.random() < 0.1 else -1  # this member's input differs
        inbounds = []
        for p, pe in enumerate(members):
            err = pe.km_keys[pe.km_kind == KIND_ERROR]
            err = err[rng.random(len(err)) < 0.5] if rng.random() < 0.3 else err[:0]
            keys = np.concatenate([mcp, err]).astype(np.uint32)
            pay = np.concatenate([values * (2 if p == odd else 1),
                                  rng.normal(size=(len(err), streams)).astype(np.float32)])
            inbounds.append(PacketBatch.make(99, tick, streams, mc_keys=mc, mcp_keys=keys, mcp_payload=pay))
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


def test_a_learning_signal_sent_to_every_member_is_refused_by_the_ones_it_is_not_for():
    """Member 0's learning-signal key delivered to all members (a routing table gone wrong): identical batches,
    but not one decode for all; the first member without that key raises, as it would alone."""
    b = build(with_learning(smoke(epochs=1, batch=1, pes=4), signal="online"))
    groups, (alone, _) = make_pes(b.pe_configs)[1], make_pes(b.pe_configs, group=False)
    g = groups[0]
    m0 = alone[g.endpoints[0]]
    key = m0.km_keys[m0.km_kind == KIND_ERROR][:1]
    batch = PacketBatch.make(99, 5, 1, mcp_keys=key, mcp_payload=np.ones((1, 1), np.float32))
    with pytest.raises(PacketError) as alone_error:
        for e in g.endpoints:
            alone[e].step(5, batch)
    with pytest.raises(PacketError) as group_error:
        g.step(5, [batch] * g.P)
    assert str(group_error.value) == str(alone_error.value) and "PE 1 " in str(group_error.value)
    assert g.at == 1


def test_a_faulty_key_map_is_raised_by_its_pe_when_it_first_decodes_not_when_the_group_forms():
    b = build(smoke(epochs=1, batch=1, pes=4))
    km = b.pe_configs[1]["keymap"]
    km["row"] = np.asarray(km["row"]).copy()
    km["row"][0] = 10_000  # past its projection
    pes, groups = make_pes(b.pe_configs)  # forming the group raises nothing
    assert groups and 1 in groups[0].endpoints
    with pytest.raises(PacketError, match=r"PE 1 .*key map names a row or projection it does not have"):
        run_local(b)
