"""Local services for the pipeline, started and stopped by PID: ``make services`` / ``make services-stop``.

    python -m fluxir.orchestration.services start [--project DIR] [--shard-workers N]   (also `fluxir services start`)
    python -m fluxir.orchestration.services status | stop [--timeout S]

``start`` brings up, in this order and all bound to 127.0.0.1:
  seaweedfs       S3 object storage (``weed mini``), bucket ``fluxir``; credentials made at random per project;
                  its filer and volume ports refuse requests without a JWT signed by keys only weed holds
  mlflow          tracking server over the project's ``mlruns.db`` (the same file a plain run logs to)
  prefect-server  the Prefect API and UI
  prefect-serve   ``flows/serve.py``: serves the deployment ``fluxir/full``
  shard-worker-i  ``--shard-workers N`` process workers of the pool ``fluxir-shards`` (scale-out shards)
  app             ``--app`` (or ``FLUXIR_APP=1``): ``fluxir app``, the web page that restores images with a
                  trained adapter (registry aliases through this MLflow server); off by default
Each port is the usual one (8333, 5000, 4200, 7860) when free, else a free one. PIDs, logs, the ports and a
shell file of the variables clients need (``source .services/env``) go under ``<project>/.services/``.
``stop`` sends SIGTERM to each service's process group, then SIGKILL after ``--timeout`` seconds (Prefect
workers ignore a first SIGTERM); a PID file is trusted only while the process still has the start time
it recorded, so a reused PID is never signalled (:mod:`fluxir.orchestration.processes`).
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shlex
import shutil
import sys
import time
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fluxir.errors import UserError, report
from fluxir.io import write_json_atomic, write_text_atomic
from fluxir.net import LOOPBACK, free_port, http_ok
from fluxir.orchestration.processes import launch, read_pid, stop_pid, stop_pids, tail
from fluxir.orchestration.shards import shard_env

HOST = LOOPBACK
STATE_DIR = ".services"
BUCKET = "fluxir"
SHARD_POOL = "fluxir-shards"
DEPLOYMENT = "fluxir/full"
PREFERRED_PORTS = {"s3": 8333, "mlflow": 5000, "prefect": 4200}
PORT_OWNERS = {"s3": "seaweedfs", "mlflow": "mlflow", "prefect": "prefect-server"}
APP_PORT = 7860  # Gradio's usual port
# weed mini opens one listener per component (plus gRPC); every one is pinned so none lands on 0.0.0.0.
WEED_PORTS = (
    "master.port", "master.port.grpc", "volume.port", "volume.port.grpc", "filer.port", "filer.port.grpc",
    "s3.port.grpc", "admin.port", "admin.port.grpc",
)  # fmt: skip
READY_SECONDS = 120.0


class ServiceError(UserError, RuntimeError):
    """A service did not start or stop; the message says which and where its log is."""


@dataclass
class Service:
    """One long-running process: how to start it and how to tell it is ready."""

    name: str
    cmd: list[str]
    ready: Callable[[float], bool]
    """Whether the service answers, given the time (epoch seconds) it was launched."""
    env: dict[str, str] = field(default_factory=dict)
    url: str = ""


# ----------------------------------------------------------------------------------------------
# The services of a project


def _bin(name: str) -> str:
    """An executable from this interpreter's environment (the venv), else from PATH."""
    local = Path(sys.executable).parent / name
    found = str(local) if local.exists() else shutil.which(name)
    if not found:
        raise ServiceError(f"'{name}' not found next to {sys.executable} or on PATH; run `make setup`")
    return found


