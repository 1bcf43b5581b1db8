"""The host endpoint a configuration asks for: a Host streaming a data set (host/base.py), or a StreamHost
streaming audio (host/stream.py, kind = 'stream').

A module of its own because it imports both kinds of host and neither may import it back: the streaming host
is a Host, so both import host/base.py, and only this factory sees both.
"""

from __future__ import annotations

from .base import Host
from .stream import StreamHost


def make_host(config: dict) -> Host:
    """The host endpoint a configuration asks for: a data-set host, or a streaming one (kind = 'stream')."""
    if config.get("kind") == "stream":
        return StreamHost(config)
    return Host(config)
