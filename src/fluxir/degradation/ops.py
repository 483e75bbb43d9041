"""Image operations of the degradation chain, on float32 HxWx3 BGR images in [0, 1] (cv2's layout).

Each operation keeps basicsr's semantics (``data/degradations.py``, ``utils/img_process_util.py``)
and is written for speed with OpenCV and vectorised NumPy:
- filtering drops the kernel's negligible border and, when cheaper, runs it as a sum of separable
  rank-1 filters from its SVD, with a bound of 1e-6 (in [0, 1] units) on what is dropped;
- Poisson noise draws from the exact Poisson law by table look-up (there are at most 256 rates);
- Gaussian noise uses the Box-Muller transform, ~3x faster than NumPy's float32 ziggurat here.
All randomness comes from the caller's ``numpy.random.Generator``.
"""

from __future__ import annotations

import functools

import cv2
import numpy as np
from scipy import special

from fluxir.data.images import to_uint8  # clip to [0, 1], round half to even (basicsr's rounding)

FILTER_TOLERANCE = 1e-6
"""Largest change to any output pixel (in [0, 1] units) that kernel trimming and low-rank splitting
may cause; far below the 1/255 quantisation step."""

# Costs in units of one direct-filter tap per pixel, measured with cv2 5.0 on 512 x 512 x 3 float32:
# a direct tap costs ~0.027 ms; cv2.filter2D switches to a DFT at 130 taps (~11.5 ms whatever the
# kernel); a separable pass plus the sum costs ~0.4 ms plus ~0.12 ms per tap.
_DFT_TAPS = 130
_DFT_COST = 425
_SEP_FIXED, _SEP_PER_TAP = 15, 4.5

_BORDER = cv2.BORDER_REFLECT_101  # basicsr's filter2D pads with 'reflect' == cv2 REFLECT_101


# ----------------------------------------------------------------------------------------------
# Filtering


def _trim(kernel: np.ndarray, tol: float) -> np.ndarray:
    """Drop the outer square rings of ``kernel`` whose total absolute weight is at most ``tol``."""
    size = kernel.shape[0]
    c = size // 2
    ring = np.abs(np.arange(size) - c)
    ring_mass = np.bincount(
        np.maximum.outer(ring, ring).ravel(), weights=np.abs(kernel).ravel(), minlength=c + 1
    )
    outside = np.cumsum(ring_mass[::-1])[::-1]  # outside[r] = mass of rings r..c
    r = c
    while r > 0 and outside[r] <= tol:
        r -= 1
    return kernel[c - r : c + r + 1, c - r : c + r + 1]


def _plan(kernel: np.ndarray) -> tuple[str, tuple]:
    """Cheapest way to correlate with ``kernel`` within FILTER_TOLERANCE: direct, or separable rank-r."""
    trimmed = _trim(kernel, FILTER_TOLERANCE / 2)
    size = trimmed.shape[0]
    if size == 1:
        return "scale", (float(trimmed[0, 0]),)
    taps = size * size
    direct_cost = taps + 8 if taps < _DFT_TAPS else _DFT_COST
    u, s, vt = np.linalg.svd(trimmed)
    # |K*x - K_r*x| <= sum_{i>r} s_i |u_i|_1 |v_i|_1 for images in [0, 1]
    bound = s * np.abs(u).sum(axis=0) * np.abs(vt).sum(axis=1)
    tail = np.append(np.cumsum(bound[::-1])[::-1], 0.0)
    rank = int(np.argmax(tail <= FILTER_TOLERANCE / 2))
    if rank * (_SEP_FIXED + _SEP_PER_TAP * size) < direct_cost:
        pairs = tuple(
            ((s[i] * vt[i]).astype(np.float32).reshape(1, -1), u[:, i].astype(np.float32).reshape(-1, 1))
            for i in range(rank)
        )
        return "separable", pairs
    return "direct", (trimmed.astype(np.float32),)


_ONE = np.ones((1, 1), np.float32)


