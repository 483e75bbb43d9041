"""Real-ESRGAN second-order degradation (Wang et al. 2021, sec. 3.1, Fig. 2): HQ crop -> LQ image.

Chain, as SeeSR `make_paired_data.realesrgan_degradation` / Real-ESRGAN `feed_data`:
  USM-sharpen the GT (optional)
  1st: blur -> random resize (up/down/keep; area/bilinear/bicubic) -> Gaussian or Poisson noise -> JPEG
  2nd: blur (with second_blur_prob) -> resize to HQ/scale * s -> noise
  final, either order with sinc_first_prob: [resize to HQ/scale + sinc] -> JPEG, or JPEG -> [resize + sinc]
  clip and round to 8 bits.
Every random choice comes from one ``numpy.random.Generator`` per image (see `image_rng`) and is
returned in a record, so a rerun gives bitwise-equal pairs and tests can check the statistics.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any, NamedTuple

import cv2
import numpy as np

from fluxir.config import DegradeConfig
from fluxir.degradation import kernels, ops
from fluxir.degradation.presets import DegradationParams, resolve_params

_DIRECTIONS = ("up", "down", "keep")


class ImageTooSmall(ValueError):
    """The image is smaller than every crop size; the message is the reason to record when skipping it."""


class DegradedPair(NamedTuple):
    """One training pair: RGB uint8 HQ crop (sharpened if gt_usm), RGB uint8 LQ, and the draws made."""

    hq: np.ndarray
    lq: np.ndarray
    record: dict[str, Any]


def image_rng(image_id: str, seed: int) -> np.random.Generator:
    """The generator for one image: PCG64 seeded from SHA-256 of (seed, image id).

    Independent of processing order and of other images, so shards and reruns agree bit for bit
    (on the same CPU type and library versions: cv2 and NumPy pick SIMD code paths per CPU).
    """
    digest = hashlib.sha256(f"{seed}\x00{image_id}".encode()).digest()
    return np.random.Generator(np.random.PCG64(int.from_bytes(digest, "little")))


# ----------------------------------------------------------------------------------------------
# Cropping


def crop_skip_reason(shape: Sequence[int], sizes: Sequence[Sequence[int]]) -> str | None:
    """Why an image of ``shape`` (h, w, ...) cannot be cropped to any of ``sizes``; None if one fits."""
    h, w = int(shape[0]), int(shape[1])
    if any(ch <= h and cw <= w for ch, cw in sizes):
        return None
    listed = ", ".join(f"{ch}x{cw}" for ch, cw in sizes)
    return f"image {h}x{w} (HxW) is smaller than every crop size ({listed})"


def random_crop(
    img: np.ndarray,
    sizes: Sequence[Sequence[int]],
    rng: np.random.Generator,
    position: str = "random",
    hflip_prob: float = 0.5,
) -> tuple[np.ndarray, dict[str, Any]]:
    """Crop to a size drawn uniformly from the ``sizes`` ([h, w]) that fit, then maybe flip left-right.

    ``position`` is 'random' (uniform top-left corner) or 'center'. Raises ImageTooSmall if none fits.
    """
    reason = crop_skip_reason(img.shape, sizes)
    if reason:
        raise ImageTooSmall(reason)
    h, w = img.shape[:2]
    fitting = [(int(ch), int(cw)) for ch, cw in sizes if ch <= h and cw <= w]
    ch, cw = fitting[int(rng.integers(len(fitting)))]
    if position == "center":
        top, left = (h - ch) // 2, (w - cw) // 2
    else:
        top, left = int(rng.integers(h - ch + 1)), int(rng.integers(w - cw + 1))
    flip = bool(rng.random() < hflip_prob)
    crop = img[top : top + ch, left : left + cw]
    if flip:
        crop = crop[:, ::-1]
    record = {"height": ch, "width": cw, "top": top, "left": left, "hflip": flip}
    return np.ascontiguousarray(crop), record


# ----------------------------------------------------------------------------------------------
# The degradation chain


def _draw_scale(
    rng: np.random.Generator, prob: Sequence[float], bounds: Sequence[float]
) -> tuple[str, float]:
    direction = _DIRECTIONS[int(rng.choice(3, p=np.asarray(prob, dtype=np.float64)))]
    if direction == "up":
        return direction, float(rng.uniform(1.0, bounds[1]))
    if direction == "down":
        return direction, float(rng.uniform(bounds[0], 1.0))
    return direction, 1.0


def _draw_mode(rng: np.random.Generator) -> str:
    return ops.RESIZE_MODES[int(rng.integers(len(ops.RESIZE_MODES)))]


def _jpeg_quality(rng: np.random.Generator, bounds: Sequence[float]) -> int:
    return int(rng.uniform(bounds[0], bounds[1]))  # basicsr's cv2 path: int(random.uniform(lo, hi))


def _noise(
    img: np.ndarray,
    rng: np.random.Generator,
    gaussian_prob: float,
    sigma_range: Sequence[float],
    poisson_range: Sequence[float],
    gray_prob: float,
) -> tuple[np.ndarray, dict[str, Any]]:
    if rng.random() < gaussian_prob:
        sigma = float(rng.uniform(*sigma_range))
        gray = bool(rng.random() < gray_prob)
        rec = {"kind": "gaussian", "sigma": sigma, "gray": gray}
        return ops.add_gaussian_noise(img, sigma, gray, rng), rec
    scale = float(rng.uniform(*poisson_range))
    gray = bool(rng.random() < gray_prob)
    return ops.add_poisson_noise(img, scale, gray, rng), {"kind": "poisson", "scale": scale, "gray": gray}


def _resize_record(direction: str, scale: float, mode: str, out: np.ndarray) -> dict[str, Any]:
    return {
        "direction": direction,
        "scale": scale,
        "mode": mode,
        "height": out.shape[0],
        "width": out.shape[1],
    }


def degrade(
    img: np.ndarray, p: DegradationParams, scale: int, rng: np.random.Generator
) -> tuple[np.ndarray, dict[str, Any]]:
    """Degrade a float32 BGR image in [0, 1] (the GT, already sharpened if wanted) to uint8 BGR LQ.

    The LQ is (h // scale) x (w // scale). Returns it with the record of every draw.
    """
    h, w = img.shape[:2]
    sizes = kernels.kernel_sizes(p.kernel_range)
    rec: dict[str, Any] = {}

    # ----- first degradation
    k1, rec["blur1"] = kernels.random_blur_kernel(
        rng, sizes, p.sinc_prob, p.kernel_prob, p.blur_sigma, p.betag_range, p.betap_range
    )
    out = ops.filter_image(img, k1)
    direction, s = _draw_scale(rng, p.resize_prob, p.resize_range)
    mode = _draw_mode(rng)
    out = ops.resize(out, int(h * s), int(w * s), mode)
    rec["resize1"] = _resize_record(direction, s, mode, out)
    out, rec["noise1"] = _noise(
        out, rng, p.gaussian_noise_prob, p.noise_range, p.poisson_scale_range, p.gray_noise_prob
    )
    quality = _jpeg_quality(rng, p.jpeg_range)
    out = ops.jpeg(out, quality)
    rec["jpeg1"] = {"quality": quality}

    # ----- second degradation
    rec["blur2"] = None
    if rng.random() < p.second_blur_prob:
        k2, rec["blur2"] = kernels.random_blur_kernel(
            rng, sizes, p.sinc_prob2, p.kernel_prob2, p.blur_sigma2, p.betag_range2, p.betap_range2
        )
        out = ops.filter_image(out, k2)
    direction, s = _draw_scale(rng, p.resize_prob2, p.resize_range2)
    mode = _draw_mode(rng)
    out = ops.resize(out, int(h / scale * s), int(w / scale * s), mode)
    rec["resize2"] = _resize_record(direction, s, mode, out)
    out, rec["noise2"] = _noise(
        out, rng, p.gaussian_noise_prob2, p.noise_range2, p.poisson_scale_range2, p.gray_noise_prob2
    )

    # ----- final: [resize back + sinc] and JPEG in a random order (other orders give twisted lines)
    sinc, sinc_rec = kernels.random_final_sinc(rng, sizes, p.final_sinc_prob)
    sinc_first = bool(rng.random() < p.sinc_first_prob)
    mode = _draw_mode(rng)
    quality = _jpeg_quality(rng, p.jpeg_range2)
    if not sinc_first:
        out = ops.jpeg(out, quality)
    out = ops.resize(out, h // scale, w // scale, mode)
    if sinc is not None:
        out = ops.filter_image(out, sinc)
    if sinc_first:
        out = ops.jpeg(out, quality)
    order = "sinc_first" if sinc_first else "jpeg_first"
    rec["final"] = {"order": order, "sinc": sinc_rec, "mode": mode, "jpeg_quality": quality}
    return ops.to_uint8(out), rec


def degrade_pair(
    hq: np.ndarray, cfg: DegradeConfig, rng: np.random.Generator, params: DegradationParams | None = None
) -> DegradedPair:
    """Crop an RGB uint8 HxWx3 image, sharpen the crop if gt_usm, and degrade it into its LQ.

    ``params`` (from `resolve_params(cfg)`) saves resolving the preset for every image.
    Raises ImageTooSmall (check first with `crop_skip_reason`) when no crop size fits.
    """
    if hq.dtype != np.uint8 or hq.ndim != 3 or hq.shape[2] != 3:
        raise ValueError(f"degrade_pair needs an RGB uint8 HxWx3 image, got {hq.dtype} {hq.shape}")
    p = params if params is not None else resolve_params(cfg)
    crop, crop_rec = random_crop(hq, cfg.sizes, rng, cfg.crop, cfg.hflip_prob)
    bgr = cv2.cvtColor(crop, cv2.COLOR_RGB2BGR)  # cv2 order: gray weights and JPEG chroma expect BGR
    gt = bgr.astype(np.float32) / np.float32(255)
    if p.gt_usm:
        gt = ops.usm_sharpen(gt, p.usm_weight, p.usm_radius, p.usm_threshold, img_u8=bgr)
        bgr = ops.to_uint8(gt)
    lq, record = degrade(gt, p, cfg.scale, rng)
    record = {"crop": crop_rec, "gt_usm": p.gt_usm, **record}
    return DegradedPair(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), cv2.cvtColor(lq, cv2.COLOR_BGR2RGB), record)


def flat_record(record: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """The record as one level of dotted keys (``noise1.sigma``), e.g. for manifest columns."""
    flat: dict[str, Any] = {}
    for key, value in record.items():
        if isinstance(value, dict):
            flat.update(flat_record(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat
