"""Write the parts of the docs that must not drift from the code and the measurements.

    python docs/generate.py          # rewrite whatever is out of date, and say what changed
    python docs/generate.py --check  # change nothing; exit 1 naming what is out of date

What it writes:
- docs/cli.md, the block between `<!-- BEGIN cli -->` and `<!-- END cli -->`: every command and option, read from
  the argument parser (s2emu/cli.py `build_parser`; `s2emu synth`'s own parser in host/synth.py). The JSON keys
  below that block are written by hand, but for `<!-- BEGIN keys COMMAND -->` blocks, which are the table the
  command's module keeps (s2emu/detect.py JSON_KEYS); tests/test_docs.py checks that each key a command prints
  is there.
- docs/figures.md, the whole page: one row per result file in benchmarks/results/ (`*.json` and `*/*.json`), its
  latest measurement, the date and the command that made it.
- README.md, the block `<!-- BEGIN headline -->`: the headline figures, from the same result files.
- Any `<!-- BEGIN results benchmarks/results/NAME.md -->` block in README.md or docs/*.md: that benchmark's own
  Markdown table, copied as the benchmark last wrote it; `<!-- BEGIN run benchmarks/results/NAME.json -->`: the
  figures of an `s2emu run --json` result; `<!-- BEGIN note NAME -->`: the NOTES below on that result's latest
  run (empty once it has been run again).

Where a result file does not record its date or its command (see `provenance`): the date is the file's last
commit (`git log -1 --format=%cs -- FILE`; today for a file changed since), and the command is the one its
Markdown table names, else the one this script records for it (KNOWN_COMMANDS), else `python
benchmarks/<name>.py`. The page marks such dates and commands.

The generator lives in docs/ beside the pages it writes, not in the s2emu package: it reads the repository
(benchmarks/results, git history, docs), which an installed s2emu does not have.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
REGENERATE = "python docs/generate.py"
MIB = 1024 * 1024

# Commands for result files that record none, neither in their JSON nor in their Markdown table. Each is the
# command the docs gave for that file when this script was written; a benchmark that records its own command
# (a "command" key in its JSON, or "Command: `...`" in its Markdown) overrides this.
KNOWN_COMMANDS = {
    "kws_train": "s2emu run recipes/eprop_kws.toml --json > benchmarks/results/kws_train.json",
    "scale_smoke": "s2emu scale smoke --pes 1,2,4,8,16 --out benchmarks/results/scale_smoke",
    "scale_kws": "s2emu scale recipes/eprop_kws.toml --pes 1,2,4,6,12 --mode strong --train 64 --test 32 "
                 "--out benchmarks/results/scale_kws",
    "sweep_kws": "s2emu sweep recipes/tlbptt_kws.toml --truncation 1,5,10,25,all --blocks e2e "
                 "--out benchmarks/results/sweep_kws",
    "sweep_digits": "s2emu sweep recipes/tlbptt_digits.toml --truncation 1,5,10,all --blocks e2e,layer "
                    "--epochs 10 --out benchmarks/results/sweep_digits",
}

# Notes on one measurement, keyed by (result name, its date): they hold for that run only and vanish from the
# page once the benchmark is run again.
NOTES = {
    ("smoke", "2026-11-23"): "its ray row predates the direct channels (Ray calls then); ray_transport has the "
                             "ray engine's exchange as it is",
}


# ---------------------------------------------------------------------------------------------- blocks

BLOCK = re.compile(r"<!-- BEGIN (?P<kind>[a-z]+)(?: (?P<arg>[^ >]+))?(?P<rest>[^>]*)-->\n(?P<body>.*?)"
                   r"<!-- END (?P=kind) -->", re.S)


def fill_blocks(text: str, page: Path) -> str:
    """`text` with the body of every generated block rewritten."""
    def fill(m):
        body = render_block(m["kind"], m["arg"], page)
        head = f"<!-- BEGIN {m['kind']}{' ' + m['arg'] if m['arg'] else ''}{m['rest']}-->\n"
        return head + body.rstrip("\n") + "\n" + f"<!-- END {m['kind']} -->"
    return BLOCK.sub(fill, text)


def render_block(kind: str, arg: str | None, page: Path) -> str:
    if kind == "cli":
        return cli_reference()
    if kind == "keys":  # a command's JSON keys, from the table its module keeps beside the code that prints them
        return keys_table(arg)
    if kind == "headline":
        return headline_table(load_results(), page)
    if kind == "results":
        return included_table(ROOT / arg, page)
    if kind == "run":
        return run_table(ROOT / arg)
    if kind == "note":  # NOTES on a result's latest run, empty once it has been run again
        r = next((x for x in load_results() if x.name == arg), None)
        note = NOTES.get((arg, r.date)) if r is not None else None
        return f"Note on its run of {r.date}: {note}.\n" if note else ""
    raise SystemExit(f"{page}: unknown generated block {kind!r}")


def keys_table(command: str) -> str:
    from s2emu.detect import JSON_KEYS as DETECT

    tables = {"detect": DETECT}
    if command not in tables:
        raise SystemExit(f"no JSON key table for `s2emu {command}` in docs/generate.py keys_table")
    rows = ["| key | meaning |", "|---|---|"]
    for keys, meaning in tables[command].items():
        rows.append(f"| {', '.join(f'`{k.strip()}`' for k in keys.split(','))} | {meaning} |")
    return "\n".join(rows) + "\n"


def included_table(md: Path, page: Path) -> str:
    """A benchmark's Markdown as the benchmark wrote it, its headings turned to bold lines (so they do not
    break the page's outline) and its relative links made relative to the page that includes it."""
    if not md.is_file():
        raise SystemExit(f"{page.relative_to(ROOT)}: includes {md.relative_to(ROOT)}, which does not exist")
    lines = []
    for line in md.read_text().strip("\n").splitlines():
        heading = re.match(r"#+\s+(.*)", line)
        line = f"**{heading[1]}**" if heading else line
        lines.append(re.sub(r"\]\((?!https?:|#|/)([^)]+)\)",
                            lambda m: f"]({os.path.relpath(md.parent / m[1], page.parent)})", line))
    return "\n".join(lines) + "\n"


