"""The keyword network of recipes/eprop_kws.toml, written in Python, trained with e-prop.

    python examples/keyword_spotting.py                 # the recipe's full run (minutes, local)
    python examples/keyword_spotting.py --small         # 64 clips of the small bundled corpus, 1 epoch
    python examples/keyword_spotting.py --small --engine ray

80 log-mel inputs -> 120 ALIF neurons (recurrent, 10 per PE: 12 PEs) -> 12 leaky readouts, symmetric e-prop
with Adam, on the recipe's corpus: four speech synthesizers, made on first use and cached, with one augmented
copy of every training clip. The network is the recipe's to the bit: the same Recipe, so the same
state_digest as `s2emu run recipes/eprop_kws.toml` (tests/test_api.py checks it).
"""

import argparse
from pathlib import Path

from s2emu import hardware, snn

ROOT = Path(__file__).resolve().parent.parent


BUNDLED = ROOT / "data" / "kws_synth.tar.xz"  # espeak-ng only, 1,586 clips: quick runs and tests


def keyword_network(corpus=None, max_train: int = 0, max_test: int = 0) -> snn.Network:
    """corpus: a folder or archive, or None for the recipe's: synthesized by four engines on first use."""
    data = {"kind": "speech_commands", "path": str(corpus or ""),
            # log-mel features as SCIENCE.md: 40 bands, 30 ms window, 10 ms hop, 20-4000 Hz, deltas -> 80 x 100
            "n_mels": 40, "n_fft": 480, "hop": 161, "fmin": 20.0, "fmax": 4000.0, "deltas": True,
            "max_train": max_train, "max_test": max_test, "augment_copies": 1}
    if corpus is None:  # as s2emu synth --engines espeak-ng,flite,festival,pico, each engine ~2,000 clips
        data["synth"] = {"engines": ["espeak-ng", "flite", "festival", "pico"],
                         "repeats": {"espeak-ng": 2, "flite": 60, "festival": 120, "pico": 120},
                         "unknown_per_voice": {"espeak-ng": 6, "flite": 180, "festival": 360, "pico": 360}}
    net = snn.Network("eprop_kws", seed=1, epochs=3, batch=32, data=data, machine={"preset": "spinnaker2"},
                      model=str(ROOT / "models" / "eprop_kws.npz"),
                      description="12-class keyword spotting, 80 -> 120 ALIF (12 PEs) -> 12 readouts, "
                                  "symmetric e-prop, Adam")
    inp = snn.Population(80, "input", name="input")
    hidden = snn.Population(120, "alif", {"tau_m": 5.0, "tau_a": 150.0, "v_th": 1.6, "beta": 0.184}, name="hidden")
    hidden.set_max_atoms_per_core(10)  # 12 PEs, as the paper's 12 cores
    out = snn.Population(12, "readout", {"tau_out": 10.0}, name="out")
    net.add(inp, hidden, out,
            snn.Projection(inp, hidden, init_scale=1.0),
            snn.Projection(hidden, hidden, init_scale=1.0),
            snn.Projection(hidden, out, init_scale=1.0),
            snn.EProp(feedback="symmetric", signal="end_of_sample", surrogate="multi_gaussian",
                      eligibility_layout="per_synapse", lr=0.01, lr_decay=0.3, lr_decay_every=2, l2=1e-5))
    return net


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--small", action="store_true", help="64 training and 32 test clips, one epoch")
    p.add_argument("--engine", choices=["local", "ray"], default="local")
    args = p.parse_args(argv)
    net = keyword_network(BUNDLED, max_train=64, max_test=32) if args.small else keyword_network()
    chip = hardware.SpiNNaker2Chip(engine=args.engine)
    result = chip.train(net, epochs=1 if args.small else None)
    print(f"accuracy {result['accuracy']:.3f} (balanced {result['balanced_accuracy']:.3f}, chance "
          f"{result['chance']:.3f}) on {result['n_test']} held-out clips, {result['pes']} PEs, "
          f"{result['ticks']:,} ticks in {result['wall_seconds']:.1f} s")
    print(f"state_digest {result['state_digest']}")
    print(f"hidden neuron 0 spiked at ticks {net['hidden'].get_spikes(sample=0)[0][:10]} ... of the first sample")


if __name__ == "__main__":
    main()
