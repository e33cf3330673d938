"""`sparklio serve` against slow and hostile clients: the real server in a subprocess.

Each test talks raw HTTP/1.1 over loopback sockets, because what is tested is what the server
does with bytes a normal client would never send. Loops are bounded by the configured limit
plus a generous margin (the machine may be busy); nothing waits on wall-clock luck.
"""

from __future__ import annotations

import select
import socket
import time
from collections.abc import Iterator

import pytest

from tests.gateway_process import MARGIN, Server, health

# a server's start (the first test here) and the margins below take longer than the default
pytestmark = pytest.mark.timeout(180)
# the module's server's limits, short so that the tests are quick
HEADER_TIMEOUT = 1.0
BODY_TIMEOUT = 1.0
MAX_HEADER_BYTES = 8192


def closed_by_server(sock: socket.socket) -> bool:
    """True once the server has closed `sock` (reads EOF or a reset); never blocks."""
    if not select.select([sock], [], [], 0)[0]:
        return False
    try:
        while sock.recv(65536, socket.MSG_DONTWAIT):  # whatever it said before closing
            pass
    except BlockingIOError:
        return False
    except OSError:  # reset
        return True
    return True


def read_response(sock: socket.socket, within: float) -> bytes:
    """Everything the server sends on `sock` until it closes it or `within` seconds pass."""
    sock.settimeout(within)
    data = b""
    try:
        while chunk := sock.recv(65536):
            data += chunk
    except (TimeoutError, ConnectionResetError):
        pass
    return data


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """One server for the module, with short limits so the tests are quick."""
    running = Server(
        tmp_path_factory.mktemp("serve") / "home",
        SERVER_HEADER_TIMEOUT=str(HEADER_TIMEOUT),
        SERVER_BODY_TIMEOUT=str(BODY_TIMEOUT),
        SERVER_MAX_HEADER_BYTES=str(MAX_HEADER_BYTES),
    )
    yield running
    running.stop()


def test_an_oversized_header_gets_431_and_is_not_read(server: Server) -> None:
    sock = server.connect()
    sock.sendall(b"GET /health HTTP/1.1\r\nHost: t\r\nX-Big: ")
    sent, chunk = 0, b"a" * 65536
    try:
        while sent < 32 * 2**20:  # what once made the server hold a 32 MB header
            sock.sendall(chunk)
            sent += len(chunk)
        sock.sendall(b"\r\n\r\n")
    except OSError:  # the server closed the connection (reset, broken pipe) or stopped reading
        pass
    answer = read_response(sock, MARGIN)
    sock.close()
    # what the kernel's socket buffers hold is a few MB: the server read a small part of it
    assert sent < 16 * 2**20, f"the server read {sent} bytes of one header"
    assert answer == b"" or answer.startswith(b"HTTP/1.1 431"), answer[:200]
    assert health(server.port) == 200


def test_the_header_cap_does_not_cap_bodies(server: Server) -> None:
    body = b'{"email": "someone@example.com", "password": "%s"}' % (b"x" * 900_000)
    sock = server.connect()
    sock.sendall(
        b"POST /api/v1/auth/login HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
        b"Connection: close\r\nContent-Length: %d\r\n\r\n" % len(body) + body
    )
    answer = read_response(sock, MARGIN)
    sock.close()
    # under MAX_REQUEST_BYTES, so the app reads it and names the field that is too long
    assert answer.startswith(b"HTTP/1.1 422"), answer[:300]
    assert b"password" in answer


