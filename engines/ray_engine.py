"""The ray engine: one Ray actor (one process) per PE, a router actor and a host actor.

Each actor is a thin shell around the same plain object the local engine steps. A tick's packets from one
actor travel as one msgpack message (router/packets.py). The router actor is the chip's clock: it hands
every PE and the host its inbound batch for tick t, collects what they sent, routes it, and delivers it at
tick t+1. Packets thus take one hop through the router per tick, never a detour through the driver, which
only asks the router to advance CHUNK ticks at a time and updates the progress bar.

Two transports carry the per-tick exchange between the router and the endpoints:

* ``channels`` (default): Ray places, starts and supervises the actors, but the ticks travel over direct
  ``multiprocessing.connection`` channels. The router actor listens on a TCP port (loopback when the whole
  cluster is this machine, else its node's IP) with a random authkey, so nothing else can inject packets;
  each endpoint process (one PE, K PEs with --pes-per-process K, or the host) runs ``serve``, one long actor
  call that connects one channel, then per tick receives (tick, its endpoints' inbound bytes), steps them in
  turn and sends back their outbound bytes, until the router says stop. An endpoint whose object raises
  sends the exception over the channel, and the router raises it; a process that dies closes its socket,
  and the router raises S2EmuError at once.
* ``calls``: one Ray actor call per endpoint per tick (~1 ms each): simpler, slower; the measured baseline.

A machine of many chips runs one router actor per chip (every chip a packet may reach), each the clock of
its own endpoints. Neighbouring routers are joined by a channel per link (the higher-numbered chip connects
to the lower one's listener) and do router/mesh.py's hop rounds over them every tick: send on every link what
leaves by it (maybe nothing), receive from every link, `hops` times, then deliver. A router sends a hop's
messages on all its links at once (a large one from a thread of its own) and reads them in the order they
arrive (LinkExchange): a hop round costs one exchange between neighbours, not a chain of them across the
mesh. Only the channels transport runs many chips.
"""

from __future__ import annotations

import gc
import logging
import os
import pickle
import queue
import selectors
import socket
import struct
import threading
import time
import traceback
from collections import deque

from s2emu.errors import ActorDiedError, S2EmuError

from s2emu.checkpoint import in_flight, read_checkpoint

from . import TRANSPORTS, LiveStatus, RawRun

CHUNK = 25  # ticks the router advances per driver call (progress granularity)
CONNECT_TIMEOUT = 60.0  # seconds for the endpoints, already up, to connect their channels to the router
START_TIMEOUT = 180.0  # seconds for every actor to start (and restore a checkpoint)
STALL_TIMEOUT = 300.0  # seconds without a chunk of CHUNK ticks (or a snapshot, or the results) done: a hang

# Channel messages: one channel per actor process, carrying the ticks of all its endpoints (one, or several
# PEs with --pes-per-process). Router -> process: 8-byte signed tick, then its endpoints' inbound batches
# (_frame: lengths, then msgpack bytes; empty for no packets); tick STOP ends the serve loop. Process ->
# router: one status byte, then the endpoints' outbound batches framed the same way (OK), or a pickled
# (endpoint's place in the channel, exception, formatted traceback) (ERROR). The process's first message
# after connecting is its channel's index (8 bytes). Tick SNAPSHOT asks for the endpoints' states instead of
# a step: OK and the framed msgpack of each (s2emu/checkpoint.py).
_TICK = "<q"  # a format, not a struct.Struct: Ray pickles the actor classes, and a Struct does not pickle
_TICK_SIZE = struct.calcsize(_TICK)
STOP, SNAPSHOT, WINDOW = -1, -2, -3
# Windowed exchange (s2emu/build.py window_bound): tick WINDOW, then (first tick, m) as _WINDOW, then m ticks'
# inbound batches of every endpoint, tick by tick; the answer frames m ticks' outbound batches the same way.
_WINDOW = "<qq"
_WINDOW_SIZE = struct.calcsize(_WINDOW)
LINK_HELLO = -10  # a router's first message on a link channel: LINK_HELLO - (the link, as the listener names it)
OK, ERROR = b"\x00", b"\x01"


class RemoteTraceback(Exception):
    """The traceback of an exception raised in an endpoint actor, attached as the exception's cause."""

    def __str__(self) -> str:
        return self.args[0]


def _error_message(exc: BaseException, part: int = 0) -> bytes:
    """ERROR, then the pickled (part, exception, formatted traceback): part is which of the channel's
    endpoints raised."""
    tb = "".join(traceback.format_exception(exc))
    try:
        body = pickle.dumps((part, exc, tb))
        pickle.loads(body)  # some exceptions pickle but do not unpickle (custom __init__ arguments)
    except Exception:  # noqa: BLE001 - any failure: send the type and message instead
        body = pickle.dumps((part, RuntimeError(f"{type(exc).__name__}: {exc}"), tb))
    return ERROR + body


def _frame(parts) -> bytes:
    """Several byte strings as one: their lengths (uint32 each), then their bytes; b"" stands for none."""
    return struct.pack(f"<{len(parts)}I", *map(len, parts)) + b"".join(parts)


def _unframe(msg, start: int, n: int) -> list:
    """The n byte strings _frame put in msg from offset start on (memoryviews, no copies)."""
    try:
        lengths = struct.unpack_from(f"<{n}I", msg, start)
    except struct.error:
        raise S2EmuError(f"a channel message of {len(msg)} bytes is too short for {n} parts") from None
    view, at, parts = memoryview(msg), start + 4 * n, []
    for length in lengths:
        parts.append(view[at:at + length])
        at += length
    if at != len(view):
        raise S2EmuError(f"a channel message of {len(view)} bytes frames {at}")
    return parts


