"""What a training run records (process 0 only): CSV curves for DVC plots and, optionally, MLflow.

- ``<report_dir>/loss.csv``: step, loss, mse, pixel, lr (one row per optimizer step)
- ``<report_dir>/val.csv``: step, val_loss, val_mse, val_pixel
- MLflow (``train.track``): the whole resolved config as params, the curves above plus grad norm,
  throughput (samples/s) and peak memory as metrics, LQ | restored | HQ grids as images, and a cost
  ledger (device-hours by device type) as metrics and a table; lineage tags come from
  :func:`fluxir.tracking.runs.start_run`.

CSV rows are appended as steps finish; a resumed run first rewrites both files from the checkpoint's
history, which drops rows a killed run wrote after its last checkpoint (and any torn last line).
"""

from __future__ import annotations

import contextlib
import platform
import resource
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fluxir.config import Config, to_dict
from fluxir.io import write_text_atomic
from fluxir.train.checkpoint import LOSS_COLUMNS, VAL_COLUMNS, TrainerState, csv_text

LOSS_CSV = "loss.csv"
VAL_CSV = "val.csv"


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
    """Appends curves to CSVs and, when an MLflow run is active (``mlflow_on``), logs to it too."""

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

    def _metrics(self, metrics: Mapping[str, float | None], step: int) -> None:
        if self.mlflow_on:
            import mlflow

            mlflow.log_metrics({k: float(v) for k, v in metrics.items() if v is not None}, step=step)

    def step(self, row: Mapping[str, Any], extra: Mapping[str, float | None]) -> None:
        self._append(LOSS_CSV, row, LOSS_COLUMNS)
        self._metrics({**{k: v for k, v in row.items() if k != "step"}, **extra}, row["step"])

    def val(self, row: Mapping[str, Any]) -> None:
        self._append(VAL_CSV, row, VAL_COLUMNS)
        self._metrics({k: row[k] for k in VAL_COLUMNS if k != "step"}, row["step"])

    def image(self, image: np.ndarray, step: int) -> None:
        if self.mlflow_on:
            import mlflow

            mlflow.log_image(image, artifact_file=f"grids/step_{step:08d}.png")

    def finish(self, metrics: Mapping[str, float], device_seconds: Mapping[str, float], step: int) -> None:
        if not self.mlflow_on:
            return
        import mlflow
        import pandas as pd

        from fluxir.tracking.runs import log_table

        ledger = cost_ledger(device_seconds)
        mlflow.log_metrics({k: float(v) for k, v in metrics.items()}, step=step)
        mlflow.log_metric("cost_device_hours", sum(r["device_hours"] for r in ledger), step=step)
        log_table(pd.DataFrame(ledger), "cost_ledger")


@contextlib.contextmanager
def tracked_run(enabled: bool, config: Config, tags: Mapping[str, Any]) -> Iterator[bool]:
    """An MLflow run (``config.tracking``) with the whole resolved config as params, or nothing; yields
    whether it is on."""
    if not enabled:
        yield False
        return
    from fluxir.tracking.runs import log_config, start_run

    with start_run("train", config.tracking.experiment, tags=tags, uri=config.tracking.uri):
        log_config(to_dict(config))
        yield True
