"""A whole board, small: recipes/board_chip.toml's network once per chip (s2emu/scale.py tile) on 4 chips of 8 PEs,
every PE in use, packets crossing the mesh; the same digest on the local engine and on ray with a process per
chip's PEs (and with the PEs of a chip split over processes); `s2emu scale --chips`; recipes/board48.toml is the
48-chip tile; the PE memory cuts hold (a population's PEs share one key map, no per-PE copy of the weights)."""

import dataclasses
import json

import pytest
from conftest import smoke
from test_cli import s2emu
from test_docs import assert_documented

from s2emu.build import build
from s2emu.cores.group import make_pes
from s2emu.engines import run_engine
from s2emu.errors import RecipeError
from s2emu.recipe import load_recipe
from s2emu.runner import assemble_spikes, assemble_weights, run, state_digest
from s2emu.scale import chips_recipe, parse_axis, pes_needed, scale, spread, summary, tile


def small_chip():
    """board_chip.toml cut to a chip of 8 PEs (7 hidden PEs of 2 neurons and the readout), 4 test samples."""
    r = load_recipe("recipes/board_chip.toml")
    pops = tuple(dataclasses.replace(p, size=14) if p.name == "hidden" else p for p in r.network.populations)
    return dataclasses.replace(r, network=dataclasses.replace(r.network, populations=pops),
                               data={**r.data, "test_per_class": 1})


def digest(b, engine="local", **kw):
    raw = run_engine(engine, b, **kw)
    return state_digest(assemble_weights(b, raw), assemble_spikes(b, raw)), raw


def test_board48_is_the_48_chip_tile_of_board_chip_and_uses_every_pe():
    board = load_recipe("recipes/board48.toml")
    tiled = tile(load_recipe("recipes/board_chip.toml"), 48)
    assert board.network == tiled.network and board.record_spikes == tiled.record_spikes
    assert board.machine.geometry == tiled.machine.geometry  # 8 x 6: the most nearly square mesh of 48
    g = board.machine.geometry
    assert (g.width, g.height, g.wrap, board.machine.pes_per_chip) == (8, 6, False, 152)
    assert pes_needed(board) == 48 * 152 == board.machine.total_pes
    assert board.learning.rule == "none" and board.schedule.epochs == 0


def test_tile_copies_a_chip_and_joins_neighbours():
    base = small_chip()
    r = tile(base, 4)
    net = r.network
    assert pes_needed(r) == 4 * 8 and r.machine.pes_per_chip == 8 and r.machine.chips == 4
    assert [p.name for p in net.populations] == ["input", "hidden_c0", "hidden_c1", "hidden_c2", "hidden", "out"]
    assert net["hidden_c0"].size == 16 and net["hidden"].size == 14  # the readout's PE is free on chips 0-2
    names = {pr.name for pr in net.projections}
    # 2 x 2 mesh: chip 0 (0,0) touches 1 (E), 2 (N) and 3 (NE); chips 1 and 2 touch each other only through SW/NE
    assert {"hidden_c0->hidden_c1", "hidden_c0->hidden_c2", "hidden_c0->hidden", "hidden->hidden_c0"} <= names
    assert "hidden_c1->hidden_c2" not in names  # (1,0) and (0,1) are not neighbours on SpiNNaker's mesh
    assert [pr.pre for pr in net.projections if pr.post == "out"] == ["hidden"]  # inference: the last chip's
    lateral = next(pr for pr in net.projections if pr.name == "hidden_c0->hidden_c1")
    assert lateral.init_scale == 0.5
    assert tile(base, 1).network == base.network  # one chip is the recipe itself
    with pytest.raises(RecipeError, match="network of one chip"):
        tile(base.with_overrides(pes_per_chip=4), 2)


@pytest.mark.ray
def test_four_chip_board_local_and_ray_same_digest_and_packets_cross_chips(ray_local):
    b = build(tile(small_chip(), 4))
    assert b.mapping.n_pes == 32 and len(b.mapping.tables) == 4
    local, raw = digest(b)
    links = sum(raw.router_counters["link_sent"].values())
    assert links > 0 and raw.router_counters["dropped"] == 0
    assert sum(len(s) for s in assemble_spikes(b, raw).values()) > 0
    for k in (8, 3):  # the PEs of a chip in one process; and a chip's PEs over three processes
        ray, raw_ray = digest(b, "ray", pes_per_process=k)
        assert ray == local
        assert raw_ray.router_counters == raw.router_counters


