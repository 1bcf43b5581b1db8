"""Checkpoint and resume (s2emu/checkpoint.py): a run stopped and resumed ends with the same state_digest as one
never stopped, on both engines and for every kind of PE; damaged or foreign checkpoints are refused."""

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time

import pytest

from s2emu.checkpoint import CheckpointError, read_checkpoint
from s2emu.recipe import load_recipe
from s2emu.runner import run


class Stop(Exception):
    pass


class StopAt:
    """A progress sink that stops the run (as Ctrl-C would) once `at` ticks are done."""

    def __init__(self, at):
        self.at = at

    def start(self, n):
        self.done = 0

    def advance(self, k):
        self.done += k
        if self.done >= self.at:
            raise Stop


def recipe(name, pes=None, **data):
    r = load_recipe(f"recipes/{name}.toml").with_overrides(epochs=1, pes=pes)
    return dataclasses.replace(r, data={**r.data, **data}) if data else r


CASES = {  # e-prop spiking PEs; DEEP R layered PEs split over 2; BPTT, truncated, split over 2 with its readout PE
    "smoke": lambda: recipe("smoke"),
    "deepr": lambda: recipe("deepr_mnist", pes=2, max_train=48, max_test=16),
    "bptt": lambda: dataclasses.replace(r := recipe("tlbptt_digits", pes=2, max_train=64, max_test=32),
                                        learning=dataclasses.replace(r.learning, truncation=7)),
}


