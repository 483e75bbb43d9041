"""Stage score: FluxGen step 2a, no-reference image quality per image with pyiqa (paper section 3.1).

The paper scores every generated image with ``clipiqa+_vitL14_512``, ``maniqa-pipal`` and ``musiq``.
Those need weight files no offline machine can fetch, so the tiny profile uses ``piqe`` (no weights).
PIQE is a weak judge (it rated a blurred, noisy astronaut better than the clean one): it exercises
the code, it is not evidence of quality.

Metrics are built by :mod:`fluxir.iqa`: weights are looked up in the torch hub cache (``$TORCH_HOME/hub``,
or ``score.torch_home``) BEFORE any metric is built, and downloads are blocked while metrics are built
(unless ``score.allow_download``), so a missing file stops the stage at once with one line naming the
file and the folder it belongs in.

Output: ``<out_dir>/manifest.parquet`` = the input manifest plus one ``score_<metric>`` column per
metric (NaN when a metric fails on an image); ``attrs['metrics']`` records each metric's column and
direction (pyiqa ``lower_better``). A rerun scores only images (by id and content hash) that lack a
score for some requested metric.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import math
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from tqdm import tqdm

from fluxir.config import Config
from fluxir.data.images import ImageDecodeError, load_rgb
from fluxir.data.manifest import MANIFEST_NAME, read_manifest, write_manifest
from fluxir.data.validate import SCORE_PREFIX, read_validated, validate_manifest
from fluxir.io import write_bytes_atomic
from fluxir.iqa import configure_torch_home, create_metrics, metric_directions
from fluxir.stages import add_common_arguments, reports_root, run_stage, tracked_stage
from fluxir.tracking.lineage import log_run_facts

log = logging.getLogger(__spec__.name if __spec__ else __name__)  # "fluxir.stages.*" under python -m too

CHECKPOINT_SECONDS = 60.0
"""A rerun after a crash loses at most this much scoring work."""


def score_column(metric: str) -> str:
    return f"{SCORE_PREFIX}{metric}"


# ----------------------------------------------------------------------------------------------
# Core


def score_images(
    paths: Sequence[str],
    sizes: Sequence[tuple[int, int]],
    metrics: Mapping[str, Callable[[Any], Any]],
    *,
    batch_size: int = 8,
    device: Any = "cpu",
    on_batch: Callable[[dict[str, np.ndarray], np.ndarray], None] | None = None,
    progress: bool = True,
) -> dict[str, np.ndarray]:
    """Score every image with every metric; return ``{metric: float64 array}`` aligned with ``paths``.

    Images of one size (``sizes[i] = (height, width)``) are batched together, ``batch_size`` at a
    time, as float tensors in [0, 1], N x 3 x H x W. An image that cannot be read, and a non-finite
    score, give NaN (the filter drops it). ``on_batch(scores, done_mask)`` runs after every batch.
    """
    import torch

    n = len(paths)
    scores = {name: np.full(n, np.nan) for name in metrics}
    done = np.zeros(n, dtype=bool)
    groups: dict[tuple[int, int], list[int]] = {}
    for i, size in enumerate(sizes):
        groups.setdefault((int(size[0]), int(size[1])), []).append(i)
    batches = [idx[j : j + batch_size] for idx in groups.values() for j in range(0, len(idx), batch_size)]
    bar = tqdm(total=n, unit="img", desc="score", disable=not progress or n == 0)
    for batch in batches:
        arrays, ok = [], []
        for i in batch:
            try:
                rgb = load_rgb(paths[i])
            except (ImageDecodeError, OSError) as exc:
                log.warning("cannot read %s (%s): its scores are NaN", paths[i], exc)
                continue
            if rgb.shape[:2] != tuple(sizes[i]):
                log.warning(
                    "%s is %s, the manifest says %s: scored at its real size",
                    paths[i],
                    rgb.shape[:2],
                    sizes[i],
                )
                for name, metric in metrics.items():
                    scores[name][i] = _call(metric, torch.from_numpy(rgb[None]), device)[0]
                continue
            arrays.append(rgb)
            ok.append(i)
        if arrays:
            x = torch.from_numpy(np.stack(arrays))
            for name, metric in metrics.items():
                scores[name][ok] = _call(metric, x, device)
        done[batch] = True
        bar.update(len(batch))
        if on_batch is not None:
            on_batch(scores, done)
    bar.close()
    return scores


def _call(metric: Callable[[Any], Any], rgb_uint8: Any, device: Any) -> np.ndarray:
    import torch

    x = rgb_uint8.to(device).permute(0, 3, 1, 2).float().div_(255.0)
    with torch.no_grad():
        out = metric(x)
    values = torch.as_tensor(out).detach().reshape(-1).double().cpu().numpy()
    if values.shape[0] != x.shape[0]:
        raise RuntimeError(f"metric returned {values.shape[0]} scores for {x.shape[0]} images")
    values[~np.isfinite(values)] = np.nan
    return values


# ----------------------------------------------------------------------------------------------
# Stage


def _previous_scores(out_dir: Path, metrics: Sequence[str]) -> tuple[pd.DataFrame, dict[str, bool]]:
    """Scores from an earlier run (manifest, then checkpoint), indexed by (id, sha256), and the metric
    directions (``lower_better``) that run recorded."""
    frames, directions = [], {}
    for path in (out_dir / MANIFEST_NAME, out_dir / ".progress.parquet"):
        if path.is_file():
            df = read_manifest(path)
            for m, info in (df.attrs.get("metrics") or {}).items():
                if isinstance(info, dict) and "lower_better" in info:
                    directions[m] = bool(info["lower_better"])
            cols = [c for c in (score_column(m) for m in metrics) if c in df.columns]
            if cols and {"id", "sha256"} <= set(df.columns):
                frames.append(df[["id", "sha256", *cols]])
    if not frames:
        return pd.DataFrame(columns=["id", "sha256"]).set_index(["id", "sha256"]), directions
    prev = pd.concat(frames).drop_duplicates(["id", "sha256"], keep="last")
    return prev.set_index(["id", "sha256"]), directions


def run_score(cfg: Config, progress: bool = True) -> dict[str, Any]:
    """Score the input manifest; write the scored manifest and ``reports/score/summary.json``."""
    s = cfg.score
    out_dir = Path(s.out_dir)
    df = read_validated(s.in_manifest, "generate", reports_root(cfg) / "validation" / "score", name="input")
    cols = {m: score_column(m) for m in s.metrics}
    prev, directions = _previous_scores(out_dir, s.metrics)
    for col in cols.values():
        values = prev[col] if col in prev.columns else pd.Series(dtype=float)
        df[col] = values.reindex(pd.MultiIndex.from_arrays([df["id"], df["sha256"]])).to_numpy(dtype=float)
    todo = np.flatnonzero(df[list(cols.values())].isna().any(axis=1).to_numpy())
    log.info(
        "score: %d images, %d already scored, %d to score with %s",
        len(df),
        len(df) - len(todo),
        len(todo),
        ", ".join(s.metrics),
    )

    # With nothing to score the stage needs neither torch nor pyiqa (seconds of imports): the metric
    # directions come from the earlier run's manifest, and the device is not looked up.
    device = None
    metrics: dict[str, Any] = {}
    load_seconds = 0.0
    if len(todo):
        from fluxir.models.flux import pick_device

        device = pick_device(s.device)
        log.info("score: metrics on %s", device)
        hub = configure_torch_home(s.torch_home)
        t0 = time.perf_counter()
        metrics = create_metrics(s.metrics, device, hub, s.allow_download)
        load_seconds = time.perf_counter() - t0
        directions = {m: bool(getattr(metric, "lower_better", False)) for m, metric in metrics.items()}
    elif not set(s.metrics) <= set(directions):
        directions = metric_directions(s.metrics)

    last = [time.monotonic()]

    def checkpoint(scores: dict[str, np.ndarray], done: np.ndarray) -> None:
        if time.monotonic() - last[0] < CHECKPOINT_SECONDS:
            return
        part = df.iloc[todo[done]].copy()
        for m, col in cols.items():
            part[col] = scores[m][done]
        write_manifest(part, out_dir / ".progress.parquet", kind="score-progress")
        last[0] = time.monotonic()

    t1 = time.perf_counter()
    if len(todo):
        sub = df.iloc[todo]
        scores = score_images(
            list(sub["path"]),
            list(zip(sub["height"], sub["width"], strict=True)),
            metrics,
            batch_size=s.batch_size,
            device=device,
            on_batch=checkpoint,
            progress=progress,
        )
        for m, col in cols.items():
            df.loc[df.index[todo], col] = scores[m]
    seconds = time.perf_counter() - t1

    df.attrs["metrics"] = {m: {"column": cols[m], "lower_better": directions[m]} for m in s.metrics}
    validate_manifest(
        df,
        "score",
        reports_root(cfg) / "validation" / "score",
        source=out_dir / MANIFEST_NAME,
        name="manifest",
    )
    write_manifest(df, out_dir / MANIFEST_NAME, kind="score")
    with contextlib.suppress(FileNotFoundError):
        (out_dir / ".progress.parquet").unlink()
    # This run's facts (how much it found scored, how long it took) go to the log and MLflow, not the file:
    # reports/score/ is a DVC output, and a resumed run must write what a fresh one writes.
    facts = {
        "scored_now": int(len(todo)),
        "metric_load_seconds": round(load_seconds, 3),
        "seconds": round(seconds, 3),
        "images_per_second": round(len(todo) / seconds, 3) if len(todo) and seconds > 0 else None,
    }
    log_run_facts("score", facts)
    summary = {
        "images": len(df),
        "metrics": {m: _stats(df[cols[m]], directions[m]) for m in s.metrics},
    }
    write_bytes_atomic(
        reports_root(cfg) / "score" / "summary.json", (json.dumps(summary, indent=2) + "\n").encode()
    )
    summary.update(facts)
    for m in s.metrics:
        st = summary["metrics"][m]
        better = "lower" if st["lower_better"] else "higher"
        log.info(
            "%s (%s is better): mean %s, min %s, max %s, %d NaN",
            m,
            better,
            st["mean"],
            st["min"],
            st["max"],
            st["nan"],
        )
    return summary


def _stats(values: pd.Series, lower_better: bool) -> dict[str, Any]:
    v = values.astype(float)
    finite = v.dropna()

    def num(x: float) -> float | None:
        return None if x is None or math.isnan(x) else round(float(x), 6)

    return {
        "lower_better": lower_better,
        "count": int(finite.size),
        "nan": int(v.isna().sum()),
        "mean": num(finite.mean()) if finite.size else None,
        "std": num(finite.std(ddof=0)) if finite.size else None,
        "min": num(finite.min()) if finite.size else None,
        "max": num(finite.max()) if finite.size else None,
    }


# ----------------------------------------------------------------------------------------------
# Entry points


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_common_arguments(parser)
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")


def run(args: argparse.Namespace) -> int:
    with tracked_stage("score", args) as cfg:
        run_score(cfg, progress=not args.no_progress)
    return 0


def main(argv: list[str] | None = None) -> int:
    return run_stage("score", add_arguments, run, argv)


if __name__ == "__main__":
    raise SystemExit(main())
