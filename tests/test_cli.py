"""The command line as a user meets it: JSON on stdout, one-line errors, progress on stderr."""

import json
import os
import subprocess
import sys

import pytest

RUN = [sys.executable, "-m", "s2emu"]


def s2emu(*args, timeout=300):
    return subprocess.run([*RUN, *args], capture_output=True, text=True, timeout=timeout)


def test_info_json():
    p = s2emu("info", "--json")
    assert p.returncode == 0, p.stderr
    info = json.loads(p.stdout)
    assert info["machines"]["spinnaker2"]["sram_bytes"] == 128 * 1024
    assert info["machines"]["spinnaker2"]["pes_per_chip"] == 152
    assert info["machines"]["spinnaker2"]["router_entries"] == 16384
    assert info["machines"]["prototype-64k"]["sram_bytes"] == 64 * 1024
    assert "smoke" in info["recipes"]


def test_json_keeps_stdout_for_its_object_whatever_else_writes_there():
    """Ray's raylet prints warnings on the driver's stdout when many actors start; a library may print; a
    child process inherits stdout. With --json all of that goes to stderr and stdout holds the one object."""
    code = ("import os, subprocess, sys\n"
            "import s2emu.cli as cli\n"
            "info = cli.COMMANDS['info']\n"
            "def noisy(args):\n"
            "    os.write(1, b'raw write to fd 1\\n')\n"
            "    print('a print')\n"
            "    subprocess.run([sys.executable, '-c', 'print(\"a child process\")'], check=True)\n"
            "    return info(args)\n"
            "cli.COMMANDS['info'] = noisy\n"
            "assert cli.main(['info', '--json']) == 0\n"
            "assert cli.main(['info', '--json']) == 0\n"  # an in-process caller gets stdout back each time
            "print('after')\n")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    first, second, after = p.stdout.splitlines()
    assert "smoke" in json.loads(first)["recipes"] and json.loads(second) == json.loads(first)
    assert after == "after"
    for noise in ("raw write to fd 1", "a print", "a child process"):
        assert noise in p.stderr and noise not in p.stdout


def test_run_json_is_one_object_with_stable_keys():
    p = s2emu("run", "recipes/smoke.toml", "--epochs", "1", "--batch", "8", "--json")
    assert p.returncode == 0, p.stderr
    lines = p.stdout.strip().splitlines()
    assert len(lines) == 1
    r = json.loads(lines[0])
    for key in ("state_digest", "accuracy", "balanced_accuracy", "chance", "total_bytes", "per_pe", "ticks",
                "ticks_per_second", "router", "train_curve"):
        assert key in r, key
    assert len(r["state_digest"]) == 64 and r["chance"] == 0.25
    assert r["router"]["dropped"] == 0 and r["router"]["routed"] > 0
    assert "ticks" in p.stderr  # the progress bar went to stderr


def test_run_same_digest_for_other_pes_via_cli():
    a = json.loads(s2emu("run", "smoke", "--epochs", "1", "--batch", "8", "--json", "--quiet").stdout)
    b = json.loads(s2emu("run", "smoke", "--epochs", "1", "--batch", "8", "--pes", "2", "--json", "--quiet").stdout)
    assert a["pes"] == 5 and b["pes"] == 3
    assert a["state_digest"] == b["state_digest"]


def test_memory_per_pe_breakdown():
    p = s2emu("memory", "smoke", "--json")
    assert p.returncode == 0, p.stderr
    m = json.loads(p.stdout)
    assert len(m["per_pe"]) == 5
    assert m["total_bytes"] == sum(pe["bytes"] for pe in m["per_pe"])
    hidden = m["per_pe"][0]
    names = {i["name"] for i in hidden["items"]}
    assert {"input->hidden.weights", "input->hidden.epsv", "hidden->hidden.epsa", "v", "a"} <= names
    # faithful layout: 7 float32 per synapse (W, m, v, gradient, epsv, epsa, ebar)
    syn = sum(i["bytes"] for i in hidden["items"] if "->" in i["name"])
    assert syn == (20 + 40) * 10 * 7 * 4
    p = s2emu("memory", "smoke")
    assert "total" in p.stdout and "hidden[0:10]" in p.stdout


def test_map_report():
    p = s2emu("map", "smoke", "--json")
    m = json.loads(p.stdout)
    assert m["pes"] == 5 and m["host_endpoint"] == 5
    assert m["table"]["entries"] <= m["table"]["entries_before_merge"]
    p = s2emu("map", "smoke")
    assert "router table" in p.stdout and "host" in p.stdout


@pytest.mark.parametrize("args, words", [
    (["run", "nope.toml"], ["no recipe file"]),
    (["run", "smoke", "--pes", "0"], ["--pes must be >= 1"]),
    (["run", "smoke", "--transport", "calls"], ["--transport needs --engine ray"]),
    # these ran: every 0 ticks wrote no checkpoint at all, -1 restarts meant as many as 0
    (["run", "smoke", "--out", "-", "--checkpoint-every", "0"], ["argument --checkpoint-every", ">= 1", "got 0"]),
    (["run", "smoke", "--out", "-", "--max-restarts", "-1"], ["argument --max-restarts", ">= 0", "got -1"]),
    (["run", "smoke", "--out", "-", "--checkpoint-every", "x"], ["argument --checkpoint-every", "got 'x'"]),
    (["run", "smoke", "--out", "-", "--checkpoint", "x.s2ckpt"], ["--checkpoint needs --checkpoint-every"]),
    (["memory", "smoke", "--pes", "1"], []),  # fits: not an error
])
def test_errors_are_one_line(args, words):
    p = s2emu(*args)
    if not words:
        assert p.returncode == 0, p.stderr
        return
    assert p.returncode == 2
    err = p.stderr.strip()
    assert err.startswith("error:") and "\n" not in err and "Traceback" not in err
    for w in words:
        assert w in err