def _actor_classes():
    import ray
    from s2emu.checkpoint import pack, unpack
    from s2emu.cores.group import make_pes, step_plan
    from s2emu.host.host import Host, make_host
    from s2emu.machine import LINK_NAMES, opposite
    from s2emu.router.mesh import arrive
    from s2emu.router.packets import decode, decode_many, encode, encode_many

    @ray.remote(num_cpus=0, max_restarts=0)
    class EndpointActor:
        """One process holding one or more endpoints (a PE, several PEs with --pes-per-process, or the host):
        objects with step(tick, inbound) -> outbound behind msgpack bytes, each addressed by its slot. On the
        channels transport one serve call steps all of them in turn, each tick, over one channel: a process
        wakes once a tick however many PEs it holds."""

        def __init__(self, specs):
            # a population's PEs of one shape in this process step together (cores/group.py, same bits)
            pe_slots = [i for i, (kind, _) in enumerate(specs) if kind == "pe"]
            pes, groups = make_pes([specs[i][1] for i in pe_slots])
            self.objs = [None if kind == "pe" else make_host(config) for kind, config in specs]
            for i, pe in zip(pe_slots, pes):
                self.objs[i] = pe
            self.groups = [([pe_slots[e] for e in g.endpoints], g) for g in groups]

        def ready(self):
            return os.getpid()

        def node(self):
            return ray.get_runtime_context().get_node_id()

        def step(self, slot, tick, inbound):
            return encode(self.objs[slot].step(tick, decode(inbound) if inbound is not None else None))

        def snapshot(self, slot):
            return pack(self.objs[slot].snapshot())

        def restore(self, slot, state):
            self.objs[slot].restore(unpack(state))

        def serve(self, address, authkey, channel, slots):
            """Step the endpoints in `slots`, in that order, over one direct channel to the router until it
            sends STOP or goes away.

            Raises only if the channel cannot be opened; once connected, every failure of an object is
            sent to the router (which raises it for the driver) and the call returns its status."""
            from multiprocessing.connection import Client

            objs = [self.objs[slot] for slot in slots]
            n = len(objs)
            plan = step_plan(slots, self.objs, self.groups)
            conn = Client(tuple(address), family="AF_INET", authkey=authkey)
            gc.freeze()  # the collector need not scan what exists now, ~10% less time per tick
            try:
                conn.send_bytes(struct.pack(_TICK, channel))
                while True:
                    try:
                        msg = conn.recv_bytes()
                    except (EOFError, OSError):
                        return "router closed the channel"
                    (tick,) = struct.unpack_from(_TICK, msg)
                    if tick == STOP:
                        return "stopped"
                    ticks, start = (tick,), _TICK_SIZE
                    if tick == WINDOW:  # m ticks in a row (windowed exchange)
                        first, m = struct.unpack_from(_WINDOW, msg, _TICK_SIZE)
                        ticks, start = range(first, first + m), _TICK_SIZE + _WINDOW_SIZE
                    part, status = 0, None
                    try:
                        parts = []
                        if tick == SNAPSHOT:
                            for part, obj in enumerate(objs):
                                parts.append(pack(obj.snapshot()))
                        else:
                            raws = _unframe(msg, start, n * len(ticks))
                            parts = [b""] * len(raws)  # an empty batch travels as no bytes: most PEs send nothing
                            for w, tick in enumerate(ticks):
                                inbound = []
                                for part, raw in enumerate(raws[w * n:(w + 1) * n]):
                                    inbound.append(decode(raw) if len(raw) else None)
                                for at, stepper in plan:
                                    part = at[0]
                                    if len(at) == 1:
                                        outs = [stepper.step(tick, inbound[part])]
                                    else:
                                        try:
                                            outs = stepper.step(tick, [inbound[i] for i in at])
                                        except Exception:
                                            part = at[stepper.at]  # the member it was stepping raised
                                            raise
                                    for i, batch in zip(at, outs):
                                        if len(batch):
                                            parts[w * n + i] = encode(batch)
                        out = OK + _frame(parts)
                    except Exception as e:  # noqa: BLE001 - every error goes to the router
                        out, status = _error_message(e, part), "failed"
                    try:
                        conn.send_bytes(out)
                    except OSError:
                        return "router closed the channel"
                    if status is not None:
                        return status
            finally:
                conn.close()

        def clip_scores(self):
            """The stream host's scores so far (answered during serve: the host actor of a watched run
            takes two calls at a time)."""
            scores = getattr(self.objs[0], "clip_scores", None)
            return None if scores is None else scores().copy()

        def finish(self, slot):
            obj = self.objs[slot]
            if isinstance(obj, Host):
                return obj.results()
            return obj.weights(), obj.recordings(), dict(obj.counters)

    @ray.remote(num_cpus=0, max_restarts=0)
    class RouterActor:
        """One chip's router (s2emu.router.Router), clock of its endpoints; `processes` lists the endpoints
        (local indices) of each actor process, which talk over one channel (default: a process per endpoint);
        `neighbours` maps each link that leads to another chip in use to that chip, `hops` is the mapping's
        hop rounds per tick."""

        def __init__(self, router, endpoints, names, neighbours=None, hops=0, processes=None, window=1):
            self.endpoints = endpoints  # (actor handle, slot); endpoint e (local index) is endpoints[e]
            self.names = names  # endpoint e is names[e] in error messages
            self.n = len(endpoints)
            self.processes = processes or [[e] for e in range(self.n)]  # channel c serves processes[c]
            self.router = router
            router.reset_counters()  # fresh arrays: those Ray hands over from its object store are read-only
            self.neighbours, self.hops = dict(neighbours or {}), hops
            self.links = {}  # link -> channel to the neighbouring chip's router
            self.exchange = None  # the hop exchange over them (LinkExchange), once they are connected
            self.inbound = [None] * self.n
            self.window = window
            # windowed exchange: what each endpoint receives at each of the next `window` ticks
            self.later = deque([[None] * self.n for _ in range(window)])
            self.busy = 0.0
            self.listener = None
            self.conns = None  # channels: conns[c] talks to the process of endpoints processes[c]
            self.selector = None  # readiness of the channels (accept_channels)
            self.failure = None  # the first channel failure, raised again by any later call
            self.sent = None  # the tick whose messages the endpoints already have, if not yet collected

        def ready(self):
            return os.getpid()

        def node(self):
            return ray.get_runtime_context().get_node_id()

        # ------------------------------------------------------------ channels

        def open_channels(self, host):
            """Listen for the endpoints' channels; returns (address, authkey) for their serve calls."""
            from multiprocessing.connection import Listener

            authkey = os.urandom(32)
            self.listener = Listener((host or ray.util.get_node_ip_address(), 0), family="AF_INET",
                                     backlog=len(self.processes) + 7, authkey=authkey)  # and up to 6 links
            return self.listener.address, authkey

        def accept_channels(self, peers=None):
            """Connect a channel to each neighbouring router in `peers` ({link: (address, authkey)}, the
            lower-numbered chips), then accept one authenticated channel per endpoint process and per other
            neighbour (the driver watches for endpoints that die before connecting, and kills this actor
            then)."""
            from multiprocessing import AuthenticationError
            from multiprocessing.connection import Client

            for link, (address, authkey) in (peers or {}).items():
                c = Client(tuple(address), family="AF_INET", authkey=authkey)
                c.send_bytes(struct.pack(_TICK, LINK_HELLO - opposite(link)))
                self.links[link] = link_buffers(c)
            conns = [None] * len(self.processes)
            gc.freeze()  # as in serve
            while any(c is None for c in conns) or len(self.links) < len(self.neighbours):
                try:
                    c = self.listener.accept()
                except (AuthenticationError, EOFError, ConnectionError):
                    continue  # not one of ours (wrong key) or gone during the handshake
                (e,) = struct.unpack(_TICK, c.recv_bytes(_TICK_SIZE))
                if e <= LINK_HELLO and LINK_HELLO - e in self.neighbours and LINK_HELLO - e not in self.links:
                    self.links[LINK_HELLO - e] = link_buffers(c)
                    continue
                if not 0 <= e < len(conns) or conns[e] is not None:
                    c.close()
                    raise S2EmuError(f"channel claims to be channel {e}, which is unknown or already connected")
                conns[e] = c
            self.listener.close()
            self.listener = None
            self.conns = conns
            if self.links:
                self.exchange = LinkExchange(self.links)
            # one epoll set for the run: multiprocessing's wait() builds a selector on every call
            self.selector = selectors.DefaultSelector()
            for e, c in enumerate(conns):
                self.selector.register(c, selectors.EVENT_READ, e)
            return len(conns)

        def close_channels(self):
            """Tell every endpoint to stop serving, and close the channels."""
            if self.conns is not None:
                for c in self.conns:
                    try:
                        c.send_bytes(struct.pack(_TICK, STOP))
                    except OSError:
                        pass
            self._close()

        def _close(self):
            if self.exchange is not None:
                self.exchange.close()
                self.exchange = None
            if self.selector is not None:
                self.selector.close()
                self.selector = None
            for c in [*(self.conns or ()), *self.links.values()]:
                c.close()
            self.conns, self.links = None, {}
            if self.listener is not None:
                self.listener.close()
                self.listener = None

        def _fail(self, exc):
            self.failure = exc
            self._close()  # endpoints still serving see the channel close and return
            raise exc

        def _who(self, c):
            return " and ".join(f"{self.names[e]} (endpoint {e})" for e in self.processes[c])

        @staticmethod
        def _when(tick):
            return "a snapshot" if tick == SNAPSHOT else f"tick {tick}"

        def _died(self, c, tick, exc):
            return ActorDiedError(f"an actor of the emulation died: {self._who(c)} closed its channel during "
                                  f"{self._when(tick)} ({type(exc).__name__})")

        def _send(self, c, tick, m=0):
            """Channel c's message for `tick`: the tick, then its endpoints' inbound batches (none at tick 0);
            m > 0: for the window of m ticks from `tick`, each tick's batches in turn (self.later)."""
            eps = self.processes[c]
            if m:
                msg = (struct.pack(_TICK, WINDOW) + struct.pack(_WINDOW, tick, m)
                       + _frame([self.later[w][e] or b"" for w in range(m) for e in eps]))
            else:
                msg = struct.pack(_TICK, tick) + _frame([self.inbound[e] or b"" for e in eps])
            try:
                self.conns[c].send_bytes(msg)
            except OSError as exc:
                self._fail(self._died(c, tick, exc))

        @staticmethod
        def _wire(batch, encoded):
            """A routed batch as channel bytes (None: no packets). The router hands one batch to endpoints
            that get the same packets: `encoded` (id -> bytes, one tick's) encodes it once."""
            if not len(batch):
                return None
            if id(batch) not in encoded:
                encoded[id(batch)] = encode(batch)
            return encoded[id(batch)]

        def _receive(self, c, tick, m=1):
            """Channel c's answer: (None, its endpoints' messages, for m ticks) when OK, else (the endpoint
            that raised, its exception)."""
            try:
                msg = self.conns[c].recv_bytes()
            except (EOFError, OSError) as exc:
                self._fail(self._died(c, tick, exc))
            if msg[:1] != OK:
                part, err, tb = pickle.loads(msg[1:])
                e = self.processes[c][part]
                err.__cause__ = RemoteTraceback(f"\nin {self.names[e]} at {self._when(tick)}:\n{tb}")
                return e, err
            return None, _unframe(msg, 1, m * len(self.processes[c]))

        def _collect(self, tick, m=1):
            """Every endpoint's outbound batches for `tick` (and the m - 1 ticks after it, in a window), decoded
            in arrival order (while the others are still stepping): per tick, the batches to route."""
            outs = [[None] * self.n for _ in range(m)]
            got = [False] * len(self.conns)
            errors = {}  # endpoint -> its exception; the first endpoint's is raised, as the local engine would
            left = len(self.conns)  # a process sends one message per tick, then waits for the next tick's
            while left:
                for key, _ in self.selector.select():  # blocks in epoll: no busy waiting
                    c, conn = key.data, key.fileobj
                    if got[c] is None:  # it closed its channel after reporting its error: that error is raised
                        self.selector.unregister(conn)
                        continue
                    if got[c]:  # readable again this tick: it went away after its message
                        try:
                            conn.recv_bytes()
                        except (EOFError, OSError) as exc:
                            self._fail(self._died(c, tick, exc))
                        self._fail(S2EmuError(f"the process of {self._who(c)} sent two messages in tick {tick}"))
                    left -= 1
                    failed, parts = self._receive(c, tick, m)
                    if failed is not None:
                        errors[failed], got[c] = parts, None
                        continue
                    got[c] = True
                    t = time.perf_counter()
                    k = len(self.processes[c])
                    for j, part in enumerate(parts):
                        if len(part):  # no bytes: an empty batch, nothing to route
                            outs[j // k][self.processes[c][j % k]] = decode(part)
                    self.busy += time.perf_counter() - t
            if errors:
                self._fail(errors[min(errors)])
            return [[b for b in row if b is not None] for row in outs]

        # ------------------------------------------------------------ the clock

        def advance(self, start, count):
            """Run ticks start .. start+count-1: step every endpoint in parallel, route, deliver next tick."""
            if self.failure is not None:
                raise self.failure
            try:
                if self.conns is not None and self.window > 1:
                    self._advance_windows(start, count)
                elif self.conns is not None:
                    self._advance_channels(start, count)
                else:
                    self._advance_calls(start, count)
            except Exception as exc:
                if self.failure is None:
                    self._fail(exc)
                raise
            return self.router.routed, self.router.mc_sent.tolist()

        def _advance_calls(self, start, count):
            for tick in range(start, start + count):
                outs = ray.get([a.step.remote(slot, tick, self.inbound[e])
                                for e, (a, slot) in enumerate(self.endpoints)])
                t = time.perf_counter()
                routed = self.router.route([decode(b) for b in outs], tick)
                self.inbound = [encode(routed[e]) for e in range(self.n)]
                self.busy += time.perf_counter() - t

        def _advance_channels(self, start, count):
            """As _advance_calls, but each endpoint's next message leaves as soon as it is encoded, so the
            endpoints step while the router encodes for the others. Within a chunk only: the message for
            start + count waits for the next advance (the run may end here)."""
            if self.sent != start:
                for c in range(len(self.conns)):
                    self._send(c, start)
                self.sent = start
            end = start + count
            for tick in range(start, end):
                outs = self._collect(tick)[0]
                t = time.perf_counter()
                routed = self._route(outs, tick)
                nxt = tick + 1
                encoded = {}
                for c, endpoints in enumerate(self.processes):
                    for e in endpoints:
                        self.inbound[e] = self._wire(routed[e], encoded)  # None: just the tick
                    if nxt < end:
                        self._send(c, nxt)
                self.sent = nxt if nxt < end else None
                self.busy += time.perf_counter() - t

        def _advance_windows(self, start, count):
            """Windowed exchange (s2emu/build.py window_bound, K = self.window): each message carries up to K
            ticks, which the endpoints step in a row; what they send at tick t is routed when the window ends
            and delivered at t + K, with the next window's message. One barrier per K ticks instead of K; the
            delay rings (cores/pe.py) make the late delivery exact."""
            end = start + count
            for first in range(start, end, self.window):
                m = min(self.window, end - first)
                for c in range(len(self.conns)):
                    self._send(c, first, m)
                outs = self._collect(first, m)
                t = time.perf_counter()
                for w in range(m):
                    routed, encoded = self._route(outs[w], first + w), {}
                    self.later.append([self._wire(routed[e], encoded) for e in range(self.n)])
                    self.later.popleft()
                self.busy += time.perf_counter() - t

        def _route(self, outs, tick):
            """A tick's packets through the mesh's hop rounds (as router/mesh.py Mesh.route does for all
            chips at once), then delivered to this chip's endpoints."""
            if not self.neighbours:
                return self.router.route(outs, tick)
            arrived, moving, heading, detours = [], outs, {}, []
            for hop in range(self.hops + 1):
                sent = self.router.forward(moving, heading, hop == self.hops, tick, detours)
                if hop == self.hops:
                    break
                moving, heading, detours = [], {}, []
                try:
                    got = self.exchange.hop({link: encode_many(sent.get(link, [])) for link in self.neighbours})
                except LinkDown as e:
                    self._fail(self._link_down(e.link, tick, e.error))
                for link, msg in got:
                    arrive(decode_many(msg), opposite(link), moving, heading, detours)  # sent by the way they travel
                arrived += moving
            return self.router.route(outs, tick, arrived)

        def _link_down(self, link, tick, exc):
            return ActorDiedError(f"the router of chip {self.neighbours[link]} (link {LINK_NAMES[link]} of chip "
                                  f"{self.router.chip}) closed its channel during tick {tick} ({type(exc).__name__})")

        def counters(self):
            return self.router.counters_dict(), self.router.drop_report(), self.busy

        # ------------------------------------------------------------ checkpoints

        def snapshot(self):
            """Every endpoint's state (msgpack bytes each), the router's, and the packets in flight; between
            advances, when no endpoint is stepping."""
            if self.failure is not None:
                raise self.failure
            if self.conns is None:
                states = ray.get([a.snapshot.remote(slot) for a, slot in self.endpoints])
            else:
                for c in range(len(self.conns)):
                    self._send_control(c, SNAPSHOT)
                states = [None] * self.n
                for c, endpoints in enumerate(self.processes):
                    failed, parts = self._receive(c, SNAPSHOT)
                    if failed is not None:
                        self._fail(parts)
                    for e, part in zip(endpoints, parts):
                        states[e] = bytes(part)
            return states, self.router.snapshot(), ([list(self.inbound)] if self.window == 1
                                                    else [list(row) for row in self.later])

        def restore(self, router_state, in_flight):
            """in_flight: per tick from the checkpoint's, each endpoint's encoded packets (or None)."""
            self.router.restore(router_state)
            if self.window == 1:
                self.inbound = list(in_flight[0])
            else:
                self.later = deque(list(row) for row in in_flight)

        def _send_control(self, c, code):
            try:
                self.conns[c].send_bytes(struct.pack(_TICK, code))
            except OSError as exc:
                self._fail(self._died(c, SNAPSHOT, exc))

    return EndpointActor, RouterActor


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
JOIN_RETRIES = 4  # tries (about a second each) for Ray to reach the cluster's GCS behind that address


def _check_reachable(address: str) -> None:
    """A clear error at once when --address names no running cluster, where ray.init would retry for minutes."""
    import socket

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
    try:
        socket.create_connection((host, int(port)), timeout=REACH_TIMEOUT).close()
    except OSError as e:
        raise S2EmuError(f"no Ray cluster at {target}: {e.strerror or e} (start one with `ray start --head`, "
                         f"or drop --address to run on a private local Ray)") from None


def _unwrap(e: Exception) -> Exception:
    import ray

    if isinstance(e, ray.exceptions.RayTaskError):
        if isinstance(e.cause, S2EmuError):
            return e.cause
        if isinstance(e.cause, ray.exceptions.RayActorError):  # the router lost an endpoint (calls transport)
            return ActorDiedError(f"an actor of the emulation died: {e.cause}")
    if isinstance(e, ray.exceptions.RayActorError):
        return ActorDiedError(f"an actor of the emulation died: {e}")
    return e


class LinkDown(Exception):
    """A link's channel failed during the hop exchange: `link`, and the error that said so."""

    def __init__(self, link: int, error: BaseException):
        super().__init__(link, error)
        self.link, self.error = link, error


DIRECT_BYTES = 16 * 1024  # a link message up to this size the router sends itself (LinkExchange)
LINK_BUFFER_BYTES = 4 * DIRECT_BYTES  # each way, per link socket (link_buffers)


def link_buffers(conn, size: int = LINK_BUFFER_BYTES):
    """Give a link channel's socket fixed buffers of `size` bytes each way (the kernel doubles them), so that
    two DIRECT_BYTES messages always fit, whatever the kernel's defaults or memory pressure would give."""
    with socket.fromfd(conn.fileno(), socket.AF_INET, socket.SOCK_STREAM) as sock:  # a duplicate descriptor
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, size)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, size)
    return conn


