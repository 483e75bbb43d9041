"""`make services` / `make services-stop` (fluxir.orchestration.services, .processes): PIDs, loopback-only
ports, stop by signal.

The full set of services is the session's ``pipeline_services`` (conftest.py): started with
``make services``; stopping it with ``make services-stop`` is checked when the session ends.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from fluxir.orchestration import processes, services

SERVICES = {"seaweedfs", "mlflow", "prefect-server", "prefect-serve", "shard-worker-1", "shard-worker-2"}


def test_every_service_runs_with_a_pid_file(pipeline_services, pipeline_project):
    state = pipeline_project / services.STATE_DIR
    status = services.status(pipeline_project)
    assert set(status) == SERVICES and all(status.values()), status
    for name, rec in status.items():
        proc = psutil.Process(rec["pid"])
        assert proc.is_running() and abs(proc.create_time() - rec["create_time"]) < 1.0
        assert os.getpgid(rec["pid"]) == rec["pid"], f"{name} must lead its own process group"
        assert (state / f"{name}.log").stat().st_size > 0
    env = pipeline_services
    assert {
        "PREFECT_API_URL",
        "MLFLOW_TRACKING_URI",
        "FLUXIR_S3_ENDPOINT_URL",
        "AWS_SECRET_ACCESS_KEY",
    } <= set(env)
    assert all(env[k].startswith("http://127.0.0.1:") for k in ("PREFECT_API_URL", "MLFLOW_TRACKING_URI"))
    assert (state / "env").stat().st_mode & 0o077 == 0, "the env file holds the S3 secret: owner only"
    print(f"make services: ready in {env['_started_seconds']} s\n{env['_start_output']}")


def test_services_listen_on_loopback_only(pipeline_services, pipeline_project):
    listening = []
    for rec in services.status(pipeline_project).values():
        root = psutil.Process(rec["pid"])
        for proc in [root, *root.children(recursive=True)]:
            try:
                conns = proc.net_connections(kind="inet")
            except psutil.Error:
                continue
            listening += [c.laddr for c in conns if c.status == psutil.CONN_LISTEN]
    assert len(listening) >= 10  # weed mini alone opens 9 listeners
    assert {addr.ip for addr in listening} == {"127.0.0.1"}, listening


def test_start_refuses_while_running(pipeline_services, pipeline_project):
    with pytest.raises(services.ServiceError, match="already running"):
        services.start(pipeline_project, echo=lambda _: None)


def _sleeper(ignore_term: bool) -> subprocess.Popen:
    code = "import signal, time\n"
    if ignore_term:
        code += "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
    code += "print('ready', flush=True)\ntime.sleep(600)\n"
    proc = subprocess.Popen(
        [sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, start_new_session=True
    )
    assert proc.stdout.readline().strip() == "ready"
    return proc


def test_stop_terminates_then_kills_after_the_timeout():
    polite, stubborn = _sleeper(ignore_term=False), _sleeper(ignore_term=True)
    t0 = time.monotonic()
    outcome = processes.stop_pids({"polite": polite.pid, "stubborn": stubborn.pid}, timeout=1.0)
    elapsed = time.monotonic() - t0
    assert outcome == {"polite": "terminated", "stubborn": "killed"}
    # (psutil reaps them, so Popen sees no exit status; what matters is that both are gone)
    assert polite.wait(5) is not None and stubborn.wait(5) is not None
    assert 1.0 <= elapsed < 5.0


def test_pid_file_of_another_process_is_never_trusted(tmp_path):
    """A PID reused by an unrelated process (other start time) reads as gone, so it is never signalled."""
    victim = _sleeper(ignore_term=False)
    try:
        state = tmp_path / services.STATE_DIR
        state.mkdir()
        rec = {"pid": victim.pid, "create_time": psutil.Process(victim.pid).create_time() - 100}
        (state / "mlflow.pid").write_text(json.dumps(rec))
        assert processes.read_pid(state / "mlflow.pid") is None
        assert services.stop(tmp_path, timeout=1, echo=lambda _: None) == {"mlflow": "gone"}
        assert victim.poll() is None, "an unrelated process must survive"
    finally:
        victim.kill()
        victim.wait()


def test_failed_start_names_the_service_and_stops_the_others(tmp_path, monkeypatch):
    real_plan = services.plan

    def plan(*args, **kwargs):
        svcs, env = real_plan(*args, **kwargs)
        return [s for s in svcs if s.name in ("seaweedfs", "mlflow")], env

    monkeypatch.setattr(services, "plan", plan)
    monkeypatch.setattr(services, "_bin", _bin_with_failing_mlflow)
    with pytest.raises(services.ServiceError, match="mlflow exited during start-up; log .*mlflow.log"):
        services.start(tmp_path, fixed_ports=False, echo=lambda _: None)
    assert services.status(tmp_path) == {}, "seaweedfs, started first, must be stopped again"


def _bin_with_failing_mlflow(name: str) -> str:
    return "/bin/false" if name == "mlflow" else str(Path(sys.executable).parent / name)
