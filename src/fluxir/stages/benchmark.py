"""Stage benchmark: Table 1, FluxIR and baselines on the test sets, scored with pyiqa (paper section 4).

Order of work, so that every mistake a user can make stops the run before minutes of model loading:
  1. prepare each test set (:mod:`fluxir.benchmark.datasets`): check its layout, write its LQ/HQ crops
     and a validated manifest under ``<out_dir>/<name>/``;
  2. build the metrics (absent ones are recorded with the reason, not dropped);
  3. load the methods (FluxIR adapter, spandrel checkpoints);
  4. restore every LQ image with every method into ``<out_dir>/<name>/<method>/<id>.png`` and score it.

Reports in ``report_dir``: ``metrics.json`` (DVC metrics: dataset -> method -> metric -> mean),
``summary.json`` (settings, absent metrics with reasons, timings), ``table1.md`` / ``table1.csv`` in the
paper's layout, ``per_image.csv``, and ``grids/<dataset>_<id>.png`` (LQ | methods | HQ). With
``benchmark.track`` all of it goes to MLflow: metrics, the tables under the fixed names ``table1`` and
``per_image`` (``mlflow.log_table``), grids as images.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import re
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from fluxir.config import Config
from fluxir.data.images import load_rgb, write_image_atomic
from fluxir.io import write_bytes_atomic
from fluxir.stages import REPORTS, add_common_arguments, run_stage, tracked_stage

log = logging.getLogger(__spec__.name if __spec__ else __name__)  # "fluxir.stages.*" under python -m too

TINY_NOTE = (
    "Made with the tiny random-weight FLUX model (model.base: tiny): this exercises the code path "
    "(plumbing), it says nothing about quality."
)


def profile_notes(cfg: Config) -> list[str]:
    """Header lines every report carries: what model made it."""
    if cfg.model.base == "tiny":
        return [f"**{TINY_NOTE}**"]
    return [f"Base model: {cfg.model.base}."]


def run_benchmark(
    cfg: Config, progress: bool = True, metric_kwargs: Mapping[str, Mapping[str, Any]] | None = None
) -> dict[str, Any]:
    """Prepare the sets, restore with every method, score, write the reports; MLflow when benchmark.track."""
    from fluxir.benchmark import datasets, grids, methods, metrics, tables
    from fluxir.models.flux import pick_device
    from fluxir.stages.score import configure_torch_home

    b = cfg.benchmark
    out_dir, report_dir = Path(b.out_dir), Path(b.report_dir)
    t_start = time.perf_counter()

    # ----- 1. test sets (layout errors stop the run here)
    sets = [
        datasets.prepare(spec, cfg.restore.scale, cfg.degrade, out_dir, REPORTS / "validation" / "benchmark")
        for spec in b.datasets
    ]
    for s in sets:
        log.info("benchmark set %s (%s): %d images in %s", s.name, s.kind, len(s.samples), s.root)

    # ----- 2. metrics, 3. methods
    hub = configure_torch_home(cfg.score.torch_home)
    suite = metrics.build_suite(
        b.metrics, pick_device(b.device), hub, cfg.score.allow_download, b.fr_channel, metric_kwargs
    )
    for name, reason in suite.absent.items():
        log.warning("metric %s is absent: %s", name, reason)
    restorers = methods.build_methods(cfg)
    names = [m.name for m in restorers]

    # ----- 4. restore and score
    rows: list[dict[str, Any]] = []
    grid_paths: list[Path] = []
    scale = cfg.restore.scale
    total = sum(len(s.samples) for s in sets) * len(restorers)
    bar = tqdm(total=total, desc="benchmark", unit="img", disable=not progress)
    for bench_set in sets:
        for index, sample in enumerate(bench_set.samples):
            lq = load_rgb(sample.lq_path)
            hq = load_rgb(sample.hq_path) if sample.hq_path is not None else None
            panels = [("LQ", lq)]
            for method in restorers:
                t0 = time.perf_counter()
                restored = method(lq)
                seconds = time.perf_counter() - t0
                expected = (lq.shape[0] * scale, lq.shape[1] * scale, 3)
                if restored.shape != expected or restored.dtype != np.uint8:
                    raise RuntimeError(
                        f"method {method.name} returned {restored.shape} {restored.dtype} for {sample.id}; "
                        f"expected {expected} uint8"
                    )
                write_image_atomic(out_dir / bench_set.name / method.name / f"{sample.id}.png", restored)
                scores = suite.score(restored, hq)
                rows.append(
                    {
                        "dataset": bench_set.name,
                        "id": sample.id,
                        "method": method.name,
                        "seconds": seconds,
                        **scores,
                    }
                )
                panels.append((method.name, restored))
                bar.update(1)
            if index < b.grid_images:
                if hq is not None:
                    panels.append(("HQ", hq))
                path = report_dir / "grids" / f"{_safe(bench_set.name)}_{_safe(sample.id)}.png"
                write_image_atomic(path, grids.make_grid(panels))
                grid_paths.append(path)
    bar.close()

    # ----- reports
    measured = [m for m in b.metrics if m in suite.built]
    per_image = pd.DataFrame(rows, columns=["dataset", "id", "method", "seconds", *measured])
    results = tables.means(per_image, measured)
    set_list = [(s.name, s.has_hq) for s in sets]
    table_rows = tables.table1_rows(results, set_list, names, suite.info, suite.absent)
    notes = [f"{m.name}: {m.description}" for m in restorers]
    notes.append(
        f"x{scale}; sets: " + ", ".join(f"{s.name} ({s.kind}, {len(s.samples)} images)" for s in sets) + "."
    )
    if "piqe" in suite.built:
        notes.append(
            "PIQE is a weak judge (it has rated a blurred, noisy photo above the clean one): plumbing only."
        )
    header = profile_notes(cfg)
    markdown = tables.table1_markdown(table_rows, names, suite.info, suite.absent, header, notes)
    summary: dict[str, Any] = {
        "profile": "tiny" if cfg.model.base == "tiny" else cfg.model.base,
        "note": TINY_NOTE if cfg.model.base == "tiny" else "",
        "scale": scale,
        "datasets": {s.name: {"kind": s.kind, "images": len(s.samples)} for s in sets},
        "methods": {m.name: m.description for m in restorers},
        "metrics": {n: dataclasses.asdict(mi) for n, mi in suite.info.items()},
        "absent": dict(suite.absent),
        "results": results,
        "seconds_per_image": {
            f"{d}/{m}": round(float(g["seconds"].mean()), 4)
            for (d, m), g in per_image.groupby(["dataset", "method"])
        },
        "seconds": round(time.perf_counter() - t_start, 3),
    }
    files = {
        "metrics.json": _json(results),
        "summary.json": _json(summary),
        "table1.md": markdown,
        "table1.csv": tables.table1_csv(table_rows),
        "per_image.csv": per_image.to_csv(index=False),
    }
    for name, text in files.items():
        write_bytes_atomic(report_dir / name, text.encode())
    summary["report_dir"] = str(report_dir)
    summary["grids"] = [str(p) for p in grid_paths]
    summary["table1_rows"] = table_rows
    log.info(
        "benchmark: %d restorations in %.1f s; Table 1 in %s",
        len(rows),
        summary["seconds"],
        report_dir / "table1.md",
    )
    if b.track:
        from fluxir.tracking.runs import start_run

        tags = {"stage": "benchmark", "profile": summary["profile"]}
        with start_run("benchmark", cfg.tracking.experiment, tags=tags, uri=cfg.tracking.uri):
            log_benchmark(cfg, summary, per_image)
    return summary


def log_benchmark(cfg: Config, summary: Mapping[str, Any], per_image: pd.DataFrame | None = None) -> None:
    """Log a benchmark summary to the active MLflow run: config, metrics, tables, grids, reports."""
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
    if flat:
        mlflow.log_metrics(flat)
    mlflow.set_tags({f"absent.{_safe(n)}": reason[:5000] for n, reason in summary["absent"].items()})
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


def metric_key(*parts: str) -> str:
    """An MLflow metric name from parts: characters MLflow refuses (e.g. '+') become '_'."""
    return "/".join(re.sub(r"[^A-Za-z0-9_\-. ]", "_", p) for p in parts)


def _safe(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", text)


def _json(obj: Any) -> str:
    return json.dumps(obj, indent=2, allow_nan=False) + "\n"


# ----------------------------------------------------------------------------------------------
# Entry points


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_common_arguments(parser)
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")


def run(args: argparse.Namespace) -> int:
    with tracked_stage("benchmark", args) as cfg:
        run_benchmark(cfg, progress=not args.no_progress)
    return 0


def main(argv: list[str] | None = None) -> int:
    return run_stage("benchmark", add_arguments, run, argv)


if __name__ == "__main__":
    raise SystemExit(main())