class LinkExchange:
    """One router's side of the hop exchange with its neighbouring routers, over one channel per link
    (multiprocessing Connections): each hop, every link gets one message and brings one. A router sends all
    its messages of a hop, then receives in the order they arrive: no router waits for a neighbour to reach
    their wire in some global order (which chains a hop round across the mesh, chip after chip).

    Why no cycle of routers can block each other: a router is at most one hop ahead of a neighbour (it cannot
    finish a hop without the neighbour's message of that hop), so at most two of its messages wait unread in
    a wire, and two of DIRECT_BYTES fit the link sockets' buffers (link_buffers): the router sends such a
    message itself, at once, without waiting. A larger one leaves from a thread of its own (as do those after
    it on the same wire, to keep their order), while the router reads whatever arrives: a send then waits
    only for a neighbour that is reading (tests/test_mesh.py runs megabytes over a mesh with these buffers)."""

    def __init__(self, links: dict):
        self.links = dict(links)
        self.wires = sorted(self.links)  # what a hop brought is handed back in this order
        self.selector = selectors.DefaultSelector()
        self.queue: queue.SimpleQueue = queue.SimpleQueue()
        self.queued = dict.fromkeys(self.wires, 0)  # messages handed to the thread and not yet sent, per link
        self.lock = threading.Lock()
        self.error: tuple[int, BaseException] | None = None  # the first failed send's (link, error)
        self.closing = False
        self.thread = threading.Thread(target=self._send_all, name="s2emu-link-sender", daemon=True)
        self.thread.start()

    def hop(self, outgoing: dict) -> list:
        """Send each link its message (bytes; every link gets one) and return [(link, bytes)] of what every
        link brought, in link order. Raises LinkDown if a channel fails."""
        for link in self.wires:
            data = outgoing[link]
            with self.lock:
                direct = len(data) <= DIRECT_BYTES and not self.queued[link]
                if not direct:
                    self.queued[link] += 1
            if direct:
                try:
                    self.links[link].send_bytes(data)
                except OSError as exc:
                    raise LinkDown(link, exc) from None
            else:
                self.queue.put((link, data))
        for link in self.wires:  # watched until its message is in: a next hop's waits in the socket meanwhile
            self.selector.register(self.links[link], selectors.EVENT_READ, link)
        got = {}
        try:
            while len(got) < len(self.wires):
                for key, _ in self.selector.select():
                    try:
                        got[key.data] = key.fileobj.recv_bytes()
                    except (EOFError, OSError) as exc:
                        raise LinkDown(key.data, exc) from None
                    self.selector.unregister(key.fileobj)
        finally:  # on a failure, the links still watched
            for key in list(self.selector.get_map().values()):
                self.selector.unregister(key.fileobj)
        if self.error is not None:
            raise LinkDown(*self.error)
        return [(link, got[link]) for link in self.wires]

    def _send_all(self) -> None:
        while (item := self.queue.get()) is not None:
            link, data = item
            if self.error is None and not self.closing:
                try:
                    self.links[link].send_bytes(data)
                except Exception as exc:  # noqa: BLE001 - a closed channel fails in more ways than OSError
                    self.error = (link, exc)
            with self.lock:
                self.queued[link] -= 1

    def close(self) -> None:
        """Stop the sender: the channels are shut down first, so that a send blocked on a dead neighbour
        returns; the caller closes them."""
        self.closing = True
        for c in self.links.values():
            try:
                sock = socket.fromfd(c.fileno(), socket.AF_INET, socket.SOCK_STREAM)
            except (OSError, ValueError):  # closed already
                continue
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            sock.close()  # the duplicate descriptor only
        self.queue.put(None)
        self.thread.join(timeout=5)
        self.selector.close()


