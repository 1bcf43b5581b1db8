"""The hop exchange between neighbouring chips' router actors, one channel per link."""

from __future__ import annotations

import queue
import selectors
import socket
import threading


class LinkDown(Exception):
    """A link's channel failed during the hop exchange: `link`, and the error that said so."""

    def __init__(self, link: int, error: BaseException):
        super().__init__(link, error)
        self.link, self.error = link, error


DIRECT_BYTES = 16 * 1024  # a link message up to this size the router sends itself (LinkExchange)
LINK_BUFFER_BYTES = 4 * DIRECT_BYTES  # each way, per link socket (link_buffers)


def link_buffers(conn, size: int = LINK_BUFFER_BYTES):
    """Give a link channel's socket fixed buffers of `size` bytes each way (the kernel doubles them), so that
    two DIRECT_BYTES messages always fit, whatever the kernel's defaults or memory pressure would give; and
    no Nagle delay (no_delay)."""
    with socket.fromfd(conn.fileno(), socket.AF_INET, socket.SOCK_STREAM) as sock:  # a duplicate descriptor
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, size)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, size)
    return no_delay(conn)


def no_delay(conn):
    """TCP_NODELAY on a channel's socket: each message leaves at once. With Nagle's algorithm a message waits
    while the previous one is unacknowledged, and the ack comes with the peer's next message, so every hop
    round of a tick (and every tick's exchange) would take a round trip between nodes instead of one way:
    twice the latency, invisible on loopback, 2 x 2 ms per hop round at 2 ms between nodes."""
    with socket.fromfd(conn.fileno(), socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return conn


class LinkExchange:
    """One router's side of the hop exchange with its neighbouring routers, over one channel per link
    (multiprocessing Connections): each hop, every link gets one message and brings one. A router sends all
    its messages of a hop, then receives in the order they arrive: no router waits for a neighbour to reach
    their wire in some global order (which chains a hop round across the mesh, chip after chip).

    Why no cycle of routers can block each other: a router is at most one hop ahead of a neighbour (it cannot
    finish a hop without the neighbour's message of that hop), so at most two of its messages wait unread in
    a wire, and two of DIRECT_BYTES fit the link sockets' buffers (link_buffers): the router sends such a
    message itself, at once, without waiting. A larger one leaves from a thread of its own (as do those after
    it on the same wire, to keep their order), while the router reads whatever arrives: a send then waits
    only for a neighbour that is reading (tests/test_mesh.py runs megabytes over a mesh with these buffers)."""

    def __init__(self, links: dict):
        self.links = dict(links)
        self.wires = sorted(self.links)  # what a hop brought is handed back in this order
        self.selector = selectors.DefaultSelector()
        self.queue: queue.SimpleQueue = queue.SimpleQueue()
        self.queued = dict.fromkeys(self.wires, 0)  # messages handed to the thread and not yet sent, per link
        self.lock = threading.Lock()
        self.error: tuple[int, BaseException] | None = None  # the first failed send's (link, error)
        self.closing = False
        self.thread = threading.Thread(target=self._send_all, name="s2emu-link-sender", daemon=True)
        self.thread.start()

    def hop(self, outgoing: dict) -> list:
        """Send each link its message (bytes; every link gets one) and return [(link, bytes)] of what every
        link brought, in link order. Raises LinkDown if a channel fails."""
        for link in self.wires:
            data = outgoing[link]
            with self.lock:
                direct = len(data) <= DIRECT_BYTES and not self.queued[link]
                if not direct:
                    self.queued[link] += 1
            if direct:
                try:
                    self.links[link].send_bytes(data)
                except OSError as exc:
                    raise LinkDown(link, exc) from None
            else:
                self.queue.put((link, data))
        for link in self.wires:  # watched until its message is in: a next hop's waits in the socket meanwhile
            self.selector.register(self.links[link], selectors.EVENT_READ, link)
        got = {}
        try:
            while len(got) < len(self.wires):
                for key, _ in self.selector.select():
                    try:
                        got[key.data] = key.fileobj.recv_bytes()
                    except (EOFError, OSError) as exc:
                        raise LinkDown(key.data, exc) from None
                    self.selector.unregister(key.fileobj)
        finally:  # on a failure, the links still watched
            for key in list(self.selector.get_map().values()):
                self.selector.unregister(key.fileobj)
        if self.error is not None:
            raise LinkDown(*self.error)
        return [(link, got[link]) for link in self.wires]

    def _send_all(self) -> None:
        while (item := self.queue.get()) is not None:
            link, data = item
            if self.error is None and not self.closing:
                try:
                    self.links[link].send_bytes(data)
                except Exception as exc:  # noqa: BLE001 - a closed channel fails in more ways than OSError
                    self.error = (link, exc)
            with self.lock:
                self.queued[link] -= 1

    def close(self) -> None:
        """Stop the sender: the channels are shut down first, so that a send blocked on a dead neighbour
        returns; the caller closes them."""
        self.closing = True
        for c in self.links.values():
            try:
                sock = socket.fromfd(c.fileno(), socket.AF_INET, socket.SOCK_STREAM)
            except (OSError, ValueError):  # closed already
                continue
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            sock.close()  # the duplicate descriptor only
        self.queue.put(None)
        self.thread.join(timeout=5)
        self.selector.close()