def test_a_header_under_the_cap_is_served(server: Server) -> None:
    sock = server.connect()
    sock.sendall(
        b"GET /health HTTP/1.1\r\nHost: t\r\nConnection: close\r\nX-Fine: "
        + b"a" * (MAX_HEADER_BYTES // 2)
        + b"\r\n\r\n"
    )
    assert read_response(sock, MARGIN).startswith(b"HTTP/1.1 200")
    sock.close()


@pytest.mark.parametrize("trickle", [True, False], ids=["trickling-headers", "silent"])
def test_a_client_slow_with_its_headers_is_dropped_while_others_are_served(
    server: Server, trickle: bool
) -> None:
    sock = server.connect()
    sock.sendall(b"GET /health HTTP/1.1\r\nHost: t\r\n")
    answered_meanwhile = 0
    deadline = time.monotonic() + HEADER_TIMEOUT + MARGIN
    closed = False
    line = 0
    while not closed and time.monotonic() < deadline:
        try:
            if trickle:  # one header line at a time, as a slowloris client does
                sock.sendall(b"X-%d: y\r\n" % line)
                line += 1
        except OSError:
            closed = True
            break
        answered_meanwhile += health(server.port) == 200
        closed = closed_by_server(sock)
        time.sleep(0.1)
    sock.close()
    assert closed, f"a connection sending no full header was held {HEADER_TIMEOUT + MARGIN} s"
    assert answered_meanwhile >= 1, "/health did not answer while a slow client was connected"


def test_a_body_that_trickles_gets_408_and_the_connection_closed(server: Server) -> None:
    body = b'{"email": "someone@example.com", "password": "not-this-one"}'
    sock = server.connect()
    sock.sendall(
        b"POST /api/v1/auth/login HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
        b"Content-Length: %d\r\n\r\n" % len(body) + body[:10]
    )
    answer = read_response(sock, BODY_TIMEOUT + MARGIN)
    sock.close()
    assert answer.startswith(b"HTTP/1.1 408"), answer[:300]
    assert b"SERVER_BODY_TIMEOUT" in answer
    assert health(server.port) == 200


def test_a_body_sent_at_once_is_not_timed_out(server: Server) -> None:
    body = b'{"email": "someone@example.com", "password": "not-this-one"}'
    sock = server.connect()
    sock.sendall(
        b"POST /api/v1/auth/login HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
        b"Connection: close\r\nContent-Length: %d\r\n\r\n" % len(body) + body
    )
    answer = read_response(sock, MARGIN)
    sock.close()
    assert answer.startswith(b"HTTP/1.1 401"), answer[:300]  # a wrong password, in time


def test_connections_over_the_cap_wait_and_the_held_ones_are_dropped(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    cap, extra, header_timeout = 4, 10, 2.0
    capped = Server(
        tmp_path_factory.mktemp("capped") / "home",
        SERVER_MAX_CONNECTIONS=str(cap),
        SERVER_HEADER_TIMEOUT=str(header_timeout),
    )
    holders: list[socket.socket] = []
    try:
        for _ in range(cap + extra):  # each sends part of a request and then nothing
            sock = capped.connect()
            sock.sendall(b"GET /health HTTP/1.1\r\nHost: t\r\n")
            holders.append(sock)
        rounds = -(-(cap + extra + 1) // cap)  # batches of `cap` connections, each timed out
        status = health(capped.port, timeout=rounds * header_timeout + MARGIN)
        # served only once the server had dropped a held connection: at most `cap` at once
        dropped_before = sum(closed_by_server(s) for s in holders[:cap])
        deadline = time.monotonic() + header_timeout + MARGIN
        while time.monotonic() < deadline and not all(closed_by_server(s) for s in holders):
            time.sleep(0.1)
        dropped = sum(closed_by_server(s) for s in holders)
    finally:
        for sock in holders:
            sock.close()
        capped.stop()
    assert status == 200, "/health was not answered behind the held connections"
    assert dropped_before >= 1, "the server served more connections at once than its cap"
    assert dropped == cap + extra, f"{cap + extra - dropped} held connections were never closed"


def test_a_server_killed_with_sigkill_leaves_no_worker_serving(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """`kill -9` of `sparklio serve` takes its worker down too: an orphaned worker went on
    serving the port (and writing to the database) with nothing left to stop it."""
    server = Server(tmp_path_factory.mktemp("killed") / "home")
    try:
        server.proc.kill()
        server.proc.wait(15)
        deadline = time.monotonic() + 60  # the worker shuts down as on SIGTERM
        while health(server.port, timeout=1.0) is not None and time.monotonic() < deadline:
            time.sleep(0.2)
        assert health(server.port, timeout=1.0) is None, "a worker still serves the port"
    finally:
        server.log.close()
