"""The emulated machine: chips x PEs, SRAM per PE, router table size, clock, and the mesh that joins the chips.

Presets follow ../shared/SCIENCE.md: the production SpiNNaker 2 chip (152 PEs of 128 KB) and the
64 KB-per-PE prototype on which DEEP R was trained. Every field can be overridden in a recipe's
[machine] table.
"""

from __future__ import annotations

import functools
import math
from dataclasses import asdict, dataclass, replace

from .errors import MachineError

KB = 1024

# The six inter-chip links, as on SpiNNaker: their names (router/table.py route bits 0-5) and the step each
# takes on the chip grid. Link l and link (l + 3) % 6 are the two ends of one wire.
LINK_NAMES = ("E", "NE", "N", "W", "SW", "S")
LINK_STEPS = ((1, 0), (1, 1), (0, 1), (-1, 0), (-1, -1), (0, -1))


def opposite(link: int) -> int:
    return (link + 3) % 6


@dataclass(frozen=True)
class MeshGeometry:
    """Chips on a width x height grid joined by six links. Chip c sits at (c % width, c // width).

    One board (the default): no wrap-around, and routes are the greedy shortest paths of the triangular
    lattice: diagonal (NE, SW) while both offsets share a sign, then along x, then along y; so every path from
    one chip to the others forms a tree, and a tick's packets need at most `distance` hops.

    `wrap`: boards joined into a torus, each row's and column's ends linked, as SpiNNaker machines of several
    boards are. `dead`: (chip, link) ends of wires that are down, both ends listed. With either, routes are
    found by breadth-first search over the live links, preferring links in LINK_NAMES order: a multicast
    route (`path`) follows the tree of shortest paths grown from its source, so a packet never enters a chip
    twice; a point-to-point packet (`next_link`) takes, at every chip, the first live link that brings it
    one hop closer to its destination."""

    width: int
    height: int
    wrap: bool = False
    dead: frozenset = frozenset()

    @property
    def chips(self) -> int:
        return self.width * self.height

    @property
    def searched(self) -> bool:
        """Routes come from search over the live links, not the one board's greedy rule."""
        return self.wrap or bool(self.dead)

    def xy(self, chip: int) -> tuple[int, int]:
        return chip % self.width, chip // self.width

    def neighbour(self, chip: int, link: int) -> int | None:
        """The chip at the other end of `link` (None: off the board, or the wire is down)."""
        x, y = self.xy(chip)
        dx, dy = LINK_STEPS[link]
        x, y = x + dx, y + dy
        if self.wrap:
            x, y = x % self.width, y % self.height
        elif not (0 <= x < self.width and 0 <= y < self.height):
            return None
        return None if (chip, link) in self.dead else y * self.width + x

    def next_link(self, a: int, b: int) -> int:
        """The link a packet at chip a takes toward chip b (-1: it is there)."""
        if self.searched:
            if a == b:
                return -1
            dist = _search(self, b)[0]
            self._reachable(dist, a, b)
            return next(link for link in range(6)
                        if (n := self.neighbour(a, link)) is not None and dist[n] == dist[a] - 1)
        (xa, ya), (xb, yb) = self.xy(a), self.xy(b)
        dx, dy = xb - xa, yb - ya
        if dx > 0 and dy > 0:
            return 1  # NE
        if dx < 0 and dy < 0:
            return 4  # SW
        if dx:
            return 0 if dx > 0 else 3  # E, W
        if dy:
            return 2 if dy > 0 else 5  # N, S
        return -1

    def path(self, a: int, b: int) -> list[tuple[int, int]]:
        """(chip, link it leaves by) for every hop of a multicast packet from a to b."""
        if not self.searched:
            return self.p2p_path(a, b)
        dist, parent = _search(self, a)
        self._reachable(dist, b, a)
        hops = []
        while b != a:
            b, link = parent[b]
            hops.append((b, link))
        return hops[::-1]

    def p2p_path(self, a: int, b: int) -> list[tuple[int, int]]:
        """(chip, link it leaves by) for every hop of a point-to-point packet from a to b: next_link at every
        chip (on one board that is also the multicast path)."""
        hops = []
        while (link := self.next_link(a, b)) >= 0:
            hops.append((a, link))
            a = self.neighbour(a, link)
        return hops

    def distance(self, a: int, b: int) -> int:
        if self.searched:
            dist = _search(self, a)[0]
            self._reachable(dist, b, a)
            return dist[b]
        (xa, ya), (xb, yb) = self.xy(a), self.xy(b)
        dx, dy = xb - xa, yb - ya
        return max(abs(dx), abs(dy)) if dx * dy > 0 else abs(dx) + abs(dy)

    def dead_wire_ends(self) -> list[str]:
        """Both ends of every dead wire, as "CHIP:LINK", sorted by chip and link."""
        return [f"{c}:{LINK_NAMES[link]}" for c, link in sorted(self.dead)]

    def _reachable(self, dist: list[int], chip: int, root: int) -> None:
        if dist[chip] < 0:
            raise MachineError(f"chip {chip} {self.xy(chip)} and chip {root} {self.xy(root)} are not connected: "
                               f"the dead links ({', '.join(self.dead_wire_ends())}) cut the mesh")


