"""DEEP R (cores/deepr.py, cores/mlp.py): exactly K connections, signs kept, uniform rewiring, the same bits for
any column split of a layer, gradients that match finite differences, the 64 KB budget, and learning MNIST."""

import dataclasses

import numpy as np
import pytest
from conftest import with_learning

from s2emu.build import build
from s2emu.cores.deepr import NOISE, SparseLayer, budget, hash_normal
from s2emu.cores.sram import SramLedger
from s2emu.errors import RecipeError, SramOverflowError
from s2emu.recipe import load_recipe, parse_recipe
from s2emu.runner import run


def layer(n_pre=50, n_post=40, k=120, lo=0, hi=None, seed=3, init=0.5):
    hi = n_post if hi is None else hi
    sl = SparseLayer(SramLedger("t", 1 << 20), "w", n_pre, n_post, lo, hi, k, layer=0, seed=seed)
    sl.rewire(np.zeros(n_post, np.int64), k, 0, init_scale=init)
    return sl


def state(sl):
    return (sl.rows[:sl.n].tolist(), sl.cols[:sl.n].tolist(), sl.theta[:sl.n].tobytes(), sl.sign().tolist())


def test_hashed_normals_are_standard_and_reproducible():
    z = hash_normal(7, NOISE, 1, 42, np.arange(200_000))
    assert abs(z.mean()) < 0.01 and abs(z.std() - 1) < 0.01
    assert np.array_equal(z[:100], hash_normal(7, NOISE, 1, 42, np.arange(100)))
    assert not np.array_equal(z[:100], hash_normal(7, NOISE, 1, 43, np.arange(100)))


def test_init_draws_exactly_k_distinct_connections_sorted_by_column():
    sl = layer()
    assert sl.n == 120
    pos = sl.positions()
    assert len(set(pos.tolist())) == 120
    assert np.all(np.diff(sl.cols[:sl.n].astype(int) * 1000 + sl.rows[:sl.n]) > 0)  # (column, row) order
    assert (sl.theta[:sl.n] > 0).all()
    assert 0.3 < (sl.sign() < 0).mean() < 0.7


def test_update_drops_dead_connections_and_rewiring_restores_k_keeping_the_survivors():
    sl = layer()
    np.maximum(sl.theta, 0.1, out=sl.theta)
    sl.theta[:sl.n:3] = 1e-9  # a third of them die in the next step (the L1 term alone pushes them below 0)
    before = dict(zip(sl.positions().tolist(), zip(sl.theta[:sl.n].tolist(), sl.sign().tolist())))
    pre, delta = np.zeros(50, np.float32), np.zeros(40, np.float32)
    dead = sl.update(pre, delta, lr=1.0, l1=1e-3, noise=0.0, sample=1)
    assert dead == 40 and sl.n == 80
    survivors = dict(zip(sl.positions().tolist(), zip(sl.theta[:sl.n].tolist(), sl.sign().tolist())))
    for p, (th, sg) in survivors.items():
        assert before[p][1] == sg and th == pytest.approx(before[p][0] - 1e-3)
    sl.rewire(sl.active_per_column(), 120, round_=1)
    assert sl.n == 120 and len(set(sl.positions().tolist())) == 120
    after = dict(zip(sl.positions().tolist(), zip(sl.theta[:sl.n].tolist(), sl.sign().tolist())))
    assert all(after[p] == survivors[p] for p in survivors)  # survivors untouched
    new = set(after) - set(survivors)
    assert len(new) == 40 and all(after[p][0] == 0.0 for p in new)  # new ones start at theta = 0


