"""Every script in examples/ runs, at its small size, as a user would run it (from another folder)."""

import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
RUNS = [  # (script, arguments, marks)
    ("keyword_spotting.py", ["--small"], []),
    ("plain_run_raster.py", ["--small", "--out", "raster.png"], []),
    ("scaling.py", ["--small"], []),
    ("nir_on_ray.py", ["--small", "--engine", "local"], []),
    ("nir_on_ray.py", ["--small"], [pytest.mark.ray, pytest.mark.slow]),  # starts its own Ray: ~30 s here
]


def test_every_example_is_run_here():
    assert {script for script, _, _ in RUNS} == {p.name for p in EXAMPLES.glob("*.py")}


@pytest.mark.parametrize("script, args", [pytest.param(s, a, marks=m, id=f"{s}{'-ray' if m else ''}")
                                          for s, a, m in RUNS])
def test_example_runs(script, args, tmp_path):
    if script.startswith("nir"):
        pytest.importorskip("nir")
    p = subprocess.run([sys.executable, str(EXAMPLES / script), *args], capture_output=True, text=True,
                       timeout=600, cwd=tmp_path)
    assert p.returncode == 0, p.stderr[-3000:]
    assert p.stdout.strip()
