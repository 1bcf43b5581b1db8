"""The docs cannot drift from the code or the measurements.

- The generated parts (docs/generate.py) are current: the option tables in docs/cli.md match the argument
  parser; docs/figures.md, the README's headline figures and the benchmark tables copied into the pages match
  benchmarks/results/. A failure names the command that updates them: python docs/generate.py
- Every key a command's JSON prints is described in docs/cli.md.
- The README stays short and keeps the two commands CI runs; links, files, functions and tests named in the
  docs exist.
"""

from __future__ import annotations

import dataclasses
import difflib
import importlib.util
import json
import re
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
PAGES = [ROOT / "README.md", *sorted(DOCS.glob("*.md"))]
UPDATE = "python docs/generate.py"


def _generator():
    spec = importlib.util.spec_from_file_location("docs_generate", DOCS / "generate.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # dataclasses look their module up there
    spec.loader.exec_module(mod)
    return mod


gen = _generator()


def _diff(path: Path, want: str) -> str:
    have = path.read_text() if path.is_file() else ""
    lines = list(difflib.unified_diff(have.splitlines(), want.splitlines(), "on disk", "generated", lineterm="",
                                      n=1))
    return "\n".join(lines[:40])


def _stale_message(path: Path, want: str) -> str:
    return (f"{path.relative_to(ROOT)} is out of date; run `{UPDATE}` and commit the result.\n"
            f"{_diff(path, want)}")


# ------------------------------------------------------------------------------------- generated parts

def test_cli_reference_matches_the_argument_parser():
    page = DOCS / "cli.md"
    text = page.read_text()
    assert "<!-- BEGIN cli -->" in text, "docs/cli.md lost its generated block (<!-- BEGIN cli --> ... <!-- END cli -->)"
    want = gen.fill_blocks(text, page)
    assert text == want, _stale_message(page, want)


def _dates_need_git() -> bool:
    return any(r.date_from_git for r in gen.load_results())


@pytest.fixture
def result_dates():
    """Figures dated from git (results that record no date) need the whole history."""
    if _dates_need_git() and not gen.git_history_complete():
        pytest.skip("a result file records no date and this checkout has no full git history to date it from")


def test_figures_page_is_the_latest_of_every_result(result_dates):
    page = DOCS / "figures.md"
    want = gen.figures_page()
    assert page.is_file() and page.read_text() == want, _stale_message(page, want)
    for path in sorted((ROOT / "benchmarks" / "results").glob("**/*.json")):
        assert str(path.relative_to(ROOT / "benchmarks" / "results")) in want, path


@pytest.mark.parametrize("page", [p for p in PAGES if p.name != "figures.md"], ids=lambda p: p.name)
def test_copied_tables_and_headlines_are_current(page, result_dates):
    text = page.read_text()
    want = gen.fill_blocks(text, page)
    assert text == want, _stale_message(page, want)


def test_every_benchmark_table_is_shown_somewhere():
    """Each benchmark's Markdown table is copied into a page (or it is only in figures.md: say so here)."""
    shown = "\n".join(p.read_text() for p in PAGES)
    for md in sorted((ROOT / "benchmarks" / "results").glob("**/*.md")):
        rel = md.relative_to(ROOT)
        assert f"<!-- BEGIN results {rel} -->" in shown, f"{rel} is copied into no page (add a results block)"


def test_generator_check_mode_agrees(result_dates):
    assert gen.stale() == [], f"out of date: {[str(p.relative_to(ROOT)) for p in gen.stale()]}; run `{UPDATE}`"


# ------------------------------------------------------------------------------------- JSON keys

# objects whose keys are data (names of phases, presets, PE counts, links ...), not interface: their keys are
# not checked, but with "*" the keys of each of their values are
DATA_KEYED = {"phases", "strong_speedup", "strong_chip_speedup", "weak_efficiency", "chip_model.assumptions",
              "router.link_sent", "router.chips[].link_sent", "spike_counts", "model_meta.data", "machines"}
DESCEND = {"machines", "chip_model.assumptions"}


def json_keys(obj, path: str = "") -> set[str]:
    """Every interface key of a JSON object, as its last name."""
    keys = set()
    if isinstance(obj, dict):
        if path in DATA_KEYED:
            if path in DESCEND:
                for v in obj.values():
                    keys |= json_keys(v, path + ".*")
            return keys
        for k, v in obj.items():
            keys.add(k)
            keys |= json_keys(v, f"{path}.{k}" if path else k)
    elif isinstance(obj, list):
        for v in obj[:3]:
            keys |= json_keys(v, path + "[]")
    return keys


def documented(command: str) -> set[str]:
    """The words inside backticks in docs/cli.md's JSON section for `s2emu COMMAND`."""
    text = (DOCS / "cli.md").read_text()
    json_part = text.split("## JSON keys", 1)[1]
    m = re.search(rf"^### `s2emu {command}`\n(.*?)(?=^### |\Z)", json_part, re.S | re.M)
    assert m, f"docs/cli.md has no JSON section '### `s2emu {command}`'"
    return {w for span in re.findall(r"`([^`]+)`", m[1]) for w in re.findall(r"\w+", span)}


def cli_json(capsys, *args) -> dict:
    from s2emu.cli import main

    capsys.readouterr()
    assert main([*args, "--json"]) == 0, capsys.readouterr().err[-2000:]
    return json.loads(capsys.readouterr().out)


def assert_documented(command: str, result: dict) -> None:
    missing = sorted(json_keys(result) - documented(command))
    assert not missing, (f"`s2emu {command} --json` prints keys that docs/cli.md (### `s2emu {command}`) does "
                         f"not describe: {missing}")


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A smoke run's JSON and its output folder (model.npz and results.json)."""
    import contextlib
    import io

    from s2emu.cli import main

    out = tmp_path_factory.mktemp("smoke_run")
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        assert main(["run", "smoke", "--epochs", "1", "--batch", "16", "--quiet", "--out", str(out), "--json"]) == 0
    return json.loads(buf.getvalue()), out


def test_run_keys_are_documented(trained):
    assert_documented("run", trained[0])


def test_eval_keys_are_documented(trained, capsys):
    assert_documented("eval", cli_json(capsys, "eval", "smoke", "--model", str(trained[1] / "model.npz"),
                                       "--quiet"))


def test_stream_keys_are_documented(capsys):
    assert_documented("stream", cli_json(capsys, "stream", "eprop_kws", "--clips", "2", "--no-pace", "--quiet",
                                                   "--source", str(ROOT / "data" / "kws_synth.tar.xz")))


@pytest.mark.parametrize("recipe", ["smoke", "deepr_mnist"])
def test_memory_keys_are_documented(recipe, capsys):
    assert_documented("memory", cli_json(capsys, "memory", recipe))


def test_map_keys_are_documented(capsys):
    assert_documented("map", cli_json(capsys, "map", "smoke", "--chips", "2", "--pes-per-chip", "3"))


def test_scale_keys_are_documented(capsys, tmp_path):
    assert_documented("scale", cli_json(capsys, "scale", "smoke", "--pes", "1,2", "--epochs", "1", "--batch", "8",
                                        "--out", str(tmp_path), "--quiet"))


def test_info_keys_are_documented(capsys):
    assert_documented("info", cli_json(capsys, "info"))


def test_sweep_keys_are_documented(tmp_path):
    """What `s2emu sweep --json` prints (cli.py cmd_sweep: the rows of s2emu/sweep.py and the files written),
    on a BPTT recipe cut to a few samples."""
    from s2emu.recipe import load_recipe
    from s2emu.sweep import sweep, write

    r = load_recipe("recipes/tlbptt_digits.toml").with_overrides(epochs=1, batch=8)
    r = dataclasses.replace(r, data={**r.data, "max_train": 16, "max_test": 8})
    rows = sweep([r], "2,all", "e2e")
    assert_documented("sweep", {"rows": rows, "outputs": write(rows, tmp_path)})


# ------------------------------------------------------------------------------------- README

def test_readme_is_short_and_keeps_the_two_commands():
    readme = (ROOT / "README.md").read_text()
    assert len(readme.encode()) < 10 * 1024, f"README.md is {len(readme.encode()):,} B; keep it under 10 KB"
    ci = (ROOT / ".ci" / "run").read_text().strip().splitlines()[-1]
    assert ci in readme, f"the README's test command is not the one .ci/run runs: {ci}"
    assert ('python3 -m venv .venv && . .venv/bin/activate && pip install -e ".[plots,voices]" && '
            's2emu run recipes/eprop_kws.toml') in readme
    # the main job's corpus needs the four synthesizers: its setup command installs each engine it uses
    from s2emu.host.synth import ENGINE_VOICES, FESTIVAL_PACKAGES
    from s2emu.recipe import load_recipe
    engines = load_recipe(str(ROOT / "recipes" / "eprop_kws.toml")).data["synth"]["engines"]
    needs = {"espeak-ng": ["espeak-ng"], "flite": ["flite", "sox"], "festival": ["festival", "sox",
             *(FESTIVAL_PACKAGES[v] for vs in ENGINE_VOICES["festival"].values() for v in vs)], "pico": []}
    setup = next(line for line in readme.splitlines() if "s2emu run recipes/eprop_kws.toml" in line and "venv" in line)
    for e in engines:
        for pkg in needs[e]:
            assert f" {pkg} " in setup, f"the main job's setup command does not install {pkg} ({e})"


# ------------------------------------------------------------------------------------- links and names

def _slug(heading: str) -> str:
    """GitHub's anchor for a heading."""
    s = re.sub(r"[`*_]", "", heading.strip().lower())
    s = re.sub(r"[^\w\- ]", "", s)
    return s.replace(" ", "-")


def _anchors(page: Path) -> set[str]:
    text = re.sub(r"```.*?```", "", page.read_text(), flags=re.S)
    return {_slug(h) for h in re.findall(r"^#+ (.+)$", text, re.M)}


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_links_resolve(page):
    text = re.sub(r"```.*?```", "", page.read_text(), flags=re.S)
    for target in re.findall(r"\]\(([^)\s]+)\)", text):
        if re.match(r"[a-z]+:", target):
            continue
        file, _, anchor = target.partition("#")
        dest = (page.parent / file).resolve() if file else page
        assert dest.exists(), f"{page.name}: link to {target}: no such file"
        if anchor and dest.suffix == ".md":
            assert anchor in _anchors(dest), f"{page.name}: link to {target}: no such heading in {dest.name}"


CODE_PATH = r"(?:s2emu|cores|router|host|engines|tests|benchmarks|recipes|docs|data|models)/[\w/.{},-]*\w"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_files_functions_and_tests_named_exist(page):
    """Paths named in a page exist; a name in backticks right after a Python file (`cores/pe.py` `_scatter`,
    or cores/pe.py `ProcessingElement.snapshot`) is in that file; every test named exists."""
    text = page.read_text()
    for path in set(re.findall(rf"(?<![\w/.]){CODE_PATH}", text)):
        if re.search(r"[<*{]|[A-Z]{3,}", path):  # a pattern or a placeholder (NAME, <recipe>), not a file
            continue
        assert (ROOT / path).exists() or (ROOT / path.rstrip(".")).exists(), f"{page.name}: names {path}: no such file"
    for path, name in re.findall(rf"`?({CODE_PATH}\.py)`? `(\w+)", text):
        source = (ROOT / path).read_text()
        assert re.search(rf"\b{name}\b", source), f"{page.name}: says {name} is in {path}, but it is not"
    tests = "\n".join(p.read_text() for p in (ROOT / "tests").glob("test_*.py"))
    for name in set(re.findall(r"`(test_\w+_\w+_\w+)`", text)):  # a test, not a JSON key like test_loss
        assert re.search(rf"def {name}\b", tests), f"{page.name}: names the test {name}, which does not exist"
