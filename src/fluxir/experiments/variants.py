"""Tables 2-6: each row a params variant, trained and benchmarked in its own folder, one MLflow child run.

A row's overrides (see :mod:`fluxir.benchmark.ablations`) are applied to params.yaml plus the command's
``--set`` values, exactly what ``dvc exp run -S key=value`` would run. Rows run one after another in this
process, each an MLflow child run of one parent run per table:

  Tables 2, 3, 5, 6   train the adapter with the row's overrides, then benchmark it (fluxir only) on
                      ``ablate.dataset``; parameter counts are read from the adapter that ran.
  Table 4             rebuild the training data first (generate -> score -> filter -> degrade).

Every stage runs by its core function (``run_generate``, ``run_score``, ``run_filter``, ``run_degrade``,
``build_trainer``, ``run_benchmark``), imported where it is used, so a stage that does not import fails
only its rows.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from fluxir.benchmark import ablations as ab
from fluxir.benchmark.report import metric_key
from fluxir.config import Config, ConfigError, load_config, to_dict
from fluxir.experiments.reports import write_table
from fluxir.experiments.rows import ROW_ERRORS, VELOCITY_AT_T1, combine_seeds, log_row, not_cached
from fluxir.tracking.lineage import profile_of

log = logging.getLogger(__name__)


def variant_overrides(
    cfg: Config, table: ab.AblationTable, folder: Path, dataset: Mapping[str, Any]
) -> dict[str, Any]:
    """Overrides that give a row its own folders, score only FluxIR on one set, and keep MLflow to the row's run."""
    f = folder
    out: dict[str, Any] = {
        "tracking.reports_dir": str(f / "reports"),  # validation reports too: never the pipeline's own
        "train.out_dir": str(f / "train"),
        "train.report_dir": str(f / "reports" / "train"),
        "train.track": False,  # the row's MLflow run gets the train metrics; the trainer would start its own run
        "benchmark.adapter": str(f / "train" / "adapter"),
        "benchmark.out_dir": str(f / "benchmark"),
        "benchmark.report_dir": str(f / "reports" / "benchmark"),
        "benchmark.track": False,
        "benchmark.methods": ["fluxir"],
        "benchmark.sr_models": [],
        "benchmark.datasets": [dict(dataset)],
    }
    if "generate" in table.stages:
        data = f / "data"
        out.update({
            "generate.out_dir": str(data / "generate"),
            "score.in_manifest": str(data / "generate" / "manifest.parquet"),
            "score.out_dir": str(data / "score"),
            "filter.in_manifest": str(data / "score" / "manifest.parquet"),
            "filter.out_dir": str(data / "filter"),
            "degrade.in_manifest": str(data / "filter" / "manifest.parquet"),
            "degrade.out_dir": str(data / "degrade"),
            "train.manifest": str(data / "degrade" / "manifest.parquet"),
        })  # fmt: skip
    return out


def pick_dataset(cfg: Config) -> dict[str, Any]:
    """The benchmark set the ablations are scored on (``ablate.dataset``, else the first)."""
    sets = {d.name: d for d in cfg.benchmark.datasets}
    name = cfg.ablate.dataset or cfg.benchmark.datasets[0].name
    if name not in sets:
        raise ConfigError(f"ablate.dataset={name!r}: not a benchmark.datasets name ({', '.join(sets)})")
    return dataclasses.asdict(sets[name])


# ----------------------------------------------------------------------------------------------
# Stages of one row


def train_adapter(cfg: Config, restart_on_change: bool = False) -> dict[str, Any]:
    """Train with ``cfg.train``; if the trainer is not importable, save the initial adapter and say so.

    ``restart_on_change``: checkpoints in the row's folder from other settings or inputs are removed and
    training starts over; otherwise the trainer refuses them (ConfigError, naming the folder)."""
    try:
        from fluxir.train.build import build_trainer
    except ImportError as exc:
        return _initial_adapter(cfg, f"not trained: the trainer is not importable ({exc})")
    trainer = build_trainer(cfg)
    trainer.restart_on_change = restart_on_change
    state = trainer.train()
    metrics_path = Path(cfg.train.report_dir) / "metrics.json"
    metrics = json.loads(metrics_path.read_text()) if metrics_path.is_file() else {}
    if trainer.data.val.pairs:
        metrics[VELOCITY_AT_T1] = velocity_error_at_t1(trainer)
    _close_process_group()
    return {"status": f"trained {state.step} steps", "train": metrics}


