"""The one family of errors s2emu raises for bad input; the CLI prints them as one line."""


class S2EmuError(Exception):
    """Base of every error caused by the user's input (recipe, data, machine size, packets)."""


class RecipeError(S2EmuError):
    """A recipe key is unknown, has the wrong type or an impossible value."""


class MachineError(S2EmuError):
    """The machine description is impossible, or the network does not fit on it."""


class SramOverflowError(MachineError):
    """A PE's arrays do not fit in its SRAM budget."""


class PacketError(S2EmuError):
    """A packet batch is malformed (decoder) or cannot be routed."""


class RoutingError(S2EmuError):
    """A routing table is over capacity, or packets were dropped for want of a route."""
