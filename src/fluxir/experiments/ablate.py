"""`fluxir ablate tableN`: the paper's ablations (Tables 2-7) as variants of the same params.

Each row of a table is a dict of params overrides (see :mod:`fluxir.benchmark.ablations`) applied to
params.yaml plus the command's ``--set`` values, exactly what ``dvc exp run -S key=value`` would run.
Rows run one after another in this process, each an MLflow child run of one parent run per table:

  Tables 2, 3, 5, 6   train the adapter with the row's overrides, then benchmark it (fluxir only) on
                      ``ablate.dataset``; parameter counts are read from the adapter that ran.
  Table 4             rebuild the training data first (generate -> score -> filter -> degrade).
  Table 7             generate ``ablate.table7_images`` images per generator and score them with the
                      score stage's metrics; FluxGen is the flux images the IQA filter keeps.

Each row works in its own folder ``<ablate.out_dir>/<table>/<row>/`` (train/, benchmark/, data/), so
rows never overwrite each other or the main pipeline's outputs. A row that cannot run (a stage missing,
weights absent, a generator not in the cache) is reported with the reason; the other rows still run.
Reports: ``<ablate.report_dir>/tableN.md``, ``.csv``, ``.json``, with the paper's numbers beside ours.
Trainer, benchmark and models are imported lazily, so a stage that is not importable only fails its rows.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import inspect
import json
import logging
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from fluxir.benchmark import ablations as ab
from fluxir.config import Config, ConfigError, load_config, parse_override, to_dict
from fluxir.io import write_bytes_atomic
from fluxir.stages import add_common_arguments, setup_logging
from fluxir.stages import run_stage as run_entry

log = logging.getLogger(__spec__.name if __spec__ else __name__)  # "fluxir.experiments.ablate" under python -m too

# What a row can fail on without it being a bug: params, missing files/weights/models, absent stages.
ROW_ERRORS = (ValueError, OSError, ImportError)


def variant_overrides(
    cfg: Config, table: ab.AblationTable, folder: Path, dataset: Mapping[str, Any]
) -> dict[str, Any]:
    """Overrides that give a row its own folders, score only FluxIR on one set, and keep MLflow to the row's run."""
    f = folder
    out: dict[str, Any] = {
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


def train_adapter(cfg: Config) -> dict[str, Any]:
    """Train with ``cfg.train``; if the trainer is not importable, save the initial adapter and say so."""
    try:
        from fluxir.train.build import build_trainer
    except ImportError as exc:
        return _initial_adapter(cfg, f"not trained: the trainer is not importable ({exc})")
    trainer = build_trainer(cfg)
    state = trainer.train()
    _close_process_group()
    metrics_path = Path(cfg.train.report_dir) / "metrics.json"
    metrics = json.loads(metrics_path.read_text()) if metrics_path.is_file() else {}
    return {"status": f"trained {state.step} steps", "train": metrics}


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


def run_stage(name: str, cfg: Config) -> None:
    """``fluxir.stages.<name>.run_<name>(cfg)``; ImportError when that stage is not there."""
    module = importlib.import_module(f"fluxir.stages.{name}")
    core = getattr(module, f"run_{name}", None)
    if core is None:
        raise ImportError(f"fluxir.stages.{name} has no run_{name}(cfg)")
    quiet = {"progress": False} if "progress" in inspect.signature(core).parameters else {}
    core(cfg, **quiet)


def adapter_counts(folder: str | Path) -> dict[str, int]:
    """Table 2's counts of the adapter in ``folder`` (the one the benchmark ran)."""
    from fluxir.models.adapter import FluxIRAdapter, count_parameters

    return count_parameters(FluxIRAdapter.from_pretrained(str(folder)))


def run_row(cfg: Config, table: ab.AblationTable) -> dict[str, Any]:
    """Run one row's stages; returns ours (metric means), params, status and the train metrics."""
    from fluxir.stages.benchmark import run_benchmark

    row: dict[str, Any] = {"ours": {}, "params": None, "train": {}, "absent": {}}
    status = []
    for stage in table.stages:
        if stage == "train":
            trained = train_adapter(cfg)
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
            if stage == "generate" and (reason := _not_cached(cfg)):
                raise FileNotFoundError(reason)
            run_stage(stage, cfg)
    row["status"] = "; ".join(status) or "ran"
    return row


# ----------------------------------------------------------------------------------------------
# Tables 2-6


def run_ablation(
    params: str | Path, overrides: Mapping[str, Any], table_key: str, rows: list[str] | None = None
) -> dict[str, Any]:
    """Run every row of Table 2-6 as an MLflow child of one parent; write reports/ablations/tableN.*."""
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
    tags = {"stage": "ablate", "ablation": table_key, "profile": _profile(base)}
    with start_run(
        f"ablate-{table_key}", base.tracking.experiment, tags=tags, uri=base.tracking.uri
    ) as parent:
        mlflow.log_params({"ablation.table": table_key, "ablation.dataset": dataset["name"],
                           "ablation.rows": ", ".join(v.label for v in variants)})  # fmt: skip
        for variant in variants:
            folder = root / ab.slug(variant.label)
            merged = {**overrides, **variant_overrides(base, table, folder, dataset), **variant.overrides}
            row: dict[str, Any] = {"label": variant.label, "overrides": variant.overrides, "folder": str(folder),
                                   "paper": list(variant.paper), "paper_params": variant.paper_params}  # fmt: skip
            with start_run(variant.label, base.tracking.experiment, nested=True,
                           tags={**tags, "variant": variant.label}, uri=base.tracking.uri) as child:  # fmt: skip
                row["run_id"] = child.info.run_id
                mlflow.log_params({f"override.{k}": str(v) for k, v in variant.overrides.items()})
                try:
                    cfg = load_config(params, merged)
                    log_config(to_dict(cfg))
                    row.update(run_row(cfg, table))
                except ROW_ERRORS as exc:
                    log.warning("%s row %r did not run: %s", table_key, variant.label, exc)
                    row.update(
                        {"ours": {}, "params": None, "status": f"not run: {type(exc).__name__}: {exc}"}
                    )
                _log_row(row)
            results.append(row)
        report = _write_table(base, table, results, dataset)
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
    import mlflow

    from fluxir.stages.benchmark import metric_key

    metrics = {metric_key("ours", k): float(v) for k, v in row.get("ours", {}).items()}
    metrics.update({metric_key("train", k): float(v) for k, v in row.get("train", {}).items()
                    if isinstance(v, (int, float)) and np.isfinite(v)})  # fmt: skip
    if row.get("params"):
        metrics.update({f"params.{k}": float(v) for k, v in row["params"].items()})
    if metrics:
        mlflow.log_metrics(metrics)
    mlflow.set_tag("status", str(row.get("status", ""))[:5000])


def _profile(cfg: Config) -> str:
    return "tiny" if cfg.model.base == "tiny" else cfg.model.base


def _header(cfg: Config, scored_on: str, paper_on: str = "RealLQ250 restorations") -> list[str]:
    from fluxir.stages.benchmark import profile_notes

    lines = profile_notes(cfg)
    lines.append(
        f"Ours: {scored_on}. The paper's columns are its published numbers on {paper_on} "
        "(pyiqa clipiqa+_vitL14_512, musiq, maniqa-pipal)"
        + ("; with the tiny model the two are not comparable." if cfg.model.base == "tiny" else ".")
    )
    return lines


def _write_table(
    cfg: Config, table: ab.AblationTable, rows: list[dict[str, Any]], dataset: Mapping[str, Any]
) -> dict[str, Any]:
    info: dict[str, dict[str, Any]] = next((r["metrics"] for r in rows if r.get("metrics")), {})
    absent = next((r["absent"] for r in rows if r.get("absent")), {})
    ours = [(k, f"{m['label']} {'↓' if m['lower_better'] else '↑'}", bool(m["lower_better"])) for k, m in info.items()
            if k not in absent and (dataset["kind"] != "lq_only" or not m["full_reference"])]  # fmt: skip
    images = next((r.get("images") for r in rows if r.get("images")), "?")
    scored_on = f"FluxIR on {dataset['name']} ({dataset['kind']}, {images} images)"
    notes = [f"{r['label']}: " + (f"overrides {json.dumps(r['overrides'])} (`dvc exp run " + " ".join(
        f"-S {k}={json.dumps(v)}" for k, v in r["overrides"].items()) + "`)" if r["overrides"] else "params as they are")
        for r in rows]  # fmt: skip
    notes += [f"{name} absent: {reason}" for name, reason in absent.items()]
    if table.note:
        notes.append(table.note)
    if table.params_column:
        notes.append(
            "# Params (ours): adapter without SE layers + SE layers, counted on the adapter each row ran."
        )
    md = ab.markdown(
        table.title, table.row_header, rows, ours, _header(cfg, scored_on), notes, table.params_column
    )
    flat = []
    for r in rows:
        entry = {
            "row": r["label"],
            "status": r["status"],
            **{f"ours.{k}": r["ours"].get(k) for k, _, _ in ours},
        }
        if table.params_column:
            p = r.get("params") or {}
            entry.update({"params.without_se": p.get("without_se"), "params.se": p.get("se"),
                          "paper.params": r["paper_params"]})  # fmt: skip
        entry.update({f"paper.{m}": v for m, v in zip(ab.PAPER_METRICS, r["paper"], strict=True)})
        flat.append(entry)
    return _write_reports(cfg, table.key, md, flat, rows)


def _write_reports(
    cfg: Config, key: str, md: str, flat: list[dict[str, Any]], rows: list[dict[str, Any]]
) -> dict[str, Any]:
    out = Path(cfg.ablate.report_dir)
    files = {
        f"{key}.md": md,
        f"{key}.csv": pd.DataFrame(flat).to_csv(index=False),
        f"{key}.json": json.dumps({"profile": _profile(cfg), "rows": rows}, indent=2, default=str) + "\n",
    }
    for name, text in files.items():
        write_bytes_atomic(out / name, text.encode())
    return {"rows": flat, "details": rows, "files": [str(out / n) for n in files], "markdown": md}


# ----------------------------------------------------------------------------------------------
# Table 7


def _not_cached(cfg: Config) -> str | None:
    """Why a hub generator cannot load offline (None when it is local, cached, or downloads are allowed)."""
    from fluxir.stages.generate import FLUX, model_id

    source = cfg.generate.source
    if cfg.ablate.allow_download or source == FLUX or Path(source).expanduser().exists():
        return None
    repo = model_id(cfg)
    if repo.count("/") != 1:
        return None
    from huggingface_hub import constants, try_to_load_from_cache

    if isinstance(try_to_load_from_cache(repo, "model_index.json"), str):
        return None
    return (
        f"{repo} is not in the local Hugging Face cache ({constants.HF_HUB_CACHE}); run `huggingface-cli download "
        f"{repo}` where the hub is reachable, or set ablate.allow_download: true"
    )


def run_table7(params: str | Path, overrides: Mapping[str, Any]) -> dict[str, Any]:
    """Generate N images per source, score them with the score stage's metrics; FluxGen = filtered flux."""
    import mlflow

    from fluxir.benchmark.metrics import build_suite
    from fluxir.models.flux import pick_device
    from fluxir.stages.filter import select
    from fluxir.stages.generate import generate_images, make_render, model_id, read_prompts
    from fluxir.stages.score import configure_torch_home, score_images
    from fluxir.tracking.runs import log_config, log_table, start_run

    base = load_config(params, dict(overrides))
    device = pick_device(base.score.device)
    suite = build_suite(
        base.score.metrics, device, configure_torch_home(base.score.torch_home), base.score.allow_download
    )
    fr = [m for m, i in suite.info.items() if i.full_reference]
    if fr:
        raise ConfigError(
            f"score.metrics: {', '.join(fr)} need a reference image; Table 7 scores generated images"
        )
    root = Path(base.ablate.out_dir) / "table7"
    n = base.ablate.table7_images
    rows: list[dict[str, Any]] = []
    tags = {"stage": "ablate", "ablation": "table7", "profile": _profile(base)}
    with start_run("ablate-table7", base.tracking.experiment, tags=tags, uri=base.tracking.uri) as parent:
        mlflow.log_params({"ablation.table": "table7", "ablation.images": n})
        for source in base.ablate.table7_sources:
            label = ab.SOURCE_LABELS.get(source, source)
            row: dict[str, Any] = {"label": label, "source": source, "ours": {}, "images": 0,
                                   "paper": list(ab.TABLE7_PAPER.get(label, (None,) * 3))}  # fmt: skip
            with start_run(label, base.tracking.experiment, nested=True, tags={**tags, "variant": label},
                           uri=base.tracking.uri) as child:  # fmt: skip
                row["run_id"] = child.info.run_id
                try:
                    cfg = load_config(params, {**overrides, "generate.source": source, "generate.num_images": n,
                                               "generate.out_dir": str(root / ab.slug(label))})  # fmt: skip
                    log_config({"generate": to_dict(cfg.generate), "score": to_dict(cfg.score)})
                    if reason := _not_cached(cfg):
                        raise FileNotFoundError(reason)
                    g = cfg.generate
                    images, _ = generate_images(
                        make_render(cfg), Path(g.out_dir), num_images=n, seed=g.seed, prompts=read_prompts(g),
                        batch_size=g.batch_size, shard_size=g.shard_size, image_format=g.image_format,
                        meta={"source": g.source, "model": model_id(cfg)}, progress=False,
                    )  # fmt: skip
                    paths = [r["path"] for r in images]
                    scores = score_images(paths, [(g.height, g.width)] * len(paths), suite.built,
                                          batch_size=cfg.score.batch_size, device=device, progress=False)  # fmt: skip
                    row.update(
                        ours={m: float(np.nanmean(v)) for m, v in scores.items()},
                        images=len(paths),
                        status="ran",
                    )
                    if source == "flux":
                        rows.append(_log7(row))
                        row = _fluxgen(cfg, scores, suite, select, label)
                except ROW_ERRORS as exc:
                    log.warning("table7 %s did not run: %s", label, exc)
                    row["status"] = f"not run: {type(exc).__name__}: {exc}"
                _log7(row)
            rows.append(row)
        report = _write_table7(base, rows, suite)
        log_table(pd.DataFrame(report["rows"]), "table7")
        for path in report["files"]:
            mlflow.log_artifact(path, artifact_path="ablation")
        report["parent_run_id"] = parent.info.run_id
    return report


def _fluxgen(
    cfg: Config, scores: Mapping[str, np.ndarray], suite: Any, select: Any, label: str
) -> dict[str, Any]:
    """The FluxGen row: the flux images the IQA filter keeps (filter.keep_quantile per metric, AND)."""
    frame = pd.DataFrame(dict(scores))
    sel = select(
        frame, {m: suite.info[m].lower_better for m in frame}, cfg.filter.keep_quantile, cfg.filter.enabled
    )
    kept = frame[sel.keep]
    return {
        "label": ab.FLUXGEN, "source": f"{label} + IQA filter", "images": int(len(kept)),
        "ours": {m: float(kept[m].mean()) for m in frame} if len(kept) else {},
        "paper": list(ab.TABLE7_PAPER[ab.FLUXGEN]),
        "status": f"kept {len(kept)} of {len(frame)} (keep_quantile {cfg.filter.keep_quantile})",
    }  # fmt: skip


def _log7(row: dict[str, Any]) -> dict[str, Any]:
    import mlflow

    from fluxir.stages.benchmark import metric_key

    values = {metric_key("ours", row["label"], k): v for k, v in row["ours"].items() if np.isfinite(v)}
    if values:
        mlflow.log_metrics(values)
    mlflow.set_tag(f"status.{ab.slug(row['label'])}", str(row.get("status", ""))[:5000])
    return row


def _write_table7(cfg: Config, rows: list[dict[str, Any]], suite: Any) -> dict[str, Any]:
    ours = [(m, f"{i.label} {i.arrow}", i.lower_better) for m, i in suite.info.items() if m in suite.built]
    header = _header(
        cfg,
        f"mean score of {cfg.ablate.table7_images} images per generator (score.metrics)",
        "2,000 generated images",
    )
    notes = [f"{name} absent: {reason}" for name, reason in suite.absent.items()]
    notes.append(
        "FluxGen (ours): the Flux.1-dev images that pass the IQA filter (filter.keep_quantile, every metric)."
    )
    md = ab.markdown("Table 7: generated image quality per generator", "Generator", rows, ours, header, notes)
    flat = [{"row": r["label"], "source": r["source"], "images": r["images"], "status": r.get("status", ""),
             **{f"ours.{m}": r["ours"].get(m) for m, _, _ in ours},
             **{f"paper.{m}": v for m, v in zip(ab.PAPER_METRICS, r["paper"], strict=True)}} for r in rows]  # fmt: skip
    return _write_reports(cfg, "table7", md, flat, rows)


# ----------------------------------------------------------------------------------------------
# Entry points


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("table", choices=ab.TABLES_ALL, help="which table to reproduce")
    parser.add_argument(
        "--row", action="append", default=None, help="run only this row (repeatable), e.g. 32"
    )
    add_common_arguments(parser)


def run(args: argparse.Namespace) -> int:
    setup_logging()
    overrides = dict(parse_override(text) for text in args.overrides)
    if args.table == "table7":
        report = run_table7(args.params, overrides)
    else:
        report = run_ablation(args.params, overrides, args.table, args.row)
    print(report["markdown"])
    return 0


def main(argv: list[str] | None = None) -> int:
    return run_entry("ablate", add_arguments, run, argv)


if __name__ == "__main__":
    raise SystemExit(main())