def run_table(path: Path) -> str:
    """The figures of one `s2emu run --json` result (a file in benchmarks/results/) as a table."""
    r = next((x for x in load_results() if x.path == path), None)
    if r is None or r.kind != "run":
        raise SystemExit(f"{path}: not an `s2emu run` result in benchmarks/results/")
    d, cm = r.data, r.data["chip_model"]
    last = d["train_curve"][-1]["accuracy"] if d.get("train_curve") else None
    rows = [("test accuracy", f"**{d['accuracy']:.3f}** on {d['n_test']} test samples"),
            ("balanced accuracy", f"**{d['balanced_accuracy']:.3f}** (chance {d['chance']:.3f})"),
            ("training accuracy, last epoch", f"{last:.3f}" if last is not None else "no training"),
            ("training", f"{d['epochs']} epochs, {d['streams']} streams, {d['pes']} PEs, {d['engine']} engine: "
                         f"{d['ticks']:,} ticks in {d['wall_seconds']:.0f} s ({d['ticks_per_second']:,.0f} ticks/s)"),
            ("SRAM at batch 1", f"{d['total_bytes']:,} B over {d['pes']} PEs"),
            ("modeled chip (docs/chip-model.md)",
             f"busiest tick {cm['seconds_per_tick_peak'] * 1e6:.0f} us of the {cm['tick_seconds'] * 1e3:.2f} ms "
             f"step ({cm['real_time_margin']:.1f}x margin, PE {cm['bottleneck_pe']}); "
             f"{cm['energy_per_sample_joules'] * 1e3:.0f} mJ per sample"),
            ("state_digest", f"`{d['state_digest'][:12]}`"),
            ("measured", r.date + (" (the day the file was last committed)" if r.date_from_git else "")),
            ("command", f"`{r.command}`")]
    lines = [f"<!-- written by `{REGENERATE}` from {path.relative_to(ROOT)} -->", "| what | figure |", "|---|---|"]
    lines += [f"| {a} | {_cell(b)} |" for a, b in rows]
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------------- the CLI

class _Parser(Exception):
    pass


def synth_parser() -> argparse.ArgumentParser:
    """`s2emu synth`'s parser. host/synth.py builds it inside main(); main is stopped at parse_args, before it
    does anything, and the parser it built is taken."""
    from s2emu.host import synth

    def grab(self, *args, **kwargs):
        raise _Parser(self)
    before = argparse.ArgumentParser.parse_args
    argparse.ArgumentParser.parse_args = grab
    try:
        synth.main([])
    except _Parser as got:
        return got.args[0]
    finally:
        argparse.ArgumentParser.parse_args = before
    raise RuntimeError("host/synth.py main() did not parse its arguments")


def _cell(text) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _value(a: argparse.Action) -> str:
    if a.nargs == 0:
        return ""
    if a.choices is not None:
        return " \\| ".join(f"`{c}`" for c in a.choices)
    mv = a.metavar if a.metavar is not None else a.dest.upper()
    mv = " ".join(mv) if isinstance(mv, tuple) else mv
    return f"`{_cell(mv)}`"


def _default(a: argparse.Action) -> str:
    d = a.default
    if a.nargs == 0 or d is None or d is argparse.SUPPRESS or d == "" or isinstance(d, bool):
        return ""
    return f"`{' '.join(map(str, d)) if isinstance(d, (tuple, list)) else d}`"


