"""The Prefect flow ``fluxir``: generate -> score -> filter -> degrade -> train -> benchmark, through DVC.

Orchestration only. Every stage runs through DVC (``dvc repro --single-item <stage>``, i.e. the same
``python -m fluxir.stages.<name>`` as ``dvc repro``), so the outputs are the DVC-tracked ones, the
great-expectations gates inside the stages run between stages as they do under DVC, and ``dvc status``
is clean at the end of a run. Profile and overrides are written into params.yaml for the run, like ``dvc exp run -S``,
and put back when it ends (:mod:`fluxir.orchestration.run_guard`): overrides never persist after a run.

Scale-out: with ``shards > 1`` generation and scoring are split into index ranges run as Prefect tasks,
in this process (a thread per shard, each a subprocess) or, with ``shard_deployment``, as flow runs of the
deployment ``fluxir-shard/shard`` that the workers of a work pool pick up, on any machine. With
``shard_url`` (``s3://bucket/prefix``) shard outputs travel through S3; then they are gathered into the
stage's output and the stage itself finishes the job (see :mod:`fluxir.orchestration.shards`).

MLflow: one parent run per flow run (tags: git SHA, dvc.lock hash, profile, flow run id), one child run
per stage, opened by the stage itself (:mod:`fluxir.tracking.lineage`).

    python flows/fluxir_flow.py                          run once, in this process
    python flows/serve.py                                serve the deployment fluxir/full (make services)
    prefect deployment run fluxir/full --watch -p 'overrides={"generate.num_images": 16}'
"""

import os
import shutil
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.runtime import flow_run
from prefect.task_runners import ThreadPoolTaskRunner

from fluxir.config import load_config
from fluxir.orchestration import dvc as orchestrate
from fluxir.orchestration import flow_params, run_guard, shards, storage
from fluxir.tracking import lineage

SHARD_DEPLOYMENT = flow_params.SHARD_DEPLOYMENT
SERVED = Path(__file__).resolve().parents[1]
"""The project whose flows/ this file is: the only one a flow run of this deployment may use."""
SCRATCH = Path(".fluxir") / "shards"


def _log(line: str) -> None:
    get_run_logger().info(line)


@dataclass(frozen=True)
class Sharding:
    """How a flow run shards generate and score, and where each shard's files live."""

    num_shards: int
    run_key: str
    """The flow run id: shard folders and S3 prefixes of different runs never mix."""
    overrides: dict[str, Any]
    """The profile's settings and the run's overrides: what local shards apply."""
    deployment: str | None = None
    url: str | None = None
    profile: str = "tiny"
    requested: dict[str, Any] | None = None
    """The run's own (checked) overrides: what shard flow runs receive, beside the profile's name."""

    def work(self, project: Path, stage: str, start: int, count: int) -> Path:
        return project / SCRATCH / self.run_key / stage / shards.shard_name(start, count)

    def prefix(self, stage: str, start: int, count: int) -> str:
        return f"{self.url}/{self.run_key}/{stage}/{shards.shard_name(start, count)}"


# ----------------------------------------------------------------------------------------------
# Tasks: each calls one stage (through DVC) or moves shard data


@task(task_run_name="dvc repro {stage}")
def reproduce(stage: str, project: Path, env: dict[str, str]) -> None:
    """Run one stage through DVC; its output (and, on failure, its error) goes to the Prefect log."""
    orchestrate.repro(stage, project, env, on_line=_log)


# Generation is retried: a lost GPU, a preempted node or a full disk are worth another try, and a retry
# renders only the images that are still missing.
@task(retries=2, retry_delay_seconds=[5, 30], task_run_name="generate {start}+{count}")
def generate_range(
    project: Path,
    start: int,
    count: int,
    scratch: Path,
    overrides: dict[str, Any],
    env: dict[str, str] | None = None,  # local shards: their thread/GPU share; a worker's shard: its own
) -> dict:
    return shards.generate_shard(project, start, count, scratch, overrides, env=env, on_line=_log)


@task(task_run_name="score {workdir.name}")
def score_range(
    project: Path,
    slice_dir: Path,
    workdir: Path,
    overrides: dict[str, Any],
    env: dict[str, str] | None = None,
) -> str:
    return str(shards.score_shard(project, slice_dir, workdir, overrides, env=env, on_line=_log))


@task(retries=3, retry_delay_seconds=[2, 10, 30], task_run_name="upload {url}")
def upload(folder: Path, url: str) -> int:
    storage.ensure_bucket(url)
    return len(storage.upload_dir(folder, url))


@task(retries=3, retry_delay_seconds=[2, 10, 30], task_run_name="download {url}")
def download(url: str, folder: Path) -> int:
    return len(storage.download_prefix(url, folder))


