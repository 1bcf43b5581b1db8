"""Tests of s2emu.router: wire format, key allocation, table merging and the router."""

import itertools
import json
import random
import time

import msgpack
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from s2emu.errors import PacketError, RoutingError
from s2emu.router import (
    MAX_PACKETS, ROUTER_SRC, Entry, MulticastTable, PacketBatch, Router, allocate_keys,
    build_table, decode, encode, endpoints_of, links_of, merge, merge_entries, route_for)

FAST = settings(max_examples=150, deadline=None,
                suppress_health_check=[HealthCheck.too_slow])


def sample_batch(streams=2, src=3, tick=7, seed=0):
    rng = np.random.default_rng(seed)
    return PacketBatch.make(
        src, tick, streams,
        mc_keys=rng.integers(0, 2**32, 5, dtype=np.uint64),
        mcp_keys=[0, 0xFFFFFFFF, 17],
        mcp_payload=rng.normal(size=(3, streams)).astype(np.float32),
        p2p_dest=[1, 0], p2p_tag=[255, 3],
        p2p_payload=rng.integers(0, 2**32, (2, streams), dtype=np.uint64))


def valid_msg(streams=2):
    """A valid wire message as a dict, to corrupt field by field."""
    return msgpack.unpackb(encode(sample_batch(streams)), raw=False)


def pack(msg):
    return msgpack.packb(msg, use_bin_type=True)


# ------------------------------------------------------------------ packets: round trips


@pytest.mark.parametrize("streams", [1, 2, 5])
def test_round_trip(streams):
    b = sample_batch(streams)
    d = decode(encode(b))
    assert d == b and len(d) == 10
    assert d.mcp_payload.shape == (3, streams) and d.mcp_payload.dtype == np.float32
    assert d.p2p_payload.dtype == np.uint32 and d.mc_keys.dtype == np.uint32
    assert not d.mc_keys.flags.writeable  # documented: read-only views


def test_round_trip_empty_and_bytes_like():
    e = PacketBatch.empty(0, 0, 4)
    assert len(e) == 0 and e.mcp_payload.shape == (0, 4)
    data = encode(e)
    assert decode(data) == e
    assert decode(bytearray(data)) == e and decode(memoryview(data)) == e


def test_make_reshapes_1d_payload_and_converts():
    b = PacketBatch.make(1, 2, mcp_keys=[5, 6], mcp_payload=[1.0, 2.5], p2p_dest=[3],
                         p2p_payload=[9])
    assert b.mcp_payload.shape == (2, 1) and b.mcp_payload[1, 0] == 2.5
    assert b.p2p_tag.tolist() == [0] and b.p2p_payload.tolist() == [[9]]
    with pytest.raises(PacketError, match=r"mcp_payload has shape \(2,\), expected \(2, 3\)"):
        PacketBatch.make(1, 2, 3, mcp_keys=[5, 6], mcp_payload=[1.0, 2.5])
    with pytest.raises(PacketError, match=r"mc_keys\[1\] = 4294967296 does not fit in 32 bits"):
        PacketBatch.make(1, 2, mc_keys=[1, 2**32])
    with pytest.raises(PacketError, match=r"p2p_tag\[0\] = 256"):
        PacketBatch.make(1, 2, p2p_dest=[0], p2p_tag=[256], p2p_payload=[1])
    with pytest.raises(PacketError, match="not finite"):
        PacketBatch.make(1, 2, mcp_keys=[1], mcp_payload=[np.inf])
    with pytest.raises(PacketError, match="src must be an int, got bool"):
        PacketBatch.make(True, 2)


def test_constructor_checks_structure():
    u = np.zeros(2, np.uint32)
    with pytest.raises(PacketError, match="mc_keys must be a uint32 array, got int64"):
        PacketBatch(0, 0, 1, np.zeros(2, np.int64), u, np.zeros((2, 1), np.float32),
                    u[:0], u[:0], np.zeros((0, 1), np.uint32))
    with pytest.raises(PacketError, match=r"mcp_payload has shape \(2, 1\), expected \(2, 2\)"):
        PacketBatch(0, 0, 2, u, u, np.zeros((2, 1), np.float32),
                    u[:0], u[:0], np.zeros((0, 2), np.uint32))


