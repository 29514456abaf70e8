"""Free loopback ports and a readiness probe speaking the Kafka wire protocol (standard library).

ApiVersions (key 18) then Metadata v4 (key 3), request header v1, response header v0:
https://kafka.apache.org/protocol.html (Kafka 4.0 removed Metadata v0-v3, KIP-896).
"""

from __future__ import annotations

import socket
import struct
from typing import NamedTuple

# --------------------------------------------------------------------------
# Ports and the stdlib readiness probe
# --------------------------------------------------------------------------


def free_ports(n: int, host: str = "127.0.0.1") -> list[int]:
    """*n* distinct TCP ports on *host* that were free a moment ago (all bound at once)."""
    socks = [socket.socket(socket.AF_INET, socket.SOCK_STREAM) for _ in range(n)]
    try:
        for s in socks:
            s.bind((host, 0))
        return [int(s.getsockname()[1]) for s in socks]
    finally:
        for s in socks:
            s.close()


def free_port(host: str = "127.0.0.1") -> int:
    """Return a TCP port on *host* that was free a moment ago (bind to port 0)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        port: int = s.getsockname()[1]
        return port


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise ConnectionError("connection closed by broker")
        buf += chunk
    return bytes(buf)


def _request(sock: socket.socket, api_key: int, api_version: int, corr: int, body: bytes) -> bytes:
    """Send one request (header v1) and return the response body (after header v0)."""
    client_id = b"bridge-devtools-probe"
    msg = struct.pack(">hhih", api_key, api_version, corr, len(client_id)) + client_id + body
    sock.sendall(struct.pack(">i", len(msg)) + msg)
    (size,) = struct.unpack(">i", _recv_exact(sock, 4))
    resp = _recv_exact(sock, size)
    (rcorr,) = struct.unpack_from(">i", resp, 0)
    if rcorr != corr:
        raise ConnectionError(f"correlation id mismatch: sent {corr}, got {rcorr}")
    return resp[4:]


def _read_str(buf: bytes, off: int) -> tuple[str | None, int]:
    (n,) = struct.unpack_from(">h", buf, off)
    off += 2
    if n < 0:
        return None, off
    return buf[off : off + n].decode(), off + n


class ProbeResult(NamedTuple):
    """What :func:`probe` learned from a broker."""

    #: ``cluster.id`` from the Metadata response (``None`` if Metadata v4 is unsupported).
    cluster_id: str | None
    #: ``(node_id, host, port)`` of every live broker in the Metadata response.
    brokers: list[tuple[int, str, int]]


def probe(host: str, port: int, timeout_s: float = 2.0) -> ProbeResult | None:
    """Ask the broker at *host*:*port* for ApiVersions v0, then Metadata v4 with no topics.

    Pure-stdlib implementation of the two requests, used to decide that a
    freshly started broker is serving clients.

    :param timeout_s: socket timeout for connect and each read, in seconds.
    :returns: the cluster id and brokers from the Metadata response
        (``ProbeResult(None, [])`` if the broker answered ApiVersions but does
        not support Metadata v4), or ``None`` if it is not reachable/answering.
    """
    try:
        with socket.create_connection((host, port), timeout=timeout_s) as sock:
            body = _request(sock, 18, 0, 1, b"")
            (err, n) = struct.unpack_from(">hi", body, 0)
            if err != 0:
                return None
            ranges = {}
            for i in range(n):
                k, lo, hi = struct.unpack_from(">hhh", body, 6 + 6 * i)
                ranges[k] = (lo, hi)
            lo, hi = ranges.get(3, (-1, -1))
            if not lo <= 4 <= hi:
                return ProbeResult(None, [])
            # Metadata v4: topics = [] (no topics), allow_auto_topic_creation = false.
            body = _request(sock, 3, 4, 2, struct.pack(">ib", 0, 0))
            off = 4  # throttle_time_ms
            (nb,) = struct.unpack_from(">i", body, off)
            off += 4
            brokers = []
            for _ in range(nb):
                (node_id,) = struct.unpack_from(">i", body, off)
                bhost, off = _read_str(body, off + 4)
                (bport,) = struct.unpack_from(">i", body, off)
                _rack, off = _read_str(body, off + 4)
                brokers.append((node_id, bhost or "", bport))
            cluster_id, off = _read_str(body, off)
            return ProbeResult(cluster_id, brokers)
    except (OSError, struct.error, UnicodeDecodeError):
        return None