class _HighWater:
    """Progress that never counts a tick twice: a restarted emulation replays ticks already reported."""

    def __init__(self, progress):
        self.progress, self.reported, self.at = progress, 0, 0

    def restart_at(self, tick: int) -> None:
        self.at = tick

    def __call__(self, n: int) -> None:
        self.at += n
        if self.at > self.reported and self.progress is not None:
            self.progress(self.at - self.reported)
            self.reported = self.at


def run_ray(build, *, progress=None, address: str | None = None, transport: str = "channels",
            on_ready=None, observer=None, checkpointer=None, resume=None, max_restarts: int = 0,
            log=None, pes_per_process: int = 1) -> RawRun:
    """Run `build` with one actor per PE. `transport`: "channels" (direct channels, default) or "calls"
    (one Ray call per endpoint per tick). `on_ready(pids)`, if given, is called once every actor is up
    with {"pes": [pid, ...], "host": pid, "router": pid} (tests use it to kill an actor). `observer`:
    as in engines.run_engine, and so are `checkpointer` and `resume`.

    max_restarts: when a process of the emulation dies (ActorDiedError), start every actor again from the last
    checkpoint (the resumed one, or the start) and replay, at most this many times; `log(message)` hears of
    each restart. Errors raised by the PEs themselves are not retried: they would happen again.

    pes_per_process: PEs sharing one actor process (consecutive PEs of a chip; 4 is SpiNNaker 2's quad-PE), each
    still its own object, stepped in turn over the process's one channel; 1 (the default) gives every PE its
    own process. Fewer processes take less memory, start faster and wake less often per tick; the bits do
    not change."""
    import ray

    if transport not in TRANSPORTS:
        raise S2EmuError(f"unknown ray transport '{transport}' (known: {', '.join(TRANSPORTS)})")
    if type(pes_per_process) is not int or pes_per_process < 1:
        raise S2EmuError(f"--pes-per-process must be an int >= 1, got {pes_per_process!r}")
    started = start_ray(address)
    mark = _HighWater(progress)
    state, restarts = resume, 0
    try:
        while True:
            mark.restart_at(int(state["tick"]) if state is not None else 0)
            try:
                raw = _run(build, mark, transport, on_ready, observer, checkpointer, state, pes_per_process)
                raw.restarts = restarts
                return raw
            except Exception as e:  # noqa: BLE001 - re-raise the user's error, not Ray's wrapper
                err = _unwrap(e)
                if not isinstance(err, ActorDiedError) or restarts >= max_restarts:
                    if isinstance(err, ActorDiedError) and checkpointer is not None and checkpointer.written:
                        err = ActorDiedError(f"{err}; the last checkpoint, {checkpointer.path} (tick "
                                             f"{checkpointer.last_tick}), resumes the run (--resume)")
                    raise err from None
            restarts += 1
            if checkpointer is not None and checkpointer.written:
                state = read_checkpoint(checkpointer.path)
            if log is not None:
                log(f"{err}; restarting every actor from tick {state['tick'] if state else 0} "
                    f"(restart {restarts} of {max_restarts})")
    finally:
        if started:
            ray.shutdown()


