"""One chip's router: delivers a tick's packet batches to its chip's endpoints and forwards them on its six
links to the neighbouring chips (router/mesh.py runs the hops of a tick), with counters."""

from __future__ import annotations

import numpy as np

from s2emu.errors import PacketError, RoutingError
from s2emu.machine import is_down

from .packets import MAX_TICK, Detour, PacketBatch, _as_int
from .table import LINK_NAMES, N_LINKS, MulticastTable, endpoints_of, links_of

__all__ = ["Router", "ROUTER_SRC", "MAX_REMEMBERED_DROPS"]

ROUTER_SRC = 0xFFFF  # src of batches the router delivers: ROUTER_SRC + chip
MAX_REMEMBERED_DROPS = 10
MAX_PLANS = 4096  # multicast plans remembered (key sequences seen); forgotten all at once when full
_LINKS = np.arange(N_LINKS)
_NO_LINKS = np.zeros((0, N_LINKS), bool)  # no packets, no links


def _cat(batches, field: str, empty: np.ndarray) -> np.ndarray:
    """One field of every batch, concatenated in batch order."""
    arrays = [getattr(x, field) for x in batches]
    return np.concatenate(arrays) if arrays else empty


def _srcs(batches, field: str) -> np.ndarray:
    """The src of each packet of one field, in the order _cat gives."""
    return np.repeat(np.array([x.src for x in batches], np.int64), [len(getattr(x, field)) for x in batches])


