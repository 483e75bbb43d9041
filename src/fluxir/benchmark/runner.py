"""The core of Table 1: prepare the test sets, build metrics and methods, restore every LQ image and score it.

Order of work, so that every mistake a user can make stops the run before minutes of model loading:
  1. prepare each test set (:mod:`fluxir.benchmark.datasets`): check its layout, write its LQ/HQ crops
     and a validated manifest under ``<out_dir>/<name>/``;
  2. build the metrics (absent ones are recorded with the reason, not dropped);
  3. load the methods (FluxIR adapter, spandrel checkpoints);
  4. restore every LQ image with every method into ``<out_dir>/<name>/<method>/<id>.png`` and score it.

The result holds the per-image scores and the comparison grids of the first ``benchmark.grid_images``
images of each set; :mod:`fluxir.benchmark.report` turns it into Table 1 and the other reports.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from fluxir.benchmark import datasets, grids, methods, metrics
from fluxir.config import Config
from fluxir.data.images import load_rgb, write_image_atomic
from fluxir.iqa import configure_torch_home, fr_setting

log = logging.getLogger(__name__)


def fr_border(cfg: Config) -> int:
    """Pixels PSNR and SSIM cut from each border: ``benchmark.fr_border``, by default the scale."""
    return cfg.benchmark.fr_border if cfg.benchmark.fr_border is not None else cfg.restore.scale


def fidelity_setting(cfg: Config) -> str:
    """PSNR / SSIM's channel and border cut in words, for every table header."""
    return fr_setting(cfg.benchmark.fr_channel, fr_border(cfg))


@dataclass
class BenchmarkResult:
    """What one benchmark run measured: sets, metrics, methods, per-image scores and grids."""

    sets: list[datasets.BenchSet]
    suite: metrics.MetricSuite
    methods: dict[str, str]
    """Method name -> description, in column order."""
    per_image: pd.DataFrame
    """One row per (dataset, id, method): seconds (wall clock: MLflow only) and one column per measured metric."""
    grids: list[tuple[str, str, np.ndarray]] = field(default_factory=list)
    """(dataset, sample id, grid image): LQ | methods | HQ."""
    oracles: list[str] = field(default_factory=list)
    """Methods given the HQ (references such as vae-reconstruction): in the table, never ranked."""


def restore_and_score(
    cfg: Config,
    progress: bool = True,
    metric_kwargs: Mapping[str, Mapping[str, Any]] | None = None,
    validation_dir: str | Path = Path("reports") / "validation" / "benchmark",
) -> BenchmarkResult:
    """Steps 1-4 above; restored images go under ``benchmark.out_dir``, the sets' checks in ``validation_dir``."""
    from fluxir.models.flux import pick_device

    b = cfg.benchmark
    out_dir = Path(b.out_dir)

    # ----- 1. test sets (layout errors stop the run here)
    sets = [
        datasets.prepare(spec, cfg.restore.scale, cfg.degrade, out_dir, validation_dir) for spec in b.datasets
    ]
    for s in sets:
        log.info("benchmark set %s (%s): %d images in %s", s.name, s.kind, len(s.samples), s.root)

    # ----- 2. metrics, 3. methods
    hub = configure_torch_home(cfg.score.torch_home)
    suite = metrics.build_suite(
        b.metrics,
        pick_device(b.device),
        hub,
        cfg.score.allow_download,
        b.fr_channel,
        metric_kwargs,
        fr_border(cfg),
    )
    for name, reason in suite.absent.items():
        log.warning("metric %s is absent: %s", name, reason)
    restorers = methods.build_methods(cfg)

    # ----- 4. restore and score
    rows: list[dict[str, Any]] = []
    grid_images: list[tuple[str, str, np.ndarray]] = []
    scale = cfg.restore.scale
    total = sum(
        len(s.samples) * sum(1 for m in restorers if s.has_hq or not methods.sees_hq(m)) for s in sets
    )
    bar = tqdm(total=total, desc="benchmark", unit="img", disable=not progress)
    for bench_set in sets:
        for index, sample in enumerate(bench_set.samples):
            lq = load_rgb(sample.lq_path)
            hq = load_rgb(sample.hq_path) if sample.hq_path is not None else None
            panels = [("LQ", lq)]
            for method in restorers:
                oracle = methods.sees_hq(method)
                if oracle and hq is None:
                    continue  # a reference that needs the HQ has nothing to show on an LQ-only set
                t0 = time.perf_counter()
                restored = method(hq if oracle else lq)
                seconds = time.perf_counter() - t0
                expected = hq.shape if oracle else (lq.shape[0] * scale, lq.shape[1] * scale, 3)
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
                grid_images.append((bench_set.name, sample.id, grids.make_grid(panels)))
    bar.close()
    measured = [m for m in b.metrics if m in suite.built]
    per_image = pd.DataFrame(rows, columns=["dataset", "id", "method", "seconds", *measured])
    oracles = [m.name for m in restorers if methods.sees_hq(m)]
    described = {m.name: m.description for m in restorers}
    return BenchmarkResult(sets, suite, described, per_image, grid_images, oracles)
