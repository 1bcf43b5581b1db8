"""The one family of errors s2emu raises for bad input; the CLI prints them as one line."""

import operator


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


class ActorDiedError(S2EmuError):
    """A process of a Ray emulation died (killed, out of memory, node lost): the ray engine can restart the
    emulation from its last checkpoint (--max-restarts)."""


class PlacementError(S2EmuError):
    """The Ray cluster cannot place the emulation's chips (after a node was lost, the nodes left are too few or
    have no CPU to give a chip's bundle): no restart helps; the message says what the cluster has."""


class OutputError(S2EmuError):
    """A run finished, but not all of its outputs could be written where asked (they went elsewhere: the
    message says where). `result` is the run's result: the CLI still prints it (--json)."""

    def __init__(self, message: str, result: dict):
        super().__init__(message)
        self.result = result


class RoutingError(S2EmuError):
    """A routing table is over capacity, or packets were dropped for want of a route."""


def checked_int(value, what: str, lo: int | None = None, hi: int | None = None, *, error=S2EmuError) -> int:
    """A Python int in [lo, hi] (either bound optional), or `error` naming `what`.

    bool is refused: it is an int subclass, but never meant as a count, key or id.
    """
    if isinstance(value, bool) or type(value).__name__ == "bool_":
        raise error(f"{what} must be an int, got bool")
    try:
        value = operator.index(value)
    except TypeError:
        raise error(f"{what} must be an int, got {type(value).__name__}") from None
    if (lo is not None and value < lo) or (hi is not None and value > hi):
        raise error(f"{what} = {value} is out of range [{lo}, {'...' if hi is None else hi}]")
    return value