def test_rewiring_draws_uniformly_over_dormant_positions():
    """Many rounds on a 4 x 5 layer with one column nearly full: each dormant position is drawn equally often."""
    counts = np.zeros((4, 5))
    for r in range(3000):
        sl = SparseLayer(SramLedger("t", 1 << 16), "w", 4, 5, 0, 5, 4, layer=0, seed=r)
        sl.rows[:3], sl.cols[:3], sl.theta[:3], sl.n = [0, 1, 2], [2, 2, 2], 1.0, 3  # column 2: one dormant row
        sl.rewire(sl.active_per_column(), 4, round_=1)
        new = [(int(a), int(b)) for a, b in zip(sl.rows[:4], sl.cols[:4]) if not (b == 2 and a < 3)]
        assert len(new) == 1
        counts[new[0]] += 1
    dormant = np.ones((4, 5), bool)
    dormant[:3, 2] = False
    expected = 3000 / dormant.sum()
    assert counts[~dormant].sum() == 0
    assert np.all(np.abs(counts[dormant] - expected) < 5 * np.sqrt(expected))


@pytest.mark.parametrize("cut", [1, 17, 39])
def test_a_layer_split_by_columns_gives_the_same_bits(cut):
    """Two PEs holding columns [0, cut) and [cut, 40) of a layer: the same connections after init and after
    rewiring (with the column counts they would exchange), the same forward sums, and the same backward sums
    when the second continues the first's accumulator (the chain)."""
    full = layer()
    parts = [layer(lo=0, hi=cut), layer(lo=cut, hi=40)]
    assert state(full)[0] == sum((state(p)[0] for p in parts), [])
    rng = np.random.default_rng(0)
    pre = rng.random(50, dtype=np.float32)
    delta = rng.standard_normal(40).astype(np.float32)
    for step in range(1, 25):
        for sl in (full, *parts):
            sl.update(pre, delta[sl.lo:sl.hi], lr=0.5, l1=1e-3, noise=0.3, sample=step)
        if step % 5 == 0:
            counts = np.concatenate([p.active_per_column() for p in parts])
            assert np.array_equal(counts, full.active_per_column())
            for sl in (full, *parts):
                sl.rewire(counts, 120, step // 5)
        assert state(full) == tuple(sum((list(x) for x in z), []) if not isinstance(z[0], bytes)
                                    else b"".join(z) for z in zip(*(state(p) for p in parts)))
    fwd = np.concatenate([p.forward(pre) for p in parts])
    assert fwd.tobytes() == full.forward(pre).tobytes()
    acc_full, acc_chain = np.zeros(50, np.float32), np.zeros(50, np.float32)
    full.backward(delta, acc_full)
    parts[0].backward(delta[:cut], acc_chain)
    parts[1].backward(delta[cut:], acc_chain)
    assert acc_chain.tobytes() == acc_full.tobytes()


def test_backward_pass_matches_finite_differences():
    """The gradient the PE applies, s * pre * delta, against central differences of the cross-entropy of a
    small 12-8-6-3 layered network, for every active connection."""
    rng = np.random.default_rng(1)
    sizes, ks = (12, 8, 6, 3), (40, 20, 12)
    layers = []
    for i, k in enumerate(ks):
        sl = SparseLayer(SramLedger("t", 1 << 20), f"w{i}", sizes[i], sizes[i + 1], 0, sizes[i + 1], k, i, 5)
        sl.rewire(np.zeros(sizes[i + 1], np.int64), k, 0, init_scale=0.8)
        layers.append(sl)
    x = rng.random(12).astype(np.float32)
    y = 2

    def loss_and_acts():
        acts = [x]
        for i, sl in enumerate(layers):
            a = sl.forward(acts[-1]).astype(np.float64)
            acts.append(np.maximum(a, 0).astype(np.float32) if i < 2 else a)
        z = acts[-1].astype(np.float64)
        return np.log(np.exp(z - z.max()).sum()) + z.max() - z[y], acts

    _, acts = loss_and_acts()
    z = acts[-1].astype(np.float64)
    p = np.exp(z - z.max()) / np.exp(z - z.max()).sum()
    p[y] -= 1
    deltas = [None, None, p.astype(np.float32)]
    for i in (2, 1):
        acc = np.zeros(sizes[i], np.float32)
        layers[i].backward(deltas[i], acc)
        deltas[i - 1] = acc * (acts[i] > 0)
    for i, sl in enumerate(layers):
        analytic = sl.sign() * acts[i][sl.rows[:sl.n]] * deltas[i][sl.cols[:sl.n]]
        for k in range(sl.n):
            th = sl.theta[k]
            sl.theta[k] = th + 1e-3
            up, _ = loss_and_acts()
            sl.theta[k] = th - 1e-3
            down, _ = loss_and_acts()
            sl.theta[k] = th
            assert (up - down) / 2e-3 == pytest.approx(float(analytic[k]), abs=2e-3), (i, k)


def test_lenet_fits_in_one_64k_pe_and_a_smaller_budget_is_refused():
    recipe = load_recipe("recipes/deepr_mnist.toml")
    assert recipe.machine.pe_budget == 64 * 1024
    assert recipe.network.n_active_weights == 3552 and recipe.network.n_weights == 266_200
    b = build(recipe, streams=1, load_data=False)
    items = b.memory[0]["items"]
    weights = sum(i["bytes"] for i in items if i["name"].rsplit(".", 1)[-1] in ("rows", "cols", "theta", "signs"))
    assert weights == 3552 * 8 + sum((k + 7) // 8 for k in (2352, 900, 300))  # 28,861 B: "about 28.9 KB"
    assert b.total_bytes <= 64 * 1024
    small = dataclasses.replace(recipe, machine=dataclasses.replace(recipe.machine, sram_bytes=32 * 1024))
    with pytest.raises(SramOverflowError, match="does not fit.*input->h1.theta"):
        build(small, streams=1, load_data=False)


def test_recipe_errors_name_the_problem():
    doc_text = open("recipes/deepr_mnist.toml").read()
    import tomllib
    doc = tomllib.loads(doc_text)
    with pytest.raises(RecipeError, match="batch' must be 1 for DEEP R"):
        parse_recipe({**doc, "schedule": {"epochs": 1, "batch": 8}})
    with pytest.raises(RecipeError, match="does not train a layered"):
        parse_recipe({**doc, "learning": {"rule": "eprop"}})
    smoke = tomllib.loads(open("recipes/smoke.toml").read())
    smoke["projections"][0]["connectivity"] = 0.5
    with pytest.raises(RecipeError, match="connectivity': sparse projections are for layered"):
        parse_recipe(smoke)
    assert budget(784, 300, 0.01) == 2352 and budget(100, 10, 0.3) == 300


def small_mnist(train=1500, test=400, epochs=1):
    r = load_recipe("recipes/deepr_mnist.toml").with_overrides(epochs=epochs)
    return dataclasses.replace(r, data={**r.data, "max_train": train, "max_test": test})


def test_deepr_learns_digits_on_the_chip():
    result = run(with_learning(small_mnist(), lr=0.1))
    assert result["accuracy"] > 0.6  # chance 0.1; ~0.7 after one pass over 1,500 digits
    counters = result["pe_counters"][0]
    assert counters["updates"] == 1500 and counters["rewired"] == counters["dormant"] > 0


def test_every_split_over_pes_gives_the_same_bits():
    """One PE, or every layer cut into 2, 3 or 5 column slices exchanging activations, chained backward sums
    and rewiring counts as packets: the same weights, predictions and digest; less SRAM per PE."""
    r = small_mnist(train=200, test=60)
    one = run(r)
    assert one["pes"] == 1
    for pes in (2, 3, 5):
        split = run(r.with_overrides(pes=pes))
        assert split["pes"] == pes
        assert split["state_digest"] == one["state_digest"] and split["confusion"] == one["confusion"]
        assert max(p["bytes"] for p in split["per_pe"]) < one["total_bytes"]
        assert split["router"]["routed"] > one["router"]["routed"]


def test_a_split_finer_than_a_layer_is_refused():
    with pytest.raises(Exception, match="layer 'out' has 10 neurons, fewer than the 12 PEs"):
        build(small_mnist().with_overrides(pes=12), load_data=False)


@pytest.mark.ray
def test_deepr_is_the_same_on_the_ray_engine(ray_local):
    """Three PE actors exchanging every packet through the router actor, against one PE on the local engine."""
    r = small_mnist(train=100, test=40)
    assert run(r.with_overrides(pes=3), engine="ray")["state_digest"] == run(r)["state_digest"]
