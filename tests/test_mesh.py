"""Many chips: the six-link mesh, multicast trees with default routing, per-link counters, and the same
results however many chips a network spans, on both engines."""

import dataclasses
import json
import subprocess
import sys
import time

import pytest
from conftest import forget_key, smoke

from s2emu.build import build
from s2emu.chipmodel import router_passes
from s2emu.engines import run_engine
from s2emu.errors import MachineError, PacketError, S2EmuError
from s2emu.machine import LINK_NAMES, is_down, make_machine, opposite
from s2emu.router.mapper import Flow, Mapping, Vertex, chips_of_endpoints, route_flows, with_detour_chips
from s2emu.router.mesh import Mesh
from s2emu.router.packets import PacketBatch
from s2emu.router.table import endpoints_of, links_of
from s2emu.runner import assemble_spikes, assemble_weights, run, state_digest


def test_mesh_paths_are_shortest_and_stay_on_the_grid():
    g = make_machine(chips=12, width=4).geometry
    assert (g.width, g.height) == (4, 3)
    for a in range(g.chips):
        for link in range(6):
            n = g.neighbour(a, link)
            if n is not None:
                assert g.neighbour(n, opposite(link)) == a and g.distance(a, n) == 1
        for b in range(g.chips):
            path = g.path(a, b)
            assert len(path) == g.distance(a, b)
            at = a
            for chip, link in path:
                assert chip == at
                at = g.neighbour(chip, link)
                assert at is not None
            assert at == b
    assert g.distance(0, 11) == 3  # (0,0) -> (3,2): NE, NE, E
    assert [(make_machine(chips=c).geometry.width, make_machine(chips=c).geometry.height)
            for c in (1, 2, 4, 6, 48)] == [(1, 1), (2, 1), (2, 2), (3, 2), (8, 6)]
    with pytest.raises(MachineError, match="width must divide chips"):
        make_machine(chips=6, width=4)


@pytest.mark.parametrize("shape", [dict(chips=12, width=4, wrap=True), dict(chips=12, width=4, dead_links=["5:E", "1:N"]),
                                   dict(chips=9, wrap=True, dead_links=["4:NE", "0:W"])])
def test_searched_routes_are_shortest_trees_over_live_links(shape):
    """On a torus or around dead links: every multicast path runs over live links and is as short as any
    (breadth-first distance); the paths from one source form a tree (no chip entered by two links); a
    point-to-point packet reaches its destination in `distance` hops from wherever it is."""
    g = make_machine(**shape).geometry
    assert g.searched
    for a in range(g.chips):
        entered = {}
        for b in range(g.chips):
            path = g.path(a, b)
            assert len(path) == g.distance(a, b) == g.distance(b, a) == len(g.p2p_path(a, b))
            at = a
            for chip, link in path:
                assert chip == at and (chip, link) not in g.dead
                at = g.neighbour(chip, link)
                assert at is not None and entered.setdefault(at, (chip, link)) == (chip, link)
            assert at == b
    if g.wrap and not g.dead:  # the ends of a row are neighbours, and the far corner is one hop away
        assert g.neighbour(0, LINK_NAMES.index("W")) == g.width - 1 and g.distance(0, g.chips - 1) == 1
    for chip, link in g.dead:
        assert g.neighbour(chip, link) is None


def test_wrap_and_dead_links_are_checked():
    with pytest.raises(MachineError, match="wrap-around needs at least 3 x 3 chips"):
        make_machine(chips=4, wrap=True)
    with pytest.raises(MachineError, match="chip 0 has no such link"):
        make_machine(chips=4, dead_links=["0:W"])
    with pytest.raises(MachineError, match="expected CHIP:LINK"):
        make_machine(chips=4, dead_links=["0-E"])
    cut = make_machine(chips=3, width=3, pes_per_chip=4, dead_links=["0:E"])  # chip 0 cut off from 1 and 2
    with pytest.raises(MachineError, match=r"chip 1 \(1, 0\) and chip 0 \(0, 0\) are not connected"):
        cut.geometry.path(0, 1)
    with pytest.raises(MachineError, match="not connected"):
        build(dataclasses.replace(smoke(pes=8), machine=cut), load_data=False)


