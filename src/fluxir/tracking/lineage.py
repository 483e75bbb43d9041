"""The MLflow run tree of a pipeline run: one parent run per pipeline run, one child run per stage.

Stages run as separate processes (``dvc repro`` runs ``python -m fluxir.stages.<name>``), so the parent is
found, not passed:

1. ``$FLUXIR_PARENT_RUN_ID``: set by whoever owns the parent, e.g. the Prefect flow ``fluxir``, which opens
   the parent with :func:`open_pipeline_run` and closes it with :func:`close_pipeline_run`.
2. else, under ``dvc repro`` / ``dvc exp run``: the first stage of that DVC process opens a parent and
   records its id in ``.fluxir/pipeline-runs/<dvc pid>-<start time>.json``; later stages of the same DVC
   process join it. The parent's status follows its stages (FAILED as soon as one fails).
3. else (``fluxir generate`` by hand, tests): no pipeline, so :func:`stage_run` logs nothing.

A stage's ``run(args)`` wraps its work in ``with stage_run("<stage>", cfg):``. That opens the child and
points ``$MLFLOW_RUN_ID`` at it, so a stage that opens its own MLflow run (train, benchmark: through
:func:`fluxir.tracking.runs.start_run`) logs into that child instead of a new top-level run. On exit the child
gets the stage's ``reports/<stage>/summary.json`` numbers as metrics and ``reports/validation/<stage>/``
as artifacts, and ends FINISHED, or FAILED with the error as the tag ``error``.

What differs from one run of a stage to the next although code, params and inputs are the same (wall-clock
timings, throughput, how much work a resumed run found done) never goes into a stage's files, which DVC
hashes: :func:`log_run_facts` writes it to the log and, inside a stage run, to the child run as
``run.<name>`` metrics.

Tags on every run: git SHA and dirty flag, sha256 of dvc.lock (:func:`fluxir.tracking.runs.lineage_tags`),
``profile``, ``fluxir.pipeline`` (dvc | prefect), and ``prefect.flow_run_id`` when Prefect runs it.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fluxir.errors import redact
from fluxir.io import write_json_atomic
from fluxir.net import http_status
from fluxir.tracking.runs import flatten, follow_project, lineage_tags, tracking_uri

if TYPE_CHECKING:
    from mlflow import MlflowClient

    from fluxir.config import Config

log = logging.getLogger(__name__)

PARENT_ENV = "FLUXIR_PARENT_RUN_ID"
RUN_ID_ENV = "MLFLOW_RUN_ID"  # mlflow.start_run() resumes this run instead of creating one
RUNS_DIR = Path(".fluxir") / "pipeline-runs"
PARENT_TAG = "mlflow.parentRunId"
INHERITED_TAGS = ("profile", "fluxir.pipeline", "prefect.flow_run_id", "prefect.flow_run_name")
_DVC_COMMANDS = {"repro", "exp"}
RUN_FACT_PREFIX = "run."
_ACTIVE_CHILD: ContextVar[tuple[MlflowClient, str] | None] = ContextVar("fluxir_stage_child", default=None)


def profile_of(cfg: Config) -> str:
    """The profile a config runs: 'tiny' for the random-weight model, else the base model's id."""
    return "tiny" if cfg.model.base == "tiny" else cfg.model.base


def resolve_uri(uri: str, root: str | os.PathLike = ".") -> str:
    """:func:`fluxir.tracking.runs.tracking_uri`, with a relative ``sqlite:///file`` made absolute under ``root``.

    A process whose working folder is not the project (a Prefect worker) then logs to the project's file.
    """
    uri = tracking_uri(uri)
    prefix = "sqlite:///"
    if uri.startswith(prefix) and not uri[len(prefix) :].startswith("/"):
        return prefix + str((Path(root) / uri[len(prefix) :]).resolve())
    return uri


def _client(uri: str) -> MlflowClient:
    from mlflow import MlflowClient

    follow_project(uri)  # a copied project's store writes artifacts into its own mlruns/
    return MlflowClient(tracking_uri=uri)


def _experiment_id(client: MlflowClient, name: str) -> str:
    from mlflow.exceptions import MlflowException

    exp = client.get_experiment_by_name(name)
    if exp is not None:
        return exp.experiment_id
    try:
        return client.create_experiment(name)
    except MlflowException:  # another process created it in between
        return client.get_experiment_by_name(name).experiment_id


def open_pipeline_run(
    cfg: Config,
    root: str | os.PathLike = ".",
    name: str = "pipeline",
    tags: Mapping[str, Any] | None = None,
) -> str:
    """Create the parent run of a pipeline run, log the whole config on it; returns its run id."""
    from fluxir.config import to_dict

    uri = resolve_uri(cfg.tracking.uri, root)
    client = _client(uri)
    all_tags = {**lineage_tags(root), "profile": profile_of(cfg), **(tags or {})}
    run = client.create_run(
        _experiment_id(client, cfg.tracking.experiment),
        run_name=name,
        tags={k: str(v) for k, v in all_tags.items()},
    )
    _log_params(client, run.info.run_id, to_dict(cfg))
    log.info("MLflow pipeline run %s (%s) at %s", run.info.run_id, name, redact(uri))
    return run.info.run_id