def _channel_host() -> str | None:
    """Where the router's channels listen: loopback when the whole cluster is this machine, else (None) its
    node's address."""
    return "127.0.0.1" if _cluster_is_this_machine() else None


def _cluster_is_this_machine() -> bool:
    import ray

    me = ray.get_runtime_context().get_node_id()
    return all(n["NodeID"] == me for n in ray.nodes() if n.get("Alive"))


def _get(ref, watched: dict, timeout: float | None = None, what: str = ""):
    """ray.get(ref), but fail at once if a watched serve call ends with an error first (an endpoint that
    died or could not connect while the router waits for it). A serve call that returns normally has
    told the router why over its channel, so the router's own answer is awaited."""
    import ray

    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        left = None if deadline is None else max(0.0, deadline - time.monotonic())
        done, _ = ray.wait([ref, *watched], num_returns=1, timeout=left)
        if not done:
            raise ActorDiedError(f"{what} took more than {timeout:.0f} s: a process of the emulation hangs")
        if done[0] == ref:
            return ray.get(ref)
        watched.pop(done[0])
        ray.get(done[0])  # raises the endpoint's error, if any


GRACE = 10.0  # seconds the other routers get to report their own error once one router's call failed


def _get_each(refs, watched: dict, timeout: float, what: str) -> list:
    """Every router's answer to one call (_get each). When one fails, the others get GRACE seconds to fail
    too, and the root cause is raised: an error of the emulation itself (a PE's PacketError on chip 2, say)
    rather than the "closed its channel" of the routers that lost their link to the failing one."""
    out, errors = [], []
    for ref in refs:
        try:
            out.append(_get(ref, watched, GRACE if errors else timeout, what))
        except Exception as e:  # noqa: BLE001 - sorted out below
            errors.append(_unwrap(e))
    if errors:
        raise next((e for e in errors if not isinstance(e, ActorDiedError)), errors[0])
    return out


