"""Table 7: generate ``ablate.table7_images`` images per generator and score them with ``score.metrics``.

Each generator (``ablate.table7_sources``) is an MLflow child run of one parent run ``ablate-table7``;
its images go to ``<ablate.out_dir>/table7/<generator>/``. FluxGen is the flux images the IQA filter keeps
(the filter stage's :func:`~fluxir.stages.filter.select`, ``filter.keep_quantile`` per metric, AND).
A generator that cannot run (not in the cache, weights absent) is reported with the reason.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from fluxir.benchmark import ablations as ab
from fluxir.benchmark.report import metric_key
from fluxir.config import Config, ConfigError, load_config, to_dict
from fluxir.experiments.reports import write_table7
from fluxir.experiments.rows import ROW_ERRORS, log_row, not_cached
from fluxir.tracking.lineage import profile_of

log = logging.getLogger(__name__)


def run_table7(params: str | Path, overrides: Mapping[str, Any]) -> dict[str, Any]:
    """Generate N images per source, score them with the score stage's metrics; FluxGen = filtered flux."""
    import mlflow

    from fluxir.benchmark.metrics import build_suite
    from fluxir.iqa import configure_torch_home
    from fluxir.models.flux import pick_device
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
    tags = {"stage": "ablate", "ablation": "table7", "profile": profile_of(base)}
    with start_run("ablate-table7", base.tracking.experiment, tags=tags, uri=base.tracking.uri) as parent:
        mlflow.log_params({"ablation.table": "table7", "ablation.images": n})
        mlflow.log_params({f"ablation.set.{k}": str(v) for k, v in overrides.items()})
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
                    scores, images = generate_and_score(cfg, suite.built, device)
                    row.update(
                        ours={m: float(np.nanmean(v)) for m, v in scores.items()}, images=images, status="ran"
                    )
                    if source == "flux":
                        rows.append(_log7(row))
                        row = fluxgen_row(cfg, scores, suite, label)
                except ROW_ERRORS as exc:
                    log.warning("table7 %s did not run: %s", label, exc)
                    row["status"] = f"not run: {type(exc).__name__}: {exc}"
                _log7(row)
            rows.append(row)
        report = write_table7(base, rows, suite, overrides)
        log_table(pd.DataFrame(report["rows"]), "table7")
        for path in report["files"]:
            mlflow.log_artifact(path, artifact_path="ablation")
        report["parent_run_id"] = parent.info.run_id
    return report


def generate_and_score(
    cfg: Config, metrics: Mapping[str, Any], device: Any
) -> tuple[dict[str, np.ndarray], int]:
    """Make ``generate.num_images`` images from ``generate.source`` with the generate stage's core and
    score them with the score stage's; returns ``({metric: scores}, number of images)``."""
    from fluxir.models.text_to_image import make_render, model_id
    from fluxir.stages.generate import generate_images, read_prompts
    from fluxir.stages.score import score_images

    if reason := not_cached(cfg):
        raise FileNotFoundError(reason)
    g = cfg.generate
    images, _ = generate_images(
        make_render(cfg), Path(g.out_dir), num_images=g.num_images, seed=g.seed, prompts=read_prompts(g),
        batch_size=g.batch_size, shard_size=g.shard_size, image_format=g.image_format,
        meta={"source": g.source, "model": model_id(cfg)}, progress=False,
    )  # fmt: skip
    paths = [r["path"] for r in images]
    scores = score_images(paths, [(g.height, g.width)] * len(paths), metrics,
                          batch_size=cfg.score.batch_size, device=device, progress=False)  # fmt: skip
    return scores, len(paths)


def fluxgen_row(cfg: Config, scores: Mapping[str, np.ndarray], suite: Any, label: str) -> dict[str, Any]:
    """The FluxGen row: the flux images the IQA filter keeps (filter.keep_quantile per metric, AND)."""
    from fluxir.stages.filter import select

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
    values = {metric_key("ours", row["label"], k): v for k, v in row["ours"].items() if np.isfinite(v)}
    log_row(values, f"status.{ab.slug(row['label'])}", row.get("status", ""))
    return row
