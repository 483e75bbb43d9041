"""The adapter learns: `python -m fluxir.stages.train` with the tiny profile of params.yaml (torch
engine, one process, 60 steps at lr 1e-2) on pairs degraded from real scikit-image photos lowers the
held-out validation loss (fixed t and noise) by at least 30% from step 0, and the run is in MLflow.

The tiny FLUX has random weights: this shows the training loop optimises, not that it restores images.
The held-out PSNR of 20-step restorations vs bicubic is printed (run with -s), not asserted.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys

import pytest
from train_pairs import write_pairs, write_params

pytestmark = pytest.mark.slow


def test_validation_loss_falls_and_the_run_is_tracked(tmp_path, tiny_model_dir):
    write_pairs(tmp_path, per_photo=6)  # 24 pairs from 4 photos, 3 crop sizes
    write_params(tmp_path, tiny_model_dir, grid_every=30)  # everything else: the repo's tiny profile
    done = subprocess.run(
        [sys.executable, "-m", "fluxir.stages.train"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=540,
        env={**os.environ, "OMP_NUM_THREADS": "1"},  # a second thread on a busy small machine costs ~10x
    )
    assert done.returncode == 0, done.stderr[-3000:]

    with open(tmp_path / "reports/train/val.csv") as f:
        val = [{k: float(v) for k, v in row.items()} for row in csv.DictReader(f)]
    assert [int(r["step"]) for r in val] == [0, 20, 40, 60]
    start, end = val[0]["val_loss"], val[-1]["val_loss"]
    assert end <= 0.7 * start, f"validation loss {start:.4f} -> {end:.4f} fell by less than 30%"
    metrics = json.loads((tmp_path / "reports/train/metrics.json").read_text())
    print(
        f"\nval loss {start:.4f} -> {end:.4f} ({end / start - 1:+.1%}); held-out PSNR over "
        f"{metrics['psnr_pairs']} pairs: {metrics['psnr_steps']}-step restoration "
        f"{metrics['psnr_restored']:.2f} dB, bicubic {metrics['psnr_bicubic']:.2f} dB"
    )

    import mlflow

    client = mlflow.MlflowClient(f"sqlite:///{tmp_path / 'mlruns.db'}")
    (run,) = client.search_runs([client.get_experiment_by_name("fluxir").experiment_id])
    assert run.info.status == "FINISHED"
    assert run.data.params["train.lr"] == "0.01" and run.data.params["restore.guidance"] == "3.5"
    for key in (
        "loss",
        "mse",
        "pixel",
        "lr",
        "grad_norm",
        "samples_per_s",
        "peak_mem_gib",
        "val_loss",
        "psnr_restored",
        "psnr_bicubic",
        "cost_device_hours",
    ):
        assert key in run.data.metrics, key
    assert len(client.get_metric_history(run.info.run_id, "loss")) == 60
    assert run.data.metrics["val_loss"] == pytest.approx(end)
    assert run.data.tags["stage"] == "train" and "git.sha" in run.data.tags
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id, "grids")}
    assert artifacts == {"grids/step_00000030.png", "grids/step_00000060.png"}
    ledger = json.loads(open(client.download_artifacts(run.info.run_id, "tables/cost_ledger.json")).read())
    assert ledger["columns"] == ["device_type", "device_hours"] and ledger["data"][0][0].startswith("cpu")
    assert (tmp_path / "reports/train/grid.png").is_file()
    assert (tmp_path / "data/train/adapter/config.json").is_file()