def row_mapping():
    """Four chips in a row, one PE each (PE p on chip p), the host on chip 0; flows: PE 0 -> PE 3 (straight
    through chips 1 and 2), PE 3 -> the host, PE 1 -> PEs 0 and 2 (a tree branching both ways)."""
    machine = make_machine(chips=4, width=4, pes_per_chip=1)
    vertices = tuple(Vertex(p, "h", p, p, p + 1) for p in range(4))
    chips = chips_of_endpoints(4, machine)
    assert chips == (0, 1, 2, 3, 0)
    flows = [Flow(0x100, 0xFFFFFF00, 0, (3,)), Flow(0x200, 0xFFFFFF00, 3, (4,)),
             Flow(0x300, 0xFFFFFF00, 1, (0, 2))]
    tables, before, hops = route_flows(flows, chips, machine.geometry, machine.router_entries)
    return Mapping(None, machine, vertices, None, tables, before, hops)


def test_trees_need_no_entry_where_they_run_straight_on():
    m = row_mapping()
    assert m.hops == 3 and sorted(m.tables) == [0, 1, 2, 3]

    def rows(chip):
        return {e.key: (endpoints_of(e.route), [LINK_NAMES[i] for i in links_of(e.route)])
                for e in m.tables[chip].entries}

    assert rows(0) == {0x100: ([], ["E"]), 0x200: ([1], []), 0x300: ([0], [])}  # PE 0 (0), the host (1)
    assert rows(1) == {0x300: ([], ["E", "W"])}  # PE 0's packets pass by default routing
    assert rows(2) == {0x300: ([0], [])}
    assert rows(3) == {0x100: ([0], []), 0x200: ([], ["W"])}
    assert m.router_entries == 7 and m.chip_endpoints(0) == [0, 4]


def test_packets_cross_the_mesh_in_one_tick_in_the_one_chip_order():
    m = row_mapping()
    mesh = Mesh(m, streams=1)
    batches = [PacketBatch.make(0, 7, mc_keys=[0x101, 0x1FF, 0x555]),  # 0x555 matches nothing: dropped
               PacketBatch.make(1, 7, mc_keys=[0x301], p2p_dest=[3], p2p_tag=[9], p2p_payload=[42]),
               PacketBatch.make(3, 7, mc_keys=[0x2AA]),
               PacketBatch.make(4, 7, p2p_dest=[2, 0, 9], p2p_tag=[1, 2, 3], p2p_payload=[5, 6, 7])]
    out = mesh.route(batches, 7)
    assert [o.tick for o in out] == [7] * 5
    assert out[3].mc_keys.tolist() == [0x101, 0x1FF] and out[3].p2p_payload.ravel().tolist() == [42]
    assert out[4].mc_keys.tolist() == [0x2AA]
    assert out[0].mc_keys.tolist() == [0x301] and out[0].p2p_payload.ravel().tolist() == [6]
    assert out[2].mc_keys.tolist() == [0x301] and out[2].p2p_payload.ravel().tolist() == [5]
    assert len(out[1]) == 0
    c = mesh.counters_dict()
    assert json.loads(json.dumps(c)) == c
    # chips 1 and 2 pass PE 0's two packets and PE 3's one on by default routing; a P2P to an endpoint that
    # does not exist and a key with no entry are dropped at their first chip
    assert c["default_routed"] == 6 and c["dropped_mc"] == 1 and c["dropped_p2p"] == 1 and c["dropped_link"] == 0
    links = {(x["from"], x["to"]): x["packets"] for x in c["links"]}
    assert links[(0, 1)] == 2 + 1 and links[(1, 2)] == 2 + 1 + 1 + 1  # +P2P host -> PE 2, PE 1 -> PE 3
    assert links[(3, 2)] == links[(2, 1)] == links[(1, 0)] - 1 == 1  # +PE 1's multicast to PE 0
    assert sum(x["packets"] for x in c["links"]) == sum(c["link_sent"].values())
    assert [ch["chip"] for ch in c["chips"]] == [0, 1, 2, 3] and c["delivered"][3] == 3
    assert "router 0 dropped" in mesh.drop_report()


