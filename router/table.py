"""The multicast routing table: ordered (key, mask, route) entries, first match wins.

A route is a Python int bit set (unbounded: a chip has ~150 PEs): bits 0-5 are the six
inter-chip links (E, NE, N, W, SW, S as on SpiNNaker), bit 6 + e is local endpoint e.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

import numpy as np

from s2emu.errors import RoutingError, checked_int
from s2emu.machine import LINK_NAMES

__all__ = ["LINK_NAMES", "N_LINKS", "DEFAULT_CAPACITY", "route_for", "endpoints_of", "links_of",
           "check_overlaps",
           "Entry", "MulticastTable", "merge_entries", "build_table"]

N_LINKS = len(LINK_NAMES)
DEFAULT_CAPACITY = 16384
FEW = 4096  # lookup_many searches all masks at once for up to this many (keys x masks)
_FULL = 0xFFFFFFFF


def _int(value, what: str, lo: int = 0, hi: int | None = None) -> int:
    return checked_int(value, what, lo, hi, error=RoutingError)


def route_for(endpoints: Iterable[int] = (), links: Iterable[int | str] = ()) -> int:
    """Route bit set sending to the given local endpoints and links (index or name)."""
    route = 0
    for link in links:
        if isinstance(link, str):
            if link not in LINK_NAMES:
                raise RoutingError(f"unknown link {link!r} (expected one of {LINK_NAMES})")
            link = LINK_NAMES.index(link)
        route |= 1 << _int(link, "link", 0, N_LINKS - 1)
    for e in endpoints:
        route |= 1 << (N_LINKS + _int(e, "endpoint"))
    return route


def endpoints_of(route: int) -> list[int]:
    """Local endpoints named by a route, ascending."""
    bits, out, e = route >> N_LINKS, [], 0
    while bits:
        if bits & 1:
            out.append(e)
        bits >>= 1
        e += 1
    return out


def links_of(route: int) -> list[int]:
    """Link indices (0=E .. 5=S) named by a route, ascending."""
    return [i for i in range(N_LINKS) if route >> i & 1]


@dataclass(frozen=True)
class Entry:
    """Matches key k when (k & mask) == key."""

    key: int
    mask: int
    route: int

    def __post_init__(self) -> None:
        key = _int(self.key, "entry key", 0, _FULL)
        mask = _int(self.mask, "entry mask", 0, _FULL)
        route = _int(self.route, "entry route")
        if key & ~mask:
            raise RoutingError(f"entry key 0x{key:08x} has bits outside its mask 0x{mask:08x}")
        object.__setattr__(self, "key", key)  # normalise numpy ints to int
        object.__setattr__(self, "mask", mask)
        object.__setattr__(self, "route", route)

    def matches(self, key: int) -> bool:
        return key & self.mask == self.key

    def overlaps(self, other: Entry) -> bool:
        """Some key matches both."""
        return (self.key ^ other.key) & self.mask & other.mask == 0

    def __str__(self) -> str:
        return f"key 0x{self.key:08x} mask 0x{self.mask:08x}"


def _as_entry(e) -> Entry:
    if isinstance(e, Entry):
        return e
    try:
        return Entry(*e)
    except TypeError:
        raise RoutingError(f"table entry must be Entry or (key, mask, route), got {e!r}") from None


class MulticastTable:
    """Entries checked in order (TCAM priority); ``lookup`` returns the first match's route.

    Vectorised lookup groups entries by mask: per distinct mask, a sorted array of keys and
    the lowest entry index for each, so a keys array costs one searchsorted per mask
    (tables have few distinct masks) rather than one pass per entry.
    """

    def __init__(self, entries: Iterable[Entry], capacity: int = DEFAULT_CAPACITY):
        self.entries: tuple[Entry, ...] = tuple(_as_entry(e) for e in entries)
        self.capacity = _int(capacity, "table capacity")
        if len(self.entries) > self.capacity:
            raise RoutingError(f"multicast table has {len(self.entries)} entries, "
                               f"capacity is {self.capacity}")
        keys = np.array([e.key for e in self.entries], dtype=np.int64)
        masks = np.array([e.mask for e in self.entries], dtype=np.int64)
        self._groups = []  # (mask, sorted unique keys uint32, lowest entry index int64)
        for mask in np.unique(masks):
            idx = np.flatnonzero(masks == mask)
            order = np.lexsort((idx, keys[idx]))  # by key, then entry index
            k_sorted, idx_sorted = keys[idx][order], idx[order]
            k_unique, first = np.unique(k_sorted, return_index=True)
            self._groups.append((np.uint32(mask), k_unique.astype(np.uint32), idx_sorted[first]))
        # the groups as one sorted array of (group << 32 | key), for lookups of a few keys at a time (_lookup_few)
        self._masks = np.array([m for m, _, _ in self._groups], dtype=np.int64)
        self._group_keys = np.concatenate([(g << 32) + ks.astype(np.int64) for g, (_, ks, _) in
                                           enumerate(self._groups)]) if self._groups else np.zeros(0, np.int64)
        self._group_first = np.concatenate([f for _, _, f in self._groups]) if self._groups else np.zeros(0, np.int64)
        self._group_ids = np.arange(len(self._groups), dtype=np.int64) << 32

    def __len__(self) -> int:
        return len(self.entries)

    def __repr__(self) -> str:
        return f"MulticastTable({len(self)} entries, capacity {self.capacity})"

    def lookup(self, key: int) -> int | None:
        """Route of the first entry matching ``key``, None if none matches."""
        key = _int(key, "key", 0, _FULL)
        for e in self.entries:
            if key & e.mask == e.key:
                return e.route
        return None

    def lookup_many(self, keys) -> np.ndarray:
        """int64 index (into ``entries``) of the first matching entry per key, -1 if none."""
        k = np.asarray(keys)
        if k.dtype != np.uint32:
            if k.size and (k.dtype.kind not in "iu" or k.min() < 0 or k.max() > _FULL):
                raise RoutingError("lookup_many keys must be integers in [0, 2**32)")
            k = k.astype(np.uint32)
        none = np.int64(len(self.entries))  # sentinel above every real index
        if k.ndim == 1 and 0 < k.size * len(self._groups) <= FEW:
            return self._lookup_few(k, none)
        best = np.full(k.shape, none, dtype=np.int64)
        for mask, k_sorted, first in self._groups:
            masked = k & mask
            pos = np.minimum(np.searchsorted(k_sorted, masked), len(k_sorted) - 1)
            hit = k_sorted[pos] == masked
            np.minimum(best, np.where(hit, first[pos], none), out=best)
        best[best == none] = -1
        return best

    def _lookup_few(self, k: np.ndarray, none: np.int64) -> np.ndarray:
        """lookup_many for a few keys (a batch of one PE's spikes): every key under every mask at once, in one
        search of all the groups' keys, instead of a pass per mask (tables on a mesh have a score of masks)."""
        q = self._group_ids + (k.astype(np.int64)[:, None] & self._masks)  # [keys, groups]
        pos = np.minimum(np.searchsorted(self._group_keys, q), len(self._group_keys) - 1)
        best = np.where(self._group_keys[pos] == q, self._group_first[pos], none).min(axis=1)
        best[best == none] = -1
        return best

    def to_rows(self) -> list[dict]:
        """JSON-serialisable rows for reports."""
        return [{"key": f"0x{e.key:08x}", "mask": f"0x{e.mask:08x}",
                 "endpoints": endpoints_of(e.route),
                 "links": [LINK_NAMES[i] for i in links_of(e.route)]} for e in self.entries]


def check_overlaps(entries: list[Entry]) -> None:
    """Refuse two entries that share a key but have different routes (first match would
    silently pick one). Vectorised in row blocks: O(n^2) bit ops, fine for 16k entries."""
    n = len(entries)
    if n < 2:
        return
    keys = np.array([e.key for e in entries], dtype=np.int64)
    masks = np.array([e.mask for e in entries], dtype=np.int64)
    route_ids = {}
    rid = np.array([route_ids.setdefault(e.route, len(route_ids)) for e in entries])
    if len(route_ids) < 2:
        return
    block = max(1, 2_000_000 // n)
    for lo in range(0, n, block):
        hi = min(n, lo + block)
        clash = ((keys[lo:hi, None] ^ keys) & masks[lo:hi, None] & masks) == 0
        clash &= rid[lo:hi, None] != rid
        if clash.any():
            i, j = np.argwhere(clash)[0]
            a, b = entries[lo + i], entries[j]
            raise RoutingError(f"table entries overlap with different routes: {a} (route "
                               f"0x{a.route:x}) and {b} (route 0x{b.route:x})")


def merge_entries(entries: Iterable[Entry]) -> list[Entry]:
    """Exact, order-independent compression of entries.

    Entries with the same route and mask whose keys differ in exactly one (masked) bit are
    replaced by one entry with that bit masked out, until no such pair remains. Each merge
    covers exactly the union of the pair, and pairs are disjoint within a pass, so every key
    routes exactly as before (keys matching nothing still match nothing), provided the input
    has no different-route overlaps (see ``build_table``). Pairing is greedy: lowest key first,
    lowest differing bit first, which collapses aligned blocks fully. Not always minimal.
    Output is sorted by (mask, key, route).
    """
    groups: dict[tuple[int, int], set[int]] = {}  # (route, mask) -> keys
    for e in map(_as_entry, entries):
        groups.setdefault((e.route, e.mask), set()).add(e.key)
    changed = True
    while changed:
        changed = False
        for (route, mask) in sorted(groups):
            keys = groups.get((route, mask))
            if not keys or len(keys) < 2:
                continue
            bits = [1 << i for i in range(32) if mask >> i & 1]
            paired, leftover = set(), set()
            merged: dict[int, set[int]] = {}  # new mask -> merged keys
            for k in sorted(keys):
                if k in paired:
                    continue
                for bit in bits:
                    other = k ^ bit
                    if other in keys and other not in paired:
                        paired.update((k, other))
                        merged.setdefault(mask & ~bit, set()).add(k & ~bit)
                        break
                else:
                    leftover.add(k)
            if merged:
                changed = True
                groups[(route, mask)] = leftover
                for new_mask, new_keys in merged.items():
                    groups.setdefault((route, new_mask), set()).update(new_keys)
    out = [Entry(k, mask, route) for (route, mask), keys in groups.items() for k in keys]
    out.sort(key=lambda e: (e.mask, e.key, e.route))
    return out


def build_table(entries: Iterable[Entry], capacity: int = DEFAULT_CAPACITY) -> MulticastTable:
    """Validate (no different-route overlaps), merge, then check capacity."""
    capacity = _int(capacity, "table capacity")
    entries = [_as_entry(e) for e in entries]
    check_overlaps(entries)
    merged = merge_entries(entries)
    if len(merged) > capacity:
        raise RoutingError(f"multicast table needs {len(merged)} entries after merging "
                           f"({len(entries)} before), capacity is {capacity}")
    return MulticastTable(merged, capacity)
