"""`s2emu scale`: strong scaling keeps every bit, weak scaling grows the network with the PEs, rows that do not
fit the machine are kept with their reason, and the outputs are written."""

import csv
import json

import pytest
from conftest import smoke
from test_cli import s2emu

from s2emu.errors import RecipeError
from s2emu.scale import parse_chips, parse_modes, parse_pes, scale, scaled_recipe, summary, write


def test_strong_scaling_same_digest_and_figures(tmp_path):
    rows = scale(smoke(epochs=1), [1, 2, 4], ["strong"])
    assert [r["pes"] for r in rows] == [1, 2, 4]
    assert [r["pes_total"] for r in rows] == [2, 3, 5]  # the readout PE on top of the split
    assert len({r["state_digest"] for r in rows}) == 1
    assert all(r["error"] is None and r["fits"] for r in rows)
    # splitting the hidden layer shrinks the largest PE and grows the routing table and the packets
    assert rows[0]["sram_max_pe_bytes"] > rows[1]["sram_max_pe_bytes"] > rows[2]["sram_max_pe_bytes"]
    assert rows[0]["router_entries"] < rows[2]["router_entries"]
    assert rows[0]["chip_us_per_tick"] > rows[2]["chip_us_per_tick"]  # less work on the busiest PE
    s = summary(rows)
    assert s["strong_digests_identical"] is True and set(s["strong_speedup"]) == {1, 2, 4}
    paths = write(rows, s, tmp_path, "smoke")
    with open(paths["csv"]) as f:
        assert len(list(csv.DictReader(f))) == 3
    assert json.loads(open(paths["json"]).read())["strong_digests_identical"] is True
    assert "| strong | 4/5 |" in open(paths["markdown"]).read()


def test_weak_scaling_grows_the_network_and_keeps_neurons_per_pe():
    base = smoke(epochs=1)
    r2 = scaled_recipe(base, "weak", 4, 2)
    hidden = r2.network["hidden"]
    assert hidden.size == 80 and hidden.max_atoms_per_core == 20  # 40 x 4/2, still 20 per PE as at 2 PEs
    assert r2.network["input"].size == 20 and r2.network["out"].size == 4
    assert scaled_recipe(base, "weak", 2, 2).network["hidden"].size == 40


def test_weak_row_that_does_not_fit_is_kept_with_its_reason():
    # 40 hidden neurons per PE listening to 40 x 16 recurrent ones, 7 traces per synapse: far over 128 KB
    rows = scale(smoke(epochs=1), [1, 16], ["weak"])
    assert rows[0]["error"] is None and rows[0]["neurons"] == 40
    assert rows[1]["neurons"] == 640 and rows[1]["fits"] is False
    assert "SRAM" in rows[1]["error"] or "bytes" in rows[1]["error"]
    assert summary(rows)["weak_efficiency"] == {1: 1.0}


def test_parse_errors():
    assert parse_pes("4,1,2,2") == [1, 2, 4]
    assert parse_modes("weak") == ["weak"]
    for bad in ("", "a,b", "0,2"):
        with pytest.raises(RecipeError, match="^--pes: "):
            parse_pes(bad)
        with pytest.raises(RecipeError, match="^--chips: .*chip counts"):
            parse_chips(bad)
    assert parse_chips("48,1,4,4") == [1, 4, 48]
    with pytest.raises(RecipeError):
        parse_modes("strong,diagonal")


def test_scale_cli_json(tmp_path):
    p = s2emu("scale", "smoke", "--pes", "1,2", "--mode", "strong", "--out", str(tmp_path), "--json")
    assert p.returncode == 0, p.stderr
    out = json.loads(p.stdout)
    assert out["strong_digests_identical"] is True and len(out["rows"]) == 2
    assert (tmp_path / "scale.md").exists() and (tmp_path / "scale.csv").exists()
    bad = s2emu("scale", "smoke", "--pes", "x")
    assert bad.returncode == 2 and bad.stderr.startswith("error: --pes")
