"""What a training run records (process 0 only): CSV curves for DVC plots and, optionally, MLflow.

- ``<report_dir>/loss.csv``: step, loss, mse, pixel, lr (one row per optimizer step)
- ``<report_dir>/val.csv``: step, val_loss, val_mse, val_pixel
- MLflow (``train.track``): the whole resolved config as params, the curves above plus grad norm,
  throughput (samples/s) and peak memory as metrics, LQ | restored | HQ grids as images, and a cost
  ledger (device-hours by device type) as metrics and a table; lineage tags come from
  :func:`fluxir.tracking.runs.start_run`.

CSV rows are appended as steps finish; a resumed run first rewrites both files from the checkpoint's
history, which drops rows a killed run wrote after its last checkpoint (and any torn last line).

MLflow follows the project's policy (:mod:`fluxir.tracking.policy`): the run is opened only if the server
answers (else the training stops in one line when ``tracking.required``, or goes on untracked), and a call
that fails mid-run is one warning, noted in the stage's report, after which this run logs to MLflow no
more: training never waits on a dead server step after step, and never dies for its metrics.
"""

from __future__ import annotations

import contextlib
import platform
import resource
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fluxir.config import Config, to_dict
from fluxir.io import write_text_atomic
from fluxir.train.checkpoint import LOSS_COLUMNS, VAL_COLUMNS, TrainerState, csv_text

LOSS_CSV = "loss.csv"
VAL_CSV = "val.csv"
STAGE = "train"  # whose report notes a tracking problem of the run (fluxir.tracking.policy)


def device_type(device: torch.device) -> str:
    """A cost-ledger label: the GPU's name, or 'cpu (<machine>)'."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({platform.machine()})"


def peak_memory_gib(device: torch.device) -> float:
    """Peak GPU memory allocated by torch, or the process's peak resident memory on CPU."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**30
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # Linux reports KiB


def cost_ledger(device_seconds: Mapping[str, float]) -> list[dict[str, Any]]:
    return [{"device_type": k, "device_hours": v / 3600} for k, v in sorted(device_seconds.items())]


class RunLog:
    """Appends curves to CSVs and, when an MLflow run is active (``mlflow_on``), logs to it too, until an
    MLflow call fails: then a warning (:func:`fluxir.tracking.policy.lost`) and the CSVs only."""

    def __init__(self, report_dir: str | Path, mlflow_on: bool):
        self.dir = Path(report_dir)
        self.mlflow_on = mlflow_on

    def restart(self, state: TrainerState) -> None:
        """Rewrite the CSVs from the checkpoint's history (a fresh run: headers only)."""
        write_text_atomic(self.dir / LOSS_CSV, csv_text(state.history, LOSS_COLUMNS))
        write_text_atomic(self.dir / VAL_CSV, csv_text(state.val_history, VAL_COLUMNS))

    def _append(self, name: str, row: Mapping[str, Any], columns: tuple[str, ...]) -> None:
        line = csv_text([row], columns).split("\n", 1)[1]  # drop the header
        with open(self.dir / name, "a") as f:
            f.write(line)

    def _mlflow(self, action: Callable[[], Any]) -> None:
        """One MLflow call, if this run still logs there (MLflow is imported only then); a failure turns
        MLflow off for the rest of the run."""
        if not self.mlflow_on:
            return
        try:
            action()
        except Exception as exc:  # noqa: BLE001 - the curves, checkpoints and adapter matter more
            import mlflow

            from fluxir.tracking import policy

            self.mlflow_on = False
            policy.lost(STAGE, mlflow.get_tracking_uri(), exc)

    def _metrics(self, metrics: Mapping[str, float | None], step: int) -> None:
        def log() -> None:
            import mlflow

            mlflow.log_metrics({k: float(v) for k, v in metrics.items() if v is not None}, step=step)

        self._mlflow(log)

    def step(self, row: Mapping[str, Any], extra: Mapping[str, float | None]) -> None:
        self._append(LOSS_CSV, row, LOSS_COLUMNS)
        self._metrics({**{k: v for k, v in row.items() if k != "step"}, **extra}, row["step"])

    def val(self, row: Mapping[str, Any]) -> None:
        self._append(VAL_CSV, row, VAL_COLUMNS)
        self._metrics({k: row[k] for k in VAL_COLUMNS if k != "step"}, row["step"])

    def image(self, image: np.ndarray, step: int) -> None:
        def log() -> None:
            import mlflow

            mlflow.log_image(image, artifact_file=f"grids/step_{step:08d}.png")

        self._mlflow(log)

    def finish(self, metrics: Mapping[str, float], device_seconds: Mapping[str, float], step: int) -> None:
        def log_all() -> None:
            import mlflow
            import pandas as pd

            from fluxir.tracking.runs import log_table

            ledger = cost_ledger(device_seconds)
            mlflow.log_metrics({k: float(v) for k, v in metrics.items()}, step=step)
            mlflow.log_metric("cost_device_hours", sum(r["device_hours"] for r in ledger), step=step)
            log_table(pd.DataFrame(ledger), "cost_ledger")

        self._mlflow(log_all)


@contextlib.contextmanager
def tracked_run(enabled: bool, config: Config, tags: Mapping[str, Any]) -> Iterator[bool]:
    """An MLflow run (``config.tracking``) with the whole resolved config as params, or nothing; yields
    whether it is on.

    The MLflow policy decides first (:func:`fluxir.tracking.policy.check`): a silent server stops the run
    when ``tracking.required``, else it trains untracked. A run that fails to open does the same (after a
    one-line warning). The run ends FINISHED, FAILED or KILLED with the block; ending it is best effort.
    """
    if not enabled:
        yield False
        return
    from fluxir.tracking import policy
    from fluxir.tracking.lineage import resolve_uri
    from fluxir.tracking.runs import log_config, open_run

    uri = resolve_uri(config.tracking.uri)
    required = policy.is_required(config)
    if not policy.check(STAGE, uri, required):
        yield False
        return
    try:
        open_run(STAGE, config.tracking.experiment, tags=tags, uri=uri)
        log_config(to_dict(config))
    except Exception as exc:  # noqa: BLE001 - the policy decides: stop (required) or train untracked
        _end_run(uri, "FAILED", brief=True)  # bailing out: one short try, not MLflow's retries
        policy.refused(STAGE, uri, exc, required)
        yield False
        return
    status = "FINISHED"
    try:
        yield True
    except BaseException as exc:
        status = "FAILED" if isinstance(exc, Exception) else "KILLED"
        raise
    finally:
        _end_run(uri, status)


def _end_run(uri: str, status: str, brief: bool = False) -> None:
    """End the active run, if any; a failure is a warning. ``brief`` (or a server known silent): one short
    try, so a dead server costs a second, not MLflow's retries (``mlflow.end_run`` forgets the run locally
    before it calls the server, so none is left for MLflow to end again at exit)."""
    import mlflow

    from fluxir.tracking import policy
    from fluxir.tracking.runs import brief_requests

    if mlflow.active_run() is None:
        return
    try:
        with brief_requests() if brief or policy.is_silent(uri) else contextlib.nullcontext():
            mlflow.end_run(status)
    except Exception as exc:  # noqa: BLE001 - the run's files are written; its status is tracking's loss
        policy.lost(STAGE, uri, exc, what="to end the run")