def _usage(prog: str, p: argparse.ArgumentParser) -> str:
    words = [prog]
    for a in p._actions:
        if a.option_strings:
            continue
        name = (a.metavar or a.dest).upper()
        words.append(f"{name}..." if a.nargs in ("+", "*") else name)
    if any(a.option_strings and not isinstance(a, argparse._HelpAction) for a in p._actions):
        words.append("[options]")
    return " ".join(words)


def _options(p: argparse.ArgumentParser) -> list[str]:
    rows = ["| argument | value | default | what it does |", "|---|---|---|---|"]
    for a in p._actions:
        if isinstance(a, argparse._HelpAction):
            continue
        name = ", ".join(f"`{s}`" for s in a.option_strings) or f"`{(a.metavar or a.dest).upper()}`"
        text = a.help % vars(a) if a.help and "%(" in a.help else (a.help or "")
        if isinstance(a, argparse._AppendAction) and "repeatable" not in text:
            text += " (repeatable)" if text else "repeatable"
        value = _value(a) if a.option_strings else ""
        rows.append(f"| {name} | {value} | {_default(a)} | {_cell(text)} |")
    return rows


def cli_reference() -> str:
    """Markdown of every command's usage and options, from the parser itself."""
    from s2emu.cli import build_parser

    top = build_parser()
    sub = next(a for a in top._actions if isinstance(a, argparse._SubParsersAction))
    helps = {a.dest: a.help for a in sub._choices_actions}
    out = [f"<!-- written by `{REGENERATE}` from the argument parser (s2emu/cli.py build_parser); edit the "
           f"parser, not this block -->", "",
           "`s2emu --version` prints the version. Commands: "
           + ", ".join(f"[`{name}`](#s2emu-{name})" for name in sub.choices) + ".", ""]
    for name, p in sub.choices.items():
        if name == "synth":  # it hands its arguments to host/synth.py, whose parser is the real one
            p = synth_parser()
        out += [f"### s2emu {name}", "", f"{helps[name][0].upper()}{helps[name][1:]}.", "",
                "```", _usage(f"s2emu {name}", p), "```", ""]
        out += _options(p) + [""]
    return "\n".join(out)


# ---------------------------------------------------------------------------------------------- results

@dataclass
class Result:
    name: str  # file stem, or the folder of a scale / sweep result
    path: Path
    data: dict
    md: Path | None  # the benchmark's own Markdown table, if any
    date: str
    date_from_git: bool
    command: str
    command_recorded: bool  # named by the result itself (JSON or its Markdown)

    @property
    def kind(self) -> str:
        d = self.data
        rows = d.get("rows") or [{}]
        if d.get("benchmark"):
            return d["benchmark"]
        if "state_digest" in d and "chip_model" in d:
            return "run"
        if "strong_digests_identical" in d:
            return "scale"
        if "loeo" in d and "ablation" in d:
            return "kws_voices"
        if "truncation" in rows[0]:
            return "sweep"
        if "layout" in rows[0]:
            return "mesh"
        return "unknown"


def _git(*args: str) -> str | None:
    try:
        p = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return None
    return p.stdout.strip() if p.returncode == 0 else None


def git_history_complete() -> bool:
    """File dates from git need the whole history: not in a shallow clone, nor outside a git checkout."""
    return _git("rev-parse", "--is-shallow-repository") == "false"


def file_date(path: Path) -> str:
    """The day `path` was last committed; today if it is changed or new since (it will be committed today)."""
    rel = str(path.relative_to(ROOT))
    if _git("status", "--porcelain", "--", rel):
        return datetime.date.today().isoformat()
    return _git("log", "-1", "--format=%cs", "--", rel) or datetime.date.today().isoformat()


def _md_command(md: Path | None) -> str | None:
    if md is None or not md.is_file():
        return None
    text = md.read_text()
    m = re.search(r"Command: `([^`]+)`", text) or re.search(r"`((?:python|s2emu) [^`]*)`", text)
    return m[1] if m else None


def provenance(name: str, path: Path, data: dict, md: Path | None) -> tuple[str, bool, str, bool]:
    """(date, from git?, command, recorded by the result itself?)"""
    date, from_git = data.get("date"), False
    if not date:
        date, from_git = file_date(path), True
    command, recorded = data.get("command") or _md_command(md), True
    if not command:
        recorded = False
        script = ROOT / "benchmarks" / f"{name}.py"
        command = KNOWN_COMMANDS.get(name) or (f"python benchmarks/{name}.py" if script.is_file() else "unknown")
    return date, from_git, command, recorded


def load_results() -> list[Result]:
    out = []
    for path in sorted(RESULTS.glob("*.json")) + sorted(RESULTS.glob("*/*.json")):
        name = path.stem if path.parent == RESULTS else path.parent.name
        data = json.loads(path.read_text())
        md = path.with_suffix(".md") if path.with_suffix(".md").is_file() else None
        out.append(Result(name, path, data, md, *provenance(name, path, data, md)))
    return out