def _weed_security_env() -> dict[str, str]:
    """SeaweedFS's security.toml as environment: random JWT keys, made anew at each start.

    Without them the filer's and volume server's HTTP ports answer anyone on the machine (list, upload,
    delete under the bucket with no S3 keys). With them every filer request and every volume read or
    write needs a token signed with a key only the weed process holds, so the authenticated S3 endpoint
    is the one way in. The keys sign requests, they encrypt nothing: new ones at each start lose no data.
    """
    import secrets

    keys = ("JWT_FILER_SIGNING_KEY", "JWT_FILER_SIGNING_READ_KEY", "JWT_SIGNING_KEY", "JWT_SIGNING_READ_KEY")
    return {f"WEED_{key}": secrets.token_hex(32) for key in keys}


def _s3_credentials(state: Path) -> dict[str, str]:
    """Per-project SeaweedFS credentials: made once at random, kept in .services/ (gitignored, mode 600)."""
    path = state / "s3-credentials.json"
    if path.is_file():
        return json.loads(path.read_text())
    creds = {"access_key": "fluxir" + secrets.token_hex(6), "secret_key": secrets.token_urlsafe(24)}
    write_json_atomic(path, creds, mode=0o600)
    return creds


def client_env(ports: Mapping[str, int], creds: Mapping[str, str]) -> dict[str, str]:
    """What a client of these services needs: Prefect API, MLflow server, the S3 endpoint and keys."""
    s3 = f"http://{HOST}:{ports['s3']}"
    return {
        "PREFECT_API_URL": f"http://{HOST}:{ports['prefect']}/api",
        "MLFLOW_TRACKING_URI": f"http://{HOST}:{ports['mlflow']}",
        "FLUXIR_S3_ENDPOINT_URL": s3,
        "AWS_ENDPOINT_URL_S3": s3,  # botocore: fluxir storage and DVC's S3 remote (both s3fs)
        "MLFLOW_S3_ENDPOINT_URL": s3,
        "AWS_ACCESS_KEY_ID": creds["access_key"],
        "AWS_SECRET_ACCESS_KEY": creds["secret_key"],
        "AWS_DEFAULT_REGION": "us-east-1",
        "FLUXIR_SHARD_URL": f"s3://{BUCKET}/shards",
    }


def pick_ports(
    state: Path, fixed_ports: bool = True, keep: set[str] | frozenset = frozenset()
) -> dict[str, int]:
    """The services' ports: those of the last start when free (or, for the ``keep`` keys, of services
    still running), so that a restart leaves .services/env, a sourced shell and .dvc/config.local pointing
    at the same endpoints; else the usual ones (when free and ``fixed_ports``); else any free port."""
    previous = _previous_ports(state)
    return {
        key: previous[key]
        if key in keep and key in previous
        else free_port(previous.get(key) or (port if fixed_ports else None))
        for key, port in PREFERRED_PORTS.items()
    }