def close_pipeline_run(
    run_id: str, cfg: Config, root: str | os.PathLike = ".", status: str = "FINISHED", error: str = ""
) -> None:
    """End the parent run with ``status`` (FINISHED, FAILED, KILLED); ``error`` becomes its tag."""
    client = _client(resolve_uri(cfg.tracking.uri, root))
    if error:
        client.set_tag(run_id, "error", error[:5000])
    client.set_terminated(run_id, status)


def _log_params(client: MlflowClient, run_id: str, cfg: Mapping[str, Any]) -> None:
    """``log_config``'s redaction and truncation, through a client (no active run needed)."""
    from mlflow.entities import Param

    from fluxir.tracking.runs import param_value, redact

    params = [Param(k, param_value(v)) for k, v in flatten(redact(cfg)).items()]
    for i in range(0, len(params), 100):  # MLflow's log_batch limit is 100 params per call
        client.log_batch(run_id, params=params[i : i + 100])


# ----------------------------------------------------------------------------------------------
# Finding the parent


def dvc_ancestor(max_depth: int = 8) -> tuple[int, float] | None:
    """``(pid, start time)`` of the ``dvc repro`` / ``dvc exp`` process this process runs under, if any."""
    import psutil

    try:
        proc = psutil.Process().parent()
        for _ in range(max_depth):
            if proc is None:
                return None
            if _is_dvc_run(proc.cmdline()):
                return proc.pid, proc.create_time()
            proc = proc.parent()
    except psutil.Error:
        return None
    return None


def _is_dvc_run(argv: list[str]) -> bool:
    """``dvc repro``, ``python -m dvc exp run``, ``/venv/bin/dvc repro``: however DVC was started."""
    for i, arg in enumerate(argv):
        is_dvc = os.path.basename(arg) == "dvc" or (arg == "dvc" and i > 0 and argv[i - 1] == "-m")
        if is_dvc:
            rest = [a for a in argv[i + 1 :] if not a.startswith("-")]
            return bool(rest) and rest[0] in _DVC_COMMANDS
    return False


def _dvc_parent(cfg: Config, root: Path, uri: str) -> str | None:
    """The parent run of the enclosing ``dvc repro`` process, opened by its first stage."""
    ancestor = dvc_ancestor()
    if ancestor is None:
        return None
    folder = root / RUNS_DIR
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{ancestor[0]}-{int(ancestor[1])}.json"
    if path.is_file():
        rec = json.loads(path.read_text())
        if rec.get("uri") == uri:
            return rec["run_id"]
    _forget_finished(folder)
    run_id = open_pipeline_run(cfg, root, name="dvc repro", tags={"fluxir.pipeline": "dvc"})
    write_json_atomic(path, {"run_id": run_id, "uri": uri, "dvc_pid": ancestor[0]})
    return run_id


def _forget_finished(folder: Path) -> None:
    """Drop the records of DVC processes that have ended (their runs stay in MLflow)."""
    import psutil

    for path in folder.glob("*.json"):
        pid, _, started = path.stem.partition("-")
        try:
            alive = int(psutil.Process(int(pid)).create_time()) == int(started)
        except (psutil.Error, ValueError):
            alive = False
        if not alive:
            path.unlink(missing_ok=True)


def pipeline_parent(cfg: Config, root: str | os.PathLike = ".") -> tuple[str, bool] | None:
    """``(parent run id, whether this process tree owns its status)`` or None outside a pipeline."""
    if os.environ.get(PARENT_ENV):
        return os.environ[PARENT_ENV], False
    root = Path(root)
    run_id = _dvc_parent(cfg, root, resolve_uri(cfg.tracking.uri, root))
    return (run_id, True) if run_id else None


# ----------------------------------------------------------------------------------------------
# The child run of a stage


def _is_secondary_rank() -> bool:
    """A second process of a multi-process stage (torchrun / deepspeed): only rank 0 logs."""
    return any(os.environ.get(k, "0") not in ("", "0") for k in ("RANK", "LOCAL_RANK"))


def _reachable(uri: str, timeout: float = 3.0) -> bool:
    """Whether an MLflow server answers at all (MLflow's own client would retry for minutes); an error
    status counts, MLflow will report what is wrong."""
    return http_status(f"{uri.rstrip('/')}/health", timeout) is not None