# ------------------------------------------------------------------------------------- one line per result

def _yes(flag) -> str:
    return {True: "yes", False: "**no**", None: "n/a"}.get(flag, str(flag))


def _range(values) -> str:
    return f"{min(values):.2f}-{max(values):.2f}"


def s_run(r: Result) -> tuple[str, str]:
    d, cm = r.data, r.data["chip_model"]
    what = (f"`{d['recipe']}` trained and tested: {d['epochs']} epochs, {d['streams']} streams, {d['pes']} PEs, "
            f"{d['engine']} engine")
    figs = (f"test accuracy {d['accuracy']:.3f}, balanced {d['balanced_accuracy']:.3f} (chance {d['chance']:.3f}, "
            f"{d['n_test']} test samples); {d['ticks']:,} ticks in {d['wall_seconds']:.0f} s; SRAM "
            f"{d['total_bytes']:,} B over {d['pes']} PEs (batch 1); chip model: busiest tick "
            f"{cm['seconds_per_tick_peak'] * 1e6:.0f} us of the {cm['tick_seconds'] * 1e3:.2f} ms step "
            f"({cm['real_time_margin']:.1f}x margin), {cm['energy_per_sample_joules'] * 1e3:.0f} mJ per sample; "
            f"digest `{d['state_digest'][:12]}`")
    return what, figs


def s_stream_rtf(r: Result) -> tuple[str, str]:
    rows = r.data["rows"]
    what = (f"keyword stream unpaced, {rows[0]['clips']} clips at batch 1, real-time factor (1.02 keeps up), "
            f"median of {rows[0]['repeats']}")
    figs = "; ".join(f"{x['engine']} **{x['real_time_factor']:.2f}x** (repeats {_range(x['real_time_factors'])})"
                     for x in rows)
    return what, figs + f"; same words heard on every engine: {_yes(r.data.get('same_answers'))}"


def s_nest_eprop(r: Result) -> tuple[str, str]:
    d = r.data
    rep = d["rows"][0].get("repeats", "?")
    parts = []
    for nest, ratio in d["local_batch1_over_nest"].items():
        rounds = d.get("local_batch1_over_nest_by_round", {}).get(nest)
        parts.append(f"against {nest}: the 13-PE split at batch 1 **{ratio:.2f}x**"
                     + (f" (rounds {_range(rounds)})" if rounds else "")
                     + f", one PE per population {d['local_batch1_whole_over_nest'][nest]:.2f}x, the recipe's "
                       f"batch {d['local_batch_over_nest_network_ticks'][nest]:.1f}x per network tick")
    return (f"{d['network']}: the local engine's ticks/s over NEST's on one thread, median of {rep}",
            "; ".join(parts))


def s_train_throughput(r: Result) -> tuple[str, str]:
    d = r.data
    figs = "; ".join(f"batch {x['batch']}: **{x['samples_per_second']:.1f}** training samples/s "
                     f"({x['seconds_per_epoch']:.0f} s per epoch of {d['train_set']:,})" for x in d["rows"])
    return f"training throughput of `{d['recipe']}`, {d['engine']} engine", figs


def s_full_chip(r: Result) -> tuple[str, str]:
    d = r.data
    what = (f"{d['pes']} PEs on {d['chips']} chip{'s' if d['chips'] > 1 else ''}, ray engine, "
            f"{d['pes_per_process']} PE{'s' if d['pes_per_process'] > 1 else ''} per process "
            f"({d['processes']} processes)")
    figs = (f"up in **{d['start_actors_seconds']:.0f} s**; {d['uss_per_pe_bytes'] / MIB:.1f} MiB private per PE; "
            f"{d['actors_pss_total_bytes'] / MIB:,.0f} MiB PSS in all; {d['ticks_per_second']:.1f} ticks/s; "
            f"digest same as local: {_yes(d['digest_matches_local'])}")
    return what, figs


def s_mesh(r: Result) -> tuple[str, str]:
    d = r.data
    engines = list(dict.fromkeys(x["engine"] for x in d["rows"]))
    layouts = list(dict.fromkeys(x["layout"] for x in d["rows"]))
    ms = {(x["engine"], x["layout"]): x["ms_per_tick"] for x in d["rows"]}
    cells = [f"{lay} " + " / ".join(f"{ms[e, lay]:.2f}" if (e, lay) in ms else "-" for e in engines)
             for lay in layouts]
    return (f"`{d['recipe']}` over meshes of chips, batch 1: ms per tick, {' / '.join(engines)}",
            "; ".join(cells) + f"; one digest in every row: {_yes(d.get('digests_identical'))}")


