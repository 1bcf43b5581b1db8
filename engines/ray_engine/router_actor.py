"""The actor shell of one chip's router: the clock of its endpoints, over their channels (or Ray calls)."""

from __future__ import annotations

import gc
import os
import pickle
import selectors
import struct
import time
from collections import deque

import ray

from s2emu.errors import ActorDiedError, S2EmuError
from s2emu.machine import LINK_NAMES, opposite
from s2emu.router.mesh import arrive
from s2emu.router.packets import decode, decode_many, encode, encode_many

from .door import Door
from .links import LinkDown, LinkExchange, link_buffers
from .protocol import LINK_HELLO, OK, SNAPSHOT, STOP, TICK_FORMAT, WINDOW, WINDOW_FORMAT, \
    RemoteTraceback, frame, unframe


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
        self.listener = Door(host or ray.util.get_node_ip_address(), backlog=len(self.processes) + 7)  # + 6 links
        return self.listener.address, self.listener.authkey

    def accept_channels(self, peers=None):
        """Connect a channel to each neighbouring router in `peers` ({link: (address, authkey)}, the
        lower-numbered chips), then accept one authenticated channel per endpoint process and per other
        neighbour (the driver watches for endpoints that die before connecting, and kills this actor
        then). Connections without the authkey are dropped at the door (door.py)."""
        from multiprocessing.connection import Client

        for link, (address, authkey) in (peers or {}).items():
            c = Client(tuple(address), family="AF_INET", authkey=authkey)
            c.send_bytes(struct.pack(TICK_FORMAT, LINK_HELLO - opposite(link)))
            self.links[link] = link_buffers(c)
        conns = [None] * len(self.processes)
        gc.freeze()  # as in serve
        while any(c is None for c in conns) or len(self.links) < len(self.neighbours):
            c, e = self.listener.accept()
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
                    c.send_bytes(struct.pack(TICK_FORMAT, STOP))
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
            msg = (struct.pack(TICK_FORMAT, WINDOW) + struct.pack(WINDOW_FORMAT, tick, m)
                   + frame([self.later[w][e] or b"" for w in range(m) for e in eps]))
        else:
            msg = struct.pack(TICK_FORMAT, tick) + frame([self.inbound[e] or b"" for e in eps])
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
        return None, unframe(msg, 1, m * len(self.processes[c]))

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
            for routed in self._route_ticks(outs, first):
                encoded = {}
                self.later.append([self._wire(routed[e], encoded) for e in range(self.n)])
                self.later.popleft()
            self.busy += time.perf_counter() - t

    def _route(self, outs, tick):
        """A tick's packets through the mesh's hop rounds (as router/mesh.py Mesh.route does for all
        chips at once), then delivered to this chip's endpoints."""
        return self._route_ticks([outs], tick)[0]

    def _route_ticks(self, outs, first):
        """The packets of ticks first, first + 1, ... (outs[w]: tick first + w's) through the mesh's hop rounds,
        then delivered: each tick's routed as by _route alone, but one link message per hop round carries
        every tick's (a window's), so a window of K ticks crosses the links `hops` times, not K x `hops`: on a
        cluster, a round trip between nodes per hop round of the window instead of per hop round of each tick."""
        if not self.neighbours:
            return [self.router.route(o, first + w) for w, o in enumerate(outs)]
        m = len(outs)
        arrived, moving = [[] for _ in range(m)], list(outs)
        heading, detours = [{} for _ in range(m)], [[] for _ in range(m)]
        for hop in range(self.hops + 1):
            sent = [self.router.forward(moving[w], heading[w], hop == self.hops, first + w, detours[w])
                    for w in range(m)]
            if hop == self.hops:
                break
            moving, heading, detours = [[] for _ in range(m)], [{} for _ in range(m)], [[] for _ in range(m)]
            try:
                got = self.exchange.hop({link: frame([encode_many(s.get(link, [])) for s in sent])
                                         for link in self.neighbours})
            except LinkDown as e:
                self._fail(self._link_down(e.link, first, e.error))
            for link, msg in got:
                for w, part in enumerate(unframe(msg, 0, m)):  # sent by the way they travel
                    arrive(decode_many(part), opposite(link), moving[w], heading[w], detours[w])
            for w in range(m):
                arrived[w] += moving[w]
        return [self.router.route(o, first + w, arrived[w]) for w, o in enumerate(outs)]

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
            self.conns[c].send_bytes(struct.pack(TICK_FORMAT, code))
        except OSError as exc:
            self._fail(self._died(c, SNAPSHOT, exc))
