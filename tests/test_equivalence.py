"""Identical results for every split of the network over PEs, for both engines, and against the golden model."""

import numpy as np
import pytest

from s2emu.build import build
from s2emu.engines import run_engine
from s2emu.golden import golden_run
from s2emu.network import initial_weights
from s2emu.runner import assemble_spikes, assemble_weights, run

from conftest import smoke, with_learning, with_population


def digests(recipe, splits, engine="local"):
    return {p: run(recipe.with_overrides(pes=p), engine=engine)["state_digest"] for p in splits}


def test_splits_give_identical_digest_end_of_sample_batch():
    d = digests(smoke(epochs=2, batch=4), [1, 2, 3, 4, 40])
    assert len(set(d.values())) == 1, d


def test_splits_give_identical_digest_online_random_feedback_batch1():
    r = with_learning(smoke(epochs=1, batch=1), signal="online", feedback="random", eligibility_layout="per_source")
    d = digests(r, [1, 4, 7])
    assert len(set(d.values())) == 1, d


def test_digest_depends_on_what_happened():
    """The digest is not constant: another seed or another learning rate changes it."""
    base = run(smoke(epochs=1, batch=4))["state_digest"]
    assert run(smoke(epochs=1, batch=4, seed=2))["state_digest"] != base
    assert run(with_learning(smoke(epochs=1, batch=4), lr=0.02))["state_digest"] != base


def _compare_with_golden(recipe):
    b = build(recipe)
    raw = run_engine("local", b)
    chip_w, chip_s = assemble_weights(b, raw), assemble_spikes(b, raw)["hidden"]
    g = golden_run(b)
    gs = g["spikes"][np.lexsort((g["spikes"][:, 2], g["spikes"][:, 1], g["spikes"][:, 0]))]
    assert len(chip_s) > 1000, "too few spikes for the comparison to mean anything"
    np.testing.assert_array_equal(chip_s, gs)  # every spike at the same tick, stream and neuron
    w0 = initial_weights(recipe.network, recipe.seed)
    for name, w in g["weights"].items():
        if recipe.learning.rule != "none":
            assert np.abs(w - w0[name]).max() > 1e-3, f"{name}: weights never moved"
        np.testing.assert_allclose(chip_w[name], w, rtol=0, atol=2e-5, err_msg=name)
    return b, raw, g


@pytest.mark.parametrize("variant", [
    dict(),
    dict(signal="online"),
    dict(feedback="random", eligibility_layout="per_source"),
    dict(surrogate="triangle", l2=1e-4, lr_decay=0.5, lr_decay_every=1),
])
def test_chip_matches_golden_model(variant):
    recipe = with_learning(smoke(epochs=2, batch=4), **variant)
    _compare_with_golden(recipe)


def test_chip_matches_golden_model_lif_without_recurrence():
    import dataclasses

    r = with_population(smoke(epochs=2, batch=2), "hidden", model="lif", params={"tau_m": 8.0, "v_th": 1.0})
    net = r.network
    r = dataclasses.replace(r, network=dataclasses.replace(
        net, projections=tuple(p for p in net.projections if p.pre != p.post)))
    _compare_with_golden(r)


def test_readout_scores_match_golden():
    b, raw, g = _compare_with_golden(smoke(epochs=1, batch=4))
    test = b.plan.split == 1
    truth = b.dataset.y_test
    golden_pred = g["scores"][test].reshape(-1, g["scores"].shape[-1])[: len(truth)].argmax(1)
    chip_acc = raw.host_results["accuracy"]
    assert abs(chip_acc - float(np.mean(golden_pred == truth))) < 1e-9


@pytest.mark.ray
def test_ray_engine_is_bit_identical_to_local_and_learns(ray_local):
    """On the default transport, direct channels (tests/test_channels.py also checks Ray calls)."""
    recipe = smoke(epochs=3, batch=8)
    ray_result = run(recipe, engine="ray")
    local_result = run(recipe, engine="local")
    assert ray_result["state_digest"] == local_result["state_digest"]
    assert ray_result["accuracy"] == local_result["accuracy"]
    assert ray_result["router"]["routed"] == local_result["router"]["routed"]
    assert ray_result["accuracy"] >= 2 * ray_result["chance"], ray_result["accuracy"]


@pytest.mark.ray
def test_ray_engine_other_split_same_digest(ray_local):
    recipe = smoke(epochs=1, batch=8)
    assert run(recipe.with_overrides(pes=2), engine="ray")["state_digest"] == \
        run(recipe.with_overrides(pes=4), engine="local")["state_digest"]


