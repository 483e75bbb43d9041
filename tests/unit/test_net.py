"""free_port: a port a live server holds is refused; one a stopped server left in TIME_WAIT is reused."""

from __future__ import annotations

import socket

from fluxir.net import LOOPBACK, free_port


def _listener() -> socket.socket:
    server = socket.socket()
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind((LOOPBACK, 0))
    server.listen()
    return server


def test_a_port_with_a_live_listener_is_not_handed_out() -> None:
    with _listener() as server:
        port = server.getsockname()[1]
        assert free_port(port) != port


def test_a_stopped_servers_port_is_reused_despite_time_wait() -> None:
    server = _listener()
    port = server.getsockname()[1]
    client = socket.create_connection((LOOPBACK, port))
    accepted, _ = server.accept()
    accepted.close()  # the server side closes first: its end of the connection stays in TIME_WAIT
    client.recv(1)
    client.close()
    server.close()
    assert free_port(port) == port  # a restarted service gets its old port, and clients keep working