def test_equality_is_exact():
    b = sample_batch()
    assert b == sample_batch() and b != sample_batch(seed=1)
    assert b != sample_batch(tick=8) and b != sample_batch(src=4)
    z = PacketBatch.make(0, 0, mcp_keys=[1], mcp_payload=[0.0])
    assert z != PacketBatch.make(0, 0, mcp_keys=[1], mcp_payload=[-0.0])
    assert PacketBatch.empty(0, 0, 1) != PacketBatch.empty(0, 0, 2)


def test_merge_concatenates_in_order():
    a = PacketBatch.make(1, 0, mc_keys=[1, 2], p2p_dest=[4], p2p_payload=[7])
    b = PacketBatch.make(2, 0, mc_keys=[3], mcp_keys=[9], mcp_payload=[0.5])
    m = merge([b, a], src=9, tick=5, streams=1)
    assert (m.src, m.tick) == (9, 5)
    assert m.mc_keys.tolist() == [3, 1, 2] and m.mcp_keys.tolist() == [9]
    assert m.p2p_payload.tolist() == [[7]]
    assert merge([], 0, 0, 3) == PacketBatch.empty(0, 0, 3)
    with pytest.raises(PacketError, match="has 1 streams, expected 2"):
        merge([a], 0, 0, 2)


# ------------------------------------------------------------------ packets: decoder refusals


def corrupt(**changes):
    msg = valid_msg()
    for k, v in changes.items():
        if v is DELETE:
            del msg[k]
        else:
            msg[k] = v
    return pack(msg)


DELETE = object()
GOOD = encode(sample_batch())

REFUSALS = [
    ("str", "hello", "must be bytes, got str"),
    ("none", None, "must be bytes, got NoneType"),
    ("invalid msgpack", b"\xc1", "not valid msgpack"),
    ("empty bytes", b"", "not valid msgpack"),
    ("truncated", GOOD[:-3], "not valid msgpack"),
    ("trailing data", GOOD + b"\x00", "trailing data"),
    ("not a map", pack([1, 2, 3]), "must be a msgpack map, got list"),
    ("int map key", pack({1: 2}), "not valid msgpack"),
    ("missing field", corrupt(tick=DELETE), "missing field 'tick'"),
    ("unknown field", corrupt(extra=1), "unknown field 'extra'"),
    ("bad version", corrupt(version=2), "'version' = 2 is out of range"),
    ("bool src", corrupt(src=True), "'src' must be an int, got bool"),
    ("float tick", corrupt(tick=1.0), "'tick' must be an int, got float"),
    ("str streams", corrupt(streams="2"), "'streams' must be an int, got str"),
    ("negative src", corrupt(src=-1), "'src' = -1 is out of range"),
    ("absurd src", corrupt(src=2**40), "'src' = 1099511627776 is out of range"),
    ("negative tick", corrupt(tick=-5), "'tick' = -5 is out of range"),
    ("absurd tick", corrupt(tick=2**63), "'tick' = 9223372036854775808 is out of range"),
    ("zero streams", corrupt(streams=0), "'streams' = 0 is out of range"),
    ("too many streams", corrupt(streams=4097), "'streams' = 4097 is out of range"),
    ("keys as str", corrupt(mc_keys="abcd"), "'mc_keys' must be bin \\(bytes\\), got str"),
    ("keys as list", corrupt(mcp_keys=[1, 2]), "'mcp_keys' must be bin \\(bytes\\), got list"),
    ("ragged keys", corrupt(mc_keys=b"\x00" * 7), "'mc_keys' has 7 bytes, not a multiple of 4"),
    ("payload length", corrupt(mcp_payload=b"\x00" * 20),
     "'mcp_payload' has 20 bytes, expected 24 \\(3 packets x 2 streams x 4\\)"),
    ("payload vs streams", corrupt(streams=3),
     "'mcp_payload' has 24 bytes, expected 36 \\(3 packets x 3 streams x 4\\)"),
    ("tag length", corrupt(p2p_tag=b"\x00" * 4), "'p2p_tag' has 4 bytes, expected 8"),
    ("p2p payload length", corrupt(p2p_payload=b"\x00" * 8),
     "'p2p_payload' has 8 bytes, expected 16"),
    ("tag >= 256", corrupt(p2p_tag=np.array([1, 256], "<u4").tobytes()),
     "p2p_tag\\[1\\] = 256 is not < 256"),
    ("nan payload", corrupt(mcp_payload=np.array([0, 1, 2, np.nan, 4, 5], "<f4").tobytes()),
     "mcp_payload\\[1, 1\\] = nan is not finite"),
    ("inf payload", corrupt(mcp_payload=np.array([-np.inf, 1, 2, 3, 4, 5], "<f4").tobytes()),
     "mcp_payload\\[0, 0\\] = -inf is not finite"),
    ("too many packets", corrupt(mc_keys=b"\x00" * 4 * (MAX_PACKETS - 4)),
     f"has {MAX_PACKETS + 1} packets, limit is {MAX_PACKETS}"),
    ("deep nesting", b"\x91" * 100_000 + b"\x00", "not valid msgpack"),
]