def s_window(r: Result) -> tuple[str, str]:
    d = r.data
    figs = ", ".join(f"window {x['window']}: {x['ticks_per_second']:.0f}" + (f" ({x['ratio']:.2f}x)" if x['ratio'] != 1
                                                                              else "") for x in d["rows"])
    return (f"windowed exchange, ray engine, every delay {d['delay']} ticks, {d['pes']} PEs: ticks/s",
            figs + f"; same digest: {_yes(d.get('same_digest'))}")


def s_netns_latency(r: Result) -> tuple[str, str]:
    d, m = r.data, r.data["model"]
    figs = "; ".join(f"{x['delay_ms']:g} ms: " + " / ".join(f"{y['ms_per_tick']:.1f}" for y in d["rows"]
                                                            if y["delay_ms"] == x["delay_ms"])
                     for x in d["rows"] if x["window"] == d["rows"][0]["window"])
    windows = " / ".join(str(x["window"]) for x in d["rows"] if x["delay_ms"] == d["rows"][0]["delay_ms"])
    return (f"ray engine over {d['nodes']} namespaced nodes, {d['chips']} chips, {d['hops']} hop rounds: ms per tick "
            f"against added one-way delay, window {windows}, median of {d['repeats']}",
            f"{figs}; model {m['compute_ms']:.1f} + ({m['exchange_ms']:.1f} + {m['latency_exposure']:.2f} x hops x "
            f"latency) / K; same digest: {_yes(d.get('same_digest'))}")


def s_board(r: Result) -> tuple[str, str]:
    d = r.data
    cells = "; ".join(f"{e}: start-up {x['start_seconds']:.0f} s, {x['ticks_per_second']:.2f} ticks/s, "
                      f"{x['memory_total_pss_bytes'] / 2**20:,.0f} MiB PSS in all ("
                      f"{x['memory_total_pss_bytes'] / d['pes'] / 1024:.0f} KiB a PE)" for e, x in d["runs"].items())
    x = next(iter(d["runs"].values()))
    return (f"a whole board: {d['chips']} chips ({d['mesh'][0]} x {d['mesh'][1]}), {d['pes']:,} PEs, "
            f"{d['neurons']:,} ALIF neurons, {d['synapses']:,} synapses, inference",
            f"{cells}; {x['link_packets_per_tick']:,.0f} packets a tick cross chips; chip model "
            f"{1e6 * x['chip_seconds_per_tick_peak']:.0f} us and {1e3 * x['chip_energy_per_tick_joules']:.1f} mJ a "
            f"tick; same digest: {_yes(d.get('digests_identical'))}")


def s_board_costs(r: Result) -> tuple[str, str]:
    b, a = r.data["before"], r.data["after"]
    return (f"what is not a PE's own state, board of {a['chips']} chips ({a['pes']:,} PEs), before and after the cuts",
            f"a PE object {b['pe_object_bytes_per_pe'] / 1024:.0f} -> {a['pe_object_bytes_per_pe'] / 1024:.0f} KiB "
            f"(SRAM state {a['sram_bytes'] / a['pes'] / 1024:.1f} KiB); a process of a chip's PEs "
            f"{b['process']['with_chip_pes']['uss'] / 2**20:.0f} -> {a['process']['with_chip_pes']['uss'] / 2**20:.0f} "
            f"MiB USS")


def s_detect(r: Result) -> tuple[str, str]:
    d, x = r.data, r.data["local"]
    rtf = ", ".join(f"{y['engine']} {y['real_time_factor']:.2f}x" for y in d.get("ray") or [])
    return (f"continuous detection in {d['recording']['seconds'] / 60:g} generated minutes, local engine "
            f"(ray: real-time factor, {x.get('required_real_time_factor', 4.08)}x needed)",
            f"recall {x['recall']:.3f}, {x['false_alarms_per_hour']:.0f} false alarms per hour, precision "
            f"{x['precision']:.2f}" + (f"; {rtf}" if rtf else ""))


def s_kws_voices(r: Result) -> tuple[str, str]:
    d = r.data
    parts = []
    for key in ("loeo", "ablation", "reg"):
        for row in d.get(key) or []:
            left = next(v for g, v in row["groups"].items() if "left out" in g)
            what = row.get("variant") or "all augmentations"
            parts.append(f"{row['left_out']} out ({what}): {left['balanced_accuracy']:.3f}")
    extras = "".join(f", {x}" for x, on in ((f"seed {d.get('seed')}", d.get("seed") not in (None, 1)),
                                            ("features with channel means removed (--cmn)", d.get("cmn")))
                     if on)
    return (f"keyword model on voices it never heard: balanced accuracy on the engine left out, {d['epochs']} "
            f"epoch(s), {d['train_fraction']:g} of the clips{extras}",
            "; ".join(parts) + "; target >= 0.80")


