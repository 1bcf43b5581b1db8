"""The emulated machine: chips x PEs, SRAM per PE, router table size, clock, and the mesh that joins the chips.

Presets follow ../shared/SCIENCE.md: the production SpiNNaker 2 chip (152 PEs of 128 KB) and the
64 KB-per-PE prototype on which DEEP R was trained. Every field can be overridden in a recipe's
[machine] table.
"""

from __future__ import annotations

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
    """Chips on a width x height grid joined by six links (no wrap-around: one board). Chip c sits at
    (c % width, c // width). Routes are the greedy shortest paths of this triangular lattice: diagonal
    (NE, SW) while both offsets share a sign, then along x, then along y; so every path from one chip to the
    others forms a tree, and a tick's packets need at most `distance` hops."""

    width: int
    height: int

    @property
    def chips(self) -> int:
        return self.width * self.height

    def xy(self, chip: int) -> tuple[int, int]:
        return chip % self.width, chip // self.width

    def neighbour(self, chip: int, link: int) -> int | None:
        x, y = self.xy(chip)
        dx, dy = LINK_STEPS[link]
        x, y = x + dx, y + dy
        return y * self.width + x if 0 <= x < self.width and 0 <= y < self.height else None

    def next_link(self, a: int, b: int) -> int:
        """The link a packet at chip a takes toward chip b (-1: it is there)."""
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
        """(chip, link it leaves by) for every hop from a to b."""
        hops = []
        while (link := self.next_link(a, b)) >= 0:
            hops.append((a, link))
            a = self.neighbour(a, link)
        return hops

    def distance(self, a: int, b: int) -> int:
        (xa, ya), (xb, yb) = self.xy(a), self.xy(b)
        dx, dy = xb - xa, yb - ya
        return max(abs(dx), abs(dy)) if dx * dy > 0 else abs(dx) + abs(dy)


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

    @property
    def total_pes(self) -> int:
        return self.chips * self.pes_per_chip

    @property
    def geometry(self) -> MeshGeometry:
        w = self.width or next(w for w in range(math.isqrt(self.chips - 1) + 1, self.chips + 1)
                               if self.chips % w == 0)
        return MeshGeometry(w, self.chips // w)

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
    return replace(PRESETS[preset], **overrides).validate()
