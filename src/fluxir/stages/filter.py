"""Stage filter: FluxGen step 2b, keep images every IQA metric ranks in its top ``keep_quantile``.

Paper section 3.1: images are kept when their CLIP-IQA, MANIQA and MUSIQ scores are all "within the
top 95%". Per metric the threshold is the ``1 - keep_quantile`` quantile counted from the worst end
(numpy's linear interpolation, over the images that have a score):

    higher is better:  keep  s >= quantile(s, 1 - keep_quantile)
    lower is better:   keep  s <= quantile(s, keep_quantile)

An image is kept only if it passes every metric; a NaN score fails that metric. ``enabled: false``
keeps every image (the paper's "w/o IQA" ablation, Table 4).

Outputs: ``<out_dir>/manifest.parquet`` (kept rows, kind 'filter'), ``<out_dir>/dropped.parquet``
(dropped rows with ``dropped_by``, the metrics that dropped them), ``reports/filter/summary.json``
and ``summary.md`` (kept/dropped per metric, thresholds), and ``reports/filter/hist_<metric>.csv``
(score histogram per metric, for a DVC plot).
"""

from __future__ import annotations

import argparse
import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from fluxir.config import Config
from fluxir.data.manifest import MANIFEST_NAME, ManifestError, write_manifest
from fluxir.data.validate import read_validated, validate_manifest
from fluxir.io import write_bytes_atomic, write_csv_atomic
from fluxir.stages import add_common_arguments, reports_root, run_stage, tracked_stage

log = logging.getLogger(__spec__.name if __spec__ else __name__)  # "fluxir.stages.*" under python -m too

DROPPED_NAME = "dropped.parquet"


@dataclass
class Selection:
    """The outcome of the IQA selection over a score table."""

    keep: pd.Series
    """Boolean per row: passes every metric."""
    dropped_by: pd.Series
    """Per row, the comma-separated metrics it failed ('' when kept)."""
    thresholds: dict[str, float | None]
    """Per metric, the score at the cut (None when the filter is disabled or a metric has no scores)."""
    failed: dict[str, int]
    """Per metric, how many rows fail it (a row failing two metrics counts in both)."""


def select(
    scores: pd.DataFrame, lower_better: Mapping[str, bool], keep_quantile: float, enabled: bool = True
) -> Selection:
    """Apply the per-metric quantile rule to ``scores`` (one column per metric, named as in ``lower_better``)."""
    if not 0 < keep_quantile <= 1:
        raise ValueError(f"keep_quantile={keep_quantile}: must be in (0, 1]")
    index = scores.index
    if not enabled:
        none = {m: None for m in lower_better}
        return Selection(
            pd.Series(True, index=index), pd.Series("", index=index), none, dict.fromkeys(lower_better, 0)
        )
    passed: dict[str, pd.Series] = {}
    thresholds: dict[str, float | None] = {}
    for metric, lower in lower_better.items():
        values = scores[metric].astype(float)
        finite = values.dropna().to_numpy()
        if finite.size == 0:
            thresholds[metric] = None
            passed[metric] = pd.Series(False, index=index)
            continue
        q = keep_quantile if lower else 1.0 - keep_quantile
        cut = float(np.quantile(finite, q))
        thresholds[metric] = cut
        passed[metric] = (values <= cut) if lower else (values >= cut)  # NaN compares False: dropped
    fails = pd.DataFrame({m: ~p for m, p in passed.items()}, index=index)
    dropped_by = fails.apply(lambda row: ",".join(m for m in fails.columns if row[m]), axis=1)
    if dropped_by.empty:
        dropped_by = pd.Series("", index=index, dtype=object)
    return Selection(
        ~fails.any(axis=1), dropped_by.astype(object), thresholds, {m: int(fails[m].sum()) for m in fails}
    )


def histogram(values: pd.Series, kept: pd.Series, bins: int) -> pd.DataFrame:
    """Score histogram of one metric: bin edges, images per bin, and kept images per bin."""
    v = values.astype(float)
    finite = v.dropna()
    if finite.empty:
        return pd.DataFrame(columns=["bin_left", "bin_right", "bin_center", "count", "kept"])
    edges = np.histogram_bin_edges(finite.to_numpy(), bins=bins)
    count, _ = np.histogram(finite.to_numpy(), bins=edges)
    kept_count, _ = np.histogram(v[kept & v.notna()].to_numpy(), bins=edges)
    return pd.DataFrame(
        {
            "bin_left": edges[:-1],
            "bin_right": edges[1:],
            "bin_center": (edges[:-1] + edges[1:]) / 2,
            "count": count,
            "kept": kept_count,
        }
    )