def _get_all(refs, timeout: float, what: str) -> list:
    """ray.get of several calls, bounded: an actor that does not answer in time is a hang, not a wait."""
    import ray

    try:
        return ray.get(refs, timeout=timeout)
    except ray.exceptions.GetTimeoutError:
        raise ActorDiedError(f"{what} took more than {timeout:.0f} s: a process of the emulation hangs") from None


def _discard(refs) -> None:
    """Fetch and drop the results of calls a failed run leaves behind (bounded wait), so that Ray does not
    log their errors as unhandled."""
    import ray

    if refs:
        done, _ = ray.wait(refs, num_returns=len(refs), timeout=5)
        for r in done:
            try:
                ray.get(r, timeout=0)
            except Exception:  # noqa: BLE001, S110 - the run's first error is already on its way
                pass


class _Watch:
    """The driver's view of a running emulation for an observer: router counters as of the last chunk,
    and the host's scores, fetched without blocking the run (one request in flight at a time)."""

    def __init__(self, host):
        self.host, self.status, self.pending, self.asked = host, LiveStatus(0, [], None), None, 0.0

    def update(self, router_counters):
        import ray

        self.status = LiveStatus(*router_counters, self.status.scores)
        if self.pending is not None and ray.wait([self.pending], timeout=0)[0]:
            self.status.scores = ray.get(self.pending)
            self.pending = None
        if self.pending is None and time.monotonic() - self.asked > 0.25:
            self.pending, self.asked = self.host.clip_scores.remote(), time.monotonic()


