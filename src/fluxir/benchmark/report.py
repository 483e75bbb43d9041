"""Table 1 reports of a benchmark run, and their MLflow logging.

Files in ``benchmark.report_dir``: ``metrics.json`` (DVC metrics: dataset -> method -> metric -> mean),
``summary.json`` (settings, how each set was framed, absent metrics with reasons), ``table1.md`` /
``table1.csv`` in the paper's layout, ``per_image.csv``, and ``grids/<dataset>_<id>.png``
(LQ | methods | HQ). They are DVC outputs, so they hold only what code, params and inputs decide:
wall-clock timings (:func:`timings`) go to MLflow and the log, never into a file.
:func:`log_benchmark` sends all of it to the active MLflow run: metrics, timings, the tables under the
fixed names ``table1`` and ``per_image`` (``mlflow.log_table``, with each image's seconds), grids as
images.

:func:`profile_notes` and :func:`metric_key` serve the ablation reports too.
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from fluxir.benchmark import tables
from fluxir.benchmark.runner import BenchmarkResult, fidelity_setting
from fluxir.config import Config
from fluxir.data.images import load_rgb, write_image_atomic
from fluxir.io import write_bytes_atomic
from fluxir.tracking.lineage import profile_of

TINY_NOTE = (
    "Made with the tiny random-weight FLUX model (model.base: tiny): this exercises the code path "
    "(plumbing), it says nothing about quality."
)


def profile_notes(cfg: Config) -> list[str]:
    """Header lines every report carries: what model made it."""
    if cfg.model.base == "tiny":
        return [f"**{TINY_NOTE}**"]
    return [f"Base model: {cfg.model.base}."]


def metric_key(*parts: str) -> str:
    """An MLflow metric name from parts: characters MLflow refuses (e.g. '+') become '_'."""
    return "/".join(re.sub(r"[^A-Za-z0-9_\-. ]", "_", p) for p in parts)


def filename_part(text: str) -> str:
    """``text`` with every character outside ``[A-Za-z0-9_.-]`` replaced by '_', for file and tag names."""
    return re.sub(r"[^A-Za-z0-9_.-]", "_", text)


def _json(obj: Any) -> str:
    return json.dumps(obj, indent=2, allow_nan=False) + "\n"


def header_lines(cfg: Config, sets: list[Any]) -> list[str]:
    """What a table's numbers mean: the model, PSNR / SSIM's channel and border, each set's framing."""
    lines = profile_notes(cfg)
    lines.append(f"PSNR and SSIM: {fidelity_setting(cfg)} (benchmark.fr_channel, benchmark.fr_border).")
    lines += [f"{s.name} ({s.kind}): {s.framing}." for s in sets]
    return lines


def timings(result: BenchmarkResult, seconds: float) -> dict[str, float]:
    """Wall-clock figures of a run, for MLflow and the log only: they differ on every run."""
    per_image = result.per_image
    out = {"seconds": round(seconds, 3)}
    for (d, m), g in per_image.groupby(["dataset", "method"]):
        out[metric_key("seconds_per_image", str(d), str(m))] = round(float(g["seconds"].mean()), 4)
    return out


def summarize(cfg: Config, result: BenchmarkResult) -> tuple[dict[str, Any], dict[str, str]]:
    """The summary (results, settings, Table 1 rows) and the report files' text by name."""
    suite, names, sets = result.suite, list(result.methods), result.sets
    measured = [m for m in cfg.benchmark.metrics if m in suite.built]
    per_image = result.per_image
    results = tables.means(per_image, measured)
    table_rows = tables.table1_rows(
        results, [(s.name, s.has_hq) for s in sets], names, suite.info, suite.absent
    )
    notes = [f"{name}: {description}" for name, description in result.methods.items()]
    notes.append(
        f"x{cfg.restore.scale}; sets: "
        + ", ".join(f"{s.name} ({s.kind}, {len(s.samples)} images)" for s in sets)
        + "."
    )
    if "piqe" in suite.built:
        notes.append(
            "PIQE is a weak judge (it has rated a blurred, noisy photo above the clean one): plumbing only."
        )
    if result.oracles:
        notes.append(
            f"Not ranked (they see the HQ; no value on sets without HQ): {', '.join(result.oracles)}."
        )
    markdown = tables.table1_markdown(
        table_rows, names, suite.info, suite.absent, header_lines(cfg, sets), notes, unranked=result.oracles
    )
    summary: dict[str, Any] = {
        "profile": profile_of(cfg),
        "note": TINY_NOTE if cfg.model.base == "tiny" else "",
        "scale": cfg.restore.scale,
        "datasets": {s.name: {"kind": s.kind, "images": len(s.samples), "framing": s.framing} for s in sets},
        "fidelity": fidelity_setting(cfg),
        "methods": dict(result.methods),
        "metrics": {n: dataclasses.asdict(mi) for n, mi in suite.info.items()},
        "absent": dict(suite.absent),
        "results": results,
    }
    files = {
        "metrics.json": _json(results),
        "summary.json": _json(summary),
        "table1.md": markdown,
        "table1.csv": tables.table1_csv(table_rows),
        "per_image.csv": per_image.drop(columns=["seconds"]).to_csv(index=False),
    }
    summary["table1_rows"] = table_rows
    return summary, files


def write_reports(cfg: Config, result: BenchmarkResult) -> dict[str, Any]:
    """Write the report files and grids to ``benchmark.report_dir``; return the summary with their paths."""
    report_dir = Path(cfg.benchmark.report_dir)
    grid_paths = []
    for dataset, sample_id, grid in result.grids:
        path = report_dir / "grids" / f"{filename_part(dataset)}_{filename_part(sample_id)}.png"
        write_image_atomic(path, grid)
        grid_paths.append(path)
    summary, files = summarize(cfg, result)
    for name, text in files.items():
        write_bytes_atomic(report_dir / name, text.encode())
    summary["report_dir"] = str(report_dir)
    summary["grids"] = [str(p) for p in grid_paths]
    return summary


def log_benchmark(
    cfg: Config,
    summary: Mapping[str, Any],
    per_image: pd.DataFrame | None = None,
    run_timings: Mapping[str, float] | None = None,
) -> None:
    """Log a benchmark summary to the active MLflow run: config, metrics, timings, tables, grids, reports."""
    import mlflow

    from fluxir.config import to_dict
    from fluxir.tracking.runs import log_config, log_table

    log_config(
        {k: v for k, v in to_dict(cfg).items() if k in ("model", "restore", "degrade", "benchmark", "score")}
    )
    flat = {
        metric_key(dataset, method, metric): value
        for dataset, by_method in summary["results"].items()
        for method, values in by_method.items()
        for metric, value in values.items()
    }
    flat.update({f"time/{k}": float(v) for k, v in (run_timings or {}).items()})  # keys already safe
    if flat:
        mlflow.log_metrics(flat)
    mlflow.set_tags({f"absent.{filename_part(n)}": reason[:5000] for n, reason in summary["absent"].items()})
    if summary.get("note"):
        mlflow.set_tag("note", summary["note"])
    log_table(pd.DataFrame(summary["table1_rows"]).astype({"dataset": str}), "table1")
    if per_image is not None:
        log_table(per_image, "per_image")
    report_dir = Path(summary["report_dir"])
    for name in ("table1.md", "table1.csv", "metrics.json", "summary.json", "per_image.csv"):
        if (report_dir / name).is_file():
            mlflow.log_artifact(str(report_dir / name), artifact_path="benchmark")
    for path in summary.get("grids", []):
        mlflow.log_image(load_rgb(path), artifact_file=f"grids/{Path(path).name}")
