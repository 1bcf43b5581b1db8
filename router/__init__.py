"""s2emu.router: packet batches and their wire format, key allocation, multicast tables
and the per-chip router."""

from .keys import KEY_BITS, KeyAllocation, allocate_keys
from .packets import (HOST, MAX_PACKETS, MAX_SRC, MAX_STREAMS, MAX_TAG, MAX_TICK, WIRE_VERSION,
                      PacketBatch, decode, encode, merge)
from .router import MAX_REMEMBERED_DROPS, ROUTER_SRC, Router
from .table import (DEFAULT_CAPACITY, LINK_NAMES, N_LINKS, Entry, MulticastTable, build_table,
                    check_overlaps, endpoints_of, links_of, merge_entries, route_for)

__all__ = [
    "HOST", "WIRE_VERSION", "MAX_STREAMS", "MAX_PACKETS", "MAX_SRC", "MAX_TICK", "MAX_TAG",
    "PacketBatch", "encode", "decode", "merge",
    "KEY_BITS", "KeyAllocation", "allocate_keys",
    "LINK_NAMES", "N_LINKS", "DEFAULT_CAPACITY", "Entry", "MulticastTable", "route_for",
    "endpoints_of", "links_of", "merge_entries", "build_table", "check_overlaps",
    "ROUTER_SRC", "MAX_REMEMBERED_DROPS", "Router",
]