def velocity_error_at_t1(trainer: Any) -> float:
    """The trained model's velocity MSE at t = 1 (pure noise in, only the LQ to go on) on the held-out
    pairs, with the validation's fixed noise. The paper's case for f(u) over logit-normal: logit-normal
    rarely samples t near 1, leaving control weak where sampling starts."""
    settings = trainer.cfg
    trainer.cfg = dataclasses.replace(settings, val_timesteps=[1.0])  # the validation itself, at t = 1 only
    try:
        return float(trainer.evaluate()["val_mse"])
    finally:
        trainer.cfg = settings


def _initial_adapter(cfg: Config, status: str) -> dict[str, Any]:
    import torch

    from fluxir.models.adapter import FluxIRAdapter
    from fluxir.models.flux import load_flux, resolve_base

    t = cfg.train
    base = load_flux(resolve_base(cfg.model.base, cfg.model.tiny_dir), torch_dtype=torch.float32)
    torch.manual_seed(t.seed)
    adapter = FluxIRAdapter.from_flux(
        base.transformer, rank=t.rank, control=t.control, text_control=t.text_control,
        learnable_embeddings=t.learnable_embeddings, max_sequence_length=cfg.model.max_sequence_length,
    )  # fmt: skip
    adapter.save_pretrained(cfg.benchmark.adapter)
    return {"status": status, "train": {}}


def _close_process_group() -> None:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def run_data_stage(name: str, cfg: Config, restart_on_change: bool = False) -> None:
    """Run one of Table 4's data stages (generate, score, filter, degrade) by its core, without progress bars.

    Each stage is imported here, so a stage that does not import fails only the rows that need it.
    ``restart_on_change`` lets generate start over on images made with other settings (as under dvc repro).
    """
    if name == "generate":
        from fluxir.stages.generate import run_generate

        if reason := not_cached(cfg):
            raise FileNotFoundError(reason)
        run_generate(cfg, progress=False, restart_on_change=restart_on_change)
    elif name == "score":
        from fluxir.stages.score import run_score

        run_score(cfg, progress=False)
    elif name == "filter":
        from fluxir.stages.filter import run_filter

        run_filter(cfg)
    elif name == "degrade":
        from fluxir.stages.degrade import run_degrade

        run_degrade(cfg, progress=False)
    else:
        raise ValueError(
            f"ablation stage {name!r}: not one of generate, score, filter, degrade, train, benchmark"
        )


def adapter_counts(folder: str | Path) -> dict[str, int]:
    """Table 2's counts of the adapter in ``folder`` (the one the benchmark ran)."""
    from fluxir.models.adapter import FluxIRAdapter, count_parameters

    return count_parameters(FluxIRAdapter.from_pretrained(str(folder)))


def run_row(cfg: Config, table: ab.AblationTable, restart_on_change: bool = False) -> dict[str, Any]:
    """Run one row's stages; returns ours (metric means), params, status and the train metrics."""
    from fluxir.stages.benchmark import run_benchmark

    row: dict[str, Any] = {"ours": {}, "params": None, "train": {}, "absent": {}}
    status = []
    for stage in table.stages:
        if stage == "train":
            trained = train_adapter(cfg, restart_on_change)
            status.append(trained["status"])
            row["train"] = trained["train"]
        elif stage == "benchmark":
            summary = run_benchmark(cfg, progress=False)
            name = cfg.benchmark.datasets[0].name
            row["ours"] = dict(summary["results"].get(name, {}).get("fluxir", {}))
            row["absent"] = summary["absent"]
            row["metrics"] = summary["metrics"]
            row["images"] = summary["datasets"][name]["images"]
            row["params"] = adapter_counts(cfg.benchmark.adapter)
        else:
            run_data_stage(stage, cfg, restart_on_change)
    row["status"] = "; ".join(status) or "ran"
    return row


# ----------------------------------------------------------------------------------------------
# Tables 2-6


