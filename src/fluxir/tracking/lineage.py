"""The MLflow run tree of a pipeline run: one parent run per pipeline run, one child run per stage.

Stages run as separate processes (``dvc repro`` runs ``python -m fluxir.stages.<name>``), so the parent is
found, not passed:

1. ``$FLUXIR_PARENT_RUN_ID``: set by whoever owns the parent, e.g. the Prefect flow ``fluxir``, which opens
   the parent with :func:`open_pipeline_run` and closes it with :func:`close_pipeline_run`.
2. else, under ``dvc repro`` / ``dvc exp run``: the first stage of that DVC process opens a parent and
   records its id in ``.fluxir/pipeline-runs/<dvc pid>-<start time>.json``; later stages of the same DVC
   process join it. The parent's status follows its stages (FAILED as soon as one fails).
3. else (``fluxir generate`` by hand, tests): no pipeline, so :func:`stage_run` logs nothing.

A stage's ``run(args)`` wraps its work in ``with stage_run("<stage>", cfg):``. That first applies the MLflow
policy (:mod:`fluxir.tracking.policy`: a server that does not answer stops the stage in one line, or leaves it
untracked with a warning that ``tracking.json`` in its report folder records), then opens the child and
points ``$MLFLOW_RUN_ID`` at it, so a stage that opens its own MLflow run (train, benchmark: through
:func:`fluxir.tracking.runs.start_run`) logs into that child instead of a new top-level run. On exit the child
gets the stage's ``reports/<stage>/summary.json`` numbers as metrics and ``reports/validation/<stage>/``
as artifacts, and ends FINISHED, or FAILED with the error as the tag ``error``.

What differs from one run of a stage to the next although code, params and inputs are the same (wall-clock
timings, throughput, how much work a resumed run found done) never goes into a stage's files, which DVC
hashes: :func:`log_run_facts` writes it to the log and, inside a stage run, to the child run as
``run.<name>`` metrics.

Tags on every run: git SHA and dirty flag, sha256 of dvc.lock (:func:`fluxir.tracking.runs.lineage_tags`),
``profile``, ``fluxir.pipeline`` (dvc | prefect), ``prefect.flow_run_id`` when Prefect runs it, and the process
that owns the run (:mod:`fluxir.tracking.owners`: the flow's, the ``dvc repro``'s, the stage's). Opening a
pipeline run first ends KILLED the runs of the experiment whose owner died without ending them.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fluxir.errors import redact
from fluxir.io import write_json_atomic
from fluxir.tracking import policy
from fluxir.tracking.owners import end_orphaned_runs, owner_tags
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
PIPELINE = "pipeline"  # what the policy's warnings call a pipeline run's parent


@dataclass(frozen=True)
class _Child:
    """The child run of a stage in progress, and what closing it needs."""

    client: MlflowClient
    uri: str
    stage: str
    run_id: str
    parent_id: str
    owns_parent: bool


_ACTIVE_CHILD: ContextVar[_Child | None] = ContextVar("fluxir_stage_child", default=None)


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
    owner: tuple[int, int] | None = None,
) -> str:
    """Create the parent run of a pipeline run, log the whole config on it; returns its run id.

    ``owner`` is the ``(pid, start time)`` of the process whose life the pipeline run spans (default: this
    one; a ``dvc repro`` parent is owned by the DVC process). Runs of the experiment left RUNNING by a
    process that is gone are ended KILLED first. The MLflow policy applies: a server that does not answer
    raises :class:`~fluxir.tracking.policy.MlflowUnavailable` when ``tracking.required``, else this warns
    and returns ``''`` (no pipeline run: :func:`close_pipeline_run` accepts it and does nothing).
    """
    uri = resolve_uri(cfg.tracking.uri, root)
    required = policy.is_required(cfg)
    if not policy.check(PIPELINE, uri, required):
        return ""
    try:
        return _create_pipeline_run(cfg, root, uri, name, tags, owner)
    except Exception as exc:  # noqa: BLE001 - the policy decides: stop (required) or run untracked
        policy.refused(PIPELINE, uri, exc, required)
        return ""


def _create_pipeline_run(
    cfg: Config,
    root: str | os.PathLike,
    uri: str,
    name: str,
    tags: Mapping[str, Any] | None,
    owner: tuple[int, int] | None,
) -> str:
    from fluxir.config import to_dict

    client = _client(uri)
    experiment_id = _experiment_id(client, cfg.tracking.experiment)
    end_orphaned_runs(client, [experiment_id])  # runs left RUNNING by killed processes end KILLED
    all_tags = {**lineage_tags(root), **owner_tags(owner), "profile": profile_of(cfg), **(tags or {})}
    run = client.create_run(experiment_id, run_name=name, tags={k: str(v) for k, v in all_tags.items()})
    _log_params(client, run.info.run_id, to_dict(cfg))
    log.info("MLflow pipeline run %s (%s) at %s", run.info.run_id, name, redact(uri))
    return run.info.run_id


def close_pipeline_run(
    run_id: str, cfg: Config, root: str | os.PathLike = ".", status: str = "FINISHED", error: str = ""
) -> None:
    """End the parent run with ``status`` (FINISHED, FAILED, KILLED); ``error`` becomes its tag.

    Nothing to do for ``''`` (the pipeline ran untracked); a tracking failure here is a warning, so it never
    hides the error that ended the pipeline.
    """
    if not run_id:
        return
    uri = resolve_uri(cfg.tracking.uri, root)
    if policy.is_silent(uri):
        return
    try:
        client = _client(uri)
        if error:
            client.set_tag(run_id, "error", redact(error)[:5000])
        client.set_terminated(run_id, status)
    except Exception as exc:  # noqa: BLE001 - see above
        policy.lost(PIPELINE, uri, exc, what="to end the pipeline run")


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
    """The parent run of the enclosing ``dvc repro`` process, opened by its first stage (raises when MLflow
    fails: the calling stage applies the policy)."""
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
    owner = (ancestor[0], int(ancestor[1]))  # the parent lives as long as DVC, across its stages
    # the stage applied the MLflow policy already, and a failure here is the stage's to report
    run_id = _create_pipeline_run(cfg, root, uri, "dvc repro", {"fluxir.pipeline": "dvc"}, owner)
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


def is_secondary_rank() -> bool:
    """A second process of a multi-process stage (torchrun / deepspeed set RANK, LOCAL_RANK): only the first
    process logs to MLflow, writes reports, and locks the training folder."""
    return any(os.environ.get(k, "0") not in ("", "0") for k in ("RANK", "LOCAL_RANK"))


def in_pipeline() -> bool:
    """Whether this process runs under a pipeline run (a flow's parent, or ``dvc repro``)."""
    return bool(os.environ.get(PARENT_ENV)) or dvc_ancestor() is not None


@contextmanager
def stage_run(
    stage: str,
    cfg: Config,
    root: str | os.PathLike = ".",
    reports: str | os.PathLike | None = None,
    own_run: bool = False,
) -> Iterator[str | None]:
    """Run a stage as a child of the pipeline's parent run; yields the child's run id (None: no pipeline,
    or untracked).

    ``own_run``: the stage opens an MLflow run of its own (``train.track``, ``benchmark.track``), so it needs
    MLflow outside a pipeline too. When it needs MLflow, the policy (:mod:`fluxir.tracking.policy`) is
    applied first, before the stage's work: a server that does not answer stops it with one line
    (``tracking.required``) or leaves it untracked. Any other tracking problem is a warning that never
    fails the stage. Either way, ``tracking.json`` in the stage's report folder (under ``reports``, default
    ``tracking.reports_dir``, relative to ``root``) records it, and exists only then.
    """
    if is_secondary_rank():  # only the first process logs and writes reports
        yield None
        return
    root = Path(root)
    report_folder = policy.report_folder(stage, cfg, root, reports)
    child = _open_stage(stage, cfg, root, own_run)
    try:
        if child is None:
            yield None
        else:
            with _child_active(child, root / (cfg.tracking.reports_dir if reports is None else reports)):
                yield child.run_id
    finally:
        policy.write_report(stage, report_folder)


def _open_stage(stage: str, cfg: Config, root: Path, own_run: bool) -> _Child | None:
    """The MLflow policy for ``stage``, then its child run under the pipeline's parent (None: no pipeline,
    or not tracked)."""
    pipeline = in_pipeline()
    if not (pipeline or own_run):
        return None  # nothing of this stage reaches MLflow: no server to ask
    uri = resolve_uri(cfg.tracking.uri, root)
    required = policy.is_required(cfg)
    if not policy.check(stage, uri, required) or not pipeline:
        return None
    try:
        parent = pipeline_parent(cfg, root)
        if parent is None:
            return None
        client = _client(uri)
        run_id = _open_child(client, stage, cfg, root, *parent)
    except Exception as exc:  # noqa: BLE001 - the policy decides: stop (required) or run untracked
        policy.refused(stage, uri, exc, required)
        return None
    return _Child(client, uri, stage, run_id, *parent)


@contextmanager
def _child_active(child: _Child, reports: Path) -> Iterator[None]:
    """``$MLFLOW_RUN_ID`` points at the child while the stage runs; the child (and a parent this process
    tree owns) ends FINISHED, or FAILED / KILLED with the error as a tag."""
    previous = os.environ.get(RUN_ID_ENV)
    os.environ[RUN_ID_ENV] = child.run_id
    active = _ACTIVE_CHILD.set(child)
    status, error = "FINISHED", ""
    try:
        yield
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
        _close_child(child, reports, status, error)
        if child.owns_parent:
            parent_status = "FAILED" if status != "FINISHED" else "FINISHED"
            _best_effort(child, lambda: child.client.set_terminated(child.parent_id, parent_status))


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
    tags.update(owner_tags())
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


def _close_child(child: _Child, reports: Path, status: str, error: str) -> None:
    client, run_id, stage = child.client, child.run_id, child.stage
    summary = reports / stage / "summary.json"
    if status == "FINISHED" and summary.is_file():
        _best_effort(child, lambda: _log_summary(client, run_id, summary))
    validation = reports / "validation" / stage
    if validation.is_dir() and any(validation.iterdir()):
        _best_effort(child, lambda: client.log_artifacts(run_id, str(validation), artifact_path="validation"))
    if error:
        _best_effort(child, lambda: client.set_tag(run_id, "error", redact(error)[:5000]))
    _best_effort(child, lambda: client.set_terminated(run_id, status))


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

    now = int(time.time() * 1000)
    metrics = [Metric(f"{RUN_FACT_PREFIX}{k}", float(v), now, 0) for k, v in shown.items()]
    _best_effort(active, lambda: active.client.log_batch(active.run_id, metrics=metrics))


def _best_effort(child: _Child, action: Callable[[], Any]) -> None:
    """Run a tracking call of a stage's child run; a failure is a warning and a report note, never raised.
    Skipped once the server is known silent: a dead server costs one bounded wait, not one per call."""
    if policy.is_silent(child.uri):
        return
    try:
        action()
    except Exception as exc:  # noqa: BLE001 - tracking must not stop the data pipeline
        policy.lost(child.stage, child.uri, exc)


__all__ = [
    "PARENT_ENV",
    "close_pipeline_run",
    "in_pipeline",
    "is_secondary_rank",
    "log_run_facts",
    "open_pipeline_run",
    "pipeline_parent",
    "profile_of",
    "resolve_uri",
    "stage_run",
]