def test_a_chip_with_an_empty_table_passes_packets_straight_on():
    """Three chips in a row, one flow PE 0 -> PE 2: chip 1 has no entry at all, default routing carries the
    packet through it, and an unmatched key from chip 1's own PE is a counted drop, not a crash."""
    machine = make_machine(chips=3, width=3, pes_per_chip=1)
    chips = chips_of_endpoints(3, machine)
    tables, before, hops = route_flows([Flow(0x100, 0xFFFFFF00, 0, (2,))], chips, machine.geometry,
                                       machine.router_entries)
    assert {c: len(t) for c, t in tables.items()} == {0: 1, 1: 0, 2: 1}
    m = Mapping(None, machine, tuple(Vertex(p, "h", p, p, p + 1) for p in range(3)), None, tables, before, hops)
    mesh = Mesh(m, streams=1)
    out = mesh.route([PacketBatch.make(0, 3, mc_keys=[0x1AB]), PacketBatch.make(1, 3, mc_keys=[0x777])], 3)
    assert out[2].mc_keys.tolist() == [0x1AB] and len(out[1]) == 0
    c = mesh.counters_dict()
    assert c["default_routed"] == 1 and c["dropped_mc"] == 1 and c["chips"][1]["dropped"] == 1


def test_a_packet_past_the_hop_limit_is_dropped_not_delivered_late():
    m = dataclasses.replace(row_mapping(), hops=2)  # PE 0 -> PE 3 needs 3 hops
    mesh = Mesh(m, streams=1)
    out = mesh.route([PacketBatch.make(0, 0, mc_keys=[0x100])], 0)
    assert len(out[3]) == 0
    c = mesh.counters_dict()
    assert c["dropped_link"] == 1 and "past the hop limit" in mesh.drop_report()


def test_a_network_too_big_for_the_machine_names_its_chips():
    with pytest.raises(MachineError, match=r"needs 9 PEs but machine .* has 8 \(2 chips of 4\)"):
        build(smoke(pes=8, chips=2, pes_per_chip=4), load_data=False)


def digest(recipe, engine="local", transport="channels"):
    b = build(recipe)
    raw = run_engine(engine, b, transport=transport)
    return state_digest(assemble_weights(b, raw), assemble_spikes(b, raw)), raw.router_counters, b


def assert_every_router_pass_counted(c, c1):
    """The chip model prices a packet at every router that handles it (chipmodel.router_passes): on a mesh
    without drops that is the one-chip run's count plus one for every packet a link carried, whether the
    router it reached matched it, ran it straight on, passed a detour or carries a P2P packet on."""
    assert c["dropped"] == 0 and router_passes(c) == router_passes(c1) + sum(c["link_sent"].values())


@pytest.mark.parametrize("shape", [dict(chips=4, pes_per_chip=3), dict(chips=9, pes_per_chip=1)])
def test_a_network_spanning_chips_gives_the_one_chip_digest(shape):
    one, c1, _ = digest(smoke(epochs=1, batch=4, pes=8))
    many, c, b = digest(smoke(epochs=1, batch=4, pes=8, **shape))
    assert len(b.mapping.tables) > 1 and b.mapping.hops >= 1
    assert many == one
    assert c["dropped"] == 0 and sum(c["link_sent"].values()) > 0
    assert c["delivered"] == c1["delivered"]  # every endpoint got the same packets, wherever it sits
    assert_every_router_pass_counted(c, c1)
    if shape["chips"] == 9:  # the host's labels cross chips to the readout
        assert c["p2p_forwarded"] > 0 and c1["p2p_forwarded"] == 0