def plan(
    project: Path,
    shard_workers: int = 0,
    fixed_ports: bool = True,
    app: bool = False,
    ports: Mapping[str, int] | None = None,
) -> tuple[list[Service], dict[str, str]]:
    """The services of ``project`` in start order, and the client environment; picks the ports.

    ``app`` adds the web page (``fluxir app``) last; it reads params.yaml and the registry like a client.
    """
    state = project / STATE_DIR
    ports = ports or pick_ports(state, fixed_ports)
    creds = _s3_credentials(state)
    env = client_env(ports, creds)
    s3_config = {
        "identities": [
            {
                "name": "fluxir",
                "credentials": [{"accessKey": creds["access_key"], "secretKey": creds["secret_key"]}],
                "actions": ["Admin", "Read", "Write", "List", "Tagging"],
            }
        ]
    }
    write_json_atomic(state / "seaweedfs-s3.json", s3_config, mode=0o600)
    weed = [
        _bin("weed"), "mini", f"-dir={state / 'seaweedfs'}", f"-ip={HOST}", f"-ip.bind={HOST}",
        f"-s3.config={state / 'seaweedfs-s3.json'}", f"-s3.port={ports['s3']}", f"-bucket={BUCKET}",
        "-webdav=false", "-admin.ui=false", "-master.telemetry=false", "-s3.port.iceberg=0",
        "-s3.port.lance=0", *(f"-{flag}={free_port()}" for flag in WEED_PORTS),
    ]  # fmt: skip
    (state / "seaweedfs").mkdir(parents=True, exist_ok=True)
    mlflow = [
        _bin("mlflow"), "server", "--host", HOST, "--port", str(ports["mlflow"]), "--workers", "1",
        "--backend-store-uri", f"sqlite:///{project / 'mlruns.db'}",
        # The artifact root a plain (serverless) run uses too, so either can read the other's artifacts.
        "--default-artifact-root", str(project / "mlruns"), "--no-serve-artifacts",
    ]  # fmt: skip
    prefect_home = state / "prefect"
    prefect_env = {
        "PREFECT_HOME": str(prefect_home),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_WORKER_QUERY_SECONDS": "2",
        "PREFECT_RUNNER_POLL_FREQUENCY": "2",
    }
    api, s3, tracking = env["PREFECT_API_URL"], env["FLUXIR_S3_ENDPOINT_URL"], env["MLFLOW_TRACKING_URI"]
    prefect_server = [_bin("prefect"), "server", "start", "--host", HOST, "--port", str(ports["prefect"])]
    serve_env = {**prefect_env, **({"FLUXIR_SHARD_POOL": SHARD_POOL} if shard_workers else {})}
    services = [
        Service("seaweedfs", weed, lambda _: http_ok(s3), env=_weed_security_env(), url=s3),
        Service(
            "mlflow", mlflow, lambda _: http_ok(f"{tracking}/health"),
            env={"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}, url=tracking,
        ),
        Service(
            "prefect-server", [*prefect_server, "--analytics-off"], lambda _: http_ok(f"{api}/health"),
            env=prefect_env, url=api.removesuffix("/api"),
        ),
        Service(
            "prefect-serve", [sys.executable, "flows/serve.py"],
            lambda since: _deployment_polled(api, DEPLOYMENT, since), env=serve_env,
        ),
    ]  # fmt: skip
    for i in range(shard_workers):
        worker = [
            _bin("prefect"), "worker", "start", "--pool", SHARD_POOL, "--type", "process",
            "--limit", "1", "--name", f"{SHARD_POOL}-{i + 1}",
        ]  # fmt: skip
        ready = lambda since, name=f"{SHARD_POOL}-{i + 1}": _worker_online(api, name, since)  # noqa: E731
        # one worker per GPU pinned to it (GPU machine), each with its share of the cores; its flow runs
        # and their stage processes inherit this environment
        pinned = {**prefect_env, **shard_env(i, shard_workers)}
        services.append(Service(f"shard-worker-{i + 1}", worker, ready, env=pinned))
    if app:
        port = free_port(APP_PORT if fixed_ports else None)
        url = f"http://{HOST}:{port}"
        env["FLUXIR_APP_URL"] = url
        page = [_bin("fluxir"), "app", "--host", HOST, "--port", str(port)]
        services.append(
            Service("app", page, lambda _: http_ok(url), env={"GRADIO_ANALYTICS_ENABLED": "False"}, url=url)
        )
    return services, env


def _previous_ports(state: Path) -> dict[str, int]:
    try:
        record = json.loads((state / "services.json").read_text())
        return {k: int(v) for k, v in record.get("ports", {}).items() if k in PREFERRED_PORTS}
    except (OSError, ValueError, AttributeError):
        return {}


def _api_json(url: str, body: Mapping[str, Any] | None = None) -> Any:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=5) as r:
        return json.loads(r.read() or b"null")


# The Prefect database outlives the processes, so a deployment or worker of an earlier session looks ready:
# only a poll or heartbeat after this launch counts.
def _after(timestamp: str | None, since: float) -> bool:
    from datetime import datetime

    return bool(timestamp) and datetime.fromisoformat(timestamp).timestamp() >= since - 1.0


def _deployment_polled(api: str, name: str, since: float) -> bool:
    try:
        return _after(_api_json(f"{api}/deployments/name/{name}").get("last_polled"), since)
    except (OSError, ValueError):
        return False