@pytest.mark.parametrize("data, message", [r[1:] for r in REFUSALS], ids=[r[0] for r in REFUSALS])
def test_decoder_refuses(data, message):
    with pytest.raises(PacketError, match=message):
        decode(data)


def test_exactly_max_packets_is_accepted():
    d = decode(corrupt(mc_keys=b"\x00" * 4 * (MAX_PACKETS - 5)))
    assert len(d) == MAX_PACKETS


def check_decode(data):
    """decode either refuses with PacketError or returns a batch that round-trips."""
    try:
        b = decode(data)
    except PacketError:
        return
    assert decode(encode(b)) == b


@FAST
@given(st.binary(max_size=300))
def test_fuzz_random_bytes(data):
    check_decode(data)


@FAST
@given(st.data())
def test_fuzz_mutated_messages(data):
    buf = bytearray(encode(sample_batch(data.draw(st.integers(1, 3)))))
    for _ in range(data.draw(st.integers(1, 4))):
        op = data.draw(st.sampled_from(["flip", "set", "insert", "delete", "truncate"]))
        i = data.draw(st.integers(0, len(buf) - 1)) if buf else 0
        if op == "flip" and buf:
            buf[i] ^= 1 << data.draw(st.integers(0, 7))
        elif op == "set" and buf:
            buf[i] = data.draw(st.integers(0, 255))
        elif op == "insert":
            buf[i:i] = data.draw(st.binary(min_size=1, max_size=8))
        elif op == "delete" and buf:
            del buf[i:i + data.draw(st.integers(1, 8))]
        elif op == "truncate":
            del buf[i:]
    check_decode(bytes(buf))


MSGPACK_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-2**63, 2**64 - 1) | st.floats()
    | st.text(max_size=8) | st.binary(max_size=24),
    lambda kids: st.lists(kids, max_size=4) | st.dictionaries(st.text(max_size=8), kids,
                                                              max_size=4),
    max_leaves=12)


@FAST
@given(st.sampled_from(sorted(valid_msg())), MSGPACK_VALUES, MSGPACK_VALUES)
def test_fuzz_field_values_and_objects(field, value, obj):
    msg = valid_msg()
    msg[field] = value
    check_decode(pack(msg))
    check_decode(pack(obj))


# ------------------------------------------------------------------ keys

PARTS = [("hidden/spikes", [4, 4, 3]), ("hidden/errors", [4, 4, 3]), ("out/values", [10])]


def test_key_layout():
    a = allocate_keys(PARTS)
    assert (a.partition_bits, a.slice_bits, a.neuron_bits) == (2, 2, 4)
    assert a.key("out/values", 0, 9) == (2 << 6) | 9
    assert a.key("hidden/errors", 2, 1) == (1 << 6) | (2 << 4) | 1
    assert a.keys("hidden/spikes", 1).tolist() == [16, 17, 18, 19]
    assert a.keys("hidden/spikes", 1).dtype == np.uint32
    p, s, n = a.decode(np.array([a.key("hidden/errors", 2, 1)], np.uint32))
    assert (p[0], s[0], n[0]) == (1, 2, 1)
    assert a.partition_names == ("hidden/spikes", "hidden/errors", "out/values")
    assert a.partition_id("out/values") == 2
    json.dumps(a.to_dict())
    assert a.to_dict()["partitions"][2]["base_key"] == "0x00000080"


