"""Stage benchmark: Table 1, FluxIR and baselines on the test sets, scored with pyiqa (paper section 4).

The core is :func:`fluxir.benchmark.runner.restore_and_score` (prepare the sets, build metrics and
methods, restore and score every image); :mod:`fluxir.benchmark.report` writes ``metrics.json`` (DVC
metrics), ``summary.json``, ``table1.md`` / ``table1.csv`` in the paper's layout, ``per_image.csv`` and
``grids/`` to ``benchmark.report_dir``. With ``benchmark.track`` all of it goes to MLflow: metrics, the
tables under the fixed names ``table1`` and ``per_image`` (``mlflow.log_table``), grids as images.
"""

from __future__ import annotations

import argparse
import logging
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from fluxir.benchmark.report import log_benchmark, timings, write_reports
from fluxir.benchmark.runner import restore_and_score
from fluxir.config import Config
from fluxir.stages import add_common_arguments, reports_root, run_stage, tracked_stage

log = logging.getLogger(__spec__.name if __spec__ else __name__)  # "fluxir.stages.*" under python -m too


def run_benchmark(
    cfg: Config, progress: bool = True, metric_kwargs: Mapping[str, Mapping[str, Any]] | None = None
) -> dict[str, Any]:
    """Prepare the sets, restore with every method, score, write the reports; MLflow when benchmark.track.

    The summary returned also holds the run's ``timings`` (wall clock), which no report file does.
    """
    t_start = time.perf_counter()
    result = restore_and_score(cfg, progress, metric_kwargs, reports_root(cfg) / "validation" / "benchmark")
    summary = write_reports(cfg, result)
    summary["timings"] = timings(result, time.perf_counter() - t_start)
    log.info(
        "benchmark: %d restorations in %.1f s; Table 1 in %s",
        len(result.per_image),
        summary["timings"]["seconds"],
        Path(summary["report_dir"]) / "table1.md",
    )
    if cfg.benchmark.track:
        _track(cfg, summary, result)
    return summary


def _track(cfg: Config, summary: dict[str, Any], result: Any) -> None:
    """The benchmark's own MLflow run. Like all tracking, a failure here (a server that died during the
    restorations) is a warning and a note in the report folder, never a failed stage: the restorations and
    reports, maybe hours of work, are the stage's product and are already written."""
    from fluxir.tracking import policy
    from fluxir.tracking.lineage import resolve_uri
    from fluxir.tracking.registry import scored_model
    from fluxir.tracking.runs import start_run

    tags = {"stage": "benchmark", "profile": summary["profile"]}
    try:
        # scored_model: the run is tagged with the model version it scored, and its metrics logged against it
        with (
            start_run("benchmark", cfg.tracking.experiment, tags=tags, uri=cfg.tracking.uri) as run,
            scored_model(cfg, run.info.run_id),
        ):
            log_benchmark(cfg, summary, result.per_image, summary["timings"])
    except Exception as exc:  # noqa: BLE001 - see above
        policy.lost("benchmark", resolve_uri(cfg.tracking.uri), exc, what="to log the benchmark")


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