def _worker_online(api: str, name: str, since: float) -> bool:
    try:
        workers = _api_json(f"{api}/work_pools/{SHARD_POOL}/workers/filter", {})
    except (OSError, ValueError):
        return False
    return any(w.get("name") == name and _after(w.get("last_heartbeat_time"), since) for w in workers or [])


def start(
    project: str | os.PathLike = ".",
    shard_workers: int = 0,
    fixed_ports: bool = True,
    only: Sequence[str] | None = None,
    timeout: float = READY_SECONDS,
    echo: Callable[[str], None] = print,
    app: bool = False,
) -> dict[str, str]:
    """Start the services (all, or those named in ``only``), wait until each is ready; return the client
    environment (what ``.services/env`` exports).

    If one fails to start, the ones started by this call are stopped again and ServiceError names the
    failing service and the tail of its log.
    """
    root = Path(project).resolve()
    state = root / STATE_DIR
    state.mkdir(parents=True, exist_ok=True)
    running = {p.stem: rec for p in state.glob("*.pid") if (rec := read_pid(p))}
    # Services still running keep their ports (the others are pointed at them); a service that died
    # (e.g. the serving process, killed) can be started again alone with ``only``.
    ports = pick_ports(state, fixed_ports, keep={k for k, owner in PORT_OWNERS.items() if owner in running})
    services, env = plan(root, shard_workers, fixed_ports, app, ports)
    if only is not None:
        unknown = set(only) - {svc.name for svc in services}
        if unknown:
            raise ServiceError(f"unknown services {sorted(unknown)}; known: {[svc.name for svc in services]}")
        services = [svc for svc in services if svc.name in only]
    if clash := sorted(set(running) & {svc.name for svc in services}):
        raise ServiceError(f"already running in {state}: {', '.join(clash)}; run `make services-stop` first")
    started: list[str] = []
    try:
        for svc in services:
            t0, since = time.monotonic(), time.time()
            _launch(svc, root, state, env)
            started.append(svc.name)
            _wait_ready(svc, state, timeout, since)
            echo(f"{svc.name:<16} ready in {time.monotonic() - t0:5.1f} s  {svc.url}".rstrip())
    except BaseException:
        for name in reversed(started):
            rec = read_pid(state / f"{name}.pid")
            if rec:
                stop_pid(int(rec["pid"]), timeout=5)
            (state / f"{name}.pid").unlink(missing_ok=True)
        raise
    started = [name for name in _start_order(state) if name in running] + started
    env = {k: v for k, v in env.items() if _serves(k, started)}
    lines = [f"export {k}={shlex.quote(v)}" for k, v in env.items()]
    write_text_atomic(state / "env", "\n".join(lines) + "\n", mode=0o600)
    record = {"project": str(root), "env": env, "services": started, "ports": ports}
    write_json_atomic(state / "services.json", record, mode=0o600)
    echo(f"clients: source {state / 'env'}   then: prefect deployment run {DEPLOYMENT} --watch")
    return env


def _serves(variable: str, started: Sequence[str]) -> bool:
    """Whether a client variable belongs to one of the ``started`` services."""
    owners = {"PREFECT_API_URL": "prefect-server", "MLFLOW_TRACKING_URI": "mlflow", "FLUXIR_APP_URL": "app"}
    owner = owners.get(variable, "seaweedfs")
    return owner in started


def _launch(svc: Service, root: Path, state: Path, env: Mapping[str, str]) -> None:
    proc_env = {**os.environ, **env, **svc.env}
    proc_env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{proc_env.get('PATH', '')}"
    launch(svc.cmd, root, proc_env, state / f"{svc.name}.log", state / f"{svc.name}.pid", url=svc.url)


