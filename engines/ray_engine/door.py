"""The router's listening socket: the endpoints and neighbouring routers connect their channels to it, and any
other process on the network is dropped at the door without the run noticing."""

from __future__ import annotations

import os
import queue
import selectors
import socket
import struct
import threading
import time
from multiprocessing.connection import Connection, answer_challenge, deliver_challenge

from .protocol import TICK_FORMAT, TICK_SIZE

READ_TIMEOUT = 2.0  # seconds a connection may keep its handshake waiting for its next message
HANDSHAKE_TIMEOUT = 10.0  # seconds for the whole handshake and the first message (a stranger sending byte by byte)


def _io_timeout(sock: socket.socket, seconds: float) -> None:
    """Kernel timeouts on a blocking socket's reads and writes (0: none): a multiprocessing Connection reads its
    descriptor with os.read, which a Python socket timeout would not bound."""
    tv = struct.pack("ll", int(seconds), int(seconds % 1 * 1e6))
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, tv)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, tv)


class Door:
    """A TCP listener for channels. A connection must pass multiprocessing's challenge handshake with the run's
    authkey (both ways, as Listener and Client do) and then send its hello (8 bytes: which channel or link it
    is), each message within READ_TIMEOUT and all within HANDSHAKE_TIMEOUT. Every handshake runs in a thread of
    its own, so a stranger (no authkey, garbage, an oversize length header, silence) holds up nobody: it is
    closed and forgotten, and accept() goes on waiting for the run's own connections."""

    def __init__(self, host: str, backlog: int):
        self.authkey = os.urandom(32)
        self.sock = socket.create_server((host, 0), backlog=backlog)
        self.address = self.sock.getsockname()[:2]
        self.results: queue.SimpleQueue = queue.SimpleQueue()  # (socket, (Connection, hello) or None)
        self.wake, self.waker = socket.socketpair()  # a finished handshake wakes accept()
        self.pending: dict = {}  # socket -> its handshake's deadline (None once cut off)
        self.selector = selectors.DefaultSelector()
        self.selector.register(self.sock, selectors.EVENT_READ)
        self.selector.register(self.wake, selectors.EVENT_READ)

    def accept(self) -> tuple[Connection, int]:
        """The next connection that passed the handshake, and its hello."""
        while True:
            while True:
                try:
                    sock, passed = self.results.get_nowait()
                except queue.Empty:
                    break
                cut = self.pending.pop(sock, None) is None
                sock.close()  # the thread's Connection holds a descriptor of its own
                if passed is not None and cut:
                    passed[0].close()  # passed just as its time ran out: its socket is shut already
                elif passed is not None:
                    return passed
            now = time.monotonic()
            for sock, deadline in self.pending.items():
                if deadline is not None and deadline <= now:
                    self._cut(sock)
                    self.pending[sock] = None
            left = [d - now for d in self.pending.values() if d is not None]
            for key, _ in self.selector.select(max(0.0, min(left)) if left else None):
                if key.fileobj is self.wake:
                    self.wake.recv(4096)
                    continue
                try:
                    sock, _ = self.sock.accept()
                except OSError:  # gone before we took it
                    continue
                self.pending[sock] = time.monotonic() + HANDSHAKE_TIMEOUT
                try:
                    threading.Thread(target=self._handshake, args=(sock,), name="s2emu-handshake", daemon=True).start()
                except RuntimeError:  # no thread to spare (a flood of connections): this one is dropped
                    del self.pending[sock]
                    sock.close()

    def _handshake(self, sock: socket.socket) -> None:
        passed, conn = None, None
        try:
            _io_timeout(sock, READ_TIMEOUT)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # as links.py no_delay, the router's end
            conn = Connection(os.dup(sock.fileno()))
            deliver_challenge(conn, self.authkey)
            answer_challenge(conn, self.authkey)
            (hello,) = struct.unpack(TICK_FORMAT, conn.recv_bytes(TICK_SIZE))
            _io_timeout(sock, 0)  # a channel waits as long as the run needs
            passed = conn, hello
        except Exception:  # noqa: BLE001 - whatever went wrong, it is not one of ours
            if conn is not None:
                conn.close()
        self.results.put((sock, passed))  # from here on, the connection is accept()'s or close()'s to close
        try:
            self.waker.send(b"\0")
        except OSError:  # the door closed meanwhile
            pass

    @staticmethod
    def _cut(sock: socket.socket) -> None:
        """End a handshake from outside: its thread's next read or write fails at once."""
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:  # the peer is gone already
            pass

    def close(self) -> None:
        for sock in self.pending:
            self._cut(sock)
        while True:  # handshakes that ended after the last accept()
            try:
                sock, passed = self.results.get_nowait()
            except queue.Empty:
                break
            if passed is not None:
                passed[0].close()
        for sock in self.pending:
            sock.close()
        self.pending = {}
        self.selector.close()
        for s in (self.sock, self.wake, self.waker):
            s.close()
