"""Every kind of PE by the role a build gives it (s2emu/build.py), and make_pe, which makes one.

A module of its own because it imports every kind of PE and none of them may import it back: they share
only their base, cores/pe.py.
"""

from __future__ import annotations

from .bptt_pe import BpttPE, BpttReadoutPE, BpttSlicePE
from .eprop_pe import NeuronPE, ReadoutPE
from .kernels import warm_kernels
from .mlp import LayeredPE
from .pe import ProcessingElement

# the roles whose PE takes nothing but its configuration (a neuron PE may also take a group's backing)
_PLAIN = {"readout": ReadoutPE, "bptt": BpttPE, "bptt_slice": BpttSlicePE, "bptt_readout": BpttReadoutPE}


def make_pe(config: dict, backing=None) -> ProcessingElement:
    """The PE of a configuration. backing: where a neuron PE's arrays live (cores/group.py); other PEs keep
    their own."""
    role = config["role"]
    if role == "layered":
        return LayeredPE(config)
    if config["learning"]["rule"] != "none":  # every other learning PE runs the kernels: load (or compile) them
        warm_kernels()  # now, not in a tick; an inferring one sums in numpy and its process never loads numba
    if role == "neuron":
        return NeuronPE(config, backing)
    return _PLAIN[role](config)
