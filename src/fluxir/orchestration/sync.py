"""``fluxir push`` / ``fluxir pull``: ``dvc push`` / ``dvc pull`` that give up when the S3 server dies.

DVC retries every object on its own (botocore's retries inside s3fs's), so when the server dies in the
middle of a push each remaining object waits out its retries in turn: a push of a few thousand objects
then hangs for hours with nothing printed. The remote's ``connect_timeout`` and ``read_timeout`` (in
the committed ``.dvc/config``) bound one request, not that loop. This wrapper runs DVC as it is and
watches the endpoint beside it: once nothing has accepted a connection there for ``--give-up`` seconds,
it stops DVC and says so in one line (exit 1). Rerunning is safe: DVC skips the objects already on the
remote and rewrites any it did not finish (an object appears under its name only once it is whole).
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit

from fluxir.errors import EnvironmentFailure, UserError, redact
from fluxir.orchestration.dvc import python_env

ENDPOINT_VARIABLES = ("AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL", "FLUXIR_S3_ENDPOINT_URL")
GIVE_UP_SECONDS = 20.0
POLL_SECONDS = 1.0


def remote_endpoint(project: Path, remote: str | None = None) -> str | None:
    """The S3 endpoint DVC will use: the remote's ``endpointurl`` (config.local included), else the
    environment's; None for AWS itself (then the endpoint is not watched)."""
    from dvc.repo import Repo

    with Repo(str(project)) as repo:
        config = repo.config
        name = remote or config["core"].get("remote")
        url = config["remote"].get(name, {}).get("endpointurl") if name else None
    return url or next((os.environ[v] for v in ENDPOINT_VARIABLES if os.environ.get(v)), None)


def reachable(endpoint: str, timeout: float = 2.0) -> bool:
    """Whether something accepts a TCP connection at the endpoint's host and port."""
    parts = urlsplit(endpoint)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        with socket.create_connection((parts.hostname or "127.0.0.1", port), timeout=timeout):
            return True
    except OSError:
        return False


def supervised(cmd: list[str], project: Path, endpoint: str | None, give_up: float = GIVE_UP_SECONDS) -> int:
    """Run ``cmd`` (its output passes through); stop it once ``endpoint`` has been down ``give_up`` s."""
    proc = subprocess.Popen(cmd, cwd=project, env=python_env(), start_new_session=True)
    down_since: float | None = None
    try:
        while proc.poll() is None:
            time.sleep(POLL_SECONDS)
            if endpoint is None or proc.poll() is not None:
                continue
            if reachable(endpoint):
                down_since = None
            elif down_since is None:
                down_since = time.monotonic()
            elif time.monotonic() - down_since >= give_up:
                os.killpg(proc.pid, signal.SIGTERM)
                try:
                    proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait()
                raise EnvironmentFailure(
                    f"S3 endpoint {redact(endpoint)} stopped answering for {give_up:.0f} s during "
                    f"`{' '.join(cmd[2:])}`; start it (make services) and rerun: what is already there is kept"
                )
    except KeyboardInterrupt:
        os.killpg(proc.pid, signal.SIGINT)
        proc.wait()
        raise
    return proc.returncode


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("targets", nargs="*", help="stages or .dvc files (default: everything)")
    parser.add_argument("-r", "--remote", help="remote name (default: core.remote)")
    parser.add_argument("-j", "--jobs", type=int, help="parallel transfers (DVC's default if unset)")
    parser.add_argument(
        "--give-up",
        type=float,
        default=GIVE_UP_SECONDS,
        help=f"seconds the S3 endpoint may refuse connections before the transfer is stopped ({GIVE_UP_SECONDS:.0f})",
    )
    parser.add_argument("--project", type=Path, default=Path("."), help="the DVC project folder")


def run(args: argparse.Namespace) -> int:
    if args.give_up <= 0:
        raise UserError(f"--give-up={args.give_up}: must be > 0 seconds")
    cmd = [sys.executable, "-m", "dvc", args.command]
    cmd += (["-r", args.remote] if args.remote else []) + (["-j", str(args.jobs)] if args.jobs else [])
    cmd += list(args.targets)
    return supervised(cmd, args.project, remote_endpoint(args.project, args.remote), args.give_up)
