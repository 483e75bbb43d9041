"""The pipeline on real services, once per test session, for test_prefect_flow, test_services, test_mlflow_ui.

``pipeline_project``   a git + DVC copy of the project's pipeline (dvc.yaml, params.yaml, src, flows,
                       configs, .dvc config) in a temp folder: the repository's own data is never touched;
``pipeline_services``  ``make services`` for that copy (Prefect server, the process serving fluxir/full,
                       MLflow server, SeaweedFS, two shard workers) on free 127.0.0.1 ports; stopped with
                       ``make services-stop`` at the end, which must leave no process behind;
``finished_run``       ``prefect deployment run fluxir/full --watch`` on the tiny profile with small
                       overrides, 2 shards on the work pool, shard outputs through S3.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from pipeline_run import (
    REPO,
    SHARDS,
    TINY_OVERRIDES,
    FlowRun,
    copy_pipeline_project,
    read_env_file,
    run,
    run_deployment,
    tool_env,
)


@pytest.fixture(scope="session")
def pipeline_project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return copy_pipeline_project(tmp_path_factory.mktemp("pipeline") / "project")


@pytest.fixture(scope="session")
def pipeline_services(pipeline_project: Path):
    """`make services` for the test project; yields the client environment of .services/env."""
    make_env = tool_env(
        {"FLUXIR_PROJECT": str(pipeline_project), "FLUXIR_SHARD_WORKERS": "2", "FLUXIR_ANY_PORTS": "1"}
    )
    t0 = time.monotonic()
    # -o setup: the venv this test runs in is the set-up one (make test did it).
    out = run(["make", "-s", "-C", str(REPO), "-o", "setup", "services"], REPO, make_env, timeout=300)
    started = time.monotonic() - t0
    env = read_env_file(pipeline_project / ".services" / "env")
    env["_started_seconds"] = f"{started:.1f}"
    env["_start_output"] = out
    yield env
    state = pipeline_project / ".services"
    pids = [json.loads(p.read_text())["pid"] for p in state.glob("*.pid")]
    out = run(["make", "-s", "-C", str(REPO), "services-stop"], REPO, make_env, timeout=120)
    import psutil

    left = [
        pid for pid in pids if psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    ]
    assert not left, f"services still running after make services-stop: {left}\n{out}"
    assert not list(state.glob("*.pid"))


@pytest.fixture(scope="session")
def finished_run(pipeline_project: Path, pipeline_services: dict[str, str]) -> FlowRun:
    result = run_deployment(pipeline_project, pipeline_services, {"overrides": TINY_OVERRIDES, **SHARDS})
    assert result.returncode == 0, result.output[-5000:]
    return result