@contextmanager
def stage_run(
    stage: str, cfg: Config, root: str | os.PathLike = ".", reports: str | os.PathLike = "reports"
) -> Iterator[str | None]:
    """Run a stage as a child of the pipeline's parent run; yields the child's run id (None: no pipeline).

    Tracking problems (an unreachable server) are logged as warnings and never fail the stage.
    """
    child_id = None
    try:
        uri = resolve_uri(cfg.tracking.uri, root)
        if uri.startswith(("http://", "https://")) and not _reachable(uri):
            raise ConnectionError(f"no MLflow server answers at {redact(uri)}")
        parent = None if _is_secondary_rank() else pipeline_parent(cfg, root)
        if parent is not None:
            parent_id, owns_parent = parent
            client = _client(uri)
            child_id = _open_child(client, stage, cfg, root, parent_id, owns_parent)
    except Exception as exc:  # noqa: BLE001 - tracking must not stop the data pipeline
        log.warning("MLflow: stage %s runs untracked (%s: %s)", stage, type(exc).__name__, redact(str(exc)))
    if child_id is None:
        yield None
        return
    previous = os.environ.get(RUN_ID_ENV)
    os.environ[RUN_ID_ENV] = child_id
    active = _ACTIVE_CHILD.set((client, child_id))
    status, error = "FINISHED", ""
    try:
        yield child_id
    except BaseException as exc:
        status = "FAILED" if isinstance(exc, Exception) else "KILLED"
        error = f"{type(exc).__name__}: {exc}"
        raise
    finally:
        _ACTIVE_CHILD.reset(active)
        if previous is None:
            os.environ.pop(RUN_ID_ENV, None)
        else:
            os.environ[RUN_ID_ENV] = previous
        _close_child(client, child_id, stage, Path(reports), status, error)
        if owns_parent:
            _best_effort(
                lambda: client.set_terminated(parent_id, "FAILED" if status != "FINISHED" else "FINISHED")
            )


def _open_child(
    client: MlflowClient, stage: str, cfg: Config, root: str | os.PathLike, parent_id: str, owns_parent: bool
) -> str:
    from fluxir.config import to_dict

    parent = client.get_run(parent_id)
    inherited = {k: v for k, v in parent.data.tags.items() if k in INHERITED_TAGS}
    tags = {
        **lineage_tags(root),
        "profile": profile_of(cfg),
        **inherited,
        "stage": stage,
        PARENT_TAG: parent_id,
    }
    run = client.create_run(
        parent.info.experiment_id, run_name=stage, tags={k: str(v) for k, v in tags.items()}
    )
    sections = to_dict(cfg)
    wanted = {k: sections[k] for k in ("model", stage) if k in sections}
    _log_params(client, run.info.run_id, wanted)
    if owns_parent:
        client.update_run(parent_id, status="RUNNING")
    log.info("MLflow run %s: stage %s under pipeline run %s", run.info.run_id, stage, parent_id)
    return run.info.run_id


def _close_child(
    client: MlflowClient, run_id: str, stage: str, reports: Path, status: str, error: str
) -> None:
    summary = reports / stage / "summary.json"
    if status == "FINISHED" and summary.is_file():
        _best_effort(lambda: _log_summary(client, run_id, summary))
    validation = reports / "validation" / stage
    if validation.is_dir() and any(validation.iterdir()):
        _best_effort(lambda: client.log_artifacts(run_id, str(validation), artifact_path="validation"))
    if error:
        _best_effort(lambda: client.set_tag(run_id, "error", error[:5000]))
    _best_effort(lambda: client.set_terminated(run_id, status))


def _log_summary(client: MlflowClient, run_id: str, path: Path) -> None:
    """The summary's numbers as metrics (``summary.<key>``) and the file itself as an artifact."""
    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    data = json.loads(path.read_text())
    metrics = [
        Metric(f"summary.{k}", float(v), now, 0)
        for k, v in flatten(data).items()
        if isinstance(v, int | float) and not isinstance(v, bool) and v == v
    ]
    for i in range(0, len(metrics), 1000):
        client.log_batch(run_id, metrics=metrics[i : i + 1000])
    client.log_artifact(run_id, str(path), artifact_path="summary")


def log_run_facts(stage: str, facts: Mapping[str, float | int | None]) -> None:
    """Facts of this run only (seconds, images per second, work found done): the log and the stage's MLflow
    child run (``run.<name>``), never a DVC-tracked file. Outside a stage run only the log gets them."""
    shown = {k: v for k, v in facts.items() if v is not None}
    log.info("%s run: %s", stage, ", ".join(f"{k} {v:g}" for k, v in shown.items()))
    active = _ACTIVE_CHILD.get()
    if active is None:
        return
    from mlflow.entities import Metric

    client, run_id = active
    now = int(time.time() * 1000)
    metrics = [Metric(f"{RUN_FACT_PREFIX}{k}", float(v), now, 0) for k, v in shown.items()]
    _best_effort(lambda: client.log_batch(run_id, metrics=metrics))


def _best_effort(action: Callable[[], Any]) -> None:
    """Run a tracking call; a failure is logged as a warning, never raised."""
    try:
        action()
    except Exception as exc:  # noqa: BLE001 - tracking must not stop the data pipeline
        log.warning("MLflow: %s: %s", type(exc).__name__, exc)


__all__ = [
    "PARENT_ENV",
    "close_pipeline_run",
    "log_run_facts",
    "open_pipeline_run",
    "pipeline_parent",
    "profile_of",
    "resolve_uri",
    "stage_run",
]