def test_spike_input_splits_and_golden():
    """Input as spikes (MC packets without payload at batch 1, 0/1 payloads with streams)."""
    import dataclasses

    for batch in (1, 4):
        r = smoke(epochs=1, batch=batch)
        pops = tuple(dataclasses.replace(p, encoding="spikes") if p.model == "input" else p
                     for p in r.network.populations)
        r = dataclasses.replace(r, network=dataclasses.replace(r.network, populations=pops),
                                data={**r.data, "encoding": "spikes", "max_rate": 0.8})
        d = digests(r, [1, 4])
        assert len(set(d.values())) == 1, d
        _compare_with_golden(r)


@pytest.mark.parametrize("streams", [1, 3])
def test_fast_inbound_decode_equals_the_key_order_path(streams):
    """A PE's one-scatter decode (cores/pe.py _scatter) gives exactly what the careful path in key order
    gives, for keys in any order, spikes and payloads mixed, learning signals, and repeated keys (which the
    fast path hands to the careful one, where their values add up in key order)."""
    from s2emu.cores.pe import KIND_ERROR
    from s2emu.cores.roles import make_pe
    from s2emu.router.packets import PacketBatch

    b = build(with_learning(smoke(epochs=1, batch=streams), signal="online"), streams=streams)
    pe = make_pe(b.pe_configs[0])
    keys = pe.km_keys
    assert (pe.km_kind == KIND_ERROR).any() and len(set(pe.km_proj.tolist())) > 1  # every block is exercised
    rng = np.random.default_rng(0)
    fast_seen = 0
    for trial in range(200):
        mc = rng.choice(keys, rng.integers(0, 8), replace=trial % 3 == 0)
        mcp = rng.choice(keys, rng.integers(0, 8), replace=trial % 4 == 0)
        batch = PacketBatch.make(0, 5, streams, mc_keys=mc, mcp_keys=mcp,
                                 mcp_payload=rng.normal(size=(len(mcp), streams)).astype(np.float32))
        before = pe.counters["packets_in"]
        fast_seen += pe._scatter(batch) is not None
        x, err, _ = pe._decode(batch)
        assert pe.counters["packets_in"] == before + len(batch)  # counted once, whichever path
        if len(batch) == 0:
            continue
        x_ref, err_ref, _ = pe._decode_slow(batch)
        for a, r in zip(x + [err], x_ref + [err_ref]):
            assert (a is None) == (r is None)
            if a is not None:
                assert a.dtype == np.float32 and a.tobytes() == r.tobytes()
    assert fast_seen > 50  # most batches take the fast path


def test_synaptic_sum_is_the_plain_loop_in_source_order():
    """The synaptic sum every split relies on: the compiled sum must be numpy's row-by-row loop in ascending
    source order, bit for bit, at every shape (a lone output element, wide rows, many rows, strided views)."""
    from s2emu.cores.kernels import synaptic_sum

    rng = np.random.default_rng(3)

    def check(B, n, k):
        x = (rng.normal(size=(B, k)) * (rng.random((B, k)) < 0.7)).astype(np.float32)
        rows = (rng.normal(size=(k, n)) * 10.0 ** rng.integers(-3, 4, size=(k, 1))).astype(np.float32)
        out = rng.normal(size=(B, n)).astype(np.float32)
        ref = out.copy()
        active = np.flatnonzero(x.any(axis=0))
        for i in active:
            ref += x[:, i, None] * rows[i]
        assert synaptic_sum(out, x, rows) == len(active)
        assert out.tobytes() == ref.tobytes(), (B, n, k)

    for B, n, k in [(1, 1, 300), (1, 2, 40), (2, 1, 17), (1, 10, 80), (4, 7, 120), (32, 120, 200), (3, 5, 1)]:
        check(B, n, k)
    # the views a group and the readout pass: strided rows and inputs
    x = (rng.normal(size=(2, 40)) * (rng.random((2, 40)) < 0.5)).astype(np.float32)
    W = rng.normal(size=(20, 30)).astype(np.float32)
    out = np.zeros((2, 30), np.float32)[:, 5:25]
    ref = out.copy()
    for i in np.flatnonzero(x[:, ::2].any(axis=0)):
        ref += x[:, ::2][:, i, None] * W[:, 5:25][i]
    synaptic_sum(out, x[:, ::2], W[:, 5:25])
    assert out.tobytes() == ref.tobytes()