def s_soak(r: Result) -> tuple[str, str]:
    d = r.data
    return (f"{d['minutes']:.0f} min of keyword audio paced to real time, {d['engine']} engine",
            f"real-time factor {d['real_time_factor']:.3f}; lag max {d['lag_ms_max']:.0f} ms; memory growth "
            f"{d['total_rss_growth_bytes'] / MIB:+.2f} MiB over all {d['processes']} processes; accuracy "
            f"{d['accuracy']:.3f}")


def s_smoke(r: Result) -> tuple[str, str]:
    d = r.data
    x = d["rows"][0]
    rates = ", ".join(f"{y['engine']} {y['pes_total']} PEs {y['ticks_per_second']:,.0f}" for y in d["rows"])
    return ("the smoke recipe (20 -> 40 ALIF -> 4, e-prop) on both engines",
            f"test accuracy {x['accuracy']:.3f} (chance {x['chance']:.2f}); ticks/s: {rates}; same digest "
            f"everywhere: {_yes(d.get('digests_identical'))}")


def s_ray_transport(r: Result) -> tuple[str, str]:
    d = r.data
    parts = []
    for pes, ratio in d["channels_over_calls"].items():
        rows = {x["transport"]: x for x in d["rows"] if str(x["pes_arg"]) == pes and x["engine"] == "ray"}
        ch = rows.get("channels")
        parts.append(f"`--pes {pes}`" + (f" ({ch['processes']} processes): channels "
                                         f"{ch['ticks_per_second_stepping']:.0f} ticks/s" if ch else "")
                     + f", {ratio['stepping']:.2f}x Ray calls")
    return (f"the ray engine's per-tick exchange, `{d['recipe']}` at batch {d['batch']}: ticks/s stepping",
            "; ".join(parts) + f"; same digests: {_yes(d.get('digests_identical'))}")


def s_deepr_mnist(r: Result) -> tuple[str, str]:
    d = r.data
    figs = "; ".join(f"{x['rule']}: **{x['accuracy']:.4f}**" for x in d["rows"])
    return (f"LeNet-300-100 on the bundled digits ({d['train_samples']:,} / {d['test_samples']:,}), "
            f"{d['epochs']} epochs: test accuracy", figs)


def s_deepr_scaling(r: Result) -> tuple[str, str]:
    d = r.data
    local = [x for x in d["rows"] if x["engine"] == "local"] or d["rows"]
    figs = "; ".join(f"{x['pes']} PE{'s' if x['pes'] > 1 else ''}: largest PE {x['sram_max_pe_bytes']:,} B, "
                     f"{x['chip_ticks_per_sample']} ticks/sample" for x in local)
    return (f"DEEP R `{d['recipe']}` split over PEs",
            figs + f"; same digest on every split and engine: {_yes(d.get('digests_identical'))}")


def s_bptt_scaling(r: Result) -> tuple[str, str]:
    d = r.data
    parts = []
    for t in dict.fromkeys(x["truncation"] for x in d["rows"]):
        rows = [x for x in d["rows"] if x["truncation"] == t]
        fit = next((x for x in rows if x.get("fits_128k")), None)
        parts.append(f"truncation {t}: one PE {rows[0]['sram_max_pe_bytes']:,} B"
                     + (f", fits 128 KB per PE from {fit['pes']} PEs ({fit['sram_max_pe_bytes']:,} B, "
                        f"{fit['chip_ticks_per_sample']} ticks/sample against {rows[0]['chip_ticks_per_sample']})"
                        if fit else ", fits 128 KB on none of these splits"))
    return (f"BPTT of `{d['recipe']}` split over PEs",
            "; ".join(parts) + f"; same digest per truncation: {_yes(d.get('digests_identical_per_truncation'))}")


def s_scale(r: Result) -> tuple[str, str]:
    d = r.data
    strong = [x for x in d["rows"] if x["mode"] == "strong" and not x.get("error")]
    weak = [x for x in d["rows"] if x["mode"] == "weak"]
    parts = []
    if strong:
        a, b = strong[0], strong[-1]
        parts.append(f"strong, {a['pes']} -> {b['pes']} PEs: {a['ms_per_tick']:.2f} -> {b['ms_per_tick']:.2f} ms "
                     f"per tick (emulator), {a['chip_us_per_tick']:.0f} -> {b['chip_us_per_tick']:.0f} us per tick "
                     f"(chip model); same digest: {_yes(d.get('strong_digests_identical'))}")
    if weak:
        fits = [x["pes"] for x in weak if not x.get("error")]
        parts.append(f"weak: fits on {', '.join(map(str, fits)) or 'no'} of {', '.join(str(x['pes']) for x in weak)} PEs")
    return d.get("title", "scaling over PE counts"), "; ".join(parts)


def s_sweep(r: Result) -> tuple[str, str]:
    rows = r.data["rows"]
    figs = "; ".join(f"K={x['truncation']} {x['blocks']}: {x['accuracy']:.3f} ({x['macs_vs_full'] * 100:+.0f}% MACs)"
                     for x in rows)
    return f"BPTT truncation x blocks on `{rows[0]['recipe']}`: accuracy (MACs against full BPTT)", figs


