"""The mapper: network -> placement on PEs -> key allocation -> routing tables. One small stage per job,
as in PACMAN (partition, place, allocate keys, route, compress), each with a report.

Endpoints: PEs 0..P-1 and the host as endpoint P (as if reached through the Ethernet-attached monitor
processor of chip 0). PE p sits on chip p // pes_per_chip, so a network larger than one chip spans chips.
Each flow of keys (one source endpoint, its target endpoints) becomes a multicast tree over the chip mesh
(route_flows): an entry on every chip where the tree delivers or turns, none where it runs straight on
(default routing). A chip's routes name its own endpoints by their local index (their order on the chip).
"""

from __future__ import annotations

from dataclasses import dataclass

from s2emu.errors import MachineError, RoutingError
from s2emu.machine import Machine, MeshGeometry, opposite
from s2emu.network import Network

from .keys import KeyAllocation, allocate_keys
from .router import Router
from .table import N_LINKS, Entry, MulticastTable, build_table, route_for


@dataclass(frozen=True)
class Flow:
    """Keys matching (key, mask), sent by one endpoint to some endpoints (global endpoint ids)."""
    key: int
    mask: int
    source: int
    targets: tuple[int, ...]


def _flow(key_mask: tuple[int, int], source: int, targets) -> Flow:
    return Flow(*key_mask, source, tuple(targets))


@dataclass(frozen=True)
class Vertex:
    """One PE's share of the network: a slice [lo, hi) of one population, or, in a layered network, a slice
    (population, lo, hi) of each of several layers (`layers`; population then names them all)."""
    pe: int
    population: str
    slice_index: int
    lo: int
    hi: int
    layers: tuple[tuple[str, int, int], ...] = ()

    @property
    def n(self) -> int:
        return sum(hi - lo for _, lo, hi in self.layers) if self.layers else self.hi - self.lo

    def describe(self) -> str:
        """'hidden[0:10]', or 'h1[0:300] h2[0:100] out[0:10]' for a layered PE."""
        parts = self.layers or ((self.population, self.lo, self.hi),)
        return " ".join(f"{name}[{lo}:{hi}]" for name, lo, hi in parts)

    def holds(self, population: str) -> bool:
        return self.population == population or any(name == population for name, _, _ in self.layers)


@dataclass(frozen=True, eq=False)
class Mapping:
    network: Network
    machine: Machine
    vertices: tuple[Vertex, ...]
    keys: KeyAllocation
    tables: dict[int, MulticastTable]  # chip -> its router's table, for every chip a packet may reach
    entries_before_merge: int
    hops: int  # the most links a packet crosses in one tick (0 on one chip)

    @property
    def table(self) -> MulticastTable:
        """Chip 0's table: the whole table of a one-chip mapping."""
        return self.tables[0]

    @property
    def router_entries(self) -> int:
        return sum(len(t) for t in self.tables.values())

    @property
    def endpoint_chips(self) -> tuple[int, ...]:
        """The chip of every endpoint: PE p on chip p // pes_per_chip, the host on chip 0."""
        return chips_of_endpoints(self.n_pes, self.machine)

    def chip_endpoints(self, chip: int) -> list[int]:
        """The endpoints on a chip, in local index order."""
        return [e for e, c in enumerate(self.endpoint_chips) if c == chip]

    def neighbours(self, chip: int) -> dict[int, int]:
        """link -> the chip it leads to, for the links of `chip` that reach another chip in use."""
        g = self.machine.geometry
        return {link: n for link in range(N_LINKS) if (n := g.neighbour(chip, link)) in self.tables}

    def router(self, chip: int, streams: int) -> Router:
        """The router of one chip, with its table, its endpoints, its links to the other chips in use and
        the ticks at which some of them fail."""
        g = self.machine.geometry
        return Router(self.tables[chip], len(self.chip_endpoints(chip)), chip=chip, streams=streams,
                      endpoints=self.chip_endpoints(chip),
                      p2p_links=[g.next_link(chip, c) for c in self.endpoint_chips],
                      links=self.neighbours(chip),
                      failures={link: spans for (c, link), spans in self.machine.failures.items() if c == chip})

    @property
    def rounds(self) -> int:
        """Hop rounds of a tick: `hops`, and one more per failing wire between two chips in use (a path crosses
        a wire once at most, and an emergency detour is one hop longer)."""
        return self.hops + len(failing_wires(self.machine, self.tables))

    @property
    def n_pes(self) -> int:
        return len(self.vertices)

    @property
    def host(self) -> int:
        return self.n_pes

    @property
    def n_endpoints(self) -> int:
        return self.n_pes + 1

    def vertices_of(self, population: str) -> list[Vertex]:
        return [v for v in self.vertices if v.holds(population)]

    def readout_pe(self) -> int:
        return self.vertices_of(self.network.readout.name)[0].pe

    def to_dict(self) -> dict:
        return {
            "pes": self.n_pes,
            "host_endpoint": self.host,
            "placement": [{"pe": v.pe, "population": v.population, "slice": v.slice_index, "lo": v.lo, "hi": v.hi}
                          for v in self.vertices],
            "keys": self.keys.to_dict(),
            "router_entries": self.router_entries,
            "table": {"entries": len(self.table), "entries_before_merge": self.entries_before_merge,
                      "capacity": self.machine.router_entries,
                      "rows": [{"key": f"0x{e.key:08x}", "mask": f"0x{e.mask:08x}", "route": e.route}
                               for e in self.table.entries]},
            "mesh": [self.machine.geometry.width, self.machine.geometry.height],
            "wrap": self.machine.wrap,
            "dead_links": list(self.machine.dead_links),
            "failing_links": list(self.machine.failing_links),
            "hops": self.hops,
            "chips": [{"chip": c, "xy": list(self.machine.geometry.xy(c)), "endpoints": self.chip_endpoints(c),
                       "entries": len(t), "rows": t.to_rows()} for c, t in sorted(self.tables.items())],
        }