def separable(img: np.ndarray, kx: np.ndarray, ky: np.ndarray) -> np.ndarray:
    """Float32 correlation with the row kernel ``kx`` (1 x n) then the column kernel ``ky`` (n x 1).

    For long kernels two 1-D cv2.filter2D passes beat cv2.sepFilter2D by ~40% (cv2 5.0, measured);
    an 8-bit input is read by sepFilter2D's row pass, which converts on the fly.
    """
    if kx.size < 15:
        return cv2.sepFilter2D(img, cv2.CV_32F, kx, ky, borderType=_BORDER)
    if img.dtype == np.uint8:
        rows = cv2.sepFilter2D(img, cv2.CV_32F, kx, _ONE, borderType=_BORDER)
    else:
        rows = cv2.filter2D(img, -1, kx, borderType=_BORDER)
    return cv2.filter2D(rows, -1, ky, borderType=_BORDER)


def filter_image(img: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """Correlate ``img`` with a square odd ``kernel``, borders reflected (cv2.filter2D semantics)."""
    kind, args = _plan(np.asarray(kernel, dtype=np.float64))
    if kind == "scale":
        return img * np.float32(args[0])
    if kind == "direct":
        return cv2.filter2D(img, -1, args[0], borderType=_BORDER)
    out = None
    for kx, ky in args:
        part = separable(img, kx, ky)
        out = part if out is None else cv2.add(out, part, dst=out)
    return out


# ----------------------------------------------------------------------------------------------
# Unsharp masking of the ground truth


@functools.lru_cache(maxsize=8)
def _gaussian_taps(radius: int, gain: float) -> np.ndarray:
    """cv2.GaussianBlur's column of taps for an odd window, default sigma, times ``gain``."""
    taps = (cv2.getGaussianKernel(radius, 0) * gain).astype(np.float32)
    taps.setflags(write=False)  # shared through the cache
    return taps


def usm_sharpen(
    img: np.ndarray,
    weight: float = 0.5,
    radius: int = 50,
    threshold: float = 10,
    img_u8: np.ndarray | None = None,
) -> np.ndarray:
    """Unsharp masking as basicsr `usm_sharp`: sharpen where |I - blur(I)| > threshold / 255, softly.

    out = I + m * (clip(I + weight * (I - B), 0, 1) - I), B = Gaussian(I), m = Gaussian(mask), with
    cv2.GaussianBlur's window ``radius`` (made odd) and its default sigma. Real-ESRGAN sharpens the GT
    before degrading it so that the restorer learns to output sharp images. ``img_u8`` (the same image
    as 8-bit) lets both blurs read bytes instead of floats, which is ~40% faster and equal up to
    float rounding, since blurring is linear.
    """
    radius += 1 - radius % 2  # odd window, as basicsr
    taps = _gaussian_taps(radius, 1.0)
    scaled = _gaussian_taps(radius, 1 / 255)
    blur = separable(img_u8, scaled.T, taps) if img_u8 is not None else separable(img, taps.T, taps)
    # mask as 0/255 bytes; the 1/255 goes into the blur taps
    mask = cv2.compare(cv2.absdiff(img, blur), threshold / 255, cv2.CMP_GT)
    soft_mask = separable(mask, scaled.T, taps)
    residual = cv2.subtract(img, blur, dst=blur)
    sharp = cv2.scaleAdd(residual, weight, img, dst=residual)
    np.clip(sharp, 0, 1, out=sharp)
    # m * sharp + (1 - m) * I, written with one product
    delta = cv2.subtract(sharp, img, dst=sharp)
    return cv2.add(img, cv2.multiply(soft_mask, delta, dst=delta), dst=delta)


# ----------------------------------------------------------------------------------------------
# Resizing

RESIZE_MODES = ("area", "bilinear", "bicubic")
"""Real-ESRGAN draws each resize's interpolation uniformly from these."""

_CV_INTERP = {"area": cv2.INTER_AREA, "bilinear": cv2.INTER_LINEAR, "bicubic": cv2.INTER_CUBIC}


def resize(img: np.ndarray, height: int, width: int, mode: str) -> np.ndarray:
    """Resize to ``height`` x ``width`` (at least 1 x 1) with a Real-ESRGAN interpolation mode."""
    size = (max(1, int(width)), max(1, int(height)))
    if size == (img.shape[1], img.shape[0]):
        return img  # every mode is the identity at scale 1
    return cv2.resize(img, size, interpolation=_CV_INTERP[mode])


# ----------------------------------------------------------------------------------------------
# Noise


def standard_normal(shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    """float32 N(0, 1) draws by Box-Muller, ~3x faster than Generator.standard_normal(dtype=float32).

    Exact in law up to float rounding: the radius uses 53-bit uniforms in float64 (tails out to 8.5
    sigma), the angle a 24-bit float32 uniform.
    """
    n = int(np.prod(shape))
    half = (n + 1) // 2
    radius = np.sqrt(-2.0 * np.log1p(-rng.random(half))).astype(np.float32)  # 1 - u lies in (0, 1]
    angle = rng.random(half, dtype=np.float32)
    angle *= np.float32(2 * np.pi)
    out = np.empty(2 * half, np.float32)
    np.multiply(radius, np.cos(angle), out=out[:half])
    np.multiply(radius, np.sin(angle), out=out[half:])
    return out[:n].reshape(shape)


def add_gaussian_noise(img: np.ndarray, sigma: float, gray: bool, rng: np.random.Generator) -> np.ndarray:
    """img + N(0, (sigma/255)^2), one draw per pixel (gray) or per pixel and channel, clipped to [0, 1].

    basicsr `add_gaussian_noise(clip=True, rounds=False)`; sigma is on the 0-255 scale.
    """
    noise = standard_normal(img.shape[:2] if gray else img.shape, rng)
    if gray:
        noise = cv2.cvtColor(noise, cv2.COLOR_GRAY2BGR)  # the same draw in every channel
    out = cv2.scaleAdd(noise, sigma / 255.0, img, dst=noise)
    return np.clip(out, 0, 1, out=out)


_GUIDE_BITS = 10  # 1024 guide buckets per rate: at rate 256 about 90% of draws need no comparison
_ROW_STRIDE = 4.0  # row k of the search table holds k * 4 + cdf (cdf <= 2 with the sentinel): sorted


@functools.lru_cache(maxsize=16)
def _poisson_tables(vals: float) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """Inverse-CDF tables for Poisson(level/255 * vals), level = 0..255 (Chen & Asau guide tables).

    Returns (cdf, guide, keyed, width): cdf[k, j] = P(X <= j), ended by a 2.0 sentinel past the
    support (the mass cut off is below 1e-30); guide[k, m] = j0, the first j with cdf[k, j] > m / M,
    stored as -(j0 + 1) when u in [m / M, (m + 1) / M) can still give more than j0; keyed = k * 4 + cdf,
    flattened, one sorted array for a vectorised search across rows.
    """
    rates = (np.arange(256, dtype=np.float32) / np.float32(255)).astype(np.float64) * vals
    width = int(np.ceil(rates.max() + 14 * np.sqrt(rates.max()) + 30))
    j = np.arange(width, dtype=np.float64)
    cdf = special.pdtr(j[None, :], rates[:, None])
    ends = np.ceil(rates + 14 * np.sqrt(rates) + 25).astype(np.int64)
    cdf[j[None, :] >= ends[:, None]] = 2.0
    buckets = 1 << _GUIDE_BITS
    lower = np.arange(buckets, dtype=np.float64) / buckets
    guide = np.stack([np.searchsorted(row, lower, side="right") for row in cdf]).astype(np.int32)
    pure = np.take_along_axis(cdf, guide, axis=1) >= lower + 1.0 / buckets
    guide = np.where(pure, guide, -guide - 1).astype(np.int32)
    keyed = (cdf + _ROW_STRIDE * np.arange(256)[:, None]).reshape(-1)
    tables = np.ascontiguousarray(cdf), guide, keyed
    for table in tables:
        table.setflags(write=False)  # shared through the cache
    return *tables, width


def sample_poisson_levels(levels: np.ndarray, vals: float, rng: np.random.Generator) -> np.ndarray:
    """Poisson(levels/255 * vals) for uint8 ``levels``, exactly in law, as int32 of the same shape.

    np.random.poisson on 786k rates takes ~30 ms; the rates here take at most 256 values, so inverse
    transform sampling (X = min{j : F(j) > u}) with per-rate guide tables does it in a few passes.
    u is built from 64 random bits exactly as Generator.random() does; its top bits pick the bucket.
    """
    cdf, guide, keyed, width = _poisson_tables(float(vals))
    flat = levels.reshape(-1)
    bits = rng.bit_generator.random_raw(flat.size)
    bucket = (bits >> np.uint64(64 - _GUIDE_BITS)).astype(np.int32)
    bucket |= flat.astype(np.int32) << _GUIDE_BITS
    x = np.take(guide.reshape(-1), bucket)
    todo = np.flatnonzero(x < 0)
    if todo.size:  # the bucket straddles a CDF step: compare u itself, walking up from the guide
        start = -x[todo] - 1
        u = (bits[todo] >> np.uint64(11)).astype(np.float64) * 2.0**-53
        row = flat[todo].astype(np.int64) * width
        cdf_flat = cdf.reshape(-1)
        left = np.arange(todo.size)
        for _ in range(4):
            left = left[np.take(cdf_flat, row[left] + start[left]) <= u[left]]
            if not left.size:
                break
            start[left] += 1
        if left.size:
            keys = _ROW_STRIDE * flat[todo[left]] + u[left]
            start[left] = np.searchsorted(keyed, keys, side="right") - row[left]
        x[todo] = start
    return x.reshape(levels.shape)


def add_poisson_noise(img: np.ndarray, scale: float, gray: bool, rng: np.random.Generator) -> np.ndarray:
    """Shot noise as basicsr `add_poisson_noise(clip=True, rounds=False)`, clipped to [0, 1].

    The image (its gray version for gray noise, cv2 BGR weights) is quantised to 8 bits, the photon
    count ``vals`` is the number of distinct levels rounded up to a power of two, and the noise is
    scale * (Poisson(I * vals) / vals - I).
    """
    src = cv2.cvtColor(img, cv2.COLOR_BGR2GRAY) if gray else img
    levels = to_uint8(src)
    distinct = int(np.count_nonzero(np.bincount(levels.reshape(-1), minlength=256)))
    vals = float(2 ** np.ceil(np.log2(distinct)))
    counts = sample_poisson_levels(levels, vals, rng)
    noise = counts.astype(np.float32)
    noise *= np.float32(scale / vals)
    noise -= np.take(np.arange(256, dtype=np.float32) * np.float32(scale / 255), levels)
    if gray:
        noise = cv2.cvtColor(noise, cv2.COLOR_GRAY2BGR)  # the same draw in every channel
    out = cv2.add(img, noise, dst=noise)
    return np.clip(out, 0, 1, out=out)


# ----------------------------------------------------------------------------------------------
# JPEG


def jpeg(img: np.ndarray, quality: int) -> np.ndarray:
    """JPEG round trip through cv2 at an integer quality (basicsr `add_jpg_compression`)."""
    u8 = to_uint8(img)
    ok, buf = cv2.imencode(".jpg", u8, [int(cv2.IMWRITE_JPEG_QUALITY), int(quality)])
    if not ok:
        raise RuntimeError(f"cv2.imencode failed at JPEG quality {quality}")
    return cv2.imdecode(buf, cv2.IMREAD_COLOR).astype(np.float32) / np.float32(255)