def test_bad_recipe_key_via_cli(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text(open("recipes/smoke.toml").read().replace("tau_m = 5.0", "tau_mm = 5.0"))
    p = s2emu("run", str(bad))
    assert p.returncode == 2
    assert "unknown key 'populations[1].tau_mm' (did you mean 'tau_m'?)" in p.stderr


@pytest.mark.ray
@pytest.mark.slow
def test_run_on_ray_engine_via_cli():
    """On the Ray-calls transport (the default, channels, is compared with local in test_equivalence.py)."""
    p = s2emu("run", "smoke", "--engine", "ray", "--transport", "calls", "--epochs", "1", "--batch", "8", "--json",
              "--quiet", timeout=600)
    assert p.returncode == 0, p.stderr[-2000:]
    r = json.loads(p.stdout)
    local = json.loads(s2emu("run", "smoke", "--epochs", "1", "--batch", "8", "--json", "--quiet").stdout)
    assert r["engine"] == "ray" and r["state_digest"] == local["state_digest"]


def test_save_weights_and_recordings(tmp_path):
    import numpy as np

    recipe = tmp_path / "rec.toml"
    recipe.write_text(open("recipes/smoke.toml").read().replace('spikes = ["hidden"]',
                                                                'spikes = ["hidden"]\nvoltage = ["hidden"]'))
    out = tmp_path / "state.npz"
    p = s2emu("run", str(recipe), "--epochs", "1", "--batch", "4", "--pes", "3", "--quiet", "--save", str(out))
    assert p.returncode == 0, p.stderr
    z = np.load(out)
    assert z["W/input->hidden"].shape == (20, 40) and z["W/hidden->out"].shape == (40, 4)
    v, ticks = z["voltage/hidden"], z["voltage_ticks/hidden"]
    assert v.shape == (len(ticks), 4, 40) and np.isfinite(v).all() and v.std() > 0
    s = z["spikes/hidden"]
    assert s.shape[1] == 3 and len(s) > 100
    # every spike happens at a tick where v had crossed threshold and was then recorded
    assert set(np.unique(s[:, 0])) <= set(ticks.tolist())


# ---------------------------------------------------------------- full and read-only disks (issue 22)

from mounts import mounted  # noqa: E402


def test_outputs_that_cannot_be_written_at_the_end_are_saved_elsewhere(tmp_path):
    """A full disk under --out and --save: the run's model, results, figures and recordings are not lost. They
    go to a new folder in the temporary folder; the one error line says where and why; --json still prints."""
    import numpy as np

    from s2emu.model import load_model
    from s2emu.recipe import load_recipe

    tmp = tmp_path / "tmp"
    tmp.mkdir()
    with mounted(tmp_path / "full", free=0) as disk:
        p = subprocess.run([*RUN, "run", "smoke", "--epochs", "1", "--batch", "8", "--quiet", "--json",
                            "--out", f"{disk}/out", "--save", f"{disk}/rec.npz"], capture_output=True, text=True,
                           timeout=300, env={**os.environ, "TMPDIR": str(tmp)})
        assert sorted(os.listdir(disk)) == ["filler", "out"] and not os.listdir(f"{disk}/out")  # nothing half
    err = p.stderr.strip()
    assert p.returncode == 2 and err.startswith("error:") and "\n" not in err and "Traceback" not in err, err
    (saved,) = tmp.iterdir()
    for words in (f"could not write --out {disk}/out (No space left on device)",
                  f"could not write --save {disk}/rec.npz (No space left on device)",
                  f"the model, results, figures and recordings of this run are saved in {saved}/ instead"):
        assert words in err, (words, err)
    r = json.loads(p.stdout)
    assert r["outputs"]["model"] == str(saved / "model.npz") and r["recordings"] == str(saved / "rec.npz")
    weights, meta = load_model(saved / "model.npz", load_recipe("smoke").network)
    assert meta["state_digest"] == r["state_digest"]
    assert json.loads((saved / "results.json").read_text())["state_digest"] == r["state_digest"]
    assert np.array_equal(np.load(saved / "rec.npz")["W/hidden->out"], weights["hidden->out"])


@pytest.mark.parametrize("flag", ["--out", "--save", "--checkpoint"])
def test_an_output_on_a_read_only_disk_fails_before_the_run(flag, tmp_path):
    with mounted(tmp_path / "ro", read_only=True) as ro:
        args = {"--out": ["--out", f"{ro}/out"], "--save": ["--out", "-", "--save", f"{ro}/rec.npz"],
                "--checkpoint": ["--out", "-", "--checkpoint", f"{ro}/run.s2ckpt", "--checkpoint-every", "100"]}
        p = s2emu("run", "smoke", "--epochs", "3", *args[flag])
    err = p.stderr.strip()
    assert p.returncode == 2 and err.startswith("error:") and "\n" not in err, err
    assert f"{flag} {ro}/" in err and "Read-only file system" in err
    assert "ticks" not in err  # refused before the run: no progress bar was shown