def test_key_layout_single_neuron_slices():
    a = allocate_keys([("x", [1]), ("y", [1, 1])])
    assert (a.partition_bits, a.slice_bits, a.neuron_bits) == (1, 1, 0)
    assert a.key("y", 1, 0) == 3


def test_slice_key_mask_covers_exactly_the_slice():
    a = allocate_keys(PARTS)
    key, mask = a.slice_key_mask("hidden/spikes", 1)
    every = np.arange(2**a.total_bits)
    hits = every[(every & mask) == key]
    assert hits.tolist() == list(range(16, 32))
    assert set(a.keys("hidden/spikes", 1).tolist()) <= set(hits.tolist())


def test_key_errors():
    a = allocate_keys(PARTS)
    with pytest.raises(RoutingError, match="unknown partition 'nope'"):
        a.key("nope", 0, 0)
    with pytest.raises(RoutingError, match="has 3 slices, no slice 3"):
        a.keys("hidden/spikes", 3)
    with pytest.raises(RoutingError, match="has 3 neurons, no neuron 3"):
        a.key("hidden/spikes", 2, 3)
    with pytest.raises(RoutingError, match=r"keys need 33 bits \(partition 1 \+ slice 12 \+ "
                                           r"neuron 20\), more than 32"):
        allocate_keys([("a", [2**20] * 4096), ("b", [1])])
    with pytest.raises(RoutingError, match="listed twice"):
        allocate_keys([("a", [1]), ("a", [2])])
    with pytest.raises(RoutingError, match="slice of 0 neurons"):
        allocate_keys([("a", [1, 0])])
    with pytest.raises(RoutingError, match="has no slices"):
        allocate_keys([("a", [])])


def test_global_index_and_errors():
    a = allocate_keys(PARTS)
    keys = [a.key("hidden/spikes", 2, 2), a.key("hidden/spikes", 0, 0),
            a.key("hidden/spikes", 1, 3)]
    assert a.global_index("hidden/spikes", np.array(keys, np.uint32)).tolist() == [10, 0, 7]
    bad = [(a.key("hidden/errors", 0, 1), "partition id 1 != 0"),
           ((3 << 4) | 0, "slice 3 >= 3 slices"),
           ((2 << 4) | 3, "neuron 3 >= 3 in slice 2")]
    for key, why in bad:
        with pytest.raises(RoutingError, match=f"key 0x{key:08x} is not a key of partition "
                                                f"'hidden/spikes' \\({why}\\)"):
            a.global_index("hidden/spikes", np.array([keys[0], key, 2**31], np.uint32))
    with pytest.raises(RoutingError, match="key -1 does not fit in 32 bits"):
        a.global_index("hidden/spikes", [0, -1])


@FAST
@given(st.lists(st.lists(st.integers(1, 40), min_size=1, max_size=6), min_size=1, max_size=5),
       st.data())
def test_sorting_keys_sorts_global_index(slice_lists, data):
    a = allocate_keys([(f"p{i}", s) for i, s in enumerate(slice_lists)])
    pid = data.draw(st.integers(0, len(slice_lists) - 1))
    name = f"p{pid}"
    all_keys = np.concatenate([a.keys(name, s) for s in range(len(slice_lists[pid]))])
    gi = a.global_index(name, all_keys)
    # Every neuron exactly once, and ascending keys give ascending global indices.
    assert sorted(gi.tolist()) == list(range(sum(slice_lists[pid])))
    perm = np.random.default_rng(data.draw(st.integers(0, 99))).permutation(len(all_keys))
    shuffled = all_keys[perm]
    assert np.array_equal(a.global_index(name, np.sort(shuffled)), np.sort(gi))


# ------------------------------------------------------------------ table


def test_route_helpers():
    r = route_for(endpoints=[0, 3, 152], links=["N", 0])
    assert endpoints_of(r) == [0, 3, 152] and links_of(r) == [0, 2]
    assert route_for() == 0 and endpoints_of(0) == [] and links_of(0) == []
    with pytest.raises(RoutingError, match="unknown link 'UP'"):
        route_for(links=["UP"])
    with pytest.raises(RoutingError, match=r"link = 6 is out of range \[0, 5\]"):
        route_for(links=[6])


