"""The wheel installs into a fresh virtualenv as one namespace, s2emu, and its CLI runs."""

import json
import site
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_wheel_installs_into_fresh_venv(tmp_path):
    wheel_dir = tmp_path / "wheel"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                    "-w", str(wheel_dir), str(ROOT)], check=True, timeout=300)
    wheel = next(wheel_dir.glob("s2emu-*.whl"))
    tops = {n.split("/")[0] for n in zipfile.ZipFile(wheel).namelist()}
    assert tops == {"s2emu", wheel.name.split("-")[0] + "-" + wheel.name.split("-")[1] + ".dist-info"}, tops
    names = zipfile.ZipFile(wheel).namelist()
    assert "s2emu/recipes/smoke.toml" in names and "s2emu/cores/pe.py" in names

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    py = venv / "bin" / "python"
    subprocess.run([sys.executable, "-m", "pip", "--python", str(py), "install", "--no-deps", "-q", str(wheel)],
                   check=True, timeout=300)
    # The dependencies (ray, numpy, ...) come from this environment's site-packages, added as a plain path:
    # a plain path entry does not run this environment's editable-install hook, so s2emu must come from the wheel.
    purelib = subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             capture_output=True, text=True, check=True).stdout.strip()
    deps = [p for p in site.getsitepackages() + [sysconfig.get_paths()["purelib"]] if Path(p).is_dir()]
    Path(purelib, "deps.pth").write_text("\n".join(dict.fromkeys(deps)) + "\n")
    where = subprocess.run([str(py), "-c", "import s2emu, s2emu.router, s2emu.cores; print(s2emu.__file__)"],
                           capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert where.returncode == 0, where.stderr
    assert where.stdout.strip().startswith(str(venv)), where.stdout
    for generic in ("router", "host", "cores", "engines"):
        p = subprocess.run([str(py), "-c", f"import {generic}"], capture_output=True, text=True, cwd=tmp_path)
        assert p.returncode != 0, f"a generic top-level module '{generic}' is importable"
    cli = subprocess.run([str(venv / "bin" / "s2emu"), "info", "--json"], capture_output=True, text=True,
                         timeout=120, cwd=tmp_path)
    assert cli.returncode == 0, cli.stderr
    assert "smoke" in json.loads(cli.stdout)["recipes"]
    run = subprocess.run([str(venv / "bin" / "s2emu"), "run", "smoke", "--epochs", "1", "--batch", "16",
                          "--json", "--quiet"], capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    assert json.loads(run.stdout)["accuracy"] >= 0