@pytest.mark.parametrize("machine", [dict(wrap=True), dict(dead_links=("4:E", "4:N", "0:NE"))])
def test_a_torus_and_dead_links_give_the_one_chip_digest(machine):
    """Nine chips of one PE each: on a torus packets take the wrap-around links; with dead links they go
    around them (no packet on a dead wire); the results are those of one chip either way."""
    one, c1, _ = digest(smoke(epochs=1, batch=4, pes=8))
    plain, _, b_plain = digest(smoke(epochs=1, batch=4, pes=8, chips=9, pes_per_chip=1))
    r = smoke(epochs=1, batch=4, pes=8, chips=9, pes_per_chip=1)
    r = dataclasses.replace(r, machine=dataclasses.replace(r.machine, **machine).validate())
    many, c, b = digest(r)
    assert many == plain == one and c["dropped"] == 0 and c["delivered"] == c1["delivered"]
    per_link = {(x["chip"], name): n for x in c["chips"] for name, n in x["link_sent"].items()}
    g = b.mapping.machine.geometry
    if g.wrap:
        assert b.mapping.hops < b_plain.mapping.hops  # wrap-around shortens paths
        assert per_link[(0, "W")] + per_link[(0, "S")] + per_link[(0, "SW")] > 0  # links the board lacks
    for chip, link in g.dead:
        assert per_link.get((chip, LINK_NAMES[link]), 0) == 0
    assert sum(c["link_sent"].values()) > 0


def test_layered_and_bptt_networks_span_chips():
    deepr = load("deepr_mnist", epochs=0, pes=4)
    deepr = dataclasses.replace(deepr, data={**deepr.data, "max_test": 200})
    assert run(deepr)["state_digest"] == run(deepr.with_overrides(chips=3, pes_per_chip=2))["state_digest"]
    bptt = load("tlbptt_digits", epochs=1, pes=4)
    bptt = dataclasses.replace(bptt, data={**bptt.data, "max_train": 100, "max_test": 50})
    one, many = run(bptt), run(bptt.with_overrides(chips=3, pes_per_chip=2))
    assert one["state_digest"] == many["state_digest"] and many["chips"] == 3
    assert many["router"]["default_routed"] > 0 and many["router"]["dropped"] == 0


def load(name, **overrides):
    from s2emu.recipe import load_recipe

    return load_recipe(name).with_overrides(**overrides)


@pytest.mark.ray
def test_ray_runs_one_router_actor_per_chip_with_the_local_bits(ray_local):
    import dataclasses as dc

    r = smoke(epochs=1, batch=2, pes=8, chips=4, pes_per_chip=3)
    r = dc.replace(r, data={**r.data, "train_per_class": 8, "test_per_class": 4})
    local = digest(r)
    ray = digest(r, "ray")
    assert ray[0] == local[0]
    assert ray[1] == local[1]  # every counter, per chip and per link, too
    with pytest.raises(S2EmuError, match="4 chips runs on the channels transport only"):
        run_engine("ray", ray[2], transport="calls")


@pytest.mark.ray
def test_ray_on_a_torus_with_a_dead_link_has_the_local_bits_and_counters(ray_local):
    r = smoke(epochs=1, batch=2, pes=8, chips=9, pes_per_chip=1, wrap=True, dead_links=["4:E"])
    r = dataclasses.replace(r, data={**r.data, "train_per_class": 8, "test_per_class": 4})
    local, ray = digest(r), digest(r, "ray")
    assert ray[0] == local[0] and ray[1] == local[1] and local[1]["dropped"] == 0


@pytest.mark.ray
def test_a_pe_error_on_another_chip_is_raised_as_itself_and_not_retried(ray_local):
    """PE 2 (chip 1 of 3) forgets a key and raises PacketError; its router fails and closes its links, so the
    other routers see a channel close; the driver still raises the PE's error, as the local engine does, and
    does not restart (the error would recur)."""
    r = smoke(epochs=1, batch=4, pes=4, chips=3, pes_per_chip=2)
    r = dataclasses.replace(r, data={**r.data, "train_per_class": 8, "test_per_class": 4})

    def broken():
        b = build(r)
        assert b.mapping.endpoint_chips[2] == 1
        return forget_key(b, pe=2, proj=1)

    with pytest.raises(PacketError) as local:
        run_engine("local", broken())
    log = []
    with pytest.raises(PacketError) as remote:
        run_engine("ray", broken(), max_restarts=2, log=log.append)
    assert str(remote.value) == str(local.value) and "PE 2" in str(local.value) and not log


