"""A pausable loopback TCP proxy: :class:`BlackHoleProxy` (standard library).

:class:`~bridge_devtools.broker.cluster.LocalCluster` puts one in front of each node's
inter-broker (``REPLICATION``) listener and advertises the proxy's port, so that a test can cut a
node off from its peers' replication traffic (followers' fetches from it, the transaction
coordinator's marker writes to it) while its client (``PLAINTEXT``) and controller
(``CONTROLLER``) listeners go on working: a node that keeps heartbeating to the KRaft controller
but replicates nothing, which no signal can produce.

Isolated, the proxy is a black hole, not a reset: it reads and writes nothing on the connections
it holds (bytes stay in the kernel's buffers, the peers' requests just hang, nothing is closed)
and it accepts new connections without connecting them anywhere. Restored, it closes every
connection that was open during the isolation (the brokers reconnect at once, instead of waiting
for their request timeouts on a connection whose stale bytes would then arrive) and forwards new
ones again.

One thread per proxy runs a :mod:`selectors` loop over all its connections; the proxy lives
until :meth:`BlackHoleProxy.close`, independently of the broker behind it (a restarted broker is
found again on the same port by the next connection).
"""

from __future__ import annotations

import contextlib
import selectors
import socket
import threading

#: Bytes read from one side before the other side has taken them: reading from a side stops while
#: this much waits to be written (back-pressure: a stalled peer stalls only its own connection).
_BUFFER_BYTES = 1 << 20
#: Bytes read per ``recv`` call.
_CHUNK_BYTES = 1 << 16
#: Seconds an accepted connection waits for the broker's port to accept the forwarded one.
_CONNECT_TIMEOUT_S = 1.0