def test_entry_validation():
    with pytest.raises(RoutingError, match="entry key 0x00000003 has bits outside its mask "
                                           "0xfffffffe"):
        Entry(3, 0xFFFFFFFE, 1)
    with pytest.raises(RoutingError, match="entry mask = 4294967296 is out of range"):
        Entry(0, 2**32, 1)
    with pytest.raises(RoutingError, match="entry route must be an int, got bool"):
        Entry(0, 0, True)


def test_first_match_priority_and_lookup_many():
    t = MulticastTable([Entry(0x10, 0xF0, 1), Entry(0x00, 0x00, 2), Entry(0x12, 0xFF, 4)])
    assert t.lookup(0x12) == 1 and t.lookup(0x22) == 2
    assert t.lookup_many(np.array([0x12, 0x22, 0x1F], np.uint32)).tolist() == [0, 1, 0]
    t2 = MulticastTable([Entry(0x12, 0xFF, 4)])
    assert t2.lookup(0x13) is None
    assert t2.lookup_many([0x13, 0x12]).tolist() == [-1, 0]
    assert MulticastTable([]).lookup_many(np.arange(3)).tolist() == [-1, -1, -1]
    assert t.to_rows()[0] == {"key": "0x00000010", "mask": "0x000000f0", "endpoints": [],
                              "links": ["E"]}


ENTRY6 = st.tuples(st.integers(0, 63), st.integers(0, 63), st.integers(1, 3)).map(
    lambda t: Entry(t[0] & t[1] | 0x40, t[1] | 0xFFFFFFC0, t[2]))  # 6 free bits, bit 6 set


@FAST
@given(st.lists(ENTRY6, max_size=40))
def test_lookup_many_matches_lookup(entries):
    t = MulticastTable(entries)
    keys = np.arange(0, 160, dtype=np.uint32)
    idx = t.lookup_many(keys)
    for k, i in zip(keys.tolist(), idx.tolist()):
        assert t.lookup(k) == (None if i < 0 else t.entries[i].route)
        assert i < 0 or all(not e.matches(k) for e in t.entries[:i])


def non_conflicting(entries):
    kept = []
    for e in entries:
        if all(not e.overlaps(o) or e.route == o.route for o in kept):
            kept.append(e)
    return kept


@FAST
@given(st.lists(ENTRY6, max_size=60), st.randoms())
def test_merge_is_exact(entries, rnd):
    entries = non_conflicting(entries)
    before = MulticastTable(entries)
    merged = merge_entries(entries)
    after = MulticastTable(merged)
    keys = list(range(0, 64 * 3)) + [0x40 | 0x80000000, 0xFFFFFFFF]
    for k in keys:  # keys below 0x40 and above 0x7F match nothing in both
        assert before.lookup(k) == after.lookup(k), hex(k)
    assert len(merged) <= len(set(entries))
    assert merge_entries(merged) == merged  # fixed point
    shuffled = list(entries)
    rnd.shuffle(shuffled)
    assert merge_entries(shuffled) == merged  # order-independent
    assert build_table(shuffled).entries == tuple(merged)


def test_merge_collapses_aligned_block():
    r = route_for([1])
    entries = [Entry(0x100 | k, 0xFFFFFFFF, r) for k in range(64)] + [Entry(0x200, 0xFFFFFFFF, 8)]
    assert merge_entries(entries) == [Entry(0x100, 0xFFFFFFC0, r), Entry(0x200, 0xFFFFFFFF, 8)]
    # Keys 1,2,3 cannot become one entry; {1,3} merge over bit 1.
    assert merge_entries([Entry(k, 0xFF, 1) for k in (1, 2, 3)]) == [
        Entry(1, 0xFD, 1), Entry(2, 0xFF, 1)]  # sorted by (mask, key)


@FAST
@given(ENTRY6, ENTRY6)
def test_overlapping_routes_refused(a, b):
    b = Entry(b.key, b.mask, a.route + 1)
    entries = [a, b, Entry(0, 0xFFFFFFFF, 9)]
    if a.overlaps(b):
        with pytest.raises(RoutingError, match="overlap with different routes"):
            build_table(entries)
    else:
        build_table(entries)