def test_map_shows_every_chip_table():
    out = subprocess.run([sys.executable, "-m", "s2emu", "map", "smoke", "--pes", "8", "--chips", "4",
                          "--pes-per-chip", "3", "--json"], capture_output=True, text=True, check=True)
    d = json.loads(out.stdout)
    assert d["mesh"] == [2, 2] and d["hops"] == 2 and [c["chip"] for c in d["chips"]] == [0, 1, 2, 3]
    assert d["chips"][3]["endpoints"] == [] and d["chips"][0]["endpoints"] == [0, 1, 2, 9]
    assert sum(c["entries"] for c in d["chips"]) == d["router_entries"] > d["table"]["entries"] > 0
    assert all(r["links"] and not r["endpoints"] for r in d["chips"][3]["rows"])  # chip 3 only turns packets


def test_map_names_a_torus_and_its_dead_links():
    args = [sys.executable, "-m", "s2emu", "map", "smoke", "--pes", "8", "--chips", "9", "--pes-per-chip", "1",
            "--wrap", "--dead-link", "4:E"]
    d = json.loads(subprocess.run(args + ["--json"], capture_output=True, text=True, check=True).stdout)
    assert d["mesh"] == [3, 3] and d["wrap"] is True and d["dead_links"] == ["4:E"] and d["hops"] == 2
    text = subprocess.run(args, capture_output=True, text=True, check=True).stdout
    assert "mesh 3 x 3 torus, 9 chips in use, 2 hops a tick; dead wire ends: 4:E, 5:W" in text
    bad = subprocess.run(args[:-1] + ["4:X"], capture_output=True, text=True)
    assert bad.returncode == 2 and "expected CHIP:LINK" in bad.stderr and not bad.stdout


def failing(spec, batch=4):
    r = smoke(epochs=1, batch=batch, pes=8, chips=9, pes_per_chip=1, failing_links=[spec])
    return dataclasses.replace(r, data={**r.data, "train_per_class": 8, "test_per_class": 4})


@pytest.mark.parametrize("spec", ["4:E@0", "4:E@40", "4:N@7"])
def test_a_wire_that_fails_mid_run_is_routed_around(spec):
    """Emergency routing: the tables still send packets over the wire, the routers send them around it by the
    other two sides of a triangle, one hop late but within the tick: the same bits, every endpoint the same
    packets, nothing dropped, and from its tick on nothing on the failed wire."""
    plain, c0, _ = digest(dataclasses.replace(failing(spec), machine=dataclasses.replace(
        failing(spec).machine, failing_links=())))
    got, c, b = digest(failing(spec))
    assert got == plain and c["delivered"] == c0["delivered"] and c["dropped"] == 0
    assert c["emergency_routed"] > 0 and c0["emergency_routed"] == 0
    # a detour is two link crossings where the wire was one: its extra pass is the chip beside the wire
    assert router_passes(c) - router_passes(c0) == sum(c["link_sent"].values()) - sum(c0["link_sent"].values())
    chip, _, rest = spec.partition(":")
    link, tick = rest.split("@")
    per_link = {(x["chip"], name): n for x in c["chips"] for name, n in x["link_sent"].items()}
    before = {(x["chip"], name): n for x in c0["chips"] for name, n in x["link_sent"].items()}
    on_wire = per_link[(int(chip), link)]
    assert (on_wire == 0) if tick == "0" else (0 < on_wire < before[(int(chip), link)])
    # the detour's first leg, the next link counter-clockwise, carries the failed wire's packets too
    first_leg = LINK_NAMES[(LINK_NAMES.index(link) + 1) % 6]
    assert per_link[(int(chip), first_leg)] > before.get((int(chip), first_leg), 0)


