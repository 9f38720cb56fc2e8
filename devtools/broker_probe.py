"""Is the embedded broker up? A free loopback port, and a probe over the Kafka protocol.

:class:`devtools.broker.EmbeddedBroker` polls :func:`probe_kafka` after
starting Tansu: a listening socket is not enough, the broker must answer
Kafka requests and advertise its own port. Plain sockets and hand-packed
requests, so the probe needs no client library and no event loop.
"""

from __future__ import annotations

import socket
import struct

LOOPBACK = "127.0.0.1"


def free_loopback_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        return sock.getsockname()[1]


def _kafka_string(value: str) -> bytes:
    raw = value.encode()
    return struct.pack(">h", len(raw)) + raw


def _kafka_request(
    sock: socket.socket, api_key: int, version: int, body: bytes, corr: int
) -> bytes:
    """Send one (non-flexible) Kafka request and return the response body after the header."""
    header = struct.pack(">hhi", api_key, version, corr) + _kafka_string("kpimon-probe")
    payload = header + body
    sock.sendall(struct.pack(">i", len(payload)) + payload)
    size = struct.unpack(">i", _recv_exact(sock, 4))[0]
    response = _recv_exact(sock, size)
    got_corr = struct.unpack(">i", response[:4])[0]
    if got_corr != corr:
        raise ConnectionError(f"correlation id mismatch: sent {corr}, got {got_corr}")
    return response[4:]


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise ConnectionError("broker closed the connection")
        buf += chunk
    return bytes(buf)


def probe_kafka(host: str, port: int, timeout: float) -> None:
    """Raise unless *host:port* answers ApiVersions and a Metadata call listing itself.

    Plain sockets on purpose: it is synchronous, cheap and independent of any
    event loop, and it checks the Kafka protocol handler, not just the listener.
    """
    with socket.create_connection((host, port), timeout=timeout) as sock:
        sock.settimeout(timeout)
        # ApiVersions v0: empty body -> error_code int16 first.
        body = _kafka_request(sock, api_key=18, version=0, body=b"", corr=1)
        (error_code,) = struct.unpack(">h", body[:2])
        if error_code:
            raise ConnectionError(f"ApiVersions error code {error_code}")
        # Metadata v1 with an empty topic array (v1: empty = no topics, null = all);
        # we only need the broker list, which must advertise our port.
        body = _kafka_request(sock, api_key=3, version=1, body=struct.pack(">i", 0), corr=2)
        (n_brokers,) = struct.unpack(">i", body[:4])
        if n_brokers < 1:
            raise ConnectionError("metadata lists no brokers yet")
        offset = 4
        ports = []
        for _ in range(n_brokers):
            offset += 4  # node_id
            (hlen,) = struct.unpack(">h", body[offset : offset + 2])
            offset += 2 + hlen
            (bport,) = struct.unpack(">i", body[offset : offset + 4])
            offset += 4
            (rlen,) = struct.unpack(">h", body[offset : offset + 2])
            offset += 2 + max(rlen, 0)
            ports.append(bport)
        if port not in ports:
            raise ConnectionError(f"metadata advertises ports {ports}, expected {port}")
