"""s2emu: an actor-based emulator of the SpiNNaker 2 chip for studying on-chip learning."""

__version__ = "0.1.0"