@functools.lru_cache(maxsize=4096)
def _search(g: MeshGeometry, root: int) -> tuple[list[int], list]:
    """Breadth-first search from `root` over g's live links, links tried in LINK_NAMES order: hops to every
    chip (-1: unreachable) and every chip's (parent chip, link from the parent)."""
    dist, parent = [-1] * g.chips, [None] * g.chips
    dist[root] = 0
    frontier = [root]
    while frontier:
        nxt = []
        for c in frontier:
            for link in range(6):
                n = g.neighbour(c, link)
                if n is not None and dist[n] < 0:
                    dist[n], parent[n] = dist[c] + 1, (c, link)
                    nxt.append(n)
        frontier = nxt
    return dist, parent


def parse_links(specs, width: int, height: int, wrap: bool) -> frozenset:
    """"CHIP:LINK" wire ends (e.g. "4:NE") as the set of both ends of each wire; MachineError if one names no
    chip, no link, or leads off the board."""
    board = MeshGeometry(width, height, wrap)
    dead = set()
    for spec in specs:
        chip, _, name = str(spec).partition(":")
        if not chip.strip().isdigit() or name.strip().upper() not in LINK_NAMES:
            raise MachineError(f"dead link '{spec}': expected CHIP:LINK with LINK one of {', '.join(LINK_NAMES)}")
        chip, link = int(chip), LINK_NAMES.index(name.strip().upper())
        other = board.neighbour(chip, link) if chip < board.chips else None
        if other is None:
            raise MachineError(f"dead link '{spec}': chip {chip} has no such link on a {width} x {height} "
                               f"{'torus' if wrap else 'mesh'}")
        dead |= {(chip, link), (other, opposite(link))}
    return frozenset(dead)


def parse_failures(specs, geometry: MeshGeometry) -> dict[tuple[int, int], tuple[tuple[int, int | None], ...]]:
    """"CHIP:LINK@TICK" (for good) and "CHIP:LINK@FROM-UNTIL" (the wire comes back at tick UNTIL): wires that
    fail while the chip runs, as {(chip, link): ((from, until or None), ...)} for both ends of each, the spans
    of one wire merged and in order. While a wire is down it carries nothing; the routing tables, loaded before,
    do not know (routers send around it by emergency routing, router/router.py). MachineError if one names no
    live wire or no ticks."""
    spans: dict[tuple[int, int], list] = {}
    for spec in specs:
        wire, at, when = str(spec).partition("@")
        first, dash, until = when.partition("-")
        if not at or not first.strip().isdigit() or dash and not until.strip().isdigit():
            raise MachineError(f"failing link '{spec}': expected CHIP:LINK@TICK or CHIP:LINK@FROM-UNTIL "
                               "(e.g. 4:NE@500, or 4:NE@500-800: down from tick 500, back at 800)")
        span = (int(first), int(until) if dash else None)
        if span[1] is not None and span[1] <= span[0]:
            raise MachineError(f"failing link '{spec}': it must come back after it fails (UNTIL > FROM)")
        chip = wire.partition(":")[0].strip()
        if chip.isdigit() and int(chip) >= geometry.chips:
            raise MachineError(f"failing link '{spec}': there is no chip {chip} on a {geometry.width} x "
                               f"{geometry.height} mesh")
        try:
            ends = parse_links([wire], geometry.width, geometry.height, geometry.wrap)
        except MachineError as e:  # said of the wire alone: say it of the whole spec
            raise MachineError(f"failing link '{spec}' (CHIP:LINK@TICK): {str(e).partition(': ')[2]}") from None
        if ends & geometry.dead:
            raise MachineError(f"failing link '{spec}': that wire is dead from the start (dead_links)")
        for e in ends:
            spans.setdefault(e, []).append(span)
    return {e: _merged(s) for e, s in spans.items()}


