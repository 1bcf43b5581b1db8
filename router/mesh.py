"""Many chips stepped together: one router per chip, joined by the six links of the mesh (s2emu/machine.py).

Timing, as on one chip: a packet sent during tick t is delivered at tick t+1 wherever its target sits. Every
hop of a tick's packets happens within the tick (a hop takes well under a microsecond on the chip, a tick a
millisecond): the chips' routers forward in rounds, one link hop per round, `mapping.hops` rounds (the longest
path between two chips with endpoints), then each delivers to its own endpoints everything that reached it.
A router orders what it delivers by source endpoint, as one chip's router does, so a network gives the same
packets in the same order, hence the same results, however many chips it spans.

The local engine steps a Mesh; the ray engine runs one router actor per chip and does the same rounds over
channels between them (engines/ray_engine/router_actor.py, links.py).
"""

from __future__ import annotations

from s2emu.machine import LINK_NAMES

from .packets import Detour, PacketBatch
from .router import MAX_REMEMBERED_DROPS, Router

__all__ = ["Mesh", "arrive", "by_endpoint", "merge_counters", "merge_drop_reports"]


def by_endpoint(n_endpoints: int, per_chip, fill=0) -> list:
    """One list by global endpoint id from per-chip (endpoint ids, values) pairs, each in local order."""
    out = [fill] * n_endpoints
    for endpoints, values in per_chip:
        for e, v in zip(endpoints, values):
            out[e] = v
    return out


def arrive(sent: list, link: int, batches: list, heading: dict, detours: list) -> None:
    """What was sent over `link` reaches the next chip: batches that travel the link's way (and second legs of
    a detour, the way of the link they went around) to be routed and delivered there, first legs of a detour
    to be passed on (router/router.py forward)."""
    for item in sent:
        if not isinstance(item, Detour):
            batches.append(item)
            heading[item.src] = link
        elif item.first_leg:
            detours.append(item)
        else:
            batches.append(item.batch)
            heading[item.batch.src] = item.direction


class Mesh:
    """Every chip's router of a mapping (router/mapper.py), routing a tick's batches through all its hops."""

    def __init__(self, mapping, streams: int):
        self.routers: dict[int, Router] = {c: mapping.router(c, streams) for c in sorted(mapping.tables)}
        self.hops = mapping.rounds  # hop rounds a tick runs (emergency detours may add some)
        self.chip_of = mapping.endpoint_chips
        self.geometry = mapping.machine.geometry
        self.n_endpoints = mapping.n_endpoints

    def route(self, batches: list[PacketBatch], tick: int) -> list[PacketBatch]:
        """Every endpoint's inbound batch for tick + 1 (index: global endpoint id)."""
        local = {c: [] for c in self.routers}
        for b in batches:
            local[self.chip_of[b.src]].append(b)
        arrived = {c: [] for c in self.routers}
        moving, travelling, detours = local, {c: {} for c in self.routers}, {c: [] for c in self.routers}
        for hop in range(self.hops + 1 if len(self.routers) > 1 else 0):
            inbox, heading, passing = ({c: [] for c in self.routers}, {c: {} for c in self.routers},
                                       {c: [] for c in self.routers})
            for c, router in self.routers.items():
                if not (moving[c] or detours[c]):
                    continue
                for link, sent in router.forward(moving[c], travelling[c], hop == self.hops, tick,
                                                 detours[c]).items():
                    n = self.geometry.neighbour(c, link)
                    arrive(sent, link, inbox[n], heading[n], passing[n])
            moving, travelling, detours = inbox, heading, passing
            for c in self.routers:
                arrived[c] += inbox[c]
        out = [None] * self.n_endpoints
        for c, router in self.routers.items():
            got = router.route(local[c], tick, arrived[c])
            for i, e in enumerate(router.endpoints):
                out[e] = got[i]
        return out

    @property
    def routed(self) -> int:
        return sum(r.routed for r in self.routers.values())

    def mc_sent(self) -> list[int]:
        return by_endpoint(self.n_endpoints, ((r.endpoints, r.mc_sent.tolist()) for r in self.routers.values()))

    def counters_dict(self) -> dict:
        return merge_counters([r.counters_dict() for r in self.routers.values()], self.n_endpoints, self.geometry)

    def drop_report(self) -> str | None:
        return merge_drop_reports([r.drop_report() for r in self.routers.values()])

    def snapshot(self) -> list[dict]:
        return [r.snapshot() for r in self.routers.values()]

    def restore(self, states: list[dict]) -> None:
        for r, st in zip(self.routers.values(), states, strict=True):
            r.restore(st)


_SUMMED = ("routed", "p2p_routed", "dropped", "dropped_mc", "dropped_p2p", "default_routed", "dropped_link",
           "emergency_routed", "p2p_forwarded")


def merge_counters(chips: list[dict], n_endpoints: int, geometry) -> dict:
    """One report from every chip router's counters_dict: totals, per-endpoint counts by global endpoint id,
    each chip's own figures (`chips`), and the packets sent on every link between two chips (`links`)."""
    out = {k: sum(c[k] for c in chips) for k in _SUMMED}
    for k in ("delivered", "mc_sent"):
        out[k] = by_endpoint(n_endpoints, ((c["endpoints"], c[k]) for c in chips))
    out["link_sent"] = {name: sum(c["link_sent"][name] for c in chips) for name in LINK_NAMES}
    out["first_drops"] = [d for c in chips for d in c["first_drops"]][:MAX_REMEMBERED_DROPS]
    out["chips"] = [{"chip": c["chip"], "xy": list(geometry.xy(c["chip"])), "endpoints": c["endpoints"],
                     **{k: c[k] for k in ("routed", "dropped", "default_routed", "emergency_routed")},
                     "link_sent": c["link_sent"]}
                    for c in chips]
    here = {c["chip"] for c in chips}
    out["links"] = [{"from": c["chip"], "to": n, "link": name, "packets": c["link_sent"][name]}
                    for c in chips for i, name in enumerate(LINK_NAMES)
                    if (n := geometry.neighbour(c["chip"], i)) is not None and n in here]
    return out


def merge_drop_reports(reports: list[str | None]) -> str | None:
    lines = [r for r in reports if r]
    return "; ".join(lines) if lines else None
