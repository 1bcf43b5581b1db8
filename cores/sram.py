"""The SRAM ledger: every array a PE keeps is allocated here, under a name.

The ledger counts bytes as the chip would hold them at batch 1: an array with a leading batch axis
(B independent streams on the local engine, like B chips) is charged for one stream. Temporaries of a
single step (numpy scratch) are not charged, as the stack is not on the chip.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from s2emu.errors import SramOverflowError


@dataclass(frozen=True)
class Allocation:
    name: str
    shape: tuple[int, ...]  # batch-1 shape (leading batch axis removed)
    dtype: str
    nbytes: int  # bytes on the chip (batch 1)


class SramLedger:
    def __init__(self, owner: str, budget: int, streams: int = 1, backing=None):
        """backing(name, shape, dtype, fill) -> array: where the arrays live (default: an array of their
        own; cores/group.py: views into arrays shared by a group of PEs stepped together)."""
        self.owner = owner
        self.backing = backing
        self.budget = int(budget)
        self.streams = int(streams)
        self.items: list[Allocation] = []
        self.arrays: dict[str, np.ndarray] = {}  # what a checkpoint saves: every array the PE keeps

    @property
    def total(self) -> int:
        return sum(a.nbytes for a in self.items)

    def alloc(self, name: str, shape, dtype=np.float32, *, batched: bool = False, fill=0) -> np.ndarray:
        """Allocate a named array; `batched` arrays get a leading axis of `streams` and are charged once."""
        shape = tuple(int(s) for s in np.atleast_1d(shape)) if not isinstance(shape, tuple) else shape
        dtype = np.dtype(dtype)
        if any(a.name == name for a in self.items):
            raise ValueError(f"{self.owner}: array '{name}' allocated twice")
        nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
        self.items.append(Allocation(name, shape, dtype.name, nbytes))
        self.check()
        full = (self.streams, *shape) if batched else shape
        self.arrays[name] = arr = (np.full(full, fill, dtype=dtype) if self.backing is None
                                   else self.backing(name, full, dtype, fill))
        return arr

    def restore(self, arrays: dict) -> None:
        """Put a checkpoint's arrays back, in place (the PE's references stay valid)."""
        from s2emu.checkpoint import CheckpointError
        if set(arrays) != set(self.arrays):
            missing = sorted(set(self.arrays) ^ set(arrays))[:3]
            raise CheckpointError(f"{self.owner}: the checkpoint's arrays differ from this PE's ({', '.join(missing)})")
        for name, arr in self.arrays.items():
            src = arrays[name]
            if src.shape != arr.shape or src.dtype != arr.dtype:
                raise CheckpointError(f"{self.owner}: checkpoint array '{name}' is {src.dtype}{list(src.shape)}, "
                                      f"this PE keeps {arr.dtype}{list(arr.shape)}")
            arr[...] = src

    def check(self) -> None:
        if self.total > self.budget:
            raise SramOverflowError(self.overflow_message())

    def overflow_message(self) -> str:
        top = sorted(self.items, key=lambda a: -a.nbytes)[:3]
        largest = ", ".join(f"{a.name} {a.nbytes:,} B" for a in top)
        return (f"{self.owner} does not fit: needs {self.total:,} B of SRAM but the budget is {self.budget:,} B "
                f"(largest: {largest}); use more PEs (--pes / max_atoms_per_core) or a machine with more SRAM")

    def table(self) -> list[dict]:
        return [{"name": a.name, "shape": list(a.shape), "dtype": a.dtype, "bytes": a.nbytes} for a in self.items]