class _Side:
    """One socket of a forwarded connection and the bytes waiting to be written to it."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        #: Bytes read from the other side, not yet written to this one.
        self.pending = bytearray()
        #: The other side closed its sending half: once ``pending`` is written, shut down ours.
        self.peer_eof = False
        #: This side closed its sending half (``recv`` returned nothing).
        self.eof = False
        self.shut = False


class _Pipe:
    """A client connection and its upstream connection to the broker."""

    def __init__(self, client: socket.socket, upstream: socket.socket) -> None:
        self.client = _Side(client)
        self.upstream = _Side(upstream)
        self.closed = False

    def other(self, side: _Side) -> _Side:
        return self.upstream if side is self.client else self.client


class BlackHoleProxy:
    """Forward ``127.0.0.1:listen_port`` to ``127.0.0.1:target_port``, or (isolated) swallow everything.

    :param listen_port: the port to listen on (``SO_REUSEADDR``, so a port just released by an
        earlier proxy can be bound again).
    :param target_port: the port each accepted connection is forwarded to. A connection that
        cannot be made (the broker is down) closes the client's connection, as the broker's own
        refused connection would.
    :param name: a label for the thread's name.

    The listening socket is bound in the constructor (:class:`OSError` if the port is taken); the
    forwarding thread (a daemon) starts at once. :meth:`isolate` / :meth:`restore` switch modes,
    :meth:`close` stops the thread and closes every socket.
    """

    def __init__(self, listen_port: int, target_port: int, *, name: str = "proxy") -> None:
        self.listen_port = listen_port
        self.target_port = target_port
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            self._listener.bind(("127.0.0.1", listen_port))
            self._listener.listen(128)
        except OSError:
            self._listener.close()
            raise
        self._listener.setblocking(False)
        self._selector = selectors.DefaultSelector()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._lock = threading.Lock()
        self._pipes: set[_Pipe] = set()
        #: Connections accepted while isolated: never connected upstream, closed by :meth:`restore`.
        self._held: list[socket.socket] = []
        self._isolated = False
        self._closing = False
        self._registered: dict[socket.socket, int] = {}
        self._selector.register(self._listener, selectors.EVENT_READ, None)
        self._selector.register(self._wake_r, selectors.EVENT_READ, None)
        self._thread = threading.Thread(target=self._run, name=f"{name}-{listen_port}", daemon=True)
        self._thread.start()

    # -- control (any thread) --------------------------------------------------------------------

    @property
    def isolated(self) -> bool:
        """Whether the proxy is swallowing everything (:meth:`isolate`)."""
        return self._isolated

    @property
    def connections(self) -> int:
        """Connections currently held: forwarded ones plus those accepted while isolated."""
        with self._lock:
            return len(self._pipes) + len(self._held)

    def isolate(self) -> None:
        """Stop forwarding in both directions on every connection; accept new ones, forward nothing.

        Nothing is closed or reset: the peers see requests that never get an answer.
        """
        self._command(isolated=True)

    def restore(self) -> None:
        """Close every connection opened before or during the isolation, forward new ones again.

        No-op when not isolated.
        """
        self._command(isolated=False)

    def close(self) -> None:
        """Stop the thread (within ≈ 1 s) and close the listener and every connection. Idempotent."""
        with self._lock:
            if self._closing:
                return
            self._closing = True
        self._wake()
        self._thread.join(timeout=5.0)

    def _command(self, *, isolated: bool) -> None:
        with self._lock:
            if self._closing:
                raise RuntimeError(f"proxy on port {self.listen_port} is closed")
            changed = self._isolated != isolated
            self._isolated = isolated
            if changed and not isolated:
                self._drop_all_locked()
        self._wake()

    def _wake(self) -> None:
        with contextlib.suppress(OSError):
            self._wake_w.send(b"x")

    # -- the loop (the proxy's thread) -------------------------------------------------------------

    def _run(self) -> None:
        try:
            while True:
                with self._lock:
                    if self._closing:
                        break
                    self._update_interest_locked()
                for key, events in self._selector.select(timeout=1.0):
                    sock = key.fileobj
                    if sock is self._wake_r:
                        with contextlib.suppress(OSError):
                            self._wake_r.recv(4096)
                    elif sock is self._listener:
                        self._accept()
                    else:
                        with self._lock:
                            pipe: _Pipe = key.data
                            if not pipe.closed and not self._isolated:
                                self._pump(pipe, sock, events)  # type: ignore[arg-type]
        finally:
            with self._lock:
                self._drop_all_locked()
            for s in (self._listener, self._wake_r, self._wake_w):
                s.close()
            self._selector.close()

    def _accept(self) -> None:
        try:
            client, _ = self._listener.accept()
        except (BlockingIOError, InterruptedError):
            return
        with self._lock:
            if self._isolated:
                self._held.append(client)
                return
        try:
            upstream = socket.create_connection(("127.0.0.1", self.target_port), timeout=_CONNECT_TIMEOUT_S)
        except OSError:
            client.close()
            return
        for s in (client, upstream):
            s.setblocking(False)
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        with self._lock:
            if self._isolated:  # isolated while connecting: hold it like any other
                self._held.append(client)
                upstream.close()
                return
            self._pipes.add(_Pipe(client, upstream))

    def _pump(self, pipe: _Pipe, sock: socket.socket, events: int) -> None:
        side = pipe.client if sock is pipe.client.sock else pipe.upstream
        other = pipe.other(side)
        try:
            if events & selectors.EVENT_WRITE and side.pending:
                sent = side.sock.send(side.pending)
                del side.pending[:sent]
            if events & selectors.EVENT_READ and not side.eof:
                data = side.sock.recv(_CHUNK_BYTES)
                if data:
                    other.pending += data
                else:
                    side.eof = True
                    other.peer_eof = True
            for s in (pipe.client, pipe.upstream):
                if s.peer_eof and not s.pending and not s.shut:
                    s.sock.shutdown(socket.SHUT_WR)
                    s.shut = True
        except (BlockingIOError, InterruptedError):
            return
        except OSError:  # reset, broken pipe: close both ends, as the peer's own failure would
            self._close_pipe_locked(pipe)
            return
        if pipe.client.shut and pipe.upstream.shut:
            self._close_pipe_locked(pipe)

    def _update_interest_locked(self) -> None:
        """Register each socket for what it can do now (nothing at all while isolated)."""
        want: dict[socket.socket, tuple[int, _Pipe]] = {}
        if not self._isolated:
            for pipe in self._pipes:
                for side in (pipe.client, pipe.upstream):
                    mask = 0
                    if not side.eof and len(pipe.other(side).pending) < _BUFFER_BYTES:
                        mask |= selectors.EVENT_READ
                    if side.pending:
                        mask |= selectors.EVENT_WRITE
                    if mask:
                        want[side.sock] = (mask, pipe)
        for sock in [s for s in self._registered if s not in want]:
            with contextlib.suppress(KeyError, ValueError, OSError):
                self._selector.unregister(sock)
            del self._registered[sock]
        for sock, (mask, pipe) in want.items():
            if self._registered.get(sock) == mask:
                continue
            if sock in self._registered:
                self._selector.modify(sock, mask, pipe)
            else:
                self._selector.register(sock, mask, pipe)
            self._registered[sock] = mask

    def _close_pipe_locked(self, pipe: _Pipe) -> None:
        pipe.closed = True
        self._pipes.discard(pipe)
        for side in (pipe.client, pipe.upstream):
            if side.sock in self._registered:
                with contextlib.suppress(KeyError, ValueError, OSError):
                    self._selector.unregister(side.sock)
                del self._registered[side.sock]
            side.sock.close()

    def _drop_all_locked(self) -> None:
        for pipe in list(self._pipes):
            self._close_pipe_locked(pipe)
        for sock in self._held:
            sock.close()
        self._held.clear()

    def __repr__(self) -> str:
        return (
            f"BlackHoleProxy(127.0.0.1:{self.listen_port} -> :{self.target_port}, "
            f"isolated={self._isolated}, connections={self.connections})"
        )
