"""Helpers of the pipeline integration tests: the test project's settings, commands, Prefect queries."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]
PIPELINE_FILES = ("dvc.yaml", "params.yaml", "src", "flows", "configs")

# The tiny profile, smaller still: 8 images of 128x96, 2 training steps, 2 benchmark crops.
TINY_OVERRIDES = {
    "generate.num_images": 8,
    "generate.shard_size": 4,
    "generate.num_inference_steps": 2,
    "train.engine": "torch",
    "train.max_steps": 2,
    "train.batch_size": 1,
    "train.val_size": 1,
    "train.eval_every": 2,
    "train.checkpoint_every": 2,
    "train.val_timesteps": [0.5],
    "restore.steps": 2,
    "benchmark.grid_images": 1,
}
# Paths are never flow parameters (a deployment refuses them), so the smaller test set goes into the
# copy's own tiny profile instead.
TINY_PROFILE_SETTINGS = {
    "benchmark.datasets": [
        {
            "name": "DIV2K-Val",
            "kind": "synthetic",
            "hq_dir": "skimage",
            "num_crops": 2,
            "hq_crop": 64,
            "seed": 0,
        }
    ],
}
SHARDS = {"num_shards": 2, "shard_deployment": "fluxir-shard/shard", "shard_url": "s3://fluxir/shards"}


def tool_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {**os.environ, **(extra or {})}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    return env


def run(args: list[str], cwd: Path, env: dict[str, str] | None = None, timeout: float = 300) -> str:
    done = subprocess.run(
        args, cwd=cwd, env=env or tool_env(), capture_output=True, text=True, timeout=timeout
    )
    assert done.returncode == 0, (
        f"{' '.join(args)} exited {done.returncode}:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    )
    return done.stdout + done.stderr


def copy_pipeline_project(root: Path) -> Path:
    """A git + DVC copy of the project's pipeline files in ``root``: the repository's own data is never touched."""
    root.mkdir(parents=True, exist_ok=True)
    for name in PIPELINE_FILES:
        src = REPO / name
        if src.is_dir():
            shutil.copytree(src, root / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            shutil.copy(src, root / name)
    profile = root / "configs" / "profiles" / "tiny.yaml"
    profile.write_text(yaml.safe_dump({**yaml.safe_load(profile.read_text()), **TINY_PROFILE_SETTINGS}))
    (root / ".gitignore").write_text((REPO / ".gitignore").read_text())
    run(["git", "init", "-q"], root)
    run([sys.executable, "-m", "dvc", "init", "-q"], root)
    shutil.copy(REPO / ".dvc" / "config", root / ".dvc" / "config")
    shutil.copytree(REPO / ".dvc" / "plots", root / ".dvc" / "plots")
    run(
        [sys.executable, "-m", "dvc", "config", "--local", "core.site_cache_dir", str(root / ".dvc-site")],
        root,
    )
    run(["git", "add", "-A"], root)
    run(
        [
            "git",
            "-c",
            "user.name=fluxir",
            "-c",
            "user.email=fluxir@localhost",
            "commit",
            "-q",
            "-m",
            "pipeline",
        ],
        root,
    )
    return root


def read_env_file(path: Path) -> dict[str, str]:
    import shlex

    pairs = (shlex.split(line.removeprefix("export "))[0] for line in path.read_text().splitlines() if line)
    return dict(pair.split("=", 1) for pair in pairs)


@dataclass
class FlowRun:
    returncode: int
    output: str
    seconds: float
    flow_run_id: str
    env: dict[str, str]


def run_deployment(project: Path, env: dict[str, str], params: dict, timeout: float = 600) -> FlowRun:
    """`prefect deployment run fluxir/full --watch` as a user runs it."""
    cmd = [
        str(Path(sys.executable).parent / "prefect"), "deployment", "run", "fluxir/full", "--watch",
        "--params", json.dumps(params),
    ]  # fmt: skip
    t0 = time.monotonic()
    done = subprocess.run(
        cmd, cwd=project, env=tool_env(env), capture_output=True, text=True, timeout=timeout
    )
    output = done.stdout + done.stderr
    found = re.search(r"UUID: ([0-9a-f-]{36})", output)
    assert found, output
    return FlowRun(done.returncode, output, time.monotonic() - t0, found.group(1), env)


def pipeline_parent_run(client, experiment_id: str, flow_run_id: str):
    """The MLflow parent run the flow opened for a Prefect flow run."""
    (parent,) = client.search_runs(
        [experiment_id],
        filter_string=(
            f"tags.`prefect.flow_run_id` = '{flow_run_id}' and tags.`fluxir.pipeline` = 'prefect' "
            "and attributes.run_name LIKE 'prefect %'"
        ),
    )
    return parent


def flow_run_logs(env: dict[str, str], flow_run_id: str) -> list[str]:
    """Every log message of a flow run and its task runs, from the Prefect API."""
    from uuid import UUID

    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId
    from prefect.settings import PREFECT_API_URL, temporary_settings

    log_filter = LogFilter(flow_run_id=LogFilterFlowRunId(any_=[UUID(flow_run_id)]))
    messages: list[str] = []
    with (
        temporary_settings({PREFECT_API_URL: env["PREFECT_API_URL"]}),
        get_client(sync_client=True) as client,
    ):
        while page := client.read_logs(log_filter, limit=200, offset=len(messages)):
            messages += [log.message for log in page]
    return messages


def prefect_client(env: dict[str, str]):
    """A sync Prefect client of the test's server (use as a context manager)."""
    import contextlib

    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings

    stack = contextlib.ExitStack()
    stack.enter_context(temporary_settings({PREFECT_API_URL: env["PREFECT_API_URL"]}))
    client = stack.enter_context(get_client(sync_client=True))

    @contextlib.contextmanager
    def session():
        with stack:
            yield client

    return session()