SUMMARIES = {"run": s_run, "stream_rtf": s_stream_rtf, "nest_eprop": s_nest_eprop,
             "train_throughput": s_train_throughput, "full_chip": s_full_chip, "mesh": s_mesh, "window": s_window,
             "netns_latency": s_netns_latency,
             "soak": s_soak, "smoke": s_smoke, "ray_transport": s_ray_transport, "deepr_mnist": s_deepr_mnist,
             "deepr_scaling": s_deepr_scaling, "bptt_scaling": s_bptt_scaling, "scale": s_scale, "sweep": s_sweep,
             "board": s_board, "board_costs": s_board_costs, "detect": s_detect, "kws_voices": s_kws_voices}

# the page's order: what a reader asks first
ORDER = ["kws_train", "stream_rtf", "nest_eprop", "train_throughput", "deepr_mnist", "deepr_scaling",
         "sweep_kws", "sweep_digits", "bptt_scaling", "full_chip", "full_chip_ppp4", "full_chip_2chips_ppp4",
         "kws_voices_loeo_full", "kws_voices_loeo", "kws_voices_ablation", "kws_voices_shift_seed2", "kws_voices_cmn",
         "kws_voices_epochs10", "kws_voices_reg", "kws_voices_speakers", "detect", "board", "board_costs", "mesh", "window",
         "netns_latency", "ray_transport", "soak", "smoke", "scale_smoke", "scale_kws"]


def summary(r: Result) -> tuple[str, str]:
    fn = SUMMARIES.get(r.kind)
    if fn is None:
        return f"{r.name} (no summary in docs/generate.py yet)", "see its table"
    try:
        return fn(r)
    except (KeyError, IndexError, TypeError, ValueError, ZeroDivisionError) as e:
        return r.name, f"(docs/generate.py cannot summarize this file: {type(e).__name__} {e}; see its table)"


def _link(path: Path, page: Path) -> str:
    return os.path.relpath(path, page.parent)


def figures_page() -> str:
    page = ROOT / "docs" / "figures.md"
    results = sorted(load_results(), key=lambda r: (ORDER.index(r.name) if r.name in ORDER else len(ORDER), r.name))
    lines = [
        "# Figures: the latest measurement of every benchmark",
        "",
        f"<!-- written by `{REGENERATE}` from benchmarks/results/; do not edit: rerun a benchmark, then the "
        f"generator -->",
        "",
        "One row per result file in [benchmarks/results/](../benchmarks/results/), as its benchmark last wrote it: "
        "what it measures, its headline figures, the day it ran and the command that reproduces it. Each file's "
        "full table is linked. All ran on the 2-core, 24 GiB development machine, shared with other jobs: "
        "compare ratios measured side by side in one run, not absolute figures across runs. Earlier "
        "measurements are in the git history of each file (`git log -p -- benchmarks/results/NAME.json`), "
        "not here. What the figures mean: [performance.md](performance.md), [kws.md](kws.md), "
        "[learning-rules.md](learning-rules.md), [chip-model.md](chip-model.md).",
        "",
        "| result | what it measures | latest figures | measured | command |",
        "|---|---|---|---|---|",
    ]
    marks = False
    for r in results:
        what, figs = summary(r)
        note = NOTES.get((r.name, r.date))
        files = f"[{r.path.relative_to(RESULTS)}]({_link(r.path, page)})"
        if r.md is not None:
            files += f", [table]({_link(r.md, page)})"
        date = r.date + (" (a)" if r.date_from_git else "")
        cmd = f"`{r.command}`" + ("" if r.command_recorded else " (b)")
        marks |= r.date_from_git or not r.command_recorded
        lines.append(f"| {files} | {_cell(what)} | {_cell(figs)}{'. Note: ' + _cell(note) if note else ''} | "
                     f"{date} | {_cell(cmd)} |")
    if marks:
        lines += ["", "(a) the result records no date: the day its file was last committed. (b) the result records "
                      "no command: the command the docs give for it (docs/generate.py `KNOWN_COMMANDS`)."]
    lines += ["", "Regenerate after a benchmark run: `python docs/generate.py` (tests/test_docs.py fails while "
                  "this page is out of date)."]
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------- README headline

def _by_name(results) -> dict[str, Result]:
    return {r.name: r for r in results}


