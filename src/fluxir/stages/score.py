"""Stage score: FluxGen step 2a, no-reference image quality per image with pyiqa (paper section 3.1).

The paper scores every generated image with ``clipiqa+_vitL14_512``, ``maniqa-pipal`` and ``musiq``.
Those need weight files no offline machine can fetch, so the tiny profile uses ``piqe`` (no weights).
PIQE is a weak judge (it rated a blurred, noisy astronaut better than the clean one): it exercises
the code, it is not evidence of quality.

Weights are looked up in the torch hub cache (``$TORCH_HOME/hub``, or ``score.torch_home``) BEFORE any
metric is built, and downloads are blocked while metrics are built (unless ``score.allow_download``),
so a missing file stops the stage at once with one line naming the file and the folder it belongs in.

Output: ``<out_dir>/manifest.parquet`` = the input manifest plus one ``score_<metric>`` column per
metric (NaN when a metric fails on an image); ``attrs['metrics']`` records each metric's column and
direction (pyiqa ``lower_better``). A rerun scores only images (by id and content hash) that lack a
score for some requested metric.
"""

from __future__ import annotations

import argparse
import contextlib
import difflib
import json
import logging
import math
import os
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from tqdm import tqdm

from fluxir.config import Config, ConfigError
from fluxir.data.images import ImageDecodeError, load_rgb
from fluxir.data.manifest import MANIFEST_NAME, read_manifest, write_manifest
from fluxir.data.validate import SCORE_PREFIX, read_validated, validate_manifest
from fluxir.errors import UserError
from fluxir.io import write_bytes_atomic
from fluxir.stages import REPORTS, add_common_arguments, run_stage, tracked_stage

log = logging.getLogger(__name__)

PYIQA_WEIGHTS_URL = "https://huggingface.co/chaofengc/IQA-PyTorch-Weights/resolve/main"
# Files the paper's metrics load, relative to the torch hub dir (pyiqa 0.1.16; ../ANCHORS.md section 4).
WEIGHT_FILES: dict[str, tuple[str, ...]] = {
    "clipiqa+_vitL14_512": ("pyiqa/CLIPIQA+_ViTL14_512-e66488f2.pth", "clip/ViT-L-14.pt"),
    "maniqa-pipal": ("pyiqa/MANIQA_PIPAL-ae6d356b.pth",),
    "musiq": ("pyiqa/musiq_koniq_ckpt-e95806b9.pth",),
}
# MANIQA also builds timm's ViT-B/8 with pretrained=True, read from the Hugging Face cache.
HF_FILES: dict[str, tuple[tuple[str, str], ...]] = {
    "maniqa-pipal": (("timm/vit_base_patch8_224.augreg2_in21k_ft_in1k", "model.safetensors"),),
}
CHECKPOINT_SECONDS = 60.0
"""A rerun after a crash loses at most this much scoring work."""


class MissingWeightsError(UserError, FileNotFoundError):
    """A metric's weight file is not in the cache; the message names the file and where it goes."""


def score_column(metric: str) -> str:
    return f"{SCORE_PREFIX}{metric}"


# ----------------------------------------------------------------------------------------------
# Weights and metrics


def configure_torch_home(torch_home: str = "") -> Path:
    """Point TORCH_HOME at ``torch_home`` (if given) before pyiqa is imported; return the hub dir."""
    import torch.hub

    if torch_home:
        os.environ["TORCH_HOME"] = str(Path(torch_home).expanduser().absolute())
    hub = Path(torch.hub.get_dir())
    # pyiqa reads its cache dir once, at import: keep it in step if it was imported already.
    if "pyiqa.utils.download_util" in sys.modules:
        sys.modules["pyiqa.utils.download_util"].DEFAULT_CACHE_DIR = str(hub / "pyiqa")
    return hub


def _missing_message(metric: str, path: Path, url: str | None = None) -> str:
    where = f" (from {url})" if url else ""
    return (
        f"score metric '{metric}' needs weight file {path.name} in {path.parent}{where}; copy it there, "
        "set score.torch_home to a folder holding hub/pyiqa/, or set score.allow_download: true where "
        "the network is reachable"
    )


def check_weights(metrics: Sequence[str], hub: Path) -> None:
    """Raise MissingWeightsError for the first known weight file of ``metrics`` not in the cache."""
    for metric in metrics:
        for rel in WEIGHT_FILES.get(metric, ()):
            path = hub / rel
            if not path.is_file():
                url = f"{PYIQA_WEIGHTS_URL}/{path.name}" if rel.startswith("pyiqa/") else None
                raise MissingWeightsError(_missing_message(metric, path, url))
        for repo, filename in HF_FILES.get(metric, ()):
            from huggingface_hub import constants, try_to_load_from_cache

            if not isinstance(try_to_load_from_cache(repo, filename), str):
                raise MissingWeightsError(
                    f"score metric '{metric}' needs {repo}/{filename} in the Hugging Face cache "
                    f"{constants.HF_HUB_CACHE}; run `huggingface-cli download {repo}` where the hub is "
                    "reachable and copy the cache, or set score.allow_download: true"
                )


