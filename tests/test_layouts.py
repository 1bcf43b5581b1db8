"""The optimized eligibility layout (one epsv per presynaptic source) saves memory and changes no bit."""

from conftest import smoke, with_learning
from s2emu.build import build
from s2emu.runner import run


def test_per_source_layout_gives_the_same_bits_with_less_memory():
    base = smoke(epochs=2, batch=4)
    faithful = run(with_learning(base, eligibility_layout="per_synapse"))
    optimized = run(with_learning(base, eligibility_layout="per_source"))
    assert faithful["state_digest"] == optimized["state_digest"]
    assert optimized["total_bytes"] < faithful["total_bytes"]
    # the work is counted: per-source epsv needs fewer MACs and SRAM accesses for the same result
    work = lambda r, k: sum(c[k] for c in r["pe_counters"])  # noqa: E731
    for k in ("macs", "accesses"):
        assert 0 < work(optimized, k) < work(faithful, k)


def test_kws_memory_matches_the_science_decomposition():
    from s2emu.recipe import load_recipe

    b = build(load_recipe("eprop_kws"), streams=1, load_data=False)
    assert abs(b.total_bytes - 695_040) / 695_040 < 0.01  # SCIENCE.md: 7 float32 per synapse + 4 per readout weight
    assert b.recipe.network.n_weights == 25_440
    assert b.mapping.n_pes == 13