def test_overlap_message_and_same_route_overlap_allowed():
    with pytest.raises(RoutingError, match=r"key 0x00000010 mask 0x000000f0 \(route 0x1\) and "
                                           r"key 0x00000012 mask 0x000000ff \(route 0x2\)"):
        build_table([Entry(0x10, 0xF0, 1), Entry(0x12, 0xFF, 2)])
    t = build_table([Entry(0x10, 0xF0, 1), Entry(0x12, 0xFF, 1)])
    assert all(t.lookup(k) == (1 if k >> 4 == 1 else None) for k in range(256))


def test_capacity_errors_name_count_and_capacity():
    entries = [Entry(k, 0xFFFFFFFF, k + 1) for k in range(20)]  # all routes differ: no merge
    with pytest.raises(RoutingError, match=r"needs 20 entries after merging \(20 before\), "
                                           r"capacity is 16"):
        build_table(entries, capacity=16)
    with pytest.raises(RoutingError, match="multicast table has 20 entries, capacity is 19"):
        MulticastTable(entries, capacity=19)
    # 32 entries that merge into 1 fit a capacity of 1.
    assert len(build_table([Entry(k, 0xFFFFFFFF, 1) for k in range(32)], capacity=1)) == 1


# ------------------------------------------------------------------ router


def make_router(streams=2):
    a = allocate_keys([("h/spikes", [4, 4]), ("h/values", [3])])
    entries = []
    for s, dests in ((0, [1, 2]), (1, [2, 3])):
        k, m = a.slice_key_mask("h/spikes", s)
        entries.append(Entry(k, m, route_for(dests)))
    k, m = a.slice_key_mask("h/values", 0)
    entries.append(Entry(k, m, route_for([0, 3], links=["E", "S"])))
    return a, Router(build_table(entries), n_endpoints=5, streams=streams)


def test_router_fan_out_payloads_and_order():
    a, r = make_router()
    sp = lambda s, n: a.key("h/spikes", s, n)  # noqa: E731
    b1 = PacketBatch.make(1, 4, 2, mc_keys=[sp(1, 0), sp(0, 3)],
                          mcp_keys=[a.key("h/values", 0, 2)], mcp_payload=[[0.25, -7.0]])
    b2 = PacketBatch.make(2, 4, 2, mc_keys=[sp(0, 1)],
                          mcp_keys=[a.key("h/values", 0, 0), a.key("h/values", 0, 1)],
                          mcp_payload=[[1.0, 2.0], [3.0, 4.0]])
    out = r.route([b2, b1], tick=5)
    assert sorted(out) == [0, 1, 2, 3, 4]
    assert all(o.src == ROUTER_SRC and o.tick == 5 and o.streams == 2 for o in out.values())
    assert out[1].mc_keys.tolist() == [sp(0, 3), sp(0, 1)]
    assert out[2].mc_keys.tolist() == [sp(1, 0), sp(0, 3), sp(0, 1)]
    assert out[3].mc_keys.tolist() == [sp(1, 0)]
    assert out[0].mcp_keys.tolist() == [a.key("h/values", 0, n) for n in (2, 0, 1)]
    assert out[0].mcp_payload.tolist() == [[0.25, -7.0], [1.0, 2.0], [3.0, 4.0]]
    assert out[3].mcp_payload.tolist() == out[0].mcp_payload.tolist()
    assert len(out[4]) == 0 and len(out[1].mcp_keys) == 0
    assert r.routed == 6 and r.dropped == 0 and r.drop_report() is None
    assert r.delivered.tolist() == [3, 2, 3, 4, 0]
    assert sum(r.counters_dict()["link_sent"].values()) == 0  # route delivers here; forward sends on links
    sent = r.forward([b2, b1], {})
    assert sent == {}  # this router's links lead off the mesh: dropped, and said so
    assert r.dropped == r.dropped_link == 6 and "link E" in r.drop_report()
    for o in out.values():  # delivered batches are valid wire messages
        assert decode(encode(o)) == o
    # Same result whatever the arrival order.
    _, r2 = make_router()
    assert r2.route([b1, b2], tick=5) == out
    r2.links = frozenset({0, 5})  # now E and S lead to other chips
    sent = r2.forward([b2, b1], {})
    assert sorted(sent) == [0, 5]
    assert [(x.src, x.mcp_keys.tolist()) for x in sent[0]] == [(1, [a.key("h/values", 0, 2)]),
                                                               (2, [a.key("h/values", 0, n) for n in (0, 1)])]
    assert sent[0] == sent[5] and sent[0][0].mcp_payload.tolist() == [[0.25, -7.0]]
    assert r2.counters_dict()["link_sent"] == {"E": 3, "NE": 0, "N": 0, "W": 0, "SW": 0, "S": 3}
    assert r2.dropped == 0


