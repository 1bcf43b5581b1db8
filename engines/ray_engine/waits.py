"""Bounded waits on actor calls: an actor that does not answer in time is a hang, not a wait."""

from __future__ import annotations

import time

from s2emu.errors import ActorDiedError, S2EmuError

START_TIMEOUT = 180.0  # seconds for every actor to start (and restore a checkpoint)
SLICE = 1.0  # seconds a wait goes without looking at the raylet watch
watch = None  # the running ray run's RayletWatch (raylet.py); one ray run at a time per process, as one Ray


def _check_raylet() -> None:
    if watch is not None:
        watch.check()


def unwrap(e: Exception) -> Exception:
    import ray

    if isinstance(e, ray.exceptions.RayTaskError):
        if isinstance(e.cause, S2EmuError):
            return e.cause
        if isinstance(e.cause, ray.exceptions.RayActorError):  # the router lost an endpoint (calls transport)
            return ActorDiedError(f"an actor of the emulation died: {e.cause}")
    if isinstance(e, ray.exceptions.RayActorError):
        return ActorDiedError(f"an actor of the emulation died: {e}")
    return e


def wait_for(ref, watched: dict, timeout: float | None = None, what: str = ""):
    """ray.get(ref), but fail at once if a watched serve call ends with an error first (an endpoint that
    died or could not connect while the router waits for it). A serve call that returns normally has
    told the router why over its channel, so the router's own answer is awaited."""
    import ray

    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        _check_raylet()
        left = SLICE if deadline is None else min(SLICE, max(0.0, deadline - time.monotonic()))
        done, _ = ray.wait([ref, *watched], num_returns=1, timeout=left)
        if not done and deadline is not None and time.monotonic() >= deadline:
            raise ActorDiedError(f"{what} took more than {timeout:.0f} s: a process of the emulation hangs")
        if not done:
            continue
        _check_raylet()  # a large result is read through the raylet
        if done[0] == ref:
            return ray.get(ref)
        watched.pop(done[0])
        ray.get(done[0])  # raises the endpoint's error, if any


GRACE = 10.0  # seconds the other routers get to report their own error once one router's call failed


def wait_for_each(refs, watched: dict, timeout: float, what: str) -> list:
    """Every router's answer to one call (wait_for each). When one fails, the others get GRACE seconds to fail
    too, and the root cause is raised: an error of the emulation itself (a PE's PacketError on chip 2, say)
    rather than the "closed its channel" of the routers that lost their link to the failing one."""
    out, errors = [], []
    for ref in refs:
        try:
            out.append(wait_for(ref, watched, GRACE if errors else timeout, what))
        except Exception as e:  # noqa: BLE001 - sorted out below
            errors.append(unwrap(e))
    if errors:
        raise next((e for e in errors if not isinstance(e, ActorDiedError)), errors[0])
    return out


def get_all(refs, timeout: float, what: str) -> list:
    """ray.get of several calls, bounded: an actor that does not answer in time is a hang, not a wait."""
    import ray

    deadline = time.monotonic() + timeout
    while True:
        _check_raylet()
        try:
            return ray.get(refs, timeout=min(SLICE, max(0.0, deadline - time.monotonic())))
        except ray.exceptions.GetTimeoutError:
            if time.monotonic() >= deadline:
                raise ActorDiedError(f"{what} took more than {timeout:.0f} s: a process of the emulation "
                                     "hangs") from None


def discard(refs) -> None:
    """Fetch and drop the results of calls a failed run leaves behind (bounded wait), so that Ray does not
    log their errors as unhandled."""
    import ray

    if refs and (watch is None or watch.down is None):  # without a raylet they would not come
        done, _ = ray.wait(refs, num_returns=len(refs), timeout=5)
        for r in done:
            try:
                ray.get(r, timeout=0)
            except Exception:  # noqa: BLE001, S110 - the run's first error is already on its way
                pass