@contextlib.contextmanager
def _no_downloads() -> Iterator[None]:
    """Turn every download pyiqa would start into a MissingWeightsError naming the file."""
    import huggingface_hub.constants as hf_constants
    import pyiqa.archs.clip_model as clip_model
    import pyiqa.utils.download_util as download_util

    def blocked_url(url: str, dst: str, *args: Any, **kwargs: Any) -> None:
        raise MissingWeightsError(_missing_message(_current[0], Path(dst), url))

    original_clip = clip_model._download

    def blocked_clip(url: str, root: str) -> str:
        target = Path(root) / os.path.basename(url)
        if target.is_file():
            return original_clip(url, root)
        raise MissingWeightsError(_missing_message(_current[0], target, url))

    saved = (download_util.download_url_to_file, clip_model._download, hf_constants.HF_HUB_OFFLINE)
    download_util.download_url_to_file, clip_model._download = blocked_url, blocked_clip
    hf_constants.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        download_util.download_url_to_file, clip_model._download, hf_constants.HF_HUB_OFFLINE = saved


_current = [""]  # the metric being built, for the messages of _no_downloads


def create_metrics(
    names: Sequence[str], device: Any, hub: Path, allow_download: bool = False, **kwargs: Any
) -> dict[str, Any]:
    """Build each pyiqa metric once (NR metrics only); missing weights raise before any is built."""
    if not allow_download:
        check_weights(names, hub)
    import pyiqa
    from pyiqa.default_model_configs import DEFAULT_CONFIGS

    for name in names:
        if name not in DEFAULT_CONFIGS:
            close = difflib.get_close_matches(name, list(DEFAULT_CONFIGS), n=3)
            hint = f"; did you mean {', '.join(close)}?" if close else "; see `pyiqa.list_models()`"
            raise ConfigError(f"score.metrics: {name!r} is not a pyiqa metric{hint}")
        if DEFAULT_CONFIGS[name].get("metric_mode") != "NR":
            raise ConfigError(
                f"score.metrics: {name!r} is a full-reference metric; scoring needs no-reference ones"
            )
    metrics = {}
    guard = contextlib.nullcontext() if allow_download else _no_downloads()
    with guard:
        for name in names:
            _current[0] = name
            try:
                metrics[name] = pyiqa.create_metric(name, device=device, as_loss=False, **kwargs)
            except MissingWeightsError:
                raise
            except OSError as exc:  # e.g. huggingface_hub's offline error for a timm backbone
                raise MissingWeightsError(
                    f"score metric '{name}' could not load its weights offline ({type(exc).__name__}: "
                    f"{str(exc).splitlines()[0]}); set score.allow_download: true where the network is reachable"
                ) from exc
    return metrics


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


def _previous_scores(out_dir: Path, metrics: Sequence[str]) -> pd.DataFrame:
    """Scores from an earlier run (manifest, then checkpoint), indexed by (id, sha256)."""
    frames = []
    for path in (out_dir / MANIFEST_NAME, out_dir / ".progress.parquet"):
        if path.is_file():
            df = read_manifest(path)
            cols = [c for c in (score_column(m) for m in metrics) if c in df.columns]
            if cols and {"id", "sha256"} <= set(df.columns):
                frames.append(df[["id", "sha256", *cols]])
    if not frames:
        return pd.DataFrame(columns=["id", "sha256"]).set_index(["id", "sha256"])
    prev = pd.concat(frames).drop_duplicates(["id", "sha256"], keep="last")
    return prev.set_index(["id", "sha256"])


def run_score(cfg: Config, progress: bool = True) -> dict[str, Any]:
    """Score the input manifest; write the scored manifest and ``reports/score/summary.json``."""
    from fluxir.models.flux import pick_device

    s = cfg.score
    out_dir = Path(s.out_dir)
    df = read_validated(s.in_manifest, "generate", REPORTS / "validation" / "score", name="input")
    cols = {m: score_column(m) for m in s.metrics}
    prev = _previous_scores(out_dir, s.metrics)
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

    device = pick_device(s.device)
    hub = configure_torch_home(s.torch_home)
    t0 = time.perf_counter()
    metrics = create_metrics(s.metrics, device, hub, s.allow_download) if len(todo) else {}
    load_seconds = time.perf_counter() - t0
    if metrics:
        directions = {m: bool(getattr(metric, "lower_better", False)) for m, metric in metrics.items()}
    else:
        directions = _directions(s.metrics)

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
        df, "score", REPORTS / "validation" / "score", source=out_dir / MANIFEST_NAME, name="manifest"
    )
    write_manifest(df, out_dir / MANIFEST_NAME, kind="score")
    with contextlib.suppress(FileNotFoundError):
        (out_dir / ".progress.parquet").unlink()
    summary = {
        "images": len(df),
        "scored_now": int(len(todo)),
        "metric_load_seconds": round(load_seconds, 3),
        "seconds": round(seconds, 3),
        "images_per_second": round(len(todo) / seconds, 3) if len(todo) and seconds > 0 else None,
        "device": str(device),
        "metrics": {m: _stats(df[cols[m]], directions[m]) for m in s.metrics},
    }
    write_bytes_atomic(REPORTS / "score" / "summary.json", (json.dumps(summary, indent=2) + "\n").encode())
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


def _directions(names: Sequence[str]) -> dict[str, bool]:
    from pyiqa.default_model_configs import DEFAULT_CONFIGS

    return {m: bool(DEFAULT_CONFIGS.get(m, {}).get("lower_better", False)) for m in names}


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
