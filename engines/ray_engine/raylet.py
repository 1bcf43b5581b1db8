"""The driver's watch on its node's Ray daemon (the raylet), without which a ray run can neither go on nor restart.

Ray alone handles a lost raylet badly: killed, the driver's next call that needs it (starting an actor, reading
a large result) ends the process with exit code 1 and no word; stopped (SIGSTOP, a frozen machine), the
cluster notices after about 65 s and the driver's next such call waits forever. So a thread looks at the
raylet every CHECK_EVERY seconds: dead (its process, when this run started it, or its port refusing
connections) is down at once; not answering a gRPC preface for RAYLET_TIMEOUT seconds is down too. The
driver's bounded waits (waits.py) then raise RayletDownError, which is never retried, and the run ends with
one line naming the checkpoint to resume from. If the driver is stuck inside a Ray call instead, the watch
prints that line itself and ends the process after STUCK_GRACE seconds. So a run ends at most about 30 s after
its raylet stops (RAYLET_TIMEOUT + PROBE_TIMEOUT + CHECK_EVERY + STUCK_GRACE), and within seconds after it dies.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from pathlib import Path

from s2emu.errors import S2EmuError

from .cluster import grpc_probe

RAYLET_TIMEOUT = 10.0  # seconds the raylet may go without answering before the run ends (stopped or hung)
CHECK_EVERY = 1.0  # seconds between two looks at the raylet
PROBE_TIMEOUT = 2.0  # seconds one look waits for the raylet's answer (it answers in about a millisecond)
STUCK_GRACE = 15.0  # seconds the driver gets to end the run once the raylet is down (Ray's shutdown takes ~5)


class RayletDownError(S2EmuError):
    """This node's raylet died or stopped answering: the run cannot go on, nor restart (--resume can, later)."""


class RayletWatch:
    """Looks at this node's raylet from a thread of its own while a run goes; `checkpointer` names the
    checkpoint to resume from in the error. `ray_started`: this process started the private Ray (then the
    raylet is its child, and ending the run kills that Ray's processes)."""

    def __init__(self, checkpointer=None, ray_started: bool = False):
        import ray

        try:
            node = ray._private.worker.global_worker.node
            self.host, self.port = node.node_ip_address, node.node_manager_port
        except AttributeError:  # a Ray Client driver (ray://): no raylet of its own to watch
            node = None
        raylets = node.all_processes.get("raylet", []) if node is not None and ray_started else []
        self.proc = raylets[0].process if raylets else None  # a Popen: tells death (and how) at once
        self.node, self.ray_started, self.checkpointer = node, ray_started, checkpointer
        self.down: str | None = None  # what happened to the raylet, once it is down
        self.silent_since: float | None = None
        self.finished = threading.Event()  # run_ray is done (returned or raised)
        if node is not None:
            threading.Thread(target=self._watch, name="s2emu-raylet-watch", daemon=True).start()

    def check(self, look: bool = False) -> None:
        """Raise RayletDownError if the raylet is down; look=True looks now first (after an actor died: its
        raylet may be why). The driver checks before each Ray call that may need the raylet: a raylet this
        run started is asked at once (a wait for its exit status, microseconds), since the call would end the
        process if it died."""
        if self.down is None and look and self.node is not None:
            self._look()
        elif self.down is None:
            self._died()
        if self.down is not None:
            raise RayletDownError(self.message())

    def message(self) -> str:
        ck = self.checkpointer
        where = (f"resume from the last checkpoint (tick {ck.last_tick}) with --resume {ck.path}"
                 if ck is not None and ck.written else "this run wrote no checkpoint to resume from")
        return f"{self.down}: a ray run cannot go on or restart without it; {where}"

    def _name(self) -> str:
        pid = f", pid {self.proc.pid}" if self.proc is not None else ""
        return f"the Ray daemon of this node (raylet{pid}, port {self.port})"

    def _died(self) -> bool:
        if self.proc is None or (code := self.proc.poll()) is None:
            return False
        how = f"killed by {signal.Signals(-code).name}" if code < 0 else f"exited with code {code}"
        self.down = f"{self._name()} died ({how})"
        return True

    def _look(self) -> None:
        if self._died():
            return
        connected, problem = grpc_probe(self.host, self.port, PROBE_TIMEOUT, PROBE_TIMEOUT)
        now = time.monotonic()
        if not connected:
            self.down = f"{self._name()} is gone ({problem})"
        elif problem is None:
            self.silent_since = None
        elif self.silent_since is None:
            self.silent_since = now
        elif now - self.silent_since >= RAYLET_TIMEOUT:
            stopped = self.proc is not None and _state(self.proc.pid) in ("T", "t")
            self.down = (f"{self._name()} has not answered for {now - self.silent_since:.0f} s"
                         f"{' (it is stopped)' if stopped else ''}")

    def _watch(self) -> None:
        while not self.finished.wait(CHECK_EVERY):
            if self.down is None:
                try:
                    self._look()
                except Exception:  # noqa: BLE001, S112 - a look that fails says nothing about the raylet
                    continue
            elif not self.finished.wait(STUCK_GRACE):
                # the driver is stuck in a Ray call that waits for the raylet: Ray would hang or exit silently
                sys.stderr.write(f"error: {self.message()}\n")
                sys.stderr.flush()
                self.kill_ray()
                os._exit(2)

    def kill_ray(self) -> None:
        """Kill the processes of the private Ray this run started (a stopped raylet would hang Ray's shutdown)."""
        if self.ray_started:
            try:
                self.node.kill_all_processes(check_alive=False, allow_graceful=False)
            except Exception:  # noqa: BLE001, S110 - the processes may be gone already
                pass

    def stop(self) -> None:
        self.finished.set()


def _state(pid: int) -> str:
    """A process's state letter (R, S, T: stopped ...), or '' if it cannot be read."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return ""
