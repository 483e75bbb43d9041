"""Loopback networking helpers shared by the services and the training processes: free ports, health checks.

Bottom layer: imports nothing of fluxir, so the train engine (a one-rank process group needs a port) and
the orchestration (service ports, readiness) and tracking (is the MLflow server up) use one definition.
"""

from __future__ import annotations

import socket
import urllib.error
import urllib.request

LOOPBACK = "127.0.0.1"


def free_port(preferred: int | None = None, host: str = LOOPBACK) -> int:
    """``preferred`` if nothing listens there on ``host``, else a port the OS hands out."""
    for port in ([preferred] if preferred else []) + [0]:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            # Connections of a stopped server linger in TIME_WAIT; servers bind over them (Go, uvicorn and
            # werkzeug all set SO_REUSEADDR), so the probe does too. A live listener still refuses it.
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind((host, port))
            except OSError:
                continue
            return s.getsockname()[1]
    raise OSError(f"no free TCP port on {host}")


def http_status(url: str, timeout: float = 2.0) -> int | None:
    """The HTTP status ``url`` answers with (errors included), or None when nothing answers."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status
    except urllib.error.HTTPError as exc:
        return exc.code
    except (OSError, ValueError):
        return None


def http_ok(url: str, timeout: float = 2.0) -> bool:
    """Whether ``url`` answers with a status below 500 (S3 answers 403 to anonymous requests)."""
    status = http_status(url, timeout)
    return status is not None and status < 500
