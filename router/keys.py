"""Multicast key allocation: key = partition | slice | neuron, as bit fields of a 32-bit key.

A partition is one population's outgoing packet stream (e.g. "hidden/spikes"), split into
slices (one per PE). With N = bits for the largest slice of all partitions and S = bits for
the largest number of slices, ``key = (partition_id << (S + N)) | (slice << N) | neuron``.

Because slice offsets grow with the slice index, sorting one partition's keys ascending
sorts its neurons by their global index (offset of the slice + neuron in the slice).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from s2emu.errors import RoutingError, checked_int

__all__ = ["KeyAllocation", "allocate_keys", "KEY_BITS"]

KEY_BITS = 32


def _bits(n: int) -> int:
    """Bits needed to number n items: ceil(log2(n)), 0 for n <= 1."""
    return max(n - 1, 0).bit_length()


def _as_int(value, what: str) -> int:
    return checked_int(value, what, error=RoutingError)


def _key_array(keys) -> np.ndarray:
    """int64 array of 32-bit keys; refuses anything else naming the first bad value."""
    arr = np.asarray(keys)
    if arr.size == 0:
        return np.empty(0, np.int64)
    if arr.dtype.kind not in "iu":
        raise RoutingError(f"keys must be integers, got dtype {arr.dtype}")
    arr = arr.reshape(-1)
    bad = (arr < 0) | (arr > 0xFFFFFFFF)
    if bad.any():
        raise RoutingError(f"key {int(arr[np.argmax(bad)])} does not fit in 32 bits")
    return arr.astype(np.int64)


@dataclass(frozen=True)
class KeyAllocation:
    """Field layout and slice sizes; build it with ``allocate_keys``."""

    partition_names: tuple[str, ...]
    slice_sizes: tuple[tuple[int, ...], ...]  # neurons per slice, per partition
    partition_bits: int
    slice_bits: int
    neuron_bits: int
    # Derived lookups (not part of the value).
    _ids: dict = field(init=False, repr=False, compare=False, hash=False)
    _offsets: tuple = field(init=False, repr=False, compare=False, hash=False)
    _key_cache: dict = field(init=False, repr=False, compare=False, hash=False)  # (partition, slice) -> keys

    def __post_init__(self) -> None:
        object.__setattr__(self, "_ids", {n: i for i, n in enumerate(self.partition_names)})
        object.__setattr__(self, "_key_cache", {})
        # Per partition: int64 array of slice offsets (global index of each slice's neuron 0).
        object.__setattr__(self, "_offsets", tuple(
            np.concatenate([[0], np.cumsum(s[:-1], dtype=np.int64)]).astype(np.int64)
            for s in self.slice_sizes))

    @property
    def total_bits(self) -> int:
        return self.partition_bits + self.slice_bits + self.neuron_bits

    def partition_id(self, name: str) -> int:
        try:
            return self._ids[name]
        except (KeyError, TypeError):
            raise RoutingError(f"unknown partition {name!r} "
                               f"(known: {', '.join(self.partition_names) or 'none'})") from None

    def _slice(self, partition: str, slice_index) -> tuple[int, int]:
        pid = self.partition_id(partition)
        s = _as_int(slice_index, "slice index")
        n = len(self.slice_sizes[pid])
        if not 0 <= s < n:
            raise RoutingError(f"partition {partition!r} has {n} slices, no slice {s}")
        return pid, s

    def _base(self, pid: int, s: int) -> int:
        return (pid << (self.slice_bits + self.neuron_bits)) | (s << self.neuron_bits)

    def key(self, partition: str, slice_index: int, neuron: int) -> int:
        pid, s = self._slice(partition, slice_index)
        n = _as_int(neuron, "neuron")
        size = self.slice_sizes[pid][s]
        if not 0 <= n < size:
            raise RoutingError(f"slice {s} of partition {partition!r} has {size} neurons, "
                               f"no neuron {n}")
        return self._base(pid, s) | n

    def keys(self, partition: str, slice_index: int) -> np.ndarray:
        """uint32 keys of every neuron of the slice, ascending (read-only: made once per slice, as a build asks
        for a source's keys once per PE that listens to it)."""
        cached = (self._key_cache.get((partition, slice_index))
                  if type(slice_index) is int and type(partition) is str else None)
        if cached is not None:
            return cached
        pid, s = self._slice(partition, slice_index)
        keys = np.arange(self.slice_sizes[pid][s], dtype=np.uint32) | np.uint32(self._base(pid, s))
        keys.flags.writeable = False
        self._key_cache[(partition, s)] = keys
        return keys

    def slice_key_mask(self, partition: str, slice_index: int) -> tuple[int, int]:
        """(key, mask) matching exactly the slice's block of 2**neuron_bits keys."""
        pid, s = self._slice(partition, slice_index)
        mask = 0xFFFFFFFF & ~((1 << self.neuron_bits) - 1)
        return self._base(pid, s), mask

    def decode(self, keys) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(partition ids, slice indices, neurons) as int64 arrays; no validity check."""
        k = _key_array(keys)
        n_mask = (1 << self.neuron_bits) - 1
        s_mask = (1 << self.slice_bits) - 1
        return (k >> (self.slice_bits + self.neuron_bits),
                (k >> self.neuron_bits) & s_mask, k & n_mask)

    def global_index(self, partition: str, keys) -> np.ndarray:
        """int64 index of each key's neuron in the whole population (slice offset + neuron)."""
        pid = self.partition_id(partition)
        k = _key_array(keys)
        p, s, n = self.decode(k)
        sizes = np.asarray(self.slice_sizes[pid], dtype=np.int64)
        s_clip = np.minimum(s, len(sizes) - 1)
        bad = (p != pid) | (s >= len(sizes)) | (n >= sizes[s_clip])
        if bad.any():
            i = int(np.argmax(bad))
            why = (f"partition id {int(p[i])} != {pid}" if p[i] != pid else
                   f"slice {int(s[i])} >= {len(sizes)} slices" if s[i] >= len(sizes) else
                   f"neuron {int(n[i])} >= {int(sizes[s[i]])} in slice {int(s[i])}")
            raise RoutingError(f"key 0x{int(k[i]):08x} is not a key of partition "
                               f"{partition!r} ({why})")
        return self._offsets[pid][s] + n

    def to_dict(self) -> dict:
        """JSON-serialisable summary for reports."""
        return {
            "partition_bits": self.partition_bits, "slice_bits": self.slice_bits,
            "neuron_bits": self.neuron_bits, "total_bits": self.total_bits,
            "partitions": [
                {"name": name, "id": i, "slices": list(self.slice_sizes[i]),
                 "base_key": f"0x{self._base(i, 0):08x}"}
                for i, name in enumerate(self.partition_names)],
        }


def allocate_keys(partitions: list[tuple[str, list[int]]]) -> KeyAllocation:
    """Allocate key fields for ``[(name, [neurons per slice, ...]), ...]`` (ids in order)."""
    names, sizes = [], []
    for item in partitions:
        try:
            name, slices = item
        except (TypeError, ValueError):
            raise RoutingError(f"partition must be (name, slice sizes), got {item!r}") from None
        if not isinstance(name, str) or not name:
            raise RoutingError(f"partition name must be a non-empty str, got {name!r}")
        if name in names:
            raise RoutingError(f"partition {name!r} is listed twice")
        if isinstance(slices, (str, bytes)) or not hasattr(slices, "__iter__"):
            raise RoutingError(f"slices of partition {name!r} must be a list of ints")
        slices = tuple(_as_int(s, f"slice size of partition {name!r}") for s in slices)
        if not slices:
            raise RoutingError(f"partition {name!r} has no slices")
        if min(slices) < 1:
            raise RoutingError(f"partition {name!r} has a slice of {min(slices)} neurons "
                               f"(must be >= 1)")
        names.append(name)
        sizes.append(slices)
    p_bits = _bits(len(names))
    s_bits = _bits(max((len(s) for s in sizes), default=1))
    n_bits = _bits(max((max(s) for s in sizes), default=1))
    if p_bits + s_bits + n_bits > KEY_BITS:
        raise RoutingError(
            f"keys need {p_bits + s_bits + n_bits} bits (partition {p_bits} + slice {s_bits} "
            f"+ neuron {n_bits}), more than {KEY_BITS}")
    return KeyAllocation(tuple(names), tuple(sizes), p_bits, s_bits, n_bits)
