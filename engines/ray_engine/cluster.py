"""Where the emulation runs: a private local Ray or an existing cluster, and the chips' placement on nodes."""

from __future__ import annotations

import logging
import os
import time

from s2emu.errors import ActorDiedError, PlacementError, S2EmuError

from .waits import get_all


def start_ray(address: str | None = None, num_cpus: int | None = None) -> bool:
    """Attach to `address`, or start a small private local Ray. True if this call started it.

    Security of a private local Ray: Ray turns a loopback node address into the machine's reachable one and
    its servers listen on every interface, so the guard is Ray's token authentication, on by default for a
    new local Ray (RAY_AUTH_MODE=token; the token is ~/.ray/auth_token, generated if missing, made readable
    by this user only here): a process without the token cannot join or call into the emulation. The emulation's own channels listen
    on 127.0.0.1 with a random authkey per run (RouterActor.open_channels). docs/cluster.md: clusters."""
    import ray

    if ray.is_initialized():
        return False
    kw = {"include_dashboard": False, "logging_level": logging.ERROR, "log_to_driver": False}
    if address:
        _check_reachable(address)
        # Ray retries a GCS that does not answer for ~20 s (one try per second); a few tries are enough to
        # tell a cluster from something else listening on that port
        from ray._private import ray_constants
        retries = getattr(ray_constants, "NUM_REDIS_GET_RETRIES", None)
        if retries is not None:
            ray_constants.NUM_REDIS_GET_RETRIES = min(retries, JOIN_RETRIES)
        try:
            ray.init(address=address, **kw)
        except ConnectionError as e:
            raise S2EmuError(f"cannot join the Ray cluster at {address}: {e}") from None
        finally:
            if retries is not None:
                ray_constants.NUM_REDIS_GET_RETRIES = retries
    else:
        ray.init(address="local", num_cpus=num_cpus or os.cpu_count() or 2, _node_ip_address="127.0.0.1",
                 object_store_memory=200 * 1024 * 1024, **kw)
        _private_token()
    return True


def _private_token() -> None:
    """Ray writes its token file readable by everyone on the machine; only its owner should read it."""
    from pathlib import Path

    token = Path(os.environ.get("RAY_AUTH_TOKEN_PATH") or Path.home() / ".ray" / "auth_token")
    try:
        if token.is_file() and token.stat().st_mode & 0o077:
            token.chmod(0o600)
    except OSError:
        pass


REACH_TIMEOUT = 4.0  # seconds to reach a cluster's address before giving up (Ray itself would retry for minutes)
ANSWER_TIMEOUT = 3.0  # seconds for what listens there to answer as a cluster's GCS (a gRPC server) does at once
JOIN_RETRIES = 4  # tries (about a second each) for Ray to reach the cluster's GCS behind that address
# An HTTP/2 client's connection preface and an empty SETTINGS frame (RFC 9113, 3.4): a gRPC server, as Ray's GCS
# is, answers with a SETTINGS frame of its own; anything else (a web server, a silent socket) does not.
_H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + bytes([0, 0, 0, 4, 0, 0, 0, 0, 0])


def _check_reachable(address: str) -> None:
    """A clear error within seconds when --address names no running cluster, where ray.init would retry for
    minutes (about 165 s for a web server or a socket that never answers)."""
    target = address
    if address == "auto":
        target = os.environ.get("RAY_ADDRESS", "")
        if not target:
            try:
                target = open("/tmp/ray/ray_current_cluster").read().strip()
            except OSError:
                target = ""
        if not target:
            raise S2EmuError("--address auto: no Ray cluster is running on this machine (start one with "
                             "`ray start --head`, or drop --address to run on a private local Ray)")
    hostport = target.removeprefix("ray://").rsplit("/", 1)[0]
    host, _, port = hostport.rpartition(":")
    if not host or not port.isdigit():
        raise S2EmuError(f"--address {address}: expected HOST:PORT (the head node's GCS address), or auto")
    _check_answers(host, int(port), target)
    if not target.startswith("ray://"):  # ray.init goes to this machine's address for a loopback one: that too
        from ray._private.services import canonicalize_bootstrap_address

        try:
            canonical = canonicalize_bootstrap_address(hostport)
        except Exception:  # noqa: BLE001 - ray.init will say what is wrong with the address
            canonical = None
        if canonical and canonical != hostport:
            host, _, port = canonical.rpartition(":")
            _check_answers(host, int(port), f"{target} (as Ray reaches it: {canonical})")


def _check_answers(host: str, port: int, shown: str) -> None:
    """S2EmuError unless a gRPC server (a Ray cluster's GCS) listens at host:port; `shown` names it."""
    hint = "(start one with `ray start --head`, or drop --address to run on a private local Ray)"
    tls = os.environ.get("RAY_USE_TLS", "0").lower() in ("1", "true")  # TLS, not cleartext HTTP/2: connect only
    connected, problem = grpc_probe(host, port, REACH_TIMEOUT, 0 if tls else ANSWER_TIMEOUT)
    if not connected:
        raise S2EmuError(f"no Ray cluster at {shown}: {problem} {hint}")
    if problem is not None:
        raise S2EmuError(f"{shown} is not a Ray cluster: it {problem}, where a cluster's GCS answers in gRPC at once "
                         f"{hint}")