PLACEMENT_CPU = 0.001  # what a chip's bundle reserves: a token (the actors take no CPU), for Ray to place it


class _Placement:
    """A placement group with one bundle per chip in use, spread over the cluster's nodes: every actor of a
    chip (its PEs, its router, the host on chip 0) goes into that chip's bundle, hence onto one node, and only
    the links between chips may cross between nodes."""

    def __init__(self, chips: list[int]):
        from ray.util.placement_group import placement_group

        self.bundle = {c: i for i, c in enumerate(chips)}
        self.group = placement_group([{"CPU": PLACEMENT_CPU}] * len(chips), strategy="SPREAD")

    def wait(self) -> list[str]:
        """Block until the group is placed; the node id of every chip's bundle, in chip order."""
        from ray.util.placement_group import placement_group_table

        _get_all([self.group.ready()], START_TIMEOUT, "placing the chips on the cluster's nodes")
        nodes = placement_group_table(self.group)["bundles_to_node_id"]
        return [nodes[i] for i in self.bundle.values()]

    def on(self, chip: int) -> dict:
        """Actor options that put an actor on `chip`'s node."""
        from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

        return {"scheduling_strategy": PlacementGroupSchedulingStrategy(self.group, self.bundle[chip])}

    def remove(self) -> None:
        from ray.util.placement_group import remove_placement_group

        remove_placement_group(self.group)


class _Chips:
    """The driver's view of the chips' router actors: which endpoints each serves, and the glue that turns
    their per-chip answers into the run's (global endpoint order)."""

    def __init__(self, mapping, endpoints, names, streams, RouterActor, placement, processes, window=1):
        """processes: (actor, its endpoints' global ids in slot order) of every endpoint process."""
        self.mapping = mapping
        self.chips = sorted(mapping.tables)
        self.endpoints = {c: mapping.chip_endpoints(c) for c in self.chips}
        chip_of = mapping.endpoint_chips
        self.processes = {c: [(a, eps) for a, eps in processes if chip_of[eps[0]] == c] for c in self.chips}
        self.routers = {}
        for c in self.chips:
            local = {e: i for i, e in enumerate(self.endpoints[c])}
            self.routers[c] = RouterActor.options(**placement.on(c)).remote(
                mapping.router(c, streams), [endpoints[e] for e in self.endpoints[c]],
                [names[e] for e in self.endpoints[c]], mapping.neighbours(c), mapping.rounds,
                [[local[e] for e in eps] for _, eps in self.processes[c]], window)

    @property
    def actors(self) -> list:
        return list(self.routers.values())

    def open_channels(self, host_ip) -> None:
        opened = _get_all([r.open_channels.remote(host_ip) for r in self.actors], START_TIMEOUT, "opening channels")
        self.addresses = dict(zip(self.chips, opened))

    def serve(self) -> dict:
        """Every endpoint process's serve call (-> its first endpoint's global index), connecting it to its
        chip's router over channel i of that chip."""
        return {a.serve.remote(*self.addresses[c], i, list(range(len(eps)))): eps[0]
                for c in self.chips for i, (a, eps) in enumerate(self.processes[c])}

    def accept_channels(self, serving) -> None:
        calls = []
        for c, r in self.routers.items():  # each router connects to its lower-numbered neighbours
            peers = {link: self.addresses[n] for link, n in self.mapping.neighbours(c).items() if n < c}
            calls.append(r.accept_channels.remote(peers))
        deadline = time.monotonic() + CONNECT_TIMEOUT
        for ref in calls:
            _get(ref, serving, max(0.0, deadline - time.monotonic()),
                 "connecting the endpoints' and links' channels to the routers")

    def advance(self, tick, count) -> list:
        return [r.advance.remote(tick, count) for r in self.actors]

    def merged_status(self, answers) -> tuple:
        """(routed, mc_sent per global endpoint) from every chip's advance answer."""
        from s2emu.router.mesh import by_endpoint

        return (sum(a[0] for a in answers),
                by_endpoint(self.mapping.n_endpoints, ((self.endpoints[c], a[1]) for c, a in zip(self.chips, answers))))

    def snapshot(self) -> list:
        return [r.snapshot.remote() for r in self.actors]

    def merged_snapshot(self, answers) -> tuple:
        """(endpoint states, router states, inbound, inbound of the ticks after), global endpoint order, from
        every chip's snapshot (Checkpointer.write's arguments after the tick)."""
        from s2emu.router.mesh import by_endpoint

        n, chips = self.mapping.n_endpoints, list(zip(self.chips, answers))
        states = by_endpoint(n, ((self.endpoints[c], a[0]) for c, a in chips), fill=None)
        rows = [by_endpoint(n, ((self.endpoints[c], a[2][w]) for c, a in chips), fill=None)
                for w in range(len(answers[0][2]))]
        return states, [a[1] for a in answers], rows[0], rows[1:]

    def restore(self, resume) -> list:
        rows = in_flight(resume)
        return [r.restore.remote(st, [[row[e] for e in self.endpoints[c]] for row in rows])
                for (c, r), st in zip(self.routers.items(), resume["router"], strict=True)]


def _groups(build, per_process: int) -> list[list[int]]:
    """PEs in processes of `per_process`: consecutive PEs of one chip (a chip's processes stay on its node)."""
    groups, chip_of = [], build.mapping.endpoint_chips
    for c in build.pe_configs:
        p = c["pe_id"]
        if groups and len(groups[-1]) < per_process and chip_of[groups[-1][-1]] == chip_of[p]:
            groups[-1].append(p)
        else:
            groups.append([p])
    return groups