def chips_of_endpoints(n_pes: int, machine: Machine) -> tuple[int, ...]:
    return tuple(p // machine.pes_per_chip for p in range(n_pes)) + (0,)


def route_flows(flows: list[Flow], endpoint_chips: tuple[int, ...], geometry: MeshGeometry,
                capacity: int) -> tuple[dict[int, MulticastTable], int, int]:
    """Every flow as a multicast tree of shortest paths from its source's chip to its targets' chips.
    Returns the chips' tables (every chip with endpoints or on a path between two of them gets one), the
    number of entries before merging, and the most hops any packet (multicast or point-to-point) needs."""
    local, seen = {}, {}  # endpoint -> its index on its chip; chip -> its endpoints so far
    for e, c in enumerate(endpoint_chips):
        local[e] = seen.get(c, 0)
        seen[c] = local[e] + 1
    home = sorted(set(endpoint_chips))
    chips = set(home)  # point-to-point packets may travel between any two chips with endpoints
    hops = 0
    for a in home:
        for b in home:
            chips.update(c for c, _ in geometry.path(a, b))
            chips.update(c for c, _ in geometry.p2p_path(a, b))
            hops = max(hops, geometry.distance(a, b))
    entries: dict[int, list[Entry]] = {c: [] for c in chips}
    trees: dict[tuple, list[tuple[int, int]]] = {}  # (source chip, targets) -> its (chip, route) pairs
    for f in flows:
        src = endpoint_chips[f.source]
        tree = trees.get((src, f.targets))
        if tree is None:  # a population's slices share their targets: one tree for all of them
            tree = trees[(src, f.targets)] = _tree(f, src, endpoint_chips, local, geometry)
        for c, route in tree:
            entries[c].append(Entry(f.key, f.mask, route))
    tables = {c: build_table(es, capacity=capacity) for c, es in entries.items()}
    return tables, sum(len(es) for es in entries.values()), hops


def _tree(f: Flow, src: int, endpoint_chips, local: dict, geometry: MeshGeometry) -> list[tuple[int, int]]:
    """The multicast tree of flow f from chip `src` (route_flows): (chip, route) of each entry it needs."""
    out: dict[int, set[int]] = {src: set()}  # chip -> links the tree leaves it by
    came: dict[int, int] = {}  # chip -> the link the tree arrives by (the direction it travels)
    ends: dict[int, list[int]] = {}  # chip -> the targets there, by local index
    for t in f.targets:
        ends.setdefault(endpoint_chips[t], []).append(local[t])
    for dest in sorted(ends):
        for c, link in geometry.path(src, dest):
            out.setdefault(c, set()).add(link)
            n = geometry.neighbour(c, link)
            if came.setdefault(n, link) != link:  # two paths into one chip would deliver twice
                raise RoutingError(f"the tree of key 0x{f.key:08x} enters chip {n} by two links")
            out.setdefault(n, set())
    tree = []
    for c, links in out.items():
        here = ends.get(c, [])
        if c != src and not here and links == {came[c]}:
            continue  # straight on: default routing carries it, no entry needed
        tree.append((c, route_for(endpoints=sorted(here), links=sorted(links))))
    return tree



def partition_name(population: str, what: str) -> str:
    return f"{population}/{what}"


def place(network: Network, machine: Machine) -> tuple[Vertex, ...]:
    """Slices in population order onto consecutive PEs of chip 0. A layered network goes whole onto one PE
    (SCIENCE.md seed B: LeNet-300-100 in one core)."""
    if network.layered:
        return _place_layered(network, machine)
    vertices = []
    for pop in network.populations:
        if pop.model == "input":
            continue  # streamed by the host
        for s, (lo, hi) in enumerate(pop.slices()):
            vertices.append(Vertex(len(vertices), pop.name, s, lo, hi))
    _check_fits(len(vertices), machine)
    return tuple(vertices)


def _check_fits(n_pes: int, machine: Machine) -> None:
    if n_pes > machine.total_pes:
        raise MachineError(
            f"the network needs {n_pes} PEs but machine '{machine.name}' has {machine.total_pes} "
            f"({machine.chips} chips of {machine.pes_per_chip}); raise max_atoms_per_core (or lower --pes), or "
            f"give the machine more chips")


def _place_layered(network: Network, machine: Machine) -> tuple[Vertex, ...]:
    """P PEs, P the most slices any layer asks for (max_atoms_per_core; --pes N sets it); every layer is cut
    into P near-equal column slices and PE p holds slice p of each (so every PE takes part in every layer)."""
    return _place_columns([p for p in network.populations if p.is_layer], machine)


def _place_columns(layers, machine: Machine, extra: int = 0) -> tuple[Vertex, ...]:
    n_pes = max(len(p.slices()) for p in layers)
    _check_fits(n_pes + extra, machine)
    small = [p for p in layers if p.size < n_pes]
    if small:
        raise MachineError(f"layer '{small[0].name}' has {small[0].size} neurons, fewer than the {n_pes} PEs "
                           f"its network is split over: every PE holds a slice of every layer")
    return tuple(Vertex(pe, "+".join(p.name for p in layers), pe, 0, 0,
                        tuple((p.name, pe * p.size // n_pes, (pe + 1) * p.size // n_pes) for p in layers))
                 for pe in range(n_pes))


def _place_stack(network: Network, machine: Machine) -> tuple[Vertex, ...]:
    """A BPTT stack split over PEs (cores/bptt_pe.py): PE p holds column slice p of every hidden layer, and one
    more PE the readout (it needs every neuron of the layers it reads)."""
    hidden = _place_columns([p for p in network.populations if p.is_neuron], machine, extra=1)
    readout = network.readout
    return hidden + (Vertex(len(hidden), readout.name, 0, 0, readout.size),)


def _stack_partitions(network: Network, vertices, blocks) -> list[tuple[str, list[int]]]:
    """input values; per hidden layer its spikes, its chained backward sums (recurrent rows, then the layer
    below's unless it starts a block) and, on a block's top, the errors the readout sends back; the outputs."""
    hidden = vertices[:-1]
    parts = [(partition_name(network.input.name, "values"), [network.input.size])]
    for name, rows in _stack_layers(network, blocks):
        widths = [hi - lo for v in hidden for n, lo, hi in v.layers if n == name]
        parts.append((partition_name(name, "spikes"), widths))
        if rows:
            parts.append((partition_name(name, "chain"), [rows] * len(hidden)))
        if any(b[-1] == name for b in blocks):
            parts.append((partition_name(name, "errors"), widths))
    parts.append((partition_name(network.readout.name, "values"), [network.readout.size]))
    return parts


def _stack_layers(network: Network, blocks) -> list[tuple[str, int]]:
    """(hidden layer, rows of its chained backward sums), in stack order."""
    out = []
    firsts = {b[0] for b in blocks}
    for h, ff, rec in network.spiking_stack():
        out.append((h.name, (h.size if rec else 0) + (0 if h.name in firsts else network[ff.pre].size)))
    return out


def _stack_flows(network: Network, vertices, keys: KeyAllocation, host: int, blocks) -> list[Flow]:
    hidden = [v.pe for v in vertices[:-1]]
    ro = vertices[-1].pe
    P = len(hidden)
    tops = {b[-1] for b in blocks}
    flows = [_flow(keys.slice_key_mask(partition_name(network.input.name, "values"), 0), host, hidden)]
    for name, rows in _stack_layers(network, blocks):
        to = hidden + ([ro] if name in tops else [])
        flows += [_flow(keys.slice_key_mask(partition_name(name, "spikes"), p), p, to) for p in range(P)]
        if rows:  # PE p hands its partial sums to PE p + 1; the last one's go to all
            flows += [_flow(keys.slice_key_mask(partition_name(name, "chain"), p), p,
                            [p + 1] if p + 1 < P else hidden) for p in range(P)]
        if name in tops:  # each slice's errors, from the readout to the PE that holds it
            flows += [_flow(keys.slice_key_mask(partition_name(name, "errors"), p), ro, [p]) for p in range(P)]
    flows.append(_flow(keys.slice_key_mask(partition_name(network.readout.name, "values"), 0), ro, [host]))
    return flows


def _layered_partitions(network: Network, vertices) -> list[tuple[str, list[int]]]:
    """input values; the output layer's values for the host; and, split over more than one PE, each layer's
    activations, the chained backward sums and the rewiring counts the PEs exchange (cores/mlp.py)."""
    layers = [p for p in network.populations if p.is_layer]
    sizes = {p.name: [hi - lo for v in vertices for name, lo, hi in v.layers if name == p.name]
             for p in network.populations if p.model != "input"}
    parts = [(partition_name(network.input.name, "values"), [network.input.size]),
             (partition_name(network.readout.name, "values"), sizes[network.readout.name])]
    if len(vertices) > 1:
        for p in layers:
            parts.append((partition_name(p.name, "acts"), sizes[p.name]))
            parts.append((partition_name(p.name, "counts"), sizes[p.name]))
        for pr in network.projections[1:]:
            parts.append((partition_name(pr.pre, "chain"), [network[pr.pre].size] * len(vertices)))
    return parts


def _layered_flows(network: Network, vertices, keys: KeyAllocation, host: int) -> list[Flow]:
    every = [v.pe for v in vertices]
    n = len(vertices)
    flows = [_flow(keys.slice_key_mask(partition_name(network.input.name, "values"), 0), host, every)]
    flows += [_flow(keys.slice_key_mask(partition_name(network.readout.name, "values"), p), p, [host])
              for p in range(n)]
    if n > 1:
        for pop in (p for p in network.populations if p.is_layer):
            for what in ("acts", "counts"):
                flows += [_flow(keys.slice_key_mask(partition_name(pop.name, what), p), p, every) for p in range(n)]
        for pr in network.projections[1:]:  # PE p hands its partial sums to PE p + 1; the last one's go to all
            flows += [_flow(keys.slice_key_mask(partition_name(pr.pre, "chain"), p), p,
                            [p + 1] if p + 1 < n else every) for p in range(n)]
    return flows


def _partitions(network: Network, vertices) -> list[tuple[str, list[int]]]:
    parts = [(partition_name(network.input.name, "values"), [network.input.size])]
    for pop in network.populations:
        vs = [v for v in vertices if v.population == pop.name]
        if pop.is_neuron:
            parts.append((partition_name(pop.name, "spikes"), [v.n for v in vs]))
            parts.append((partition_name(pop.name, "errors"), [v.n for v in vs]))
        elif pop.model == "readout":
            parts.append((partition_name(pop.name, "values"), [pop.size]))
    return parts


def _flows(network: Network, vertices, keys: KeyAllocation, host: int) -> list[Flow]:
    by_pop = {}
    for v in vertices:
        by_pop.setdefault(v.population, []).append(v)
    readout = by_pop[network.readout.name][0].pe
    flows = []
    for pop in network.populations:
        # where this population's packets must go: every PE of every population it projects to
        targets = sorted({v.pe for pr in network.projections if pr.pre == pop.name
                          for v in by_pop.get(pr.post, ())})  # (these vertices hold one population each)
        if pop.model == "input":
            flows.append(_flow(keys.slice_key_mask(partition_name(pop.name, "values"), 0), host, targets))
        elif pop.model == "readout":
            flows.append(_flow(keys.slice_key_mask(partition_name(pop.name, "values"), 0), readout, [host]))
        else:
            for v in by_pop[pop.name]:
                flows.append(_flow(keys.slice_key_mask(partition_name(pop.name, "spikes"), v.slice_index), v.pe,
                                   targets))
                # the learning signal for this slice, from the readout, goes only to the PE that holds it
                flows.append(_flow(keys.slice_key_mask(partition_name(pop.name, "errors"), v.slice_index), readout,
                                   [v.pe]))
    return flows


def map_network(network: Network, machine: Machine, stack_blocks: list[list[str]] | None = None) -> Mapping:
    """stack_blocks: the network is a BPTT stack with these local blocks (lists of hidden layer names). Unsplit,
    it goes whole onto one PE (BPTT keeps every layer's history where its backward pass runs); split
    (max_atoms_per_core, --pes), its layers are cut into column slices, with the readout on a PE of its own."""
    split_stack = stack_blocks is not None and any(len(p.slices()) > 1 for p in network.populations if p.is_neuron)
    if stack_blocks is not None and not split_stack:
        pops = tuple((p.name, 0, p.size) for p in network.populations if p.model != "input")
        vertices = (Vertex(0, "+".join(name for name, _, _ in pops), 0, 0, 0, pops),)
    elif split_stack:
        vertices = _place_stack(network, machine)
    else:
        vertices = place(network, machine)
    if split_stack:
        keys = allocate_keys(_stack_partitions(network, vertices, stack_blocks))
        flows = _stack_flows(network, vertices, keys, len(vertices), stack_blocks)
    elif network.layered or stack_blocks is not None:
        keys = allocate_keys(_layered_partitions(network, vertices))
        flows = _layered_flows(network, vertices, keys, host=len(vertices))
    else:
        keys = allocate_keys(_partitions(network, vertices))
        flows = _flows(network, vertices, keys, host=len(vertices))
    tables, before, hops = route_flows(flows, chips_of_endpoints(len(vertices), machine), machine.geometry,
                                       machine.router_entries)
    return Mapping(network, machine, vertices, keys, with_detour_chips(tables, machine), before, hops)


def failing_wires(machine: Machine, tables: dict) -> set[frozenset]:
    """The failing wires (each as its two (chip, link) ends) between two chips in use: the others carry
    nothing anyway."""
    g = machine.geometry
    return {frozenset({(chip, link), (g.neighbour(chip, link), opposite(link))})
            for chip, link in machine.failures if chip in tables and g.neighbour(chip, link) in tables}


def with_detour_chips(tables: dict, machine: Machine) -> dict:
    """The chips an emergency detour around a failing wire passes through (router/router.py) need a router
    too, even with an empty table."""
    g = machine.geometry
    vias = {via for wire in failing_wires(machine, tables) for (chip, link) in wire
            if (via := g.neighbour(chip, (link + 1) % N_LINKS)) is not None} - set(tables)
    if not vias:
        return tables
    return dict(sorted({**tables, **{c: MulticastTable((), machine.router_entries) for c in vias}}.items()))


def placement_report(mapping: Mapping, memory: dict[int, int] | None = None) -> list[list[str]]:
    """Rows for a table: PE, population slice, neurons, key range, SRAM."""
    rows = []
    for v in mapping.vertices:
        if v.layers and mapping.network[v.layers[0][0]].is_neuron and mapping.n_pes > 1:
            part = partition_name(v.layers[0][0], "spikes")  # a slice of a split BPTT stack: its first layer's
        elif v.layers:  # a layered PE, or a whole BPTT stack, sends the output layer's values
            part = partition_name(mapping.network.readout.name, "values")
        else:
            part = partition_name(v.population, "spikes" if mapping.network[v.population].is_neuron else "values")
        k, m = mapping.keys.slice_key_mask(part, v.slice_index)
        row = [str(v.pe), v.describe(), str(v.n), f"0x{k:08x}/0x{m:08x}"]
        if memory is not None:
            row.append(f"{memory[v.pe]:,}")
        rows.append(row)
    return rows