def headline_rows(results: list[Result]) -> list[tuple[str, str, Result]]:
    """(what, figure, result) for the README: the few figures a newcomer asks for."""
    R = _by_name(results)
    rows = []

    def add(name, fn):
        r = R.get(name)
        if r is None:
            return
        try:
            what, fig = fn(r.data)
        except (KeyError, IndexError, TypeError, ValueError, ZeroDivisionError) as e:
            what, fig = name, f"(cannot summarize: {type(e).__name__} {e})"
        rows.append((what, fig, r))

    add("kws_train", lambda d: (
        "Keyword spotting, the main job (e-prop, 12 classes, held-out voices)",
        f"accuracy **{d['accuracy']:.3f}**, balanced **{d['balanced_accuracy']:.3f}** (chance {d['chance']:.3f}); "
        f"{d['epochs']} epochs in {d['wall_seconds']:.0f} s; {d['total_bytes']:,} B of SRAM over {d['pes']} PEs"))
    add("kws_train", lambda d: (
        "The same network on the modeled chip (docs/chip-model.md)",
        f"busiest tick {d['chip_model']['seconds_per_tick_peak'] * 1e6:.0f} us of its "
        f"{d['chip_model']['tick_seconds'] * 1e3:.0f} ms step; "
        f"{d['chip_model']['energy_per_sample_joules'] * 1e3:.0f} mJ per one-second sample"))

    def stream(d):
        rtf = {x["engine"]: x["real_time_factor"] for x in d["rows"]}
        parts = [f"**{rtf['ray']:.1f}x** on the ray engine (a process per PE)" if "ray" in rtf else None,
                 f"{rtf['ray ppp4']:.1f}x four PEs to a process" if "ray ppp4" in rtf else None,
                 f"{rtf['local']:.0f}x on the local engine" if "local" in rtf else None]
        return "Streaming keywords, unpaced (1.02x keeps up)", "; ".join(p for p in parts if p)
    add("stream_rtf", stream)

    def nest(d):
        ratios = d["local_batch1_over_nest"]
        sparse = min(ratios, key=lambda k: float(re.search(r"p=([\d.]+)", k)[1]) if "p=" in k else 0)
        return ("Against NEST 3.10 on one thread, same e-prop network, one stream",
                f"**{ratios[sparse]:.2f}x** NEST's ticks/s on the chip's 13-PE split (sparse input)")
    add("nest_eprop", nest)
    add("train_throughput", lambda d: (
        "Training the keyword network on the local engine",
        "; ".join(f"{x['samples_per_second']:.0f} samples/s at batch {x['batch']}" for x in d["rows"])))
    add("deepr_mnist", lambda d: (
        "DEEP R, LeNet-300-100 at 1.33% connectivity in one 64 KB PE",
        f"test accuracy **{d['rows'][0]['accuracy']:.4f}** on held-out digits"))
    add("full_chip", lambda d: (
        "A whole chip: 152 PE processes plus router and host on 2 cores",
        f"up in {d['start_actors_seconds']:.0f} s, {d['ticks_per_second']:.1f} ticks/s, "
        f"digest same as local: {_yes(d['digest_matches_local'])}"))
    add("mesh", lambda d: (
        "Many chips: the keyword network on 1 to 16 chips, torus, failing wire",
        f"one digest over all {len(d['rows'])} configurations: {_yes(d['digests_identical'])}"))
    add("soak", lambda d: (
        f"Soak: {d['minutes']:.0f} min of audio paced to real time, ray engine",
        f"lag max {d['lag_ms_max']:.0f} ms; memory growth {d['total_rss_growth_bytes'] / MIB:+.1f} MiB in all"))
    return rows


def headline_table(results: list[Result], page: Path) -> str:
    lines = [f"<!-- written by `{REGENERATE}` from benchmarks/results/ -->",
             "| what | latest figure | measured | command |", "|---|---|---|---|"]
    for what, fig, r in headline_rows(results):
        lines.append(f"| {_cell(what)} | {_cell(fig)} | {r.date} | `{_cell(r.command)}` |")
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------------- main

PAGES_WITH_BLOCKS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def expected() -> dict[Path, str]:
    """Every generated file as it should read now."""
    out = {}
    figures = ROOT / "docs" / "figures.md"
    for page in PAGES_WITH_BLOCKS:
        if page == figures or not page.is_file():
            continue
        text = page.read_text()
        new = fill_blocks(text, page)
        if new != text or BLOCK.search(text):
            out[page] = new
    out[figures] = figures_page()
    return out


def stale() -> list[Path]:
    return [p for p, text in expected().items() if not p.is_file() or p.read_text() != text]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--check", action="store_true", help="write nothing; exit 1 if a generated part is out of date")
    args = ap.parse_args(argv)
    todo = stale()
    if args.check:
        for p in todo:
            print(f"out of date: {p.relative_to(ROOT)} (run: {REGENERATE})")
        return 1 if todo else 0
    new = expected()
    for p in todo:
        p.write_text(new[p])
        print(f"wrote {p.relative_to(ROOT)}")
    if not todo:
        print("all generated docs are up to date")
    return 0


if __name__ == "__main__":
    sys.exit(main())