class Router:
    """Routes MC packets by table lookup and P2P packets by destination, all vectorised.

    Each tick: batches are taken in ascending src order (whatever order they arrive in, and whether they
    come from this chip's endpoints or over a link); packets keep their order within a batch; each
    endpoint's delivered arrays are the concatenation in that order. Delivered arrays may be views shared
    between endpoints: consumers only read them. Input batches are trusted to hold valid values (``make``
    and ``decode`` validate them).

    On a machine of many chips, `endpoints` names the global endpoint ids of this chip's endpoints (route
    bit 6 + i is endpoints[i]; src and P2P destinations are global ids), `p2p_links[g]` is the link a P2P
    packet for global endpoint g leaves by (-1: it is here, or nowhere), and `links` are the links that
    lead to another chip (packets sent on any other are dropped).
    """

    def __init__(self, table: MulticastTable, n_endpoints: int, chip: int = 0,
                 streams: int = 1, *, endpoints=None, p2p_links=None, links=(), failures=None):
        if not isinstance(table, MulticastTable):
            raise RoutingError(f"Router needs a MulticastTable, got {type(table).__name__}")
        if type(n_endpoints) is not int or n_endpoints < (0 if endpoints is not None else 1):
            raise RoutingError(f"n_endpoints must be an int >= 1, got {n_endpoints!r}")
        if type(chip) is not int or chip < 0:
            raise RoutingError(f"chip must be an int >= 0, got {chip!r}")
        if type(streams) is not int or streams < 1:
            raise RoutingError(f"streams must be an int >= 1, got {streams!r}")
        self.table, self.n_endpoints, self.chip, self.streams = table, n_endpoints, chip, streams
        self.src = ROUTER_SRC + chip
        self.endpoints = np.arange(n_endpoints) if endpoints is None else np.asarray(endpoints, np.int64)
        if len(self.endpoints) != n_endpoints:
            raise RoutingError(f"router {chip} has {n_endpoints} endpoints but {len(self.endpoints)} ids")
        n_global = max(int(self.endpoints.max(initial=-1)) + 1, 0 if p2p_links is None else len(p2p_links))
        self._local = np.full(n_global + 1, -1, np.int64)  # global endpoint -> local index (-1: elsewhere);
        self._local[self.endpoints] = np.arange(n_endpoints)  # the last slot answers every id out of range
        self._p2p_links = np.full(n_global + 1, -1, np.int64)
        if p2p_links is not None:
            self._p2p_links[:len(p2p_links)] = p2p_links
        self.links = frozenset(links)
        self.failures = dict(failures or {})  # link -> the (from, until or None) tick spans its wire is down
        # Precomputed per entry: its links, and its endpoints as CSR (entry i sends to
        # _eps[_ptr[i]:_ptr[i] + _fan[i]]), so routing costs per delivered copy, not per endpoint.
        # Also, as a matrix, which endpoints each entry reaches (_multicast's classes).
        n = len(table)
        self._links = np.zeros((n, N_LINKS), dtype=np.int64)
        self._reaches = np.zeros((n, n_endpoints), dtype=np.int64)
        ends_per_entry = []
        for i, e in enumerate(table.entries):
            ends = endpoints_of(e.route)
            if ends and ends[-1] >= n_endpoints:
                raise RoutingError(f"table entry {i} ({e}) routes to endpoint {ends[-1]}, "
                                   f"but the router has {n_endpoints} endpoints")
            ends_per_entry.append(ends)
            self._reaches[i, ends] = 1
            self._links[i, links_of(e.route)] = 1
        self._fan = np.array([len(x) for x in ends_per_entry], dtype=np.int64)
        self._ptr = np.concatenate([[0], np.cumsum(self._fan)[:-1]]).astype(np.int64)
        self._eps = np.array([x for ends in ends_per_entry for x in ends], dtype=np.int64)
        self._u32 = np.empty(0, np.uint32)
        self._no_bounds = ([0] * n_endpoints,) * 2  # every endpoint gets none of a kind
        self._plans: dict[bytes, tuple] = {}  # key sequence -> its multicast plan (_multicast)
        self._link_plans: dict[tuple, tuple] = {}  # (key sequence, direction) -> _mc_links' answer
        self._class_plans: dict[bytes, np.ndarray] = {}  # entries hit -> the endpoint classes (_classes)
        self.reset_counters()

    def reset_counters(self) -> None:
        self.routed = 0  # MC packets (with or without payload) that matched an entry
        self.p2p_routed = 0
        self.dropped = 0  # all kinds
        self.dropped_mc = 0
        self.dropped_p2p = 0
        self.default_routed = 0  # unmatched MC packets from a link, sent on straight ahead
        self.dropped_link = 0  # (part of dropped) sent on a link that leads off the mesh, has failed, or past the hop limit
        self.emergency_routed = 0  # packets sent around a failed wire (forward)
        self.p2p_forwarded = 0  # P2P packets sent on a link toward their destination's chip (forward)
        self.delivered = np.zeros(self.n_endpoints, dtype=np.int64)
        self.mc_sent = np.zeros(self.n_endpoints, dtype=np.int64)  # MC packets without payload each endpoint sent (spikes at batch 1)
        self.link_sent = np.zeros(N_LINKS, dtype=np.int64)  # packets sent on each link (forward)
        self.first_drops: list[tuple[str, int, int]] = []  # (kind, key or dest, src)

    _COUNTERS = ("routed", "p2p_routed", "dropped", "dropped_mc", "dropped_p2p", "default_routed", "dropped_link",
                 "emergency_routed", "p2p_forwarded", "delivered", "mc_sent", "link_sent", "first_drops")

    def snapshot(self) -> dict:
        """The router's counters for a checkpoint (its table comes from the build)."""
        return {k: getattr(self, k) for k in self._COUNTERS}

    def restore(self, state: dict) -> None:
        for k in self._COUNTERS:
            if k not in state:  # a counter newer than the checkpoint counts from the restore on
                continue
            v = state[k]
            if isinstance(getattr(self, k), np.ndarray):
                getattr(self, k)[...] = v
            elif k == "first_drops":
                self.first_drops = [tuple(d) for d in v]
            else:
                setattr(self, k, int(v))

    # ------------------------------------------------------------------ routing

    def _check(self, batches) -> list[PacketBatch]:
        batches = list(batches)
        for b in batches:
            if not isinstance(b, PacketBatch):
                raise PacketError(f"router got a {type(b).__name__}, not a PacketBatch")
            if b.streams != self.streams:
                raise PacketError(f"batch from src {b.src} has {b.streams} streams, "
                                  f"router {self.chip} carries {self.streams}")
        srcs = [b.src for b in batches]
        if any(a >= b for a, b in zip(srcs, srcs[1:])):  # not already in ascending src order (rare)
            batches.sort(key=lambda b: b.src)
            for a, b in zip(batches, batches[1:]):
                if a.src == b.src:  # their order would depend on arrival: not deterministic
                    raise PacketError(f"two batches from src {a.src} in one tick; merge them first")
        return batches

    def _remember(self, kind: str, values: np.ndarray, srcs: np.ndarray) -> None:
        room = MAX_REMEMBERED_DROPS - len(self.first_drops)
        self.first_drops += [(kind, int(v), int(s)) for v, s in zip(values[:room], srcs[:room])]

    def _here(self, srcs: np.ndarray) -> np.ndarray:
        """Local index of each src (global endpoint id) on this chip, -1 for packets that came over a link."""
        return self._local[np.minimum(srcs, len(self._local) - 1)]

    def _toward(self, dest: np.ndarray) -> np.ndarray:
        """The link each P2P destination (global endpoint id) is reached by from here, -1: here or nowhere."""
        return self._p2p_links[np.minimum(dest, len(self._p2p_links) - 1)]

    def _multicast(self, keys: np.ndarray, srcs: np.ndarray):
        """Packet indices grouped by endpoint class (ascending packet order within each) and each
        endpoint's [start, end) in them (its class's); updates counters.

        The plan depends on the keys alone (the table is fixed), and many ticks repeat a key sequence (the
        host's inputs every tick, quiet layers), so plans of key sequences that all match are remembered.
        An unmatched packet from this chip's endpoints is dropped; one from a link was default-routed on
        (forward), not dropped."""
        memo = self._plans.get(keys.tobytes())
        if memo is not None:
            order, spans, counts = memo
            self.routed += len(keys)
            self.delivered += counts
            return order, spans
        idx = self.table.lookup_many(keys)
        hit = idx >= 0
        n_miss = len(idx) - int(hit.sum())
        if n_miss:
            lost = ~hit & (self._here(srcs) >= 0)
            n_lost = int(lost.sum())
            self.dropped += n_lost
            self.dropped_mc += n_lost
            self._remember("mc", keys[lost], srcs[lost])
        matched = np.flatnonzero(hit)
        self.routed += len(matched)
        entry = idx[matched]
        # One (endpoint, packet) pair per copy, packets ascending; a stable sort by endpoint
        # then keeps the packet order within each endpoint.
        fan = self._fan[entry]
        pk = np.repeat(np.arange(len(entry)), fan)
        first = np.repeat(self._ptr[entry] - (np.cumsum(fan) - fan), fan)
        ep = self._eps[first + np.arange(len(pk))]
        # Endpoints reached by the same entries get the same packets (a population's PEs, most ticks): the
        # first of each such class keeps the copies, the others share them (and route() their batch).
        rep = self._classes(entry)
        mine = rep[ep] == ep
        pk, ep = pk[mine], ep[mine]
        order = np.argsort(ep, kind="stable")
        packets, counts = matched[pk[order]], np.bincount(ep[order], minlength=self.n_endpoints)
        bounds = np.concatenate([[0], np.cumsum(counts)])
        spans = (bounds[rep].tolist(), bounds[rep + 1].tolist())
        counts = counts[rep]
        self.delivered += counts
        if not n_miss:
            if len(self._plans) >= MAX_PLANS:
                self._plans.clear()
            self._plans[keys.tobytes()] = (packets, spans, counts)
        return packets, spans

    def _classes(self, entries: np.ndarray) -> np.ndarray:
        """Per endpoint, the first endpoint reached by exactly the same of these table entries. Depends on
        the set of entries alone, which repeats far more often than the key sequences (_plans): remembered."""
        hit = np.unique(entries)
        known = self._class_plans.get(hit.tobytes())
        if known is not None:
            return known
        if len(hit) > 62:  # more than a signature's bits: every endpoint its own class
            rep = np.arange(self.n_endpoints)
        else:
            signature = (self._reaches[hit] << np.arange(len(hit))[:, None]).sum(axis=0)
            _, first, cls = np.unique(signature, return_index=True, return_inverse=True)
            rep = first[cls]
        if len(self._class_plans) >= MAX_PLANS:
            self._class_plans.clear()
        self._class_plans[hit.tobytes()] = rep
        return rep

    def _bounds(self, counts: np.ndarray) -> tuple[list[int], list[int]]:
        self.delivered += counts
        bounds = np.concatenate([[0], np.cumsum(counts)]).tolist()
        return bounds[:-1], bounds[1:]

    def route(self, batches: list[PacketBatch], tick: int, arrived=()) -> dict[int, PacketBatch]:
        """Deliver one tick's batches, those of this chip's endpoints and those `arrived` over links; every
        endpoint 0..n_endpoints-1 (local index) gets a batch (maybe empty) with src = ROUTER_SRC + chip and
        the given tick."""
        tick = _as_int(tick, "tick", 0, MAX_TICK)  # delivered batches skip the constructor checks
        batches = self._check([*batches, *arrived])
        b = self.streams
        # the batches that carry each kind (most PEs are silent on most ticks at batch 1)
        with_mc = [x for x in batches if len(x.mc_keys)]
        with_mcp = [x for x in batches if len(x.mcp_keys)]
        with_p2p = [x for x in batches if len(x.p2p_dest)]
        if not (with_mc or with_mcp or with_p2p):
            e = PacketBatch.empty(self.src, tick, b)  # arrays shared: read-only by contract
            return {i: PacketBatch.unchecked(self.src, tick, b, e.mc_keys, e.mcp_keys,
                                             e.mcp_payload, e.p2p_dest, e.p2p_tag, e.p2p_payload)
                    for i in range(self.n_endpoints)}

        empty_pl = np.empty((0, b), np.float32)
        mc, mcp = _cat(with_mc, "mc_keys", self._u32), _cat(with_mcp, "mcp_keys", self._u32)
        mcp_pl = _cat(with_mcp, "mcp_payload", empty_pl)
        mc_src = _srcs(with_mc, "mc_keys")
        here = self._here(mc_src)
        self.mc_sent += np.bincount(here[here >= 0], minlength=self.n_endpoints)
        mc_pk, (mc_a, mc_b) = self._multicast(mc, mc_src)
        mcp_pk, (mcp_a, mcp_b) = self._multicast(mcp, _srcs(with_mcp, "mcp_keys"))
        mc_out, mcp_out, mcp_pl_out = mc[mc_pk], mcp[mcp_pk], mcp_pl[mcp_pk]

        if with_p2p:
            pd_out, pt_out, pp_out, (q_a, q_b) = self._point_to_point(with_p2p)
        else:  # most ticks: nothing for the P2P part to do
            pd_out = pt_out = self._u32
            pp_out, (q_a, q_b) = np.empty((0, b), np.uint32), self._no_bounds

        out, made = {}, {}
        for e, span in enumerate(zip(mc_a, mc_b, mcp_a, mcp_b, q_a, q_b)):
            # same spans, same packets: one batch for all (P2P spans, when not empty, are each endpoint's own)
            key = span[:4] if span[4] == span[5] else span
            got = made.get(key)
            if got is None:
                m0, m1, p0, p1, q0, q1 = span
                got = made[key] = PacketBatch.unchecked(
                    self.src, tick, b, mc_out[m0:m1], mcp_out[p0:p1], mcp_pl_out[p0:p1],
                    pd_out[q0:q1], pt_out[q0:q1], pp_out[q0:q1])
            out[e] = got
        return out

    def _point_to_point(self, batches):
        """route's P2P part: destinations, tags, payloads grouped by local endpoint (a stable sort by
        destination keeps the packet order within each), and the per-endpoint bounds into them."""
        dest, tag = _cat(batches, "p2p_dest", self._u32), _cat(batches, "p2p_tag", self._u32)
        p2p_pl = _cat(batches, "p2p_payload", np.empty((0, self.streams), np.uint32))
        at = self._here(dest.astype(np.int64))  # local index of each destination, -1: on no endpoint here
        ok = at >= 0
        bad = ~ok & (self._toward(dest) < 0)  # nowhere on the machine
        n_bad = int(bad.sum())
        if n_bad:
            self.dropped += n_bad
            self.dropped_p2p += n_bad
            self._remember("p2p", dest[bad], _srcs(batches, "p2p_dest")[bad])
        good = np.flatnonzero(ok)
        p2p_pk = good[np.argsort(at[good], kind="stable")]
        self.p2p_routed += len(p2p_pk)
        p2p_bd = self._bounds(np.bincount(at[p2p_pk], minlength=self.n_endpoints))
        return dest[p2p_pk], tag[p2p_pk], p2p_pl[p2p_pk], p2p_bd

    def forward(self, batches, travelling: dict[int, int], last: bool = False, tick: int = 0,
                detours=()) -> dict[int, list]:
        """What leaves this chip on its links in one hop of tick `tick`: per link, one sub-batch per src (its
        packets in their order). `batches` came from this chip's endpoints, or over a link in the direction
        travelling[src]. A multicast packet takes its entry's links; one that matches nothing and came over
        a link runs straight on (default routing); a P2P packet heads for its destination's chip. `last`: the
        tick's hop limit is reached, so whatever would still travel is dropped.

        Emergency routing, as SpiNNaker's routers do it: a link whose wire has failed by `tick` (the tables
        do not know) carries nothing; its packets take the two other sides of a triangle of links instead,
        first the next link counter-clockwise (direction + 1), as a Detour, to a chip that passes them on
        unread by the next link clockwise of their direction (direction - 1), so they reach the chip the
        failed link leads to, one hop late and as if they came over it. `detours`: such first legs that
        arrived here, passed on now. A detour whose leg is missing or failed too is dropped."""
        out: dict[int, list] = {}
        for bt in sorted(batches, key=lambda x: x.src):
            if not len(bt):
                continue
            go = travelling.get(bt.src, -1)
            mc, mcp = self._mc_links(bt.mc_keys, go), self._mc_links(bt.mcp_keys, go)
            p2p = self._toward(bt.p2p_dest)[:, None] == _LINKS if len(bt.p2p_dest) else _NO_LINKS
            counts = mc.sum(axis=0) + mcp.sum(axis=0) + p2p.sum(axis=0)
            for link in np.flatnonzero(counts).tolist():
                m, q, p = mc[:, link], mcp[:, link], p2p[:, link]
                part = PacketBatch.unchecked(bt.src, bt.tick, bt.streams, bt.mc_keys[m], bt.mcp_keys[q],
                                             bt.mcp_payload[q], bt.p2p_dest[p], bt.p2p_tag[p], bt.p2p_payload[p])
                self.p2p_forwarded += len(part.p2p_dest)
                if self._failed(link, tick):
                    self._send(out, (link + 1) % N_LINKS, Detour(link, True, part), last, tick)
                else:
                    self._send(out, link, part, last, tick)
        for d in sorted(detours, key=lambda d: (d.batch.src, d.direction)):  # as they came on every engine
            self._send(out, (d.direction - 1) % N_LINKS, Detour(d.direction, False, d.batch), last, tick)
        return out

    def _failed(self, link: int, tick: int) -> bool:
        spans = self.failures.get(link)
        return spans is not None and is_down(spans, tick)

    def _send(self, out: dict, link: int, item, last: bool, tick: int) -> None:
        """forward's last step: `item` (a batch, or a batch on a Detour) leaves by `link`, or is dropped."""
        detour = isinstance(item, Detour)
        bt = item.batch if detour else item
        n = len(bt)
        if last or link not in self.links or self._failed(link, tick):
            self.dropped += n
            self.dropped_link += n
            if len(self.first_drops) < MAX_REMEMBERED_DROPS:  # a detour's drop names the wire it went around
                self._remember("detour" if detour else "link", np.array([item.direction if detour else link]),
                               np.array([bt.src]))
            return
        if detour and item.first_leg:
            self.emergency_routed += n
        self.link_sent[link] += n
        out.setdefault(link, []).append(item)

    def _mc_links(self, keys: np.ndarray, travelling: int) -> np.ndarray:
        """[packets, links] bool: the links each key leaves by (straight on, for an unmatched key that came
        over a link)."""
        if not len(keys):
            return _NO_LINKS
        # the answer depends on the keys and the direction alone, and a PE's spikes repeat: remembered
        memo = self._link_plans.get((keys.tobytes(), travelling))
        if memo is not None:
            self.default_routed += memo[1]
            return memo[0]
        idx = self.table.lookup_many(keys)
        hit = idx >= 0
        sent = self._links[np.where(hit, idx, 0)] > 0 if len(self._links) else np.zeros((len(keys), N_LINKS), bool)
        default = 0
        if not hit.all():
            sent[~hit] = False
            if travelling >= 0:
                sent[~hit, travelling] = True
                default = int((~hit).sum())
                self.default_routed += default
        sent.flags.writeable = False  # shared by every later batch with these keys
        if len(self._link_plans) >= MAX_PLANS:
            self._link_plans.clear()
        self._link_plans[(keys.tobytes(), travelling)] = (sent, default)
        return sent

    # ------------------------------------------------------------------ reports

    def counters_dict(self) -> dict:
        """JSON-serialisable counters."""
        return {
            "chip": self.chip, "endpoints": [int(e) for e in self.endpoints],
            "routed": self.routed, "p2p_routed": self.p2p_routed,
            "dropped": self.dropped, "dropped_mc": self.dropped_mc,
            "dropped_p2p": self.dropped_p2p, "default_routed": self.default_routed,
            "dropped_link": self.dropped_link, "emergency_routed": self.emergency_routed,
            "p2p_forwarded": self.p2p_forwarded,
            "delivered": [int(x) for x in self.delivered],
            "mc_sent": [int(x) for x in self.mc_sent],
            "link_sent": {name: int(n) for name, n in zip(LINK_NAMES, self.link_sent)},
            "first_drops": [{"kind": k, {"mc": "key", "p2p": "dest", "link": "link", "detour": "failed_link"}[k]:
                             f"0x{v:08x}" if k == "mc" else LINK_NAMES[v] if k in ("link", "detour") else v,
                             "src": s}
                            for k, v, s in self.first_drops],
        }

    def drop_report(self) -> str | None:
        """One line on dropped packets (count and the first ones), None if none dropped."""
        if not self.dropped:
            return None
        first = ", ".join(f"key 0x{v:08x} from src {s}" if k == "mc" else
                          f"packets of src {s} on link {LINK_NAMES[v]}" if k == "link" else
                          f"packets of src {s} detouring around failed link {LINK_NAMES[v]}" if k == "detour" else
                          f"p2p to endpoint {v} from src {s}" for k, v, s in self.first_drops)
        link = (f", {self.dropped_link} on a link off the mesh, failed, or past the hop limit" if self.dropped_link else "")
        return (f"router {self.chip} dropped {self.dropped} packets ({self.dropped_mc} multicast "
                f"with no matching entry, {self.dropped_p2p} point-to-point to a missing "
                f"endpoint of {self.n_endpoints}{link}); first: {first}")
