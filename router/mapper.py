"""The mapper: network -> placement on PEs -> key allocation -> routing table. One small stage per job,
as in PACMAN (partition, place, allocate keys, route, compress), each with a report.

Endpoints of the chip router: PEs 0..P-1 and the host as endpoint P (as if reached through the
Ethernet-attached monitor processor of chip 0).
"""

from __future__ import annotations

from dataclasses import dataclass

from s2emu.errors import MachineError
from s2emu.machine import Machine
from s2emu.network import Network

from .keys import KeyAllocation, allocate_keys
from .table import Entry, MulticastTable, build_table, route_for


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
    table: MulticastTable
    entries_before_merge: int

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
            "table": {"entries": len(self.table), "entries_before_merge": self.entries_before_merge,
                      "capacity": self.machine.router_entries,
                      "rows": [{"key": f"0x{e.key:08x}", "mask": f"0x{e.mask:08x}", "route": e.route}
                               for e in self.table.entries]},
        }


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
    if len(vertices) > machine.pes_per_chip:
        raise MachineError(
            f"the network needs {len(vertices)} PEs but a chip of machine '{machine.name}' has "
            f"{machine.pes_per_chip}; raise max_atoms_per_core (or lower --pes), or use a bigger "
            f"pes_per_chip (placement across chips is not supported yet)")
    return tuple(vertices)


def _place_layered(network: Network, machine: Machine) -> tuple[Vertex, ...]:
    """P PEs, P the most slices any layer asks for (max_atoms_per_core; --pes N sets it); every layer is cut
    into P near-equal column slices and PE p holds slice p of each (so every PE takes part in every layer)."""
    return _place_columns([p for p in network.populations if p.is_layer], machine)


def _place_columns(layers, machine: Machine, extra: int = 0) -> tuple[Vertex, ...]:
    n_pes = max(len(p.slices()) for p in layers)
    if n_pes + extra > machine.pes_per_chip:
        raise MachineError(f"the network needs {n_pes + extra} PEs but a chip of machine '{machine.name}' has "
                           f"{machine.pes_per_chip}")
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


def _stack_entries(network: Network, vertices, keys: KeyAllocation, host: int, blocks) -> list[Entry]:
    hidden = [v.pe for v in vertices[:-1]]
    ro = vertices[-1].pe
    P = len(hidden)
    tops = {b[-1] for b in blocks}
    entries = [Entry(*keys.slice_key_mask(partition_name(network.input.name, "values"), 0), route_for(endpoints=hidden))]
    for name, rows in _stack_layers(network, blocks):
        to = hidden + ([ro] if name in tops else [])
        entries += [Entry(*keys.slice_key_mask(partition_name(name, "spikes"), p), route_for(endpoints=to))
                    for p in range(P)]
        if rows:  # PE p hands its partial sums to PE p + 1; the last one's go to all
            entries += [Entry(*keys.slice_key_mask(partition_name(name, "chain"), p),
                              route_for(endpoints=[p + 1] if p + 1 < P else hidden)) for p in range(P)]
        if name in tops:  # each slice's errors to the PE that holds it
            entries += [Entry(*keys.slice_key_mask(partition_name(name, "errors"), p), route_for(endpoints=[p]))
                        for p in range(P)]
    entries.append(Entry(*keys.slice_key_mask(partition_name(network.readout.name, "values"), 0),
                         route_for(endpoints=[host])))
    return entries


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


def _layered_entries(network: Network, vertices, keys: KeyAllocation, host: int) -> list[Entry]:
    every = [v.pe for v in vertices]
    n = len(vertices)
    entries = [Entry(*keys.slice_key_mask(partition_name(network.input.name, "values"), 0), route_for(endpoints=every))]
    entries += [Entry(*keys.slice_key_mask(partition_name(network.readout.name, "values"), p), route_for(endpoints=[host]))
                for p in range(n)]
    if n > 1:
        for pop in (p for p in network.populations if p.is_layer):
            for what in ("acts", "counts"):
                entries += [Entry(*keys.slice_key_mask(partition_name(pop.name, what), p), route_for(endpoints=every))
                            for p in range(n)]
        for pr in network.projections[1:]:  # PE p hands its partial sums to PE p + 1; the last one's go to all
            entries += [Entry(*keys.slice_key_mask(partition_name(pr.pre, "chain"), p),
                              route_for(endpoints=[p + 1] if p + 1 < n else every)) for p in range(n)]
    return entries


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


def _entries(network: Network, vertices, keys: KeyAllocation, host: int) -> list[Entry]:
    by_pop = {}
    for v in vertices:
        by_pop.setdefault(v.population, []).append(v)
    entries = []
    for pop in network.populations:
        # where this population's packets must go: every PE of every population it projects to
        targets = sorted({v.pe for pr in network.projections if pr.pre == pop.name
                          for v in vertices if v.holds(pr.post)})
        if pop.model == "input":
            k, m = keys.slice_key_mask(partition_name(pop.name, "values"), 0)
            entries.append(Entry(k, m, route_for(endpoints=targets)))
        elif pop.model == "readout":
            k, m = keys.slice_key_mask(partition_name(pop.name, "values"), 0)
            entries.append(Entry(k, m, route_for(endpoints=[host])))
        else:
            for v in by_pop[pop.name]:
                k, m = keys.slice_key_mask(partition_name(pop.name, "spikes"), v.slice_index)
                entries.append(Entry(k, m, route_for(endpoints=targets)))
                # the learning signal for this slice goes only to the PE that holds it
                k, m = keys.slice_key_mask(partition_name(pop.name, "errors"), v.slice_index)
                entries.append(Entry(k, m, route_for(endpoints=[v.pe])))
    return entries


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
        entries = _stack_entries(network, vertices, keys, len(vertices), stack_blocks)
    elif network.layered or stack_blocks is not None:
        keys = allocate_keys(_layered_partitions(network, vertices))
        entries = _layered_entries(network, vertices, keys, host=len(vertices))
    else:
        keys = allocate_keys(_partitions(network, vertices))
        entries = _entries(network, vertices, keys, host=len(vertices))
    table = build_table(entries, capacity=machine.router_entries)
    return Mapping(network, machine, vertices, keys, table, len(entries))


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