@task(retries=1, retry_delay_seconds=10, task_run_name="shard {stage} {start}+{count}")
def run_shard(deployment: str, stage: str, start: int, count: int, params: dict[str, Any]) -> str:
    """One shard as a flow run of ``deployment`` (a work pool's workers pick it up); waits for it."""
    from prefect.deployments import run_deployment

    child = run_deployment(
        deployment, parameters={"stage": stage, "start": start, "count": count, **params}, timeout=None
    )
    if not child.state or not child.state.is_completed():
        message = child.state.message if child.state else "no state"
        raise RuntimeError(
            f"shard {stage} {start}+{count} (flow run {child.name}) ended {child.state_name}: {message}"
        )
    return str(child.id)


@task
def publish_benchmark(project: Path, report_dir: str) -> str | None:
    """The benchmark table (Table 1 layout) as the run's markdown artifact."""
    table = project / report_dir / "table1.md"
    if not table.is_file():
        get_run_logger().warning("no benchmark table at %s", table)
        return None
    create_markdown_artifact(
        key="fluxir-benchmark",
        markdown=table.read_text(),
        description=f"Benchmark table of flow run {flow_run.name}",
    )
    return str(table)


# ----------------------------------------------------------------------------------------------
# Sharded stages


@task(task_run_name="{stage}: run and dvc commit")
def finish(stage: str, project: Path, env: dict[str, str]) -> None:
    """The stage's own command over the gathered shard work, then ``dvc commit`` (see fluxir.orchestration.shards)."""
    orchestrate.run_and_commit(stage, project, env, on_line=_log)


def generate(project: Path, cfg: Any, env: dict[str, str], sharding: Sharding) -> None:
    """The generate stage; sharded when asked for and the stage is out of date."""
    folder_source = cfg.generate.source == "folder"  # ingesting a folder has no index ranges
    if sharding.num_shards < 2 or folder_source or not orchestrate.stage_changed("generate", project):
        reproduce("generate", project, env)
        return
    orchestrate.remove_outs("generate", project)  # as dvc repro would
    ranges = shards.split_range(cfg.generate.num_images, sharding.num_shards, align=cfg.generate.batch_size)
    parts = _run_shards("generate", ranges, project, sharding)
    moved = shards.gather_generate(parts, project / cfg.generate.out_dir)
    get_run_logger().info("gathered %d images from %d generate shards", moved, len(parts))
    finish("generate", project, env)


def score(project: Path, cfg: Any, env: dict[str, str], sharding: Sharding) -> None:
    """The score stage; sharded when asked for and the stage is out of date."""
    if sharding.num_shards < 2 or not orchestrate.stage_changed("score", project):
        reproduce("score", project, env)
        return
    manifest = project / cfg.score.in_manifest
    ranges = shards.split_range(shards.count_rows(manifest), sharding.num_shards)
    orchestrate.remove_outs("score", project)
    for s, c in ranges:
        slice_dir = sharding.work(project, "score", s, c) / "in"
        shards.make_score_slice(manifest, s, c, slice_dir)
        if sharding.url and sharding.deployment:  # for workers on other machines
            upload(slice_dir, f"{sharding.prefix('score', s, c)}/in")
    outs = _run_shards("score", ranges, project, sharding)
    shards.gather_scores([out / "out" / shards.SLICE_MANIFEST for out in outs], project / cfg.score.out_dir)
    finish("score", project, env)


def _run_shards(stage: str, ranges: list[tuple[int, int]], project: Path, sharding: Sharding) -> list[Path]:
    """Run the shards of ``stage`` (tasks here, or flow runs on a work pool); returns their local folders."""
    futures = []
    for i, (s, c) in enumerate(ranges):
        work = sharding.work(project, stage, s, c)
        env = shards.shard_env(i, len(ranges))  # local shards share this machine's cores and GPUs
        if sharding.deployment:
            params = {
                "run_key": sharding.run_key,
                "profile": sharding.profile,
                "overrides": sharding.requested or {},
                "shard_url": sharding.url,
            }
            futures.append(run_shard.submit(sharding.deployment, stage, s, c, params))
        elif stage == "generate":
            futures.append(generate_range.submit(project, s, c, work, sharding.overrides, env))
        else:
            futures.append(score_range.submit(project, work / "in", work, sharding.overrides, env))
    for f in futures:
        f.result()  # raises the first shard failure
    folders = [sharding.work(project, stage, s, c) for s, c in ranges]
    if sharding.url and sharding.deployment:  # workers elsewhere sent their outputs through S3
        for (s, c), work in zip(ranges, folders, strict=True):
            if stage == "score":
                download(f"{sharding.prefix(stage, s, c)}/out", work / "out")
            else:
                download(sharding.prefix(stage, s, c), work)
    return folders


# ----------------------------------------------------------------------------------------------
# Flows