def _merged(spans: list) -> tuple:
    """Spans (from, until or None) as their union: in order, none overlapping or touching."""
    out: list[list] = []
    for a, b in sorted(spans, key=lambda s: s[0]):
        if out and (out[-1][1] is None or a <= out[-1][1]):
            out[-1][1] = None if out[-1][1] is None or b is None else max(out[-1][1], b)
        else:
            out.append([a, b])
    return tuple((a, b) for a, b in out)


def is_down(spans, tick: int) -> bool:
    """Whether a wire with these failure spans (parse_failures) carries nothing at `tick`."""
    return any(a <= tick and (b is None or tick < b) for a, b in spans)


@dataclass(frozen=True)
class Machine:
    name: str
    chips: int = 1
    width: int = 0  # chips per row of the mesh; 0: the most nearly square grid (chips must fill its rows)
    pes_per_chip: int = 152
    sram_bytes: int = 128 * KB  # local SRAM per PE, code and data together on the real chip
    reserved_bytes: int = 0  # SRAM kept back for code and stack; the ledger budget is sram - reserved
    router_entries: int = 16384  # multicast (key, mask, route) entries per chip router
    clock_mhz: float = 300.0
    wrap: bool = False  # wrap-around links: the mesh is a torus (boards joined edge to edge)
    dead_links: tuple = ()  # wires that are down, as "CHIP:LINK" (e.g. "4:NE"); routes go around them
    failing_links: tuple = ()  # wires that fail mid-run, "CHIP:LINK@TICK" or "@FROM-UNTIL"; routers detour around them

    @property
    def total_pes(self) -> int:
        return self.chips * self.pes_per_chip

    @property
    def geometry(self) -> MeshGeometry:
        w = self.width or next(w for w in range(math.isqrt(self.chips - 1) + 1, self.chips + 1)
                               if self.chips % w == 0)
        h = self.chips // w
        return MeshGeometry(w, h, self.wrap, parse_links(self.dead_links, w, h, self.wrap))

    @property
    def failures(self) -> dict[tuple[int, int], tuple]:
        """{(chip, link): the (from, until or None) spans its wire is down} for both ends of every failing wire
        (parse_failures)."""
        return parse_failures(self.failing_links, self.geometry)

    @property
    def pe_budget(self) -> int:
        """Bytes of SRAM a PE's learning state may use."""
        return self.sram_bytes - self.reserved_bytes

    def validate(self) -> "Machine":
        checks = [
            (self.chips >= 1, f"chips must be >= 1, got {self.chips}"),
            (0 <= self.width <= self.chips and (self.width == 0 or self.chips % self.width == 0),
             f"width must divide chips ({self.chips}) into full rows, got {self.width}"),
            (1 <= self.pes_per_chip <= 1024, f"pes_per_chip must be in 1..1024, got {self.pes_per_chip}"),
            (1 * KB <= self.sram_bytes <= 16 * 1024 * KB,
             f"sram_bytes must be between 1 KiB and 16 MiB, got {self.sram_bytes}"),
            (0 <= self.reserved_bytes < self.sram_bytes,
             f"reserved_bytes must be >= 0 and below sram_bytes ({self.sram_bytes}), got {self.reserved_bytes}"),
            (1 <= self.router_entries <= 1 << 20,
             f"router_entries must be in 1..1048576, got {self.router_entries}"),
            (1.0 <= self.clock_mhz <= 2000.0, f"clock_mhz must be in 1..2000, got {self.clock_mhz}"),
        ]
        for ok, message in checks:
            if not ok:
                raise MachineError(f"machine '{self.name}': {message}")
        g = self.geometry  # parses the dead links
        self.failures  # and the failing ones
        if self.wrap and min(g.width, g.height) < 3:
            # below 3 a row's E and W links (or a column's N and S) would join the same two chips
            raise MachineError(f"machine '{self.name}': wrap-around needs at least 3 x 3 chips, the mesh is "
                               f"{g.width} x {g.height}")
        return self

    def to_dict(self) -> dict:
        d = asdict(self)
        d["total_pes"] = self.total_pes
        g = self.geometry
        d["mesh"] = [g.width, g.height]
        d["pe_budget"] = self.pe_budget
        return d


PRESETS: dict[str, Machine] = {
    "spinnaker2": Machine(name="spinnaker2"),
    "prototype-64k": Machine(name="prototype-64k", sram_bytes=64 * KB),
}


def make_machine(preset: str = "spinnaker2", **overrides) -> Machine:
    if preset not in PRESETS:
        raise MachineError(f"unknown machine preset '{preset}'; known: {', '.join(PRESETS)}")
    for k in ("dead_links", "failing_links"):
        if k in overrides:
            overrides[k] = tuple(overrides[k])
    return replace(PRESETS[preset], **overrides).validate()