def grpc_probe(host: str, port: int, connect_timeout: float, answer_timeout: float) -> tuple[bool, str | None]:
    """(connected, problem): whether a TCP connection to host:port opened, and None if what listens there
    answered an HTTP/2 preface as a gRPC server does (Ray's GCS and raylets are gRPC servers), else what it did
    instead. answer_timeout 0: the connection alone is checked."""
    import socket

    try:
        sock = socket.create_connection((host, port), timeout=connect_timeout)
    except OSError as e:
        return False, e.strerror or str(e)
    head = b""
    with sock:
        if not answer_timeout:
            return True, None
        try:
            sock.settimeout(answer_timeout)
            sock.sendall(_H2_PREFACE)
            deadline = time.monotonic() + answer_timeout
            while len(head) < 9 and (chunk := sock.recv(9 - len(head))):
                head += chunk
                sock.settimeout(max(0.01, deadline - time.monotonic()))
        except TimeoutError:
            return True, f"took the connection but did not answer within {answer_timeout:g} s"
        except OSError:
            pass  # reset while we spoke: judged by what came before
    if len(head) == 9 and head[3] == 4:  # a SETTINGS frame
        return True, None
    if not head:
        return True, "closed the connection without an answer"
    return True, f"answered {head!r}{' (a web server?)' if head.startswith((b'HTTP/', b'<')) else ''}"


def channel_host() -> str | None:
    """Where the router's channels listen: loopback when the whole cluster is this machine, else (None) its
    node's address."""
    return "127.0.0.1" if _cluster_is_this_machine() else None


def _cluster_is_this_machine() -> bool:
    import ray

    me = ray.get_runtime_context().get_node_id()
    return all(n["NodeID"] == me for n in ray.nodes() if n.get("Alive"))


PLACEMENT_CPU = 0.001  # what a chip's bundle reserves: a token (the actors take no CPU), for Ray to place it
PLACEMENT_TIMEOUT = 60.0  # seconds for Ray to place the chips' bundles: a live cluster does it at once


class Placement:
    """A placement group with one bundle per chip in use, spread over the cluster's nodes: every actor of a
    chip (its PEs, its router, the host on chip 0) goes into that chip's bundle, hence onto one node, and only
    the links between chips may cross between nodes."""

    def __init__(self, chips: list[int]):
        from ray.util.placement_group import placement_group

        self.bundle = {c: i for i, c in enumerate(chips)}
        self.group = placement_group([{"CPU": PLACEMENT_CPU}] * len(chips), strategy="SPREAD")

    def wait(self, timeout: float | None = None) -> list[str]:
        """Block until the group is placed (at most `timeout`, default PLACEMENT_TIMEOUT); the node id of every
        chip's bundle, in chip order. PlacementError when it cannot be placed: Ray waits for ever for resources
        that may come, but nodes that would hold it do not come back by themselves."""
        import ray
        from ray.util.placement_group import placement_group_table

        try:
            get_all([self.group.ready()], PLACEMENT_TIMEOUT if timeout is None else timeout,
                    "placing the chips on the cluster's nodes")
        except ActorDiedError:
            alive = [n for n in ray.nodes() if n.get("Alive")]
            cpus = sum(n.get("Resources", {}).get("CPU", 0.0) for n in alive)
            free = ray.available_resources().get("CPU", 0.0)
            raise PlacementError(
                f"the cluster cannot hold the emulation: its {len(self.bundle)} chip(s) need a bundle of "
                f"{PLACEMENT_CPU:g} CPU each, and its {len(alive)} live node(s) have {cpus:g} CPU ({free:g} free) "
                f"after {PLACEMENT_TIMEOUT if timeout is None else timeout:.0f} s") from None
        nodes = placement_group_table(self.group)["bundles_to_node_id"]
        return [nodes[i] for i in self.bundle.values()]

    def on(self, chip: int) -> dict:
        """Actor options that put an actor on `chip`'s node."""
        from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

        return {"scheduling_strategy": PlacementGroupSchedulingStrategy(self.group, self.bundle[chip])}

    def remove(self) -> None:
        from ray.util.placement_group import remove_placement_group

        remove_placement_group(self.group)



def process_groups(build, per_process: int) -> list[list[int]]:
    """PEs in processes of `per_process`: consecutive PEs of one chip (a chip's processes stay on its node)."""
    groups, chip_of = [], build.mapping.endpoint_chips
    for c in build.pe_configs:
        p = c["pe_id"]
        if groups and len(groups[-1]) < per_process and chip_of[groups[-1][-1]] == chip_of[p]:
            groups[-1].append(p)
        else:
            groups.append([p])
    return groups