def test_a_wire_that_comes_back_carries_its_packets_again():
    """A wire down from tick 20 until 60 detours exactly the packets that a wire down for good from 20 detours
    and one down from 60 does not, and carries the rest; the bits are those of the intact mesh."""
    runs = {spec: digest(failing(spec)) for spec in ("4:E@20", "4:E@60", "4:E@20-60")}
    runs["intact"] = digest(dataclasses.replace(failing("4:E@0"), machine=dataclasses.replace(
        failing("4:E@0").machine, failing_links=())))
    assert len({got for got, _, _ in runs.values()}) == 1
    detoured = {spec: c["emergency_routed"] for spec, (_, c, _) in runs.items()}
    assert detoured["4:E@20-60"] == detoured["4:E@20"] - detoured["4:E@60"] > 0
    on_wire = {spec: next(x["link_sent"]["E"] for x in c["chips"] if x["chip"] == 4)
               for spec, (_, c, _) in runs.items()}  # before 20, and again from 60 on
    assert on_wire["4:E@20-60"] == on_wire["4:E@20"] + on_wire["intact"] - on_wire["4:E@60"]
    assert 0 < on_wire["4:E@20"] < on_wire["4:E@20-60"] < on_wire["intact"]


def test_a_detour_that_leads_off_the_board_drops_and_says_so():
    """The wire 0:E-1:W fails: chip 0's packets go around it (NE, then S), but chip 1's detour would start on
    SW, off the board's bottom edge. Those are dropped, as on the chip, and counted and reported, not lost
    silently; only the detours that left count as emergency-routed."""
    b = build(failing("0:E@0"))
    raw = run_engine("local", b)
    chips = {x["chip"]: x for x in raw.router_counters["chips"]}
    assert chips[0]["emergency_routed"] > 0 and chips[1]["emergency_routed"] == 0 and chips[1]["dropped"] > 0
    assert chips[0]["link_sent"]["E"] == 0 and chips[1]["link_sent"]["SW"] == 0
    assert "detouring around failed link W" in raw.drop_report


def test_a_detour_arrives_travelling_the_failed_links_way():
    """Three chips in a row under three more, one flow PE 0 -> PE 2 along the bottom row, chip 1 without an
    entry (default routing carries it on). The wire 0:E fails: the packet goes NE to chip 4, S to chip 1, and
    chip 1 must pass it on E, the failed link's way, not S, the way it came in."""
    machine = make_machine(chips=6, width=3, pes_per_chip=1, failing_links=["0:E@0"])
    chips = chips_of_endpoints(3, machine)
    tables, before, hops = route_flows([Flow(0x100, 0xFFFFFF00, 0, (2,))], chips, machine.geometry,
                                       machine.router_entries)
    assert {c: len(t) for c, t in tables.items()} == {0: 1, 1: 0, 2: 1}
    m = Mapping(None, machine, tuple(Vertex(p, "h", p, p, p + 1) for p in range(3)), None,
                with_detour_chips(tables, machine), before, hops)
    assert sorted(m.tables) == [0, 1, 2, 4] and m.rounds == hops + 1
    mesh = Mesh(m, streams=1)
    out = mesh.route([PacketBatch.make(0, 3, mc_keys=[0x1AB])], 3)
    assert out[2].mc_keys.tolist() == [0x1AB]
    c = mesh.counters_dict()
    assert c["emergency_routed"] == 1 and c["default_routed"] == 1 and c["dropped"] == 0
    links = {(x["from"], x["link"]): x["packets"] for x in c["links"]}
    assert links[(0, "E")] == 0 and links[(0, "NE")] == links[(4, "S")] == links[(1, "E")] == 1


def test_a_failing_wire_no_route_uses_costs_nothing():
    """Everything on chip 0: a failing wire between two chips nobody uses adds no detour chip, no hop round."""
    b = build(smoke(epochs=0, pes=8, chips=9, failing_links=["0:E@3"]), load_data=False)
    assert sorted(b.mapping.tables) == [0] and b.mapping.rounds == 0


