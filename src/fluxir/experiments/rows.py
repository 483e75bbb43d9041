"""What every ablation table shares: the errors a row may fail on, the generator cache check, row logging."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from fluxir.config import Config

ROW_ERRORS = (ValueError, OSError, ImportError)
"""What a row can fail on without it being a bug: params, missing files/weights/models, absent stages."""
VELOCITY_AT_T1 = "velocity_mse_t1"
"""Train metric of a trained row: the velocity MSE at t = 1 on the held-out pairs (fixed noise)."""
STATUS_LENGTH = 5000
"""MLflow tags hold at most this many characters of a row's status."""


def not_cached(cfg: Config) -> str | None:
    """Why a hub generator cannot load offline (None when it is local, cached, or downloads are allowed)."""
    from fluxir.models.flux import is_hub_id
    from fluxir.models.text_to_image import FLUX, model_id

    if cfg.ablate.allow_download or cfg.generate.source == FLUX:
        return None
    repo = model_id(cfg)
    if not is_hub_id(repo):
        return None
    from huggingface_hub import constants, try_to_load_from_cache

    if isinstance(try_to_load_from_cache(repo, "model_index.json"), str):
        return None
    return (
        f"{repo} is not in the local Hugging Face cache ({constants.HF_HUB_CACHE}); run `huggingface-cli download "
        f"{repo}` where the hub is reachable, or set ablate.allow_download: true"
    )


def log_row(metrics: Mapping[str, float], status_tag: str, status: Any) -> None:
    """Log a row's metrics to the active MLflow run and its status as the tag ``status_tag``."""
    import mlflow

    if metrics:
        mlflow.log_metrics(dict(metrics))
    mlflow.set_tag(status_tag, str(status)[:STATUS_LENGTH])


def combine_seeds(runs: Sequence[Mapping[str, Any]], seeds: Sequence[int]) -> dict[str, Any]:
    """One table row from the same variant run with several seeds: the mean of every metric the runs
    share ("ours", and the numeric train metrics), half the range in "spread", each run under "seeds".

    Half the range, not a standard deviation: with two seeds it is exactly how far each run lies from
    the mean, and it claims no distribution. A metric is averaged only over the runs that have it; the
    row says how many of them ran.
    """
    ran = [r for r in runs if r.get("ours")]
    row = {k: v for k, v in runs[0].items() if k not in ("ours", "train", "run_id", "folder", "status")}
    row["seeds"] = [{"seed": s, "run_id": r.get("run_id"), "folder": r.get("folder"), "status": r.get("status"),
                     "ours": r.get("ours", {}), "train": r.get("train", {})} for s, r in zip(seeds, runs, strict=True)]  # fmt: skip
    row["ours"], row["spread"] = _mean_and_half_range([r["ours"] for r in ran])
    row["train"], row["train_spread"] = _mean_and_half_range(
        [{k: v for k, v in r.get("train", {}).items() if isinstance(v, (int, float))} for r in ran]
    )
    for key in ("params", "metrics", "absent", "images"):
        row[key] = next((r[key] for r in ran if r.get(key) is not None), runs[0].get(key))
    statuses = sorted({str(r.get("status")) for r in runs})
    row["status"] = f"{len(ran)} of {len(runs)} seeds ran" + (
        "" if len(ran) == len(runs) else f": {'; '.join(statuses)}"
    )
    return row


def _mean_and_half_range(values: Sequence[Mapping[str, float]]) -> tuple[dict[str, float], dict[str, float]]:
    keys = sorted({k for v in values for k in v})
    mean, spread = {}, {}
    for key in keys:
        xs = np.array([float(v[key]) for v in values if key in v and v[key] is not None], dtype=float)
        if len(xs):
            mean[key], spread[key] = float(xs.mean()), float((xs.max() - xs.min()) / 2)
    return mean, spread
