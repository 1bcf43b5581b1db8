"""Faults of Ray itself under a real `s2emu run --engine ray`: the node's Ray daemon (raylet) stopped or killed,
and what a run reports after an automatic restart. Each test runs the CLI in a subprocess that starts its own
private Ray, so that stopping or killing its raylet touches nothing else; every process of that Ray is
tracked from the start and killed at the end."""

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from s2emu.recipe import load_recipe
from s2emu.runner import run

pytestmark = [pytest.mark.ray, pytest.mark.slow]

RAYLET_BOUND = 30.0  # seconds from the raylet's fault to the run's end with its error line (the engine's promise)
EVERY = 250  # ticks between checkpoints (the smoke recipe runs 6,145)


def _stat(pid: int):
    """(parent pid, start time in clock ticks, state letter) of a process, or None if it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return int(fields[1]), int(fields[19]), fields[0]


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


class OwnRayRun:
    """`s2emu run smoke --engine ray ... --json` in a subprocess (its own session and process group) that starts
    its own private Ray. A sampler records every descendant process (pid and start time, so a reused pid is
    never killed) while it runs; close() kills the group and every recorded process still alive."""

    def __init__(self, tmp_path, *args):
        self.out, self.err = tmp_path / "stdout", tmp_path / "stderr"
        with open(self.out, "w") as out, open(self.err, "w") as err:
            self.proc = subprocess.Popen([sys.executable, "-m", "s2emu", "run", "smoke", "--engine", "ray", "--out",
                                          "-", "--json", "--quiet", *args], stdout=out, stderr=err, cwd=tmp_path,
                                         start_new_session=True)
        self.seen = {}  # pid -> start time
        self.closing = threading.Event()
        self.sampler = threading.Thread(target=self._sample, daemon=True)
        self.sampler.start()

    def descendants(self) -> list[int]:
        children = {}
        for d in Path("/proc").iterdir():
            if d.name.isdigit() and (st := _stat(int(d.name))) is not None:
                children.setdefault(st[0], []).append(int(d.name))
        found, todo = [], [self.proc.pid]
        while todo:
            for c in children.get(todo.pop(), []):
                found.append(c)
                todo.append(c)
        for pid in found:
            if (st := _stat(pid)) is not None:
                self.seen.setdefault(pid, st[1])
        return found

    def _sample(self):
        while not self.closing.wait(0.5):
            self.descendants()

    def raylet(self) -> int:
        """The raylet of this run's Ray: a child of the run's process (Ray starts it from ray.init)."""
        pids = [p for p in self.descendants() if _cmdline(p).split(" ")[0].endswith("/raylet")]
        assert len(pids) == 1, pids
        return pids[0]

    def pe_process(self) -> int:
        pids = sorted(p for p in self.descendants() if _cmdline(p).startswith("ray::EndpointActor"))
        assert pids
        return pids[0]

    def wait(self, timeout: float):
        """The exit code, or None if it still runs after `timeout` seconds."""
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def stderr_lines(self) -> list[str]:
        return [ln for ln in self.err.read_text().splitlines() if ln.strip()]

    def close(self) -> list[int]:
        """Kill every process of the run; returns those still alive afterwards (none, one hopes)."""
        self.closing.set()
        self.sampler.join()
        self.descendants()

        def alive():
            return [p for p, t in self.seen.items() if (st := _stat(p)) and st[1] == t and st[2] != "Z"]
        for pid in alive():
            os.kill(pid, signal.SIGCONT)  # a stopped process dies of SIGKILL too; this wakes nothing else
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        for pid in alive():
            os.kill(pid, signal.SIGKILL)
        self.proc.wait()
        deadline = time.monotonic() + 10
        while alive() and time.monotonic() < deadline:
            time.sleep(0.2)
        return alive()


@pytest.fixture
def own_ray(tmp_path):
    runs = []

    def start(*args):
        runs.append(OwnRayRun(tmp_path, *args))
        return runs[-1]
    yield start
    for r in runs:
        assert r.close() == [], "processes of the test's Ray survived"


def _wait_for(path: Path, timeout: float = 180):
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert time.monotonic() < deadline, f"no {path} after {timeout} s"
        time.sleep(0.1)


@pytest.fixture(scope="module")
def undisturbed():
    return run(load_recipe("smoke"))["state_digest"]  # local engine: the same bits as ray


@pytest.mark.parametrize("fault", ["SIGSTOP", "SIGKILL"])
def test_a_stopped_or_killed_raylet_ends_the_run_naming_the_checkpoint(fault, own_ray, tmp_path, undisturbed):
    """The run cannot go on without its node's raylet (a restart would need it): it ends within RAYLET_BOUND
    seconds of the fault with one error line that names the raylet and the checkpoint to --resume from."""
    ck = tmp_path / "run.s2ckpt"
    r = own_ray("--checkpoint", str(ck), "--checkpoint-every", str(EVERY), "--max-restarts", "1")
    _wait_for(ck)
    os.kill(r.raylet(), getattr(signal, fault))
    t0 = time.monotonic()
    code = r.wait(RAYLET_BOUND + 30)
    took = time.monotonic() - t0
    lines = r.stderr_lines()
    assert code is not None, f"still running {RAYLET_BOUND + 30:.0f} s after {fault} of the raylet"
    assert code == 2 and took < RAYLET_BOUND, (code, took, lines[-5:])
    assert lines[-1].startswith("error: ") and sum(ln.startswith("error:") for ln in lines) == 1
    assert "raylet" in lines[-1] and f"--resume {ck}" in lines[-1]
    assert "Traceback" not in r.err.read_text()
    assert run(load_recipe("smoke"), resume=str(ck))["state_digest"] == undisturbed


def test_a_restarted_run_reports_its_whole_time_and_its_restarts(own_ray, tmp_path, undisturbed):
    """A PE killed mid-run: one automatic restart from the last checkpoint. The JSON says so (`restarts`,
    `restarted_from_ticks`), `resumed_from_tick` stays 0 (no --resume), and `wall_seconds` covers the failed
    attempt too."""
    ck = tmp_path / "run.s2ckpt"
    r = own_ray("--checkpoint", str(ck), "--checkpoint-every", str(EVERY), "--max-restarts", "1")
    _wait_for(ck)
    t_ck = time.monotonic()
    time.sleep(3)  # the failed attempt runs on for a while: its time must count
    os.kill(r.pe_process(), signal.SIGKILL)
    t_kill = time.monotonic()
    code = r.wait(300)
    t_end = time.monotonic()
    assert code == 0, r.stderr_lines()[-5:]
    d = json.loads(r.out.read_text())
    assert d["state_digest"] == undisturbed
    assert d["restarts"] == 1 and d["resumed_from_tick"] == 0
    assert len(d["restarted_from_ticks"]) == 1 and d["restarted_from_ticks"][0] % EVERY == 0
    assert d["restarted_from_ticks"][0] >= EVERY  # from the checkpoint, not from the start
    # the whole run began before the first checkpoint; the last attempt only after the kill
    assert d["wall_seconds"] > t_end - t_ck - 2 > t_end - t_kill, (d["wall_seconds"], t_end - t_ck, t_end - t_kill)
    assert d["ticks_per_second"] == pytest.approx(d["ticks"] / d["wall_seconds"])