def test_scale_across_chips_strong_keeps_the_digest_weak_grows(tmp_path):
    base = small_chip()
    rows = scale(base, [], ["strong", "weak"], chips=[1, 4])
    strong, weak = rows[:2], rows[2:]
    assert [r["chips"] for r in rows] == [1, 4, 1, 4] and all(r["error"] is None for r in rows)
    assert len({r["state_digest"] for r in strong}) == 1 and strong[0]["state_digest"] == weak[0]["state_digest"]
    assert strong[1]["chips_in_use"] == 4 and strong[1]["pes_per_chip"] == 2 and strong[1]["link_packets_per_tick"] > 0
    assert weak[1]["pes_total"] == 32 and weak[1]["chips_in_use"] == 4 and weak[1]["mesh"] == [2, 2]
    assert weak[1]["link_packets_per_tick"] > strong[1]["link_packets_per_tick"] > strong[0]["link_packets_per_tick"] == 0
    assert weak[1]["state_digest"] == run(tile(base, 4))["state_digest"]  # the row is the tiled recipe's run
    s = summary(rows)
    assert s["strong_digests_identical"] is True and s["axis"] == "chips" and set(s["weak_efficiency"]) == {1, 4}


def test_scale_across_chips_rows_and_cli(tmp_path):
    r = smoke(epochs=1)
    assert spread(r, 4).machine.pes_per_chip == 2 and chips_recipe(r, "weak", 2).machine.pes_per_chip == 5
    assert parse_axis(r, "1,2,4,8", None)[1:] == ([1, 2, 4, 8], None)
    assert parse_axis(r, "1,2,4,8", "4,1")[1:] == ([], [1, 4])
    assert parse_axis(r, "2", "1")[0].network["hidden"].max_atoms_per_core == 20
    with pytest.raises(RecipeError, match="one PE count"):
        parse_axis(r, "2,4", "1")
    p = s2emu("scale", "smoke", "--chips", "1,2", "--mode", "strong", "--epochs", "1", "--out", str(tmp_path),
              "--json", "--quiet")
    assert p.returncode == 0, p.stderr
    out = json.loads(p.stdout)
    assert out["strong_digests_identical"] is True and [r["chips"] for r in out["rows"]] == [1, 2]
    assert "| strong | 2 (2x1, 2) |" in (tmp_path / "scale.md").read_text()
    assert_documented("scale", out)  # the chip rows' keys too


def test_a_population_shares_one_key_map_and_keeps_no_copy_of_its_weights(monkeypatch):
    from s2emu.cores.group import NeuronGroup

    b = build(tile(small_chip(), 2))
    pes, groups = make_pes(b.pe_configs)
    assert len(groups) == 2
    for g in groups:
        assert len({id(m._key_map) for m in g.members}) == 1 and len({id(m._km_column) for m in g.members}) == 1
    assert all("weights" not in pr for pe in pes for pr in pe.projections) and "keymap" not in pes[0].config
    # the build's key maps point at the shared arrays too: one copy per population
    assert len({id(c["keymap"]["keys"]) for c in b.pe_configs}) == 3
    made = []  # the members' joint table: never needed without learning (their packets are the same)
    monkeypatch.setattr(NeuronGroup, "_member_table", lambda g: made.append(g))
    run_engine("local", b)
    assert made == []


@pytest.mark.parametrize("B,n_pre,n,strided", [(1, 40, 1, False), (1, 300, 7, True), (3, 50, 4, False),
                                                (2, 3000, 120, True)])
def test_the_numpy_synaptic_sum_is_the_kernels_bits(B, n_pre, n, strided):
    """A process of inferring PEs sums rows in numpy (no numba): the same bits as the compiled loop, a lone
    neuron, strided input (a group's column slice), several streams and more rows than one temporary holds."""
    import numpy as np

    from s2emu.cores import kernels

    rng = np.random.default_rng(n_pre)
    x = (rng.random((B, n_pre + 5)) < 0.3).astype(np.float32) * rng.normal(size=(B, n_pre + 5)).astype(np.float32)
    x = x[:, 2:2 + n_pre] if strided else np.ascontiguousarray(x[:, :n_pre])
    rows = rng.normal(size=(n_pre, n)).astype(np.float32)
    start = rng.normal(size=(B, n)).astype(np.float32)
    a, b = start.copy(), start.copy()
    old = kernels._SUM_ELEMENTS
    kernels._SUM_ELEMENTS = 64 if n_pre == 3000 else old  # several chunks
    try:
        got = kernels._numpy_synaptic_sum(a, x, rows)
    finally:
        kernels._SUM_ELEMENTS = old
    assert got == kernels._compiled(kernels._synaptic_sum)(b, x, rows)
    assert a.tobytes() == b.tobytes()


def test_an_inferring_run_never_loads_numba_and_has_the_digest_it_has_with_it():
    import subprocess
    import sys

    code = ("import sys; sys.path.insert(0, 'tests'); from test_board import small_chip; "
            "from s2emu.scale import tile; from s2emu.runner import run; "
            "r = run(tile(small_chip(), 2)); print(r['state_digest'], 'numba' in sys.modules)")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    digest_numpy, loaded = p.stdout.split()
    assert loaded == "False"
    from s2emu.cores import kernels

    kernels.warm_kernels()  # this process: the compiled sum
    assert kernels._loaded and run(tile(small_chip(), 2))["state_digest"] == digest_numpy