def run_ablation(
    params: str | Path,
    overrides: Mapping[str, Any],
    table_key: str,
    rows: list[str] | None = None,
    seeds: list[int] | None = None,
    restart_on_change: bool = False,
) -> dict[str, Any]:
    """Run every row of Table 2-6 as an MLflow child of one parent; write reports/ablations/tableN.*.

    With ``seeds``, every row runs once per ``train.seed`` (its own folder ``seed-N`` and child run) and the
    table gives the mean and half the range over the seeds, so a reader can tell a difference from noise.
    A row folder's earlier work from other settings or inputs stops that row (it is reported as not run),
    or with ``restart_on_change`` is removed and the row starts over.
    """
    import mlflow

    from fluxir.tracking.runs import log_config, log_table, start_run

    base = load_config(params, dict(overrides))
    table = ab.TABLES[table_key]
    variants = [v for v in table.variants if rows is None or v.label in rows]
    if rows and len(variants) != len(rows):
        known = ", ".join(v.label for v in table.variants)
        raise ConfigError(f"--row {rows!r}: {table_key} has rows {known}")
    dataset = pick_dataset(base)
    root = Path(base.ablate.out_dir) / table_key
    results: list[dict[str, Any]] = []
    t0 = time.perf_counter()
    tags = {"stage": "ablate", "ablation": table_key, "profile": profile_of(base)}
    with start_run(
        f"ablate-{table_key}", base.tracking.experiment, tags=tags, uri=base.tracking.uri
    ) as parent:
        mlflow.log_params({"ablation.table": table_key, "ablation.dataset": dataset["name"],
                           "ablation.rows": ", ".join(v.label for v in variants)})  # fmt: skip
        if seeds:
            mlflow.log_param("ablation.seeds", " ".join(map(str, seeds)))
        mlflow.log_params({f"ablation.set.{k}": str(v) for k, v in overrides.items()})
        for variant in variants:
            runs = []
            for seed in seeds or [None]:
                folder = root / ab.slug(variant.label) / ("" if seed is None else f"seed-{seed}")
                merged = {**overrides, **variant_overrides(base, table, folder, dataset), **variant.overrides}
                if seed is not None:
                    merged["train.seed"] = seed
                label = variant.label if seed is None else f"{variant.label} (seed {seed})"
                row: dict[str, Any] = {"label": variant.label, "overrides": variant.overrides, "folder": str(folder),
                                       "paper": list(variant.paper), "paper_params": variant.paper_params}  # fmt: skip
                with start_run(label, base.tracking.experiment, nested=True,
                               tags={**tags, "variant": variant.label}, uri=base.tracking.uri) as child:  # fmt: skip
                    row["run_id"] = child.info.run_id
                    mlflow.log_params({f"override.{k}": str(v) for k, v in variant.overrides.items()})
                    try:
                        cfg = load_config(params, merged)
                        log_config(to_dict(cfg))
                        row.update(run_row(cfg, table, restart_on_change))
                    except ROW_ERRORS as exc:
                        log.warning("%s row %r did not run: %s", table_key, label, exc)
                        row.update(
                            {"ours": {}, "params": None, "status": f"not run: {type(exc).__name__}: {exc}"}
                        )
                    _log_row(row)
                runs.append(row)
            results.append(runs[0] if seeds is None else combine_seeds(runs, seeds))
        report = write_table(base, table, results, dataset, overrides)
        log_table(pd.DataFrame(report["rows"]), table_key)
        for path in report["files"]:
            mlflow.log_artifact(path, artifact_path="ablation")
        report["parent_run_id"] = parent.info.run_id
    report["seconds"] = round(time.perf_counter() - t0, 3)
    log.info(
        "%s: %d rows in %.1f s; report %s", table_key, len(results), report["seconds"], report["files"][0]
    )
    return report


def _log_row(row: Mapping[str, Any]) -> None:
    metrics = {metric_key("ours", k): float(v) for k, v in row.get("ours", {}).items()}
    metrics.update({metric_key("train", k): float(v) for k, v in row.get("train", {}).items()
                    if isinstance(v, (int, float)) and np.isfinite(v)})  # fmt: skip
    if row.get("params"):
        metrics.update({f"params.{k}": float(v) for k, v in row["params"].items()})
    log_row(metrics, "status", row.get("status", ""))
