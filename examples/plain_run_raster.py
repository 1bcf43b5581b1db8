"""A plain run of a small network, py-spinnaker2 style, and its spike raster.

    python examples/plain_run_raster.py                  # writes runs/examples/raster.png (with matplotlib)
    python examples/plain_run_raster.py --small --out -  # fewer ticks, no figure

An input of spike times (py-spinnaker2's "spike_list") drives 30 LIF neurons through an explicit connection
list [pre, post, weight, delay]; the neurons are recurrent and read out by 3 leaky readouts. No learning:
the chip runs the network for `timesteps` ticks and the populations hand back what they recorded.
"""

import argparse
from pathlib import Path

import numpy as np

from s2emu import hardware, snn


def build(timesteps: int, seed: int = 0) -> snn.Network:
    rng = np.random.default_rng(seed)
    spike_times = {i: sorted(rng.choice(timesteps, size=4, replace=False).tolist()) for i in range(10)}
    stim = snn.Population(10, "spike_list", params=spike_times, name="stim")
    neurons = snn.Population(30, "lif", params={"tau_m": 8.0, "v_th": 0.6}, name="neurons", record=("spikes", "v"))
    neurons.set_max_atoms_per_core(10)  # three PEs
    readout = snn.Population(3, "readout", name="readout")
    # each input neuron excites three neurons, one tick after it spikes
    conns = [[i, 3 * i + k, 6.0, 1] for i in range(10) for k in range(3)]
    net = snn.Network("raster", seed=seed)
    net.add(stim, neurons, readout,
            snn.Projection(stim, neurons, conns),
            snn.Projection(neurons, neurons, init_scale=2.0),  # recurrent, drawn from the seed
            snn.Projection(neurons, readout))
    return net


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--small", action="store_true", help="20 ticks instead of 100")
    p.add_argument("--engine", choices=["local", "ray"], default="local")
    p.add_argument("--out", default="runs/examples/raster.png", help="the figure ('-': none)")
    args = p.parse_args(argv)
    timesteps = 20 if args.small else 100
    net = build(timesteps)
    result = hardware.SpiNNaker2Chip(engine=args.engine, progress=False).run(net, timesteps)
    spikes = net["neurons"].get_spikes()  # {neuron: [ticks]}
    stim = net["stim"].get_spikes()
    n = sum(len(t) for t in spikes.values())
    print(f"{n} spikes from {sum(bool(t) for t in spikes.values())} of 30 neurons in {result['ticks']} ticks "
          f"on {result['pes']} PEs ({result['engine']} engine); state_digest {result['state_digest'][:16]}")
    v = net["neurons"].get_voltages()[0]
    print(f"neuron 0: spikes at {spikes[0]}, v at its first steps {np.round(v[:8], 3).tolist()}")
    if args.out == "-":
        return
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("no figure: matplotlib is not installed (pip install -e '.[plots]')")
        return
    fig, (a, b) = plt.subplots(2, 1, figsize=(8, 5), sharex=True, gridspec_kw={"height_ratios": [1, 3]})
    for j, ticks in stim.items():
        a.plot(ticks, [j] * len(ticks), "|", color="tab:orange")
    for j, ticks in spikes.items():
        b.plot(ticks, [j] * len(ticks), "|", color="black")
    a.set_ylabel("input")
    b.set_ylabel("LIF neuron")
    b.set_xlabel("tick")
    fig.suptitle("s2emu: spike raster of a plain run")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=120)
    print(f"raster: {args.out}")


if __name__ == "__main__":
    main()
