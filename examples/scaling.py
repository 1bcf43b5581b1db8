"""A scaling experiment written in Python: the same network split over more and more PEs.

    python examples/scaling.py                 # 1, 2, 4, 8, 16 PEs, local engine
    python examples/scaling.py --small         # 1, 2, 4 PEs on a smaller data set
    python examples/scaling.py --engine ray

Each row trains the network for one epoch with its hidden population cut into P PEs
(`set_max_atoms_per_core`), and records the wall time per tick, the largest PE's SRAM and the chip model's
time per tick. Every split must end with the same state_digest: the split does not change a bit.
(`s2emu scale` does this and weak scaling from the command line.)
"""

import argparse
import math

from s2emu import hardware, snn


def build(train_per_class: int) -> snn.Network:
    data = {"kind": "patterns", "classes": 4, "channels": 20, "steps": 30, "train_per_class": train_per_class,
            "test_per_class": 8, "noise": 1.0, "jitter": 4, "active_fraction": 0.2}
    net = snn.Network("scaling", seed=1, data=data, batch=8)
    inp = snn.Population(20, "input", name="input")
    hidden = snn.Population(48, "alif", name="hidden")
    out = snn.Population(4, "readout", name="out")
    net.add(inp, hidden, out, snn.Projection(inp, hidden, init_scale=3.0), snn.Projection(hidden, hidden),
            snn.Projection(hidden, out), snn.EProp(lr=0.01))
    return net


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--small", action="store_true", help="1, 2, 4 PEs and 8 training samples per class")
    p.add_argument("--engine", choices=["local", "ray"], default="local")
    args = p.parse_args(argv)
    counts = [1, 2, 4] if args.small else [1, 2, 4, 8, 16]
    chip = hardware.SpiNNaker2Chip(engine=args.engine, progress=False)
    print(f"{'PEs':>4} {'ms/tick':>8} {'largest PE (B)':>15} {'chip us/tick':>13} {'accuracy':>9}  digest")
    digests = set()
    for pes in counts:
        net = build(8 if args.small else 32)
        hidden = net["hidden"]
        hidden.set_max_atoms_per_core(math.ceil(hidden.size / pes))
        r = chip.train(net, epochs=1)
        largest = max(pe["bytes"] for pe in r["per_pe"])
        print(f"{pes:>4} {1000 / r['ticks_per_second']:>8.3f} {largest:>15,} "
              f"{r['chip_model']['seconds_per_tick_peak'] * 1e6:>13.1f} {r['accuracy']:>9.3f}  "
              f"{r['state_digest'][:16]}")
        digests.add(r["state_digest"])
    assert len(digests) == 1, "a split changed the result"
    print("every split gave the same state_digest")


if __name__ == "__main__":
    main()