def _run(build, progress, transport, on_ready, observer, checkpointer, resume, pes_per_process) -> RawRun:
    import ray

    from s2emu.router.mesh import merge_counters, merge_drop_reports

    EndpointActor, RouterActor = _actor_classes()
    t0 = time.perf_counter()
    m = build.mapping
    if len(m.tables) > 1 and transport != "channels":
        raise S2EmuError(f"a machine of {len(m.tables)} chips runs on the channels transport only, not "
                         f"'{transport}'")
    placement = _Placement(sorted(m.tables))
    chip_of = m.endpoint_chips
    groups = _groups(build, pes_per_process)
    actors, chips, watch = [], None, None  # what the cleanup below kills, however far the start got
    serving = {}  # serve call -> endpoint index
    queued = deque()  # (advance calls, ticks, None) or (snapshot calls, 0, tick) not awaited yet; one queued
    # behind the running one keeps the routers busy between driver calls
    try:
        pes = []
        for g in groups:
            pes.append(EndpointActor.options(**placement.on(chip_of[g[0]])).remote(
                [("pe", build.pe_configs[p]) for p in g]))
            actors.append(pes[-1])
        host = EndpointActor.options(max_concurrency=2 if observer else 1, **placement.on(chip_of[m.host])).remote(
            [("host", build.host_config)])
        actors.append(host)  # actors: the endpoints' processes, PEs' then the host's
        watch = _Watch(host) if observer is not None else None
        endpoints = [None] * m.n_endpoints  # endpoint -> (its process's actor, its slot there)
        for a, g in zip(pes, groups):
            for slot, p in enumerate(g):
                endpoints[p] = (a, slot)
        endpoints[m.host] = (host, 0)
        names = [f"PE {c['pe_id']}" for c in build.pe_configs] + ["the host"]
        processes = [*zip(pes, groups), (host, [m.host])]
        if build.window > 1 and transport != "channels":
            raise S2EmuError(f"--window {build.window} runs on the channels transport only, not '{transport}'")
        chips = _Chips(m, endpoints, names, build.host_config["streams"], RouterActor, placement, processes,
                       build.window)
        chip_nodes = placement.wait()
        pids = _get_all([a.ready.remote() for a in (*actors, *chips.actors)], START_TIMEOUT, "starting the actors")
        tick = 0
        if resume is not None:
            _get_all([a.restore.remote(slot, st) for (a, slot), st in zip(endpoints, resume["endpoints"])]
                     + chips.restore(resume),
                     START_TIMEOUT, "restoring the checkpoint")
            tick = int(resume["tick"])  # (run_ray's progress already counts from here)
        start = tick
        if on_ready is not None:
            nodes = _get_all([a.node.remote() for a in (*actors, *chips.actors)], START_TIMEOUT, "asking for nodes")
            per_pe = [i for i, g in enumerate(groups) for _ in g]  # PE -> its process (PEs in id order)
            on_ready({"pes": [pids[i] for i in per_pe], "host": pids[len(pes)], "router": pids[len(actors)],
                      "routers": pids[len(actors):], "chip_nodes": chip_nodes,
                      "nodes": {"pes": [nodes[i] for i in per_pe], "host": nodes[len(pes)],
                                "routers": nodes[len(actors):]}})
        if transport == "channels":
            chips.open_channels(_channel_host())
            serving.update(chips.serve())
            chips.accept_channels(serving)
        t_start = time.perf_counter() - t0
        if watch is not None:
            observer(lambda: watch.status)
        n_ticks = build.n_ticks
        chunk = -(-CHUNK // build.window) * build.window  # whole windows
        t1 = time.perf_counter()
        while tick < n_ticks or queued:
            if tick < n_ticks:
                end = min(tick + chunk, checkpointer.next_due(tick) if checkpointer else n_ticks)
                queued.append((chips.advance(tick, end - tick), end - tick, None))
                tick = end
                if checkpointer is not None and checkpointer.due(tick):
                    queued.append((chips.snapshot(), 0, tick))
            if len(queued) >= 2 or tick >= n_ticks:
                refs, done, at = queued.popleft()
                what = "a chunk of ticks" if at is None else "a snapshot"
                got = _get_each(refs, serving, STALL_TIMEOUT, what)
                if at is not None:  # the state after `at` ticks
                    checkpointer.write(at, *chips.merged_snapshot(got))
                    continue
                if watch is not None:
                    watch.update(chips.merged_status(got))
                if progress is not None:
                    progress(done)
        t_run = time.perf_counter() - t1
        if transport == "channels":
            _get_all([r.close_channels.remote() for r in chips.actors] + list(serving), STALL_TIMEOUT,
                     "closing the channels")
        finished = _get_all([a.finish.remote(slot) for a, slot in endpoints[:m.n_pes]], STALL_TIMEOUT,
                            "collecting the PEs' results")
        *per_chip, results = _get_all([r.counters.remote() for r in chips.actors] + [host.finish.remote(0)],
                                      STALL_TIMEOUT, "collecting the results")
    except BaseException:
        for a in (*actors, *(chips.actors if chips is not None else ())):
            ray.kill(a)
        _discard([r for refs, _, _ in queued for r in refs] + list(serving)
                 + ([watch.pending] if watch and watch.pending else []))
        placement.remove()
        raise
    for a in (*actors, *chips.actors):
        ray.kill(a)
    placement.remove()
    return RawRun(
        host_results=results,
        weights={c["pe_id"]: f[0] for c, f in zip(build.pe_configs, finished)},
        recordings={c["pe_id"]: f[1] for c, f in zip(build.pe_configs, finished)},
        pe_counters={c["pe_id"]: f[2] for c, f in zip(build.pe_configs, finished)},
        router_counters=merge_counters([c for c, _, _ in per_chip], m.n_endpoints, m.machine.geometry),
        drop_report=merge_drop_reports([d for _, d, _ in per_chip]),
        ticks=n_ticks,
        wall_seconds=time.perf_counter() - t0,
        phases={"start_actors": t_start, "run": t_run, "router_busy": max(b for _, _, b in per_chip)},
        resumed_from=start,
        checkpoints=0 if checkpointer is None else checkpointer.written,
        chip_nodes=chip_nodes,
    )