# ----------------------------------------------------------------------------------------------
# Stage


def _metrics_of(df: pd.DataFrame, source: str) -> dict[str, dict[str, Any]]:
    metrics = df.attrs.get("metrics")
    if not isinstance(metrics, dict) or not metrics:
        raise ManifestError(f"{source}: has no attrs['metrics'] (metric directions); rerun `fluxir score`")
    return metrics


def run_filter(cfg: Config) -> dict[str, Any]:
    """Filter the scored manifest; write kept/dropped manifests and the reports."""
    f = cfg.filter
    out_dir = Path(f.out_dir)
    reports = reports_root(cfg) / "validation" / "filter"
    df = read_validated(f.in_manifest, "score", reports, name="input")
    metrics = _metrics_of(df, f.in_manifest)
    columns = {m: info["column"] for m, info in metrics.items()}
    scores = df[list(columns.values())].rename(columns={c: m for m, c in columns.items()})
    sel = select(
        scores, {m: bool(info["lower_better"]) for m, info in metrics.items()}, f.keep_quantile, f.enabled
    )

    kept = df[sel.keep].reset_index(drop=True)
    kept.attrs = dict(df.attrs)
    kept.attrs["filter"] = {
        "enabled": f.enabled,
        "keep_quantile": f.keep_quantile,
        "thresholds": sel.thresholds,
    }
    dropped = df[~sel.keep].assign(dropped_by=sel.dropped_by[~sel.keep]).reset_index(drop=True)
    dropped = dropped[["id", "path", "dropped_by", *columns.values()]]

    validate_manifest(kept, "filter", reports, source=out_dir / MANIFEST_NAME, name="manifest")
    validate_manifest(dropped, "dropped", reports, source=out_dir / DROPPED_NAME, name="dropped")
    write_manifest(kept, out_dir / MANIFEST_NAME, kind="filter")
    write_manifest(dropped, out_dir / DROPPED_NAME, kind="dropped")

    report_dir = reports_root(cfg) / "filter"
    summary: dict[str, Any] = {
        "enabled": f.enabled,
        "keep_quantile": f.keep_quantile,
        "images": len(df),
        "kept": len(kept),
        "dropped": len(dropped),
        "metrics": {
            m: {
                "lower_better": bool(metrics[m]["lower_better"]),
                "threshold": sel.thresholds[m],
                "failed": sel.failed[m],
                "dropped_only_by_this": int((sel.dropped_by == m).sum()),
            }
            for m in metrics
        },
    }
    for m, col in columns.items():
        hist = histogram(df[col], sel.keep, f.hist_bins)
        write_csv_atomic(report_dir / f"hist_{m}.csv", hist)
    write_bytes_atomic(report_dir / "summary.json", (json.dumps(summary, indent=2) + "\n").encode())
    write_bytes_atomic(report_dir / "summary.md", _summary_markdown(summary, cfg).encode())
    log.info(
        "filter: kept %d of %d images (keep_quantile %s%s)",
        len(kept), len(df), f.keep_quantile, "" if f.enabled else ", disabled: all kept",
    )  # fmt: skip
    for m, info in summary["metrics"].items():
        log.info(
            "  %s: %s is better, threshold %s, fails %d (only this metric: %d)",
            m, "lower" if info["lower_better"] else "higher", info["threshold"], info["failed"], info["dropped_only_by_this"],
        )  # fmt: skip
    return summary


def _summary_markdown(summary: dict[str, Any], cfg: Config) -> str:
    lines = [
        "# IQA filter",
        "",
        f"Kept {summary['kept']} of {summary['images']} images "
        f"(keep_quantile {summary['keep_quantile']}, {'enabled' if summary['enabled'] else 'disabled: all kept'}).",
        "",
        "| metric | better | threshold | fails | dropped only by this metric |",
        "|---|---|---|---|---|",
    ]
    for m, info in summary["metrics"].items():
        better = "lower" if info["lower_better"] else "higher"
        thr = "-" if info["threshold"] is None else f"{info['threshold']:.6g}"
        lines.append(f"| {m} | {better} | {thr} | {info['failed']} | {info['dropped_only_by_this']} |")
    if cfg.model.base == "tiny" and cfg.generate.source == "flux":
        lines += [
            "",
            "Images come from the tiny random-weight model: this exercises the code, it says nothing about quality.",
        ]
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------------------------
# Entry points


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_common_arguments(parser)


def run(args: argparse.Namespace) -> int:
    with tracked_stage("filter", args) as cfg:
        run_filter(cfg)
    return 0


def main(argv: list[str] | None = None) -> int:
    return run_stage("filter", add_arguments, run, argv)


if __name__ == "__main__":
    raise SystemExit(main())