def _wait_ready(svc: Service, state: Path, timeout: float, since: float) -> None:
    deadline = time.monotonic() + timeout
    log = state / f"{svc.name}.log"
    while time.monotonic() < deadline:
        if svc.ready(since):
            return
        if read_pid(state / f"{svc.name}.pid") is None:
            raise ServiceError(f"{svc.name} exited during start-up; log {log}:\n{tail(log)}")
        time.sleep(0.3)
    raise ServiceError(f"{svc.name} not ready after {timeout:.0f} s; log {log}:\n{tail(log)}")


def stop(
    project: str | os.PathLike = ".", timeout: float = 10.0, echo: Callable[[str], None] = print
) -> dict[str, str]:
    """Stop every service of ``project`` (last started first); returns name -> how it ended."""
    state = Path(project).resolve() / STATE_DIR
    order = _start_order(state)
    pid_files = sorted(state.glob("*.pid"), key=lambda p: -order.get(p.stem, -1))
    records = {p.stem: read_pid(p) for p in pid_files}
    live = {name: int(rec["pid"]) for name, rec in records.items() if rec}
    outcome = {name: "gone" for name in records if name not in live}
    outcome.update(stop_pids(live, timeout))
    for p in pid_files:
        p.unlink(missing_ok=True)
        echo(f"{p.stem:<16} {outcome[p.stem]}")
    (state / "env").unlink(missing_ok=True)
    return outcome


def _start_order(state: Path) -> dict[str, int]:
    try:
        names = json.loads((state / "services.json").read_text())["services"]
    except (OSError, ValueError, KeyError):
        names = ["seaweedfs", "mlflow", "prefect-server", "prefect-serve"]
    return {n: i for i, n in enumerate(names)}


def status(project: str | os.PathLike = ".") -> dict[str, dict[str, Any] | None]:
    """name -> PID record of each service with a PID file (None when its process is gone)."""
    state = Path(project).resolve() / STATE_DIR
    return {p.stem: read_pid(p) for p in sorted(state.glob("*.pid"))}


# ----------------------------------------------------------------------------------------------
# Entry points


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("action", choices=("start", "stop", "status"), help="what to do")
    parser.add_argument(
        "--project", type=Path, default=Path(os.environ.get("FLUXIR_PROJECT", ".")),
        help="project folder (default: $FLUXIR_PROJECT or the current folder)",
    )  # fmt: skip
    parser.add_argument(
        "--shard-workers", type=int, default=int(os.environ.get("FLUXIR_SHARD_WORKERS", "0")),
        help=f"process workers of the pool {SHARD_POOL} for sharded generate/score (default 0)",
    )  # fmt: skip
    parser.add_argument(
        "--any-ports", action="store_true", default=bool(os.environ.get("FLUXIR_ANY_PORTS")),
        help="free ports even where the usual ones are free (default: $FLUXIR_ANY_PORTS)",
    )  # fmt: skip
    parser.add_argument(
        "--app", action="store_true", default=os.environ.get("FLUXIR_APP", "") not in ("", "0"),
        help="start: also serve the web page `fluxir app` (default: $FLUXIR_APP=1)",
    )  # fmt: skip
    parser.add_argument("--only", default="", help="start: comma-separated service names (default: all)")
    parser.add_argument("--timeout", type=float, default=10.0, help="stop: seconds from SIGTERM to SIGKILL")


def run(args: argparse.Namespace) -> int:
    if args.action == "start":
        only = [n.strip() for n in args.only.split(",") if n.strip()] or None
        start(args.project, args.shard_workers, fixed_ports=not args.any_ports, only=only, app=args.app)
    elif args.action == "stop":
        stop(args.project, args.timeout)
    else:
        for name, rec in status(args.project).items():
            print(
                f"{name:<16} {'pid ' + str(rec['pid']) + '  ' + rec.get('url', '') if rec else 'not running'}"
            )
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m fluxir.orchestration.services", description=__doc__.splitlines()[0]
    )
    add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        return run(args)
    except UserError as exc:
        return report("services", exc)


if __name__ == "__main__":
    raise SystemExit(main())