def test_failing_links_are_checked():
    for spec, why in [("4:E", "CHIP:LINK@TICK"), ("4:E@soon", "CHIP:LINK@TICK"),
                      ("0:W@3", r"'0:W@3' \(CHIP:LINK@TICK\): chip 0 has no such link"),
                      ("4:X@5", r"'4:X@5' \(CHIP:LINK@TICK\): expected"), ("9:E@1", "there is no chip 9")]:
        with pytest.raises(MachineError, match=why):
            make_machine(chips=9, failing_links=[spec])
    with pytest.raises(MachineError, match="dead from the start"):
        make_machine(chips=9, dead_links=["4:E"], failing_links=["5:W@3"])
    for spec, why in [("4:E@5-", "FROM-UNTIL"), ("4:E@5-x", "FROM-UNTIL"), ("4:E@5-5", "UNTIL > FROM")]:
        with pytest.raises(MachineError, match=why):
            make_machine(chips=9, failing_links=[spec])
    m = make_machine(chips=9, failing_links=["4:E@10", "5:W@4"])  # one wire, named from both ends: the first
    assert m.failures == {(4, 0): ((4, None),), (5, 3): ((4, None),)}
    # spans of one wire merge where they meet; a wire down for good from some tick stays down
    m = make_machine(chips=9, failing_links=["4:E@10-20", "5:W@20-30", "4:E@50-60", "4:E@55", "4:N@3-5"])
    assert m.failures[(4, 0)] == m.failures[(5, 3)] == ((10, 30), (50, None))
    assert [is_down(m.failures[(4, 2)], t) for t in (2, 3, 4, 5)] == [False, True, True, False]
    # a checkpoint knows the same failures however they are spelled
    from s2emu.checkpoint import fingerprint
    prints = {fingerprint(build(smoke(epochs=0, pes=8, chips=9, pes_per_chip=1, failing_links=spec),
                                load_data=False)) for spec in (["4:E@10"], ["5:w@10"], ["4:E@10", "5:W@10"],
                                                               ["4:E@10-20", "5:W@15"])}
    assert len(prints) == 1
    assert fingerprint(build(smoke(epochs=0, pes=8, chips=9, pes_per_chip=1, failing_links=["4:E@10-20"]),
                             load_data=False)) not in prints  # the wire comes back: other routes from then on


def test_detours_cross_a_link_message_and_bad_ones_are_refused():
    from s2emu.router.packets import Detour, decode_many, encode_many

    a = PacketBatch.make(3, 7, 1, mc_keys=[1, 2])
    b = PacketBatch.make(4, 7, 1, mcp_keys=[5], mcp_payload=[0.5])
    got = decode_many(encode_many([a, Detour(2, True, b), Detour(5, False, a)]))
    assert got[0] == a and got[1].batch == b and got[1][:2] == (2, True) and got[2][:2] == (5, False)
    import msgpack
    for bad in ([[7, True, b"x"]], [[1, 1, b"x"]], [[1, True]]):
        with pytest.raises(PacketError, match="link message"):
            decode_many(msgpack.packb(bad, use_bin_type=True))


@pytest.mark.ray
def test_ray_routes_around_a_failing_wire_with_the_local_bits_and_counters(ray_local):
    """A 4 x 3 mesh whose top row holds no endpoints: the detour around 4:E passes through chip 9, a router
    actor without endpoint processes."""
    r = smoke(epochs=1, batch=2, pes=8, chips=12, pes_per_chip=1, failing_links=["4:E@20"])
    r = dataclasses.replace(r, data={**r.data, "train_per_class": 8, "test_per_class": 4})
    local, ray = digest(r), digest(r, "ray")
    assert ray[0] == local[0] and ray[1] == local[1] and local[1]["emergency_routed"] > 0
    intact = digest(dataclasses.replace(r, machine=dataclasses.replace(r.machine, failing_links=())))
    via, before = (next(x for x in c["chips"] if x["chip"] == 9) for c in (local[1], intact[1]))
    assert via["endpoints"] == [] and via["link_sent"]["S"] > before["link_sent"]["S"]  # the second leg, 9 -> 5


