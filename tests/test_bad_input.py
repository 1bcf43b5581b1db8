"""Every bad input gets one clear error naming what was wrong."""

import dataclasses
import os

import numpy as np
import pytest

from s2emu.build import build
from s2emu.cores.roles import make_pe
from s2emu.cores.sram import SramLedger
from s2emu.errors import MachineError, PacketError, RecipeError, RoutingError, SramOverflowError
from s2emu.machine import make_machine
from s2emu.recipe import load_recipe, parse_recipe
from s2emu.router.packets import PacketBatch
from s2emu.runner import run

from conftest import smoke

import tomllib
from importlib import resources


def smoke_doc():
    return tomllib.loads((resources.files("s2emu.recipes") / "smoke.toml").read_text())


def parse_error(mutate) -> str:
    doc = smoke_doc()
    mutate(doc)
    with pytest.raises(RecipeError) as e:
        parse_recipe(doc)
    return str(e.value)


def test_unknown_key_is_named_with_a_suggestion():
    msg = parse_error(lambda d: d["populations"][1].update(tua_m=4.0))
    assert "populations[1].tua_m" in msg and "tau_m" in msg
    msg = parse_error(lambda d: d.update(sched={}))
    assert "'sched'" in msg and "schedule" in msg
    msg = parse_error(lambda d: d["learning"].update(learning_rate=0.1))
    assert "learning.learning_rate" in msg


@pytest.mark.parametrize("mutate, words", [
    (lambda d: d["populations"][1].update(size="40"), ["populations[1].size", "integer"]),
    (lambda d: d["populations"][1].update(size=0), ["populations[1].size", "[1, 65536]"]),
    (lambda d: d["learning"].update(lr=-1.0), ["learning.lr", "> 0"]),
    (lambda d: d["learning"].update(feedback="mirror"), ["learning.feedback", "symmetric"]),
    (lambda d: d["schedule"].update(batch=True), ["schedule.batch", "integer"]),
    (lambda d: d["machine"].update(pes_per_chip=0), ["machine.pes_per_chip", "> 0"]),
    (lambda d: d["machine"].update(preset="spinnaker9"), ["spinnaker9", "prototype-64k"]),
    (lambda d: d["machine"].update(reserved_bytes=10 ** 9), ["reserved_bytes", "below sram_bytes"]),
    (lambda d: d["populations"][2].update(tau_m=3.0), ["populations[2].tau_m", "readout"]),
    (lambda d: d["projections"][0].update(pre="inputs"), ["projections[0]", "'inputs'"]),
    (lambda d: d["data"].update(channels=21), ["data.channels", "input"]),
    (lambda d: d["record"].update(spikes=["hiden"]), ["record.spikes", "hiden"]),
    (lambda d: d.pop("data"), ["[data]"]),
    (lambda d: d["populations"].pop(2), ["readout"]),
    (lambda d: d["data"].update(seed=float("nan")), ["data.seed", "integer"]),
])
def test_recipe_mistakes_are_named(mutate, words):
    msg = parse_error(mutate)
    for w in words:
        assert w in msg, (w, msg)
    assert "\n" not in msg


def test_recipe_file_errors(tmp_path):
    p = tmp_path / "bad.toml"
    p.write_text("name = 'x'\n[[populations]\n")
    with pytest.raises(RecipeError, match="not valid TOML"):
        load_recipe(str(p))
    with pytest.raises(RecipeError, match="no recipe file 'nope.toml'.*smoke"):
        load_recipe("nope.toml")


def test_impossible_machine_sizes():
    with pytest.raises(MachineError, match="chips must be >= 1"):
        make_machine("spinnaker2", chips=0)
    with pytest.raises(MachineError, match="sram_bytes"):
        make_machine("spinnaker2", sram_bytes=10)


def test_network_that_needs_more_pes_than_a_chip_is_refused_before_running():
    r = smoke().with_overrides(pes=40)
    r = dataclasses.replace(r, machine=make_machine("spinnaker2", pes_per_chip=16))
    with pytest.raises(MachineError, match="needs 41 PEs.*has 16"):
        build(r)


def test_slice_that_does_not_fit_names_pe_budget_total_and_largest_items():
    r = dataclasses.replace(smoke().with_overrides(pes=1), machine=make_machine("spinnaker2", sram_bytes=32 * 1024))
    with pytest.raises(SramOverflowError) as e:
        build(r)
    msg = str(e.value)
    assert "PE 0 (hidden[0:40])" in msg and "32,768 B" in msg and "largest:" in msg
    assert "hidden->hidden.weights 6,400 B" in msg or "input->hidden" in msg
    # four PEs of 10 neurons fit in the same machine
    assert build(dataclasses.replace(r, network=smoke().network)).total_bytes > 0


def test_ledger_counts_batch_one():
    led = SramLedger("PE 9", budget=1000, streams=8)
    a = led.alloc("v", (10,), batched=True)
    assert a.shape == (8, 10) and led.total == 40
    with pytest.raises(SramOverflowError, match="PE 9 does not fit: needs 1,040 B.*budget is 1,000 B"):
        led.alloc("w", (250,))