@flow(name="fluxir", log_prints=True, task_runner=ThreadPoolTaskRunner(max_workers=8))
def fluxir(
    profile: Literal["tiny", "paper"] = "tiny",
    overrides: dict[str, Any] | None = None,
    num_shards: int = 1,
    shard_deployment: str | None = None,
    shard_url: str | None = None,
    project_dir: str = ".",
) -> dict[str, Any]:
    """Run the whole pipeline; returns the MLflow parent run id and whether ``dvc status`` is clean.

    Args:
        profile: settings preset ``configs/profiles/<profile>.yaml`` (tiny: CPU plumbing; paper: FLUX.1-dev).
        overrides: dotted params applied over the profile, e.g. ``{"generate.num_images": 16}``.
        num_shards: split generation and scoring into this many shards (1: no sharding).
        shard_deployment: run shards as flow runs of this deployment (``fluxir-shard/shard``) on a work
            pool's workers; empty: as tasks of this flow run.
        shard_url: ``s3://bucket/prefix`` through which shards on other machines send their outputs;
            empty: shards share this project's folder.
        project_dir: only the project this process serves (its working folder) is accepted; kept as a
            parameter so that an old caller naming it gets a clear refusal rather than a surprise.

    Every parameter is checked (:mod:`fluxir.orchestration.flow_params`) before anything is written or
    run: overrides name only numbers, switches and choices of the schema, never paths or free text.
    """
    project, settings = flow_params.check_flow_run(
        SERVED, profile, overrides, num_shards, shard_deployment, shard_url, project_dir
    )
    # The run's settings hold in params.yaml only while it runs (dvc.lock records them); the guard also
    # refuses a second run in this project while this one holds it.
    with run_guard.pipeline_run(project, settings, orchestrate.set_params):
        return _run_pipeline(project, profile, overrides or {}, settings, num_shards, shard_deployment,
                             shard_url)  # fmt: skip


def _run_pipeline(
    project: Path,
    profile: str,
    overrides: dict[str, Any],
    settings: dict[str, Any],
    num_shards: int,
    shard_deployment: str | None,
    shard_url: str | None,
) -> dict[str, Any]:
    cfg = load_config(project / "params.yaml")
    run_key = str(flow_run.id or "local")
    sharding = Sharding(
        num_shards, run_key, settings, shard_deployment or None, shard_url or None, profile, overrides
    )
    tags = {"fluxir.pipeline": "prefect", "profile": profile, "prefect.flow_run_id": run_key,
            "prefect.flow_run_name": str(flow_run.name)}  # fmt: skip
    parent = lineage.open_pipeline_run(cfg, project, name=f"prefect {flow_run.name}", tags=tags)
    env = {lineage.PARENT_ENV: parent}
    try:
        reproduce("build-model", project, env)
        generate(project, cfg, env, sharding)
        score(project, cfg, env, sharding)
        reproduce("filter", project, env)
        reproduce("degrade", project, env)
        reproduce("train", project, env)
        reproduce("benchmark", project, env)
        publish_benchmark(project, cfg.benchmark.report_dir)
    except BaseException as exc:
        lineage.close_pipeline_run(parent, cfg, project, "FAILED", error=f"{type(exc).__name__}: {exc}")
        raise
    lineage.close_pipeline_run(parent, cfg, project)
    shutil.rmtree(project / SCRATCH / run_key, ignore_errors=True)
    # Checked with the run's settings still in place: every stage is locked at what this run used.
    clean, status = orchestrate.pipeline_clean(project)
    get_run_logger().info("dvc status: %s", status)
    return {"mlflow_parent_run_id": parent, "dvc_status_clean": clean}


@flow(name="fluxir-shard", log_prints=True)
def shard(
    stage: Literal["generate", "score"],
    start: int,
    count: int,
    run_key: str,
    overrides: dict[str, Any] | None = None,
    shard_url: str | None = None,
    project_dir: str = ".",
    profile: Literal["tiny", "paper"] = "tiny",
) -> dict[str, Any]:
    """One shard of generate or score, run by a work-pool worker in its own checkout of the project.

    Checked like the ``fluxir`` flow: the worker's own project only, allowed overrides over ``profile``.
    """
    project, _ = flow_params.check_shard_run(
        SERVED, stage, start, count, run_key, overrides, shard_url, project_dir
    )
    overrides = flow_params.flow_settings(project, profile, overrides)
    sharding = Sharding(1, run_key, overrides, url=shard_url or None)
    name = shards.shard_name(start, count)
    work = sharding.work(project, stage, start, count)
    get_run_logger().info(
        "shard %s %s on %s, worker process %d", stage, name, socket.gethostname(), os.getppid()
    )
    prefix = sharding.prefix(stage, start, count) if shard_url else None
    if stage == "generate":
        generate_range(project, start, count, work, overrides)
        if prefix:
            upload(work, prefix)
    else:
        if prefix:
            download(f"{prefix}/in", work / "in")
        score_range(project, work / "in", work, overrides)
        if prefix:
            upload(work / "out", f"{prefix}/out")
    return {"stage": stage, "shard": name, "host": socket.gethostname(), "worker_pid": os.getppid()}


if __name__ == "__main__":
    fluxir()