def linked_routers(width, height):
    """Every wire of a width x height mesh as a pair of connected channels (multiprocessing Connections over
    loopback TCP with the ray engine's link buffers, tens of KB, not the megabytes the kernel would grow them
    to), as the ray engine's routers are joined: {chip: {link: its end}}."""
    from multiprocessing.connection import Client, Listener

    from s2emu.engines.ray_engine.links import link_buffers

    g = make_machine(chips=width * height, width=width).geometry
    ends = {c: {} for c in range(g.chips)}
    for c in range(g.chips):
        for link in range(6):
            n = g.neighbour(c, link)
            if n is not None and n > c:
                with Listener(("127.0.0.1", 0), family="AF_INET") as lst:
                    ends[c][link] = link_buffers(Client(lst.address, family="AF_INET"))
                    ends[n][opposite(link)] = link_buffers(lst.accept())
    return ends


@pytest.mark.parametrize("sizes", ["large", "direct", "mixed"])
def test_routers_exchange_messages_larger_than_the_sockets_buffers_without_deadlock(sizes):
    """Hop rounds on a 3 x 3 mesh, each router a thread with its LinkExchange (the ray engine's), with messages
    of a megabyte, far more than the sockets buffer (sent by the exchange's thread), of DIRECT_BYTES (sent by
    the router itself), or both by turns, hop by hop and link by link: every router gets every neighbour's
    message of every hop, in link order. (Routers that each sent all before reading, in one order, blocked
    each other around the mesh's triangles.)"""
    import threading

    from s2emu.engines.ray_engine.links import DIRECT_BYTES, LinkExchange

    ends, hops = linked_routers(3, 3), 4
    got, exchanges = {}, {c: LinkExchange(links) for c, links in ends.items()}

    def message(chip, link, hop):  # says who sent it, on which link, in which hop
        large = sizes == "large" or sizes == "mixed" and (hop + link) % 2 == 0
        return bytes([chip, link, hop]) * ((1 << 20 if large else DIRECT_BYTES - 10) // 3)

    def router(chip):
        ex = exchanges[chip]
        got[chip] = [ex.hop({link: message(chip, link, hop) for link in ex.wires}) for hop in range(hops)]

    threads = [threading.Thread(target=router, args=(c,), daemon=True) for c in ends]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 30
    for t in threads:
        t.join(timeout=max(0.0, deadline - time.monotonic()))
    try:
        assert sorted(got) == sorted(ends), f"routers {sorted(set(ends) - set(got))} never finished"
        g = make_machine(chips=9, width=3).geometry
        for chip, rounds in got.items():
            for hop, brought in enumerate(rounds):
                assert [link for link, _ in brought] == sorted(ends[chip])
                for link, msg in brought:
                    assert msg == message(g.neighbour(chip, link), opposite(link), hop)
    finally:
        for ex in exchanges.values():
            ex.close()
        for links in ends.values():
            for c in links.values():
                c.close()


def test_a_router_blocked_sending_to_a_silent_neighbour_closes_promptly():
    """A neighbour that never reads: the sender blocks on a full socket; close() shuts the channel down, the
    send fails inside the sender thread, and the thread ends."""
    from s2emu.engines.ray_engine.links import LinkExchange

    ends = linked_routers(2, 1)
    ex = LinkExchange(ends[0])
    ex.queue.put((ex.wires[0], b"x" * (4 << 20)))  # a hop's send, with nobody reading on chip 1
    time.sleep(0.2)
    started = time.monotonic()
    ex.close()
    assert not ex.thread.is_alive() and time.monotonic() - started < 3
    assert ex.error is not None and ex.error[0] == ex.wires[0]
    for links in ends.values():
        for c in links.values():
            c.close()