def test_router_p2p_and_drops():
    a, r = make_router(streams=1)
    batches = [PacketBatch.make(3, 0, mc_keys=[0x7F, a.key("h/spikes", 0, 0)],
                                p2p_dest=[4, 9, 4, 0], p2p_tag=[1, 2, 3, 4],
                                p2p_payload=[10, 20, 30, 40]),
               PacketBatch.make(0, 0, mcp_keys=[0x7E], mcp_payload=[1.0],
                                p2p_dest=[4], p2p_tag=[5], p2p_payload=[50])]
    out = r.route(batches, tick=1)
    assert out[4].p2p_payload.ravel().tolist() == [50, 10, 30]
    assert out[4].p2p_tag.tolist() == [5, 1, 3] and out[4].p2p_dest.tolist() == [4, 4, 4]
    assert out[0].p2p_payload.ravel().tolist() == [40]
    assert (r.p2p_routed, r.routed, r.dropped, r.dropped_mc, r.dropped_p2p) == (4, 1, 3, 2, 1)
    report = r.drop_report()
    assert report == ("router 0 dropped 3 packets (2 multicast with no matching entry, 1 "
                      "point-to-point to a missing endpoint of 5); first: key 0x0000007f from "
                      "src 3, key 0x0000007e from src 0, p2p to endpoint 9 from src 3")
    counters = r.counters_dict()
    assert json.loads(json.dumps(counters)) == counters
    assert counters["default_routed"] == 0 and counters["dropped"] == 3


def test_router_remembers_first_ten_drops():
    _, r = make_router(streams=1)
    r.route([PacketBatch.make(1, 0, mc_keys=range(0x100, 0x10C))], 0)
    r.route([PacketBatch.make(1, 0, mc_keys=[0x200])], 1)
    assert r.dropped == 13 and len(r.first_drops) == 10
    assert "dropped 13 packets" in r.drop_report() and "0x0000010a" not in r.drop_report()
    assert r.drop_report().endswith("key 0x00000109 from src 1")


def test_router_refusals():
    _, r = make_router(streams=2)
    with pytest.raises(PacketError, match="batch from src 1 has 1 streams, router 0 carries 2"):
        r.route([PacketBatch.empty(1, 0, 1)], 0)
    with pytest.raises(PacketError, match="two batches from src 1 in one tick"):
        r.route([PacketBatch.empty(1, 0, 2), PacketBatch.empty(1, 0, 2)], 0)
    with pytest.raises(RoutingError, match="routes to endpoint 7, but the router has 5"):
        Router(MulticastTable([Entry(0, 0xFFFFFFFF, route_for([7]))]), 5)
    out = r.route([], 3)
    assert list(out) == [0, 1, 2, 3, 4] and all(len(o) == 0 and o.tick == 3
                                                for o in out.values())


def reference_route(table, n, batches):
    """Per-packet reference router: the spec, written plainly."""
    out = {e: {"mc": [], "mcp": [], "pl": [], "p2p": []} for e in range(n)}
    for b in sorted(batches, key=lambda b: b.src):
        for k in b.mc_keys.tolist():
            for e in endpoints_of(table.lookup(k) or 0):
                out[e]["mc"].append(k)
        for k, pl in zip(b.mcp_keys.tolist(), b.mcp_payload.tolist()):
            for e in endpoints_of(table.lookup(k) or 0):
                out[e]["mcp"].append(k)
                out[e]["pl"].append(pl)
        for d, t, pl in zip(b.p2p_dest.tolist(), b.p2p_tag.tolist(), b.p2p_payload.tolist()):
            if d < n:
                out[d]["p2p"].append((d, t, pl))
    return out


@FAST
@given(st.lists(ENTRY6.map(lambda e: Entry(e.key, e.mask, e.route << 6 | e.route)), max_size=12),
       st.lists(st.tuples(st.lists(st.integers(0x30, 0x90), max_size=8),
                          st.lists(st.integers(0x30, 0x90), max_size=5),
                          st.lists(st.integers(0, 4), max_size=4)), max_size=4),
       st.randoms())
