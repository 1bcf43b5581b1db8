"""What BPTT would need in SRAM for the same network and sequence length (an estimate from a formula: BPTT
does not run on the PEs yet; the e-prop figures next to it come from the PEs' own ledgers).

BPTT keeps, per weight, the weight, Adam m and v and the gradient (4 float32, as e-prop does), and for the
backward pass the history of every step of the sample: each neuron's v, a and z (3 float32; LIF: 2), the
input currents, and each readout's filtered trace. Two figures:
- `dense_bytes`: one copy of every history (a single memory, as on a GPU): the floor;
- `total_bytes` / `per_pe`: split over the same PEs as e-prop, each PE keeping what its own backward pass
  reads: its neurons' states, and the history of every presynaptic source of its synapses (inputs are
  broadcast, so every PE needs them), stored as float32 like the traces.
Unlike e-prop's, both grow linearly with the sequence length T.
"""

from __future__ import annotations

F32 = 4


def bptt_memory(mapping, steps: int) -> dict:
    net = mapping.network
    per_weight = 4 * F32  # W, m, v, gradient
    states = {"alif": 3, "lif": 2, "readout": 1}
    dense_hist = steps * F32 * sum(states.get(p.model, 1) * p.size for p in net.populations)
    dense = dense_hist + net.n_weights * per_weight
    per_pe = []
    for v in mapping.vertices:
        pop = net[v.population]
        n = v.hi - v.lo
        incoming = net.incoming(pop.name)
        params = sum(net[pr.pre].size for pr in incoming) * n * per_weight
        sources = sum(net[pr.pre].size for pr in incoming if pr.pre != pop.name)  # own population counted below
        own = net[pop.name].size if any(pr.pre == pop.name for pr in incoming) else n
        hist = steps * F32 * (states[pop.model] * n + sources + (own if own != n else 0))
        per_pe.append({"pe": v.pe, "population": v.population, "lo": v.lo, "hi": v.hi, "bytes": params + hist,
                       "history_bytes": hist})
    return {"steps": steps, "dense_bytes": dense, "dense_history_bytes": dense_hist,
            "total_bytes": sum(p["bytes"] for p in per_pe), "per_pe": per_pe,
            "history_bytes_per_step": (sum(p["history_bytes"] for p in per_pe)) // steps}