def test_pe_refuses_a_key_it_has_no_synapses_for():
    b = build(smoke(epochs=1, batch=1))
    pe = make_pe(b.pe_configs[0])
    bad = PacketBatch.make(5, 1, 1, mc_keys=[0x7FFF0000])
    with pytest.raises(PacketError, match="0x7fff0000"):
        pe.step(1, bad)


def test_dropped_packets_fail_the_run_with_the_key_named():
    """A routing table missing the readout's entry: packets are counted as dropped and the run says so."""
    from s2emu.router.table import MulticastTable

    b_recipe = smoke(epochs=1, batch=4)
    import s2emu.runner as runner_mod

    real_build = runner_mod.build_run

    def broken_build(recipe, **kw):
        b = real_build(recipe, **kw)
        host = b.mapping.host
        entries = [e for e in b.mapping.table.entries if e.route != 1 << (6 + host)]
        return dataclasses.replace(b, mapping=dataclasses.replace(b.mapping, tables={0: MulticastTable(entries)}))

    runner_mod.build_run = broken_build
    try:
        with pytest.raises(RoutingError, match=r"dropped \d+ packets.*key 0x"):
            run(b_recipe)
    finally:
        runner_mod.build_run = real_build


def test_batch_larger_than_training_set():
    from s2emu.errors import S2EmuError

    with pytest.raises(S2EmuError, match="batch 1000 is larger than the training set"):
        build(smoke(batch=1000))


def test_nan_payload_is_refused():
    with pytest.raises(PacketError, match="not finite"):
        PacketBatch.make(0, 0, 1, mcp_keys=[1], mcp_payload=np.array([np.nan], np.float32))


def test_pe_refuses_a_key_map_row_beyond_its_synapses():
    """A key map entry pointing past its projection's rows is a build defect: named at the first packet,
    never written into the next projection's columns."""
    b = build(smoke(epochs=1, batch=1))
    cfg = b.pe_configs[0]
    km = {k: np.asarray(v).copy() for k, v in cfg["keymap"].items()}
    q = int(km["proj"][0])
    km["row"][0] = cfg["incoming"][q]["n_pre"]  # one past the last row
    cfg["keymap"] = km
    pe = make_pe(cfg)
    with pytest.raises(PacketError, match="key map names a row or projection it does not have"):
        pe.step(1, PacketBatch.make(5, 1, 1, mc_keys=[int(km["keys"][1])]))


# ---------------------------------------------------------------- damaged model files (issue 22)

def _a_model(tmp_path):
    """A whole model of the smoke recipe's network (seeded weights), written as `s2emu run --out` does."""
    from s2emu.model import save_model

    r = smoke()
    rng = np.random.default_rng(0)
    w = {pr.name: rng.standard_normal((r.network[pr.pre].size, r.network[pr.post].size)).astype(np.float32)
         for pr in r.network.projections}
    save_model(tmp_path / "model.npz", w, {"recipe": "smoke"})
    return tmp_path / "model.npz"


def _damaged(tmp_path, kind):
    data = _a_model(tmp_path).read_bytes()
    p = tmp_path / f"{kind}.npz"
    if kind == "truncated":
        p.write_bytes(data[: len(data) // 2])
    elif kind == "corrupt":  # bytes flipped inside the first compressed entry: zlib fails
        flipped = bytearray(data)
        for i in range(200, 260):
            flipped[i] ^= 0xFF
        p.write_bytes(bytes(flipped))
    elif kind == "not a zip":
        p.write_bytes(b"hello")  # numpy took this for a pickle
    elif kind == "empty":
        p.write_bytes(b"")
    elif kind == "text weights":
        np.savez(p, **{"W/input->hidden": np.array(["a", "b"]), "meta": np.array("{}")})
    elif kind == "meta not an object":
        np.savez(p, meta=np.array("[1, 2]"))
    elif kind == "fifo":
        os.mkfifo(p)
    elif kind == "device":
        return "/dev/zero"
    return p


@pytest.mark.parametrize("command", ["eval", "stream"])
@pytest.mark.parametrize("kind, words", [
    ("truncated", ["not a model file, or a damaged one"]),
    ("corrupt", ["not a model file, or a damaged one"]),
    ("not a zip", ["not an .npz archive"]),
    ("empty", ["not an .npz archive"]),
    ("text weights", ["W/input->hidden holds <U1 values, not numbers"]),
    ("meta not an object", ["its meta is a JSON list"]),
    ("fifo", ["is not a regular file"]),
    ("device", ["is not a regular file"]),
])
def test_a_damaged_model_is_one_error_line(command, kind, words, tmp_path, capsys):
    """eval and stream --model: a broken .npz gave a traceback (zipfile.BadZipFile, zlib.error)."""
    from s2emu.cli import main

    path = _damaged(tmp_path, kind)
    assert main([command, "smoke", "--model", str(path), "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "\n" not in err and str(path) in err, err
    for w in words:
        assert w in err, (w, err)