def test_router_matches_reference(entries, specs, rnd):
    table = MulticastTable(entries)
    batches = [PacketBatch.make(
        src, 0, 2, mc_keys=mc, mcp_keys=mcp, mcp_payload=np.arange(2 * len(mcp)).reshape(-1, 2),
        p2p_dest=p2p, p2p_tag=[src] * len(p2p), p2p_payload=[[i, src] for i in range(len(p2p))])
        for src, (mc, mcp, p2p) in enumerate(specs)]
    rnd.shuffle(batches)
    r = Router(table, 4, streams=2)
    out, ref = r.route(batches, 1), reference_route(table, 4, batches)
    for e in range(4):
        assert out[e].mc_keys.tolist() == ref[e]["mc"]
        assert out[e].mcp_keys.tolist() == ref[e]["mcp"]
        assert out[e].mcp_payload.tolist() == (ref[e]["pl"] or [])
        assert list(zip(out[e].p2p_dest.tolist(), out[e].p2p_tag.tolist(),
                        out[e].p2p_payload.tolist())) == ref[e]["p2p"]
    n_mc = sum(len(b.mc_keys) + len(b.mcp_keys) for b in batches)
    assert r.routed + r.dropped_mc == n_mc
    assert r.delivered.sum() == sum(len(o) for o in out.values())


def test_router_hands_one_batch_to_endpoints_that_get_the_same_packets():
    """Endpoints reached by the same entries on a tick (a population's PEs) share one delivered batch, which
    a PE group then decodes once (cores/group.py); the counts stay per endpoint."""
    table = MulticastTable([Entry(0x10, 0xFFFFFFF0, route_for([0, 1, 2])),
                            Entry(0x20, 0xFFFFFFF0, route_for([2]))])
    r = Router(table, 4)
    out = r.route([PacketBatch.make(3, 0, mc_keys=[0x11, 0x12])], 0)  # only the first entry: 0, 1, 2 alike
    assert out[0] is out[1] is out[2] and out[0].mc_keys.tolist() == [0x11, 0x12] and len(out[3]) == 0
    out = r.route([PacketBatch.make(3, 1, mc_keys=[0x11, 0x21])], 1)  # endpoint 2 also gets 0x21
    assert out[0] is out[1] and out[2] is not out[0]
    assert out[0].mc_keys.tolist() == [0x11] and out[2].mc_keys.tolist() == [0x11, 0x21]
    assert r.delivered.tolist() == [3, 3, 4, 0]


def test_router_is_vectorised():
    # 152 PEs + host, 300 slices of 64 keys each to 3 PEs, 5000 packets from 152 senders.
    rng = random.Random(0)
    entries = [Entry(s << 6, 0xFFFFFFC0, route_for(rng.sample(range(153), 3)))
               for s in range(300)]
    r = Router(build_table(entries), 153)
    keys = np.random.default_rng(0).integers(0, 300 << 6, 5000)
    batches = [PacketBatch.make(i, 0, mc_keys=chunk)
               for i, chunk in enumerate(np.array_split(keys, 152))]
    out = r.route(batches, 1)
    # Order at scale: each endpoint gets the subsequence of all keys (src order) routed to it.
    routes = [r.table.entries[i].route for i in r.table.lookup_many(keys)]
    for e in (0, 7, 152):
        expected = [k for k, rt in zip(keys.tolist(), routes) if rt >> (6 + e) & 1]
        assert out[e].mc_keys.tolist() == expected
    t0 = time.perf_counter()
    for tick in range(5):
        r.route(batches, tick)
    assert (time.perf_counter() - t0) / 5 < 0.1
    assert r.routed == 6 * 5000 and r.delivered.sum() == 3 * 6 * 5000


def test_exhaustive_small_merge_cases():
    # Every pair/triple of single keys in a 3-bit space with one route merges exactly.
    for n in (2, 3):
        for ks in itertools.combinations(range(8), n):
            merged = MulticastTable(merge_entries([Entry(k, 7, 1) for k in ks]))
            assert [merged.lookup(k) for k in range(8)] == [1 if k in ks else None
                                                           for k in range(8)]
