"""Import a NIR file written by another framework and run it on the ray engine (one process per PE).

    python examples/nir_on_ray.py MODEL.nir --integrator euler   # a file of yours (snnTorch, Norse: euler)
    python examples/nir_on_ray.py                                # the file snnTorch exported for the tests
    python examples/nir_on_ray.py --small --engine local

Without a file, it runs tests/data/snntorch_rleaky.nir, which snnTorch 1.0 exported (8 inputs -> RLeaky 16
-> Leaky 3; tests/data/make_snntorch_nir.py), or, outside a clone of the repository, a graph it writes with
the `nir` package in the shape snnTorch gives a recurrent layer (a subgraph input -> lif -> w_rec -> lif ->
output; dt 1e-4 s, tau = dt / (1 - beta), r = tau / dt). Needs pip install 's2emu[nir]'.
"""

import argparse
import warnings
from pathlib import Path

import numpy as np

from s2emu import hardware
from s2emu import nir as s2nir


def write_snntorch_style_graph(path: Path, n_in=12, n_hidden=24, n_out=4, beta=0.9, dt=1e-4, seed=0) -> Path:
    import nir

    rng = np.random.default_rng(seed)
    tau = dt / (1 - beta)

    def leaky(n, threshold=1.0):
        return nir.LIF(tau=np.full(n, tau), r=np.full(n, tau / dt), v_leak=np.zeros(n),
                       v_threshold=np.full(n, threshold))

    w_rec = rng.normal(0, 0.3, (n_hidden, n_hidden))
    rleaky = nir.NIRGraph(nodes={"input": nir.Input(input_type={"input": np.array([n_hidden])}),
                                 "lif": leaky(n_hidden), "w_rec": nir.Linear(weight=w_rec),
                                 "output": nir.Output(output_type={"output": np.array([n_hidden])})},
                          edges=[("input", "lif"), ("lif", "w_rec"), ("w_rec", "lif"), ("lif", "output")])
    graph = nir.NIRGraph(
        nodes={"input": nir.Input(input_type={"input": np.array([n_in])}),
               "fc1": nir.Linear(weight=rng.normal(0, 0.6, (n_hidden, n_in))),
               "lif1": rleaky,
               "fc2": nir.Linear(weight=rng.normal(0, 0.5, (n_out, n_hidden))),
               "lif2": leaky(n_out),
               "output": nir.Output(output_type={"output": np.array([n_out])})},
        edges=[("input", "fc1"), ("fc1", "lif1"), ("lif1", "fc2"), ("fc2", "lif2"), ("lif2", "output")])
    nir.write(path, graph)
    return path


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("file", nargs="?", help="a .nir file (default: write a small snnTorch-style one)")
    p.add_argument("--dt", type=float, default=1e-4, help="seconds per step (snnTorch exports with 1e-4)")
    p.add_argument("--integrator", choices=["exp", "euler"], default="euler")
    p.add_argument("--engine", choices=["local", "ray"], default="ray")
    p.add_argument("--small", action="store_true", help="30 steps instead of 200")
    args = p.parse_args(argv)
    shipped = Path(__file__).resolve().parent.parent / "tests" / "data" / "snntorch_rleaky.nir"
    path = Path(args.file) if args.file else shipped if shipped.is_file() else \
        write_snntorch_style_graph(Path("snntorch_style.nir"))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", s2nir.NIRApproximationWarning)
        net = s2nir.from_nir(path, dt=args.dt, integrator=args.integrator)
    for w in caught:
        print(f"approximated: {w.message}")
    print(net, [f"{pop.name} ({pop.model}, {pop.size})" for pop in net.populations])
    steps = 30 if args.small else 200
    rng = np.random.default_rng(1)
    spikes = (rng.random((steps, net.input.size)) < 0.3).astype(np.float32)  # random input spike trains
    hidden = [pop for pop in net.populations if pop.model == "lif"]
    hidden[0].set_max_atoms_per_core(max(1, hidden[0].size // 2))  # spread the first layer over two PEs
    result = hardware.SpiNNaker2Chip(engine=args.engine, progress=False).run(net, steps, inputs=spikes)
    for pop in net.outputs:
        counts = {j: len(t) for j, t in pop.get_spikes().items()}
        print(f"output '{pop.name}': spike counts {counts}")
    print(f"{result['pes']} PEs on the {result['engine']} engine, {result['ticks']} ticks, "
          f"state_digest {result['state_digest'][:16]}")


if __name__ == "__main__":
    main()