def stopped_and_resumed(r, tmp_path, engine="local", **kw):
    full = run(r, engine=engine, **kw)
    path = tmp_path / "run.s2ckpt"
    with pytest.raises(Stop):
        run(r, engine=engine, progress=StopAt(full["ticks"] * 2 // 3), checkpoint=str(path),
            checkpoint_every=full["ticks"] // 4, **kw)
    resumed = run(r, engine=engine, resume=str(path), **kw)
    return full, resumed


@pytest.mark.parametrize("case", sorted(CASES))
def test_a_stopped_run_resumes_to_the_same_digest(case, tmp_path):
    full, resumed = stopped_and_resumed(CASES[case](), tmp_path)
    assert 0 < resumed["resumed_from_tick"] < full["ticks"]
    assert resumed["state_digest"] == full["state_digest"]
    assert resumed["accuracy"] == full["accuracy"] and resumed["test_loss"] == full["test_loss"]
    assert resumed["router"] == full["router"] and resumed["pe_counters"] == full["pe_counters"]


@pytest.mark.ray
@pytest.mark.parametrize("transport", ["channels", "calls"])
def test_a_stopped_ray_run_resumes_to_the_same_digest(transport, tmp_path, ray_local):
    r = CASES["bptt"]()
    full, resumed = stopped_and_resumed(r, tmp_path, engine="ray", transport=transport)
    assert resumed["state_digest"] == full["state_digest"] == run(r)["state_digest"]


@pytest.mark.ray
def test_a_checkpoint_moves_between_engines(tmp_path, ray_local):
    r = CASES["smoke"]()
    full = run(r)
    path = tmp_path / "run.s2ckpt"
    with pytest.raises(Stop):
        run(r, engine="ray", progress=StopAt(full["ticks"] // 2), checkpoint=str(path),
            checkpoint_every=full["ticks"] // 3)
    assert run(r, resume=str(path))["state_digest"] == full["state_digest"]


def test_a_killed_cli_run_resumes(tmp_path):
    """SIGKILL from outside while the CLI runs, then --resume: the digest of a run never stopped."""
    ckpt = tmp_path / "run.s2ckpt"
    cmd = [sys.executable, "-m", "s2emu", "run", "recipes/smoke.toml", "--epochs", "3", "--out", "-", "--quiet",
           "--json"]
    p = subprocess.Popen(cmd + ["--checkpoint-every", "100", "--checkpoint", str(ckpt)],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while not ckpt.exists() and time.monotonic() < deadline and p.poll() is None:
        time.sleep(0.05)
    os.kill(p.pid, signal.SIGKILL)
    p.communicate()
    assert p.returncode == -signal.SIGKILL, "the run ended before it could be killed"
    resumed = subprocess.run(cmd + ["--resume", str(ckpt)], capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    full = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    a, b = json.loads(resumed.stdout), json.loads(full.stdout)
    assert a["resumed_from_tick"] > 0 and a["state_digest"] == b["state_digest"]


def test_damaged_or_foreign_checkpoints_are_refused(tmp_path):
    r = CASES["smoke"]()
    path = tmp_path / "run.s2ckpt"
    with pytest.raises(Stop):
        run(r, progress=StopAt(300), checkpoint=str(path), checkpoint_every=200)
    data = path.read_bytes()
    read_checkpoint(path)  # whole: reads
    (tmp_path / "cut").write_bytes(data[:-100])
    with pytest.raises(CheckpointError, match="truncated"):
        run(r, resume=str(tmp_path / "cut"))
    flipped = bytearray(data)
    flipped[len(data) // 2] ^= 0x40
    (tmp_path / "flip").write_bytes(bytes(flipped))
    with pytest.raises(CheckpointError, match="checksum"):
        run(r, resume=str(tmp_path / "flip"))
    (tmp_path / "other").write_bytes(b"PK\x03\x04 not a checkpoint")
    with pytest.raises(CheckpointError, match="not an s2emu checkpoint"):
        run(r, resume=str(tmp_path / "other"))
    with pytest.raises(CheckpointError, match="different emulation"):
        run(r.with_overrides(seed=r.seed + 1), resume=str(path))
    with pytest.raises(CheckpointError, match="cannot read"):
        run(r, resume=str(tmp_path / "missing"))
    assert not list(tmp_path.glob(".*tmp*"))  # no temporary file left behind


# ---------------------------------------------------------------- faults: real processes killed mid-run

from s2emu.build import build as build_run  # noqa: E402
from s2emu.checkpoint import Checkpointer  # noqa: E402
from s2emu.errors import ActorDiedError  # noqa: E402
from s2emu.runner import assemble_spikes, assemble_weights, state_digest  # noqa: E402


def killer(pids, victim, at):
    """Progress that SIGKILLs one process of the emulation (a PE, the host or the router) once `at` ticks
    are done; pids is filled by run_ray's on_ready at every (re)start."""
    killed = []

    def progress(n, done=[0]):  # noqa: B006 - a counter shared by the calls of one run
        done[0] += n
        if not killed and done[0] >= at:
            pid = pids["pes"][1] if victim == "pe" else pids["routers"][1] if victim == "chip 1's router" \
                else pids[victim]
            os.kill(pid, signal.SIGKILL)
            killed.append(pid)
    return progress, killed


@pytest.mark.ray
@pytest.mark.parametrize("victim", ["pe", "host", "router"])
def test_the_ray_engine_survives_a_killed_process(victim, tmp_path, ray_local):
    from s2emu.engines.ray_engine import run_ray

    r = CASES["smoke"]()
    b = build_run(r)
    pids, log = {}, []
    progress, killed = killer(pids, victim, b.n_ticks // 2)
    ck = Checkpointer(tmp_path / "run.s2ckpt", b.n_ticks // 5, b)
    raw = run_ray(b, progress=progress, on_ready=pids.update, checkpointer=ck, max_restarts=2, log=log.append)
    assert killed and raw.restarts == 1 and "restarting every actor from tick" in log[0]
    assert state_digest(assemble_weights(b, raw), assemble_spikes(b, raw)) == run(r)["state_digest"]


@pytest.mark.ray
def test_a_killed_chip_router_restarts_the_whole_mesh(tmp_path, ray_local):
    """Three chips, a router actor each: killing chip 1's router closes its links, its neighbours and its PEs
    notice, and the run restarts every actor from the last checkpoint (router state per chip) and ends with the
    one-chip digest."""
    from s2emu.engines.ray_engine import run_ray

    r = CASES["smoke"]().with_overrides(pes=4, chips=3, pes_per_chip=2)
    b = build_run(r)
    assert sorted(b.mapping.tables) == [0, 1, 2]
    pids, log = {}, []
    progress, killed = killer(pids, "chip 1's router", b.n_ticks // 2)
    ck = Checkpointer(tmp_path / "run.s2ckpt", b.n_ticks // 5, b)
    raw = run_ray(b, progress=progress, on_ready=pids.update, checkpointer=ck, max_restarts=2, log=log.append)
    assert killed and raw.restarts == 1 and "restarting every actor from tick" in log[0]
    one_chip = run(CASES["smoke"]().with_overrides(pes=4))["state_digest"]
    assert state_digest(assemble_weights(b, raw), assemble_spikes(b, raw)) == one_chip
    assert run(r, resume=str(ck.path))["state_digest"] == one_chip  # the ray checkpoint resumes on local


@pytest.mark.ray
def test_a_fault_beyond_the_restarts_leaves_a_usable_checkpoint(tmp_path, ray_local):
    from s2emu.engines.ray_engine import run_ray

    r = CASES["smoke"]()
    b = build_run(r)
    pids = {}
    progress, killed = killer(pids, "pe", b.n_ticks // 2)
    path = tmp_path / "run.s2ckpt"
    t0 = time.monotonic()
    with pytest.raises(ActorDiedError, match="resumes the run") as e:
        run_ray(b, progress=progress, on_ready=pids.update, checkpointer=Checkpointer(path, b.n_ticks // 5, b))
    assert killed and time.monotonic() - t0 < 120 and str(path) in str(e.value)
    assert run(r, resume=str(path))["state_digest"] == run(r)["state_digest"]


@pytest.mark.ray
def test_a_cluster_that_cannot_hold_the_chips_says_so_in_one_line(ray_local):
    """Every CPU of the cluster taken (as when the nodes left after a loss have none to give): placing the chips
    fails within its bound with what the cluster has, not as a hang to restart from."""
    from ray.util.placement_group import placement_group, remove_placement_group

    from s2emu.engines.ray_engine.cluster import Placement
    from s2emu.errors import PlacementError

    hog = placement_group([{"CPU": ray_local.cluster_resources()["CPU"]}])
    ray_local.get(hog.ready(), timeout=30)
    placement = Placement([0, 1, 2])
    try:
        t0 = time.monotonic()
        with pytest.raises(PlacementError, match=r"cannot hold the emulation: its 3 chip\(s\) .* 1 live node\(s\) "
                                                 r"have 2 CPU \(0 free\)"):
            placement.wait(timeout=3)
        assert time.monotonic() - t0 < 15
    finally:
        placement.remove()
        remove_placement_group(hog)


@pytest.mark.ray
def test_a_restart_the_cluster_cannot_place_names_the_checkpoint(tmp_path, ray_local, monkeypatch):
    """A PE killed mid-run, and the restart asks the cluster for more than it has (a chip's bundle raised past
    the node's CPUs: the nodes left too small for the emulation): the run ends with PlacementError naming the
    last checkpoint, which resumes on the local engine to the same bits."""
    from s2emu.engines.ray_engine import cluster, run_ray
    from s2emu.errors import PlacementError

    monkeypatch.setattr(cluster, "PLACEMENT_TIMEOUT", 5.0)
    r = CASES["smoke"]()
    b = build_run(r)
    pids = {}
    kill, killed = killer(pids, "pe", b.n_ticks // 2)

    def progress(n):
        kill(n)
        if killed:
            monkeypatch.setattr(cluster, "PLACEMENT_CPU", 64.0)
    path = tmp_path / "run.s2ckpt"
    with pytest.raises(PlacementError, match="cannot hold the emulation.*resumes the run") as e:
        run_ray(b, progress=progress, on_ready=pids.update, checkpointer=Checkpointer(path, b.n_ticks // 5, b),
                max_restarts=2)
    assert killed and str(path) in str(e.value) and "1 chip(s) need a bundle of 64 CPU" in str(e.value)
    assert run(r, resume=str(path))["state_digest"] == run(r)["state_digest"]


@pytest.mark.parametrize("address", ["127.0.0.1:1", "10.255.255.1:6379", "not-an-address"])
def test_an_address_with_no_cluster_fails_fast(address):
    t0 = time.monotonic()
    p = subprocess.run([sys.executable, "-m", "s2emu", "run", "recipes/smoke.toml", "--engine", "ray", "--address",
                        address, "--out", "-", "--quiet"], capture_output=True, text=True, timeout=60)
    assert p.returncode != 0 and time.monotonic() - t0 < 10
    assert "Traceback" not in p.stderr
    assert any(m in p.stderr for m in ("no Ray cluster at", "cannot join the Ray cluster", "expected HOST:PORT"))


@pytest.mark.ray
def test_a_hung_process_is_a_fault_not_a_wait(tmp_path, ray_local, monkeypatch):
    """SIGSTOP freezes a PE without closing anything: only the bound on each wait can notice. The run restarts
    from its checkpoint and finishes with the same digest."""
    from s2emu.engines.ray_engine import run as ray_engine  # the driver, whose STALL_TIMEOUT bounds each wait

    monkeypatch.setattr(ray_engine, "STALL_TIMEOUT", 5.0)
    r = CASES["smoke"]()
    b = build_run(r)
    pids, stopped, log = {}, [], []

    def progress(n, done=[0]):  # noqa: B006
        done[0] += n
        if not stopped and done[0] >= b.n_ticks // 2:
            os.kill(pids["pes"][0], signal.SIGSTOP)
            stopped.append(pids["pes"][0])

    ck = Checkpointer(tmp_path / "run.s2ckpt", b.n_ticks // 5, b)
    t0 = time.monotonic()
    try:
        raw = ray_engine.run_ray(b, progress=progress, on_ready=pids.update, checkpointer=ck, max_restarts=1,
                                 log=log.append)
    finally:
        for pid in stopped:  # never leave a stopped process behind
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    assert stopped and raw.restarts == 1 and "hangs" in log[0] and time.monotonic() - t0 < 90
    assert state_digest(assemble_weights(b, raw), assemble_spikes(b, raw)) == run(r)["state_digest"]


# ---------------------------------------------------------------- hostile files and disks (issue 22)

import hashlib  # noqa: E402
import resource  # noqa: E402

import numpy as np  # noqa: E402

from s2emu import checkpoint as ck  # noqa: E402
from s2emu.errors import S2EmuError  # noqa: E402

from mounts import mounted  # noqa: E402


def a_checkpoint(tmp_path, r=None):
    """A real checkpoint of the smoke recipe at tick 200, and its payload."""
    path = tmp_path / "run.s2ckpt"
    with pytest.raises(Stop):
        run(r or CASES["smoke"](), progress=StopAt(300), checkpoint=str(path), checkpoint_every=200)
    return path, read_checkpoint(path)


def repacked(path, payload):
    """`payload` written as a checkpoint with a valid header and checksum: only the content is wrong."""
    body = ck.pack(payload)
    path.write_bytes(ck.MAGIC + ck._HEAD.pack(ck.VERSION, hashlib.sha256(body).digest(), len(body)) + body)
    return path


def _under_3gb():  # unfixed, /dev/zero filled the reader's memory: bound it so such a failure is quick
    resource.setrlimit(resource.RLIMIT_AS, (3 << 30, 3 << 30))


def test_resume_refuses_what_is_not_a_checkpoint_file_before_reading_it(tmp_path):
    """A FIFO hung the reader, /dev/zero filled its memory: each is one line, at once, from the real CLI."""
    fifo = tmp_path / "fifo.s2ckpt"
    os.mkfifo(fifo)
    huge = tmp_path / "huge.s2ckpt"
    with open(huge, "wb") as f:  # sparse: takes no disk
        f.truncate(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))  # all of this machine's memory
    for path, words in ((fifo, "is a FIFO"), ("/dev/zero", "is a character device"), (tmp_path, "is a folder"),
                        (huge, "more than half of this machine's memory")):
        t0 = time.monotonic()
        p = subprocess.run([sys.executable, "-m", "s2emu", "run", "smoke", "--out", "-", "--quiet", "--resume",
                            str(path)], capture_output=True, text=True, timeout=60, preexec_fn=_under_3gb)
        err = p.stderr.strip()
        assert p.returncode == 2 and err.startswith("error:") and "\n" not in err, err[-2000:]
        assert words in err and str(path) in err and time.monotonic() - t0 < 30


def _set(payload, endpoint, change):
    """payload with one endpoint's decoded state changed by change(state)."""
    ends = list(payload["endpoints"])
    state = ck.unpack(ends[endpoint])
    change(state)
    ends[endpoint] = ck.pack(state)
    return {**payload, "endpoints": ends}


def _nan_weight(s):
    s["ledger"]["input->hidden.weights"][3, 4] = np.nan


INCONSISTENT = {  # name: (payload -> payload with a valid checksum, words the refusal must hold)
    "nan weights": (lambda p: _set(p, 0, _nan_weight), ["endpoint 0", "'input->hidden.weights'", "NaN"]),
    "inf in a PE's state": (lambda p: _set(p, 1, lambda s: s["attrs"].update(pending=float("inf"))),
                            ["endpoint 1", "'pending'", "infinite"]),
    "tick past the end": (lambda p: {**p, "tick": 10 ** 6}, ["tick 1000000", "769 ticks"]),
    "tick 0": (lambda p: {**p, "tick": 0}, ["tick 0 does not fit"]),
    "tick as text": (lambda p: {**p, "tick": "200"}, ["'tick' must be an int", "str '200'"]),
    "tick as bool": (lambda p: {**p, "tick": True}, ["'tick' must be an int", "bool"]),
    "endpoints as numbers": (lambda p: {**p, "endpoints": [1, 2]}, ["'endpoints' must be a list of encoded"]),
    "an endpoint short": (lambda p: {**p, "endpoints": p["endpoints"][:-1]}, ["'endpoints' holds 5", "6 endpoints"]),
    "inbound as a map": (lambda p: {**p, "inbound": {"a": 1}}, ["'inbound' must be a list"]),
    "router counter as text": (lambda p: {**p, "router": [{**p["router"][0], "routed": "many"}]},
                               ["router 0's counter 'routed'", "str 'many'"]),
    "router of 2 chips": (lambda p: {**p, "router": p["router"] * 2}, ["router state of 2 chips", "uses 1"]),
    "host scores cut": (lambda p: _set(p, 5, lambda s: s.update(scores=s["scores"][:3])),
                        ["the host", "'scores'", "float32[24, 8, 4]", "float32[3, 8, 4]"]),
    "negative counter": (lambda p: _set(p, 2, lambda s: s["counters"].update(spikes=-5)),
                         ["endpoint 2", "'counters' must map names to counts"]),
    "undecodable endpoint": (lambda p: {**p, "endpoints": [*p["endpoints"][:-1], b"\xc1"]},
                             ["the state of the host does not decode"]),
    "state not a map": (lambda p: {**p, "endpoints": [ck.pack([1, 2]), *p["endpoints"][1:]]},
                        ["endpoint 0", "must be a map with ledger, counters, attrs"]),
}


def test_a_checkpoint_with_a_valid_checksum_but_inconsistent_content_is_refused_by_name(tmp_path):
    r = CASES["smoke"]()
    good, payload = a_checkpoint(tmp_path, r)
    for name, (change, words) in INCONSISTENT.items():
        path = repacked(tmp_path / "bad.s2ckpt", change(payload))
        with pytest.raises(CheckpointError) as e:
            run(r, resume=str(path))
        msg = str(e.value)
        assert str(path) in msg and "\n" not in msg, (name, msg)
        for w in words:
            assert w in msg, (name, w, msg)
    assert run(r, resume=str(repacked(tmp_path / "same.s2ckpt", payload)))["resumed_from_tick"] == 200


def test_a_refused_resume_names_each_flag_that_differs_with_both_values(tmp_path):
    r = CASES["smoke"]()
    path, payload = a_checkpoint(tmp_path, r)
    for over, words in (({"pes": 2}, ["the checkpoint has 5 PEs, this run 3 PEs (--pes)"]),
                        ({"seed": 7}, ["the checkpoint has --seed 1, this run --seed 7"]),
                        ({"epochs": 2}, ["the checkpoint has --epochs 1, this run --epochs 2"]),
                        ({"batch": 4}, ["the checkpoint has --batch 8, this run --batch 4"]),
                        ({"seed": 7, "pes": 2}, ["--seed 1, this run --seed 7", "5 PEs, this run 3 PEs"])):
        with pytest.raises(CheckpointError) as e:
            run(r.with_overrides(**over), resume=str(path))
        for w in words:
            assert w in str(e.value), (over, str(e.value))
        assert "different emulation" in str(e.value) and "\n" not in str(e.value)
    other = tmp_path / "other.toml"  # another recipe; and the same one edited
    text = open("recipes/smoke.toml").read()
    assert 'name = "smoke"' in text and "tau_m = 5.0" in text
    other.write_text(text.replace('name = "smoke"', 'name = "other"').replace("tau_m = 5.0", "tau_m = 6.0"))
    with pytest.raises(CheckpointError, match="the checkpoint has recipe smoke, this run recipe other"):
        run(load_recipe(str(other)).with_overrides(epochs=1), resume=str(path))
    other.write_text(text.replace("tau_m = 5.0", "tau_m = 6.0"))
    with pytest.raises(CheckpointError, match="network or learning settings differ"):
        run(load_recipe(str(other)).with_overrides(epochs=1), resume=str(path))
    old = repacked(tmp_path / "old.s2ckpt", {k: v for k, v in payload.items() if k != "run"})  # before "run"
    with pytest.raises(CheckpointError, match="recipe, overrides, data or split differ"):
        run(r.with_overrides(seed=7), resume=str(old))


def test_a_checkpoint_folder_that_cannot_be_written_fails_before_the_run(tmp_path):
    """Read-only: found when the run is set up, not at its first checkpoint (hours in, on a long run)."""
    class Started:
        started = False

        def start(self, n):
            self.started = True

        def advance(self, k):
            pass

    with mounted(tmp_path / "ro", read_only=True) as ro:
        progress = Started()
        with pytest.raises(S2EmuError, match="--checkpoint .*cannot write in .*Read-only file system"):
            run(CASES["smoke"](), progress=progress, checkpoint=f"{ro}/run.s2ckpt", checkpoint_every=100)
        assert not progress.started
    for place, words in ((tmp_path, "is a folder"), (tmp_path / "f" / "run.s2ckpt", "is a file, not a folder")):
        (tmp_path / "f").write_text("a file where a folder should be")
        with pytest.raises(S2EmuError, match=words):
            run(CASES["smoke"](), checkpoint=str(place), checkpoint_every=100)


def test_a_checkpoint_that_cannot_be_written_mid_run_is_told_and_the_run_goes_on(tmp_path, capsys):
    """A full disk: the probe at the start passes, every write fails. The run finishes with its results (what
    a long run is for), saying once why no checkpoint was written; the disk freed, checkpoints resume."""
    r = CASES["smoke"]()
    full = run(r)
    with mounted(tmp_path / "full", free=0, size="2m") as disk:  # a checkpoint of smoke: 412-600 kB
        got = run(r, checkpoint=f"{disk}/run.s2ckpt", checkpoint_every=100)
        err = capsys.readouterr().err
        assert got["state_digest"] == full["state_digest"] and got["checkpoints_written"] == 0
        assert err.count("warning: the checkpoint at tick 100 was not written") == 1, err
        assert "No space left on device" in err and "the run goes on" in err and "none has been written" in err
        assert err.count("warning") == 1  # told once per cause, not at every checkpoint
        assert os.listdir(disk) == ["filler"]  # no temporary file left behind

        def free_disk(n, done=[0]):  # noqa: B006 - halfway through, space comes back
            done[0] += n
            if done[0] >= 350 and os.path.exists(f"{disk}/filler"):
                os.unlink(f"{disk}/filler")

        got = run(r, checkpoint=f"{disk}/run.s2ckpt", checkpoint_every=100, progress=type(
            "P", (), {"start": lambda self, n: None, "advance": lambda self, k: free_disk(k)})())
        err = capsys.readouterr().err
        assert "checkpoints are written again: tick 400, after 3 that failed" in err, err
        assert got["checkpoints_written"] == 4 and read_checkpoint(f"{disk}/run.s2ckpt")["tick"] == 700
