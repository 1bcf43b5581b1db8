"""The emulated machine: chips x PEs, SRAM per PE, router table size, clock.

Presets follow ../shared/SCIENCE.md: the production SpiNNaker 2 chip (152 PEs of 128 KB) and the
64 KB-per-PE prototype on which DEEP R was trained. Every field can be overridden in a recipe's
[machine] table.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace

from .errors import MachineError

KB = 1024


@dataclass(frozen=True)
class Machine:
    name: str
    chips: int = 1
    pes_per_chip: int = 152
    sram_bytes: int = 128 * KB  # local SRAM per PE, code and data together on the real chip
    reserved_bytes: int = 0  # SRAM kept back for code and stack; the ledger budget is sram - reserved
    router_entries: int = 16384  # multicast (key, mask, route) entries per chip router
    clock_mhz: float = 300.0

    @property
    def total_pes(self) -> int:
        return self.chips * self.pes_per_chip

    @property
    def pe_budget(self) -> int:
        """Bytes of SRAM a PE's learning state may use."""
        return self.sram_bytes - self.reserved_bytes

    def validate(self) -> "Machine":
        checks = [
            (self.chips >= 1, f"chips must be >= 1, got {self.chips}"),
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
