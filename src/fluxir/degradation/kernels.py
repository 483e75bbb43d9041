"""Blur and sinc kernels of Real-ESRGAN's degradation model (Wang et al. 2021, sec. 3.1).

The formulas follow basicsr 1.4.2 ``data/degradations.py`` (``bivariate_Gaussian``,
``bivariate_generalized_Gaussian``, ``bivariate_plateau``, ``circular_lowpass_kernel``) and the
sampling follows ``RealESRGANDataset.__getitem__``: the kernel size is drawn first, then sinc or one
of six Gaussian-family kernels. Every draw comes from the caller's ``numpy.random.Generator``, and
each sampler returns a record of what it drew (for lineage and for the statistics tests).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy import special

KERNEL_TYPES = ("iso", "aniso", "generalized_iso", "generalized_aniso", "plateau_iso", "plateau_aniso")
"""Real-ESRGAN's kernel families, in the order its `kernel_prob` lists use."""

SINC_SMALL_KERNEL = 13
"""Kernels smaller than this draw the sinc cutoff from [pi/3, pi], larger ones from [pi/5, pi]
(Real-ESRGAN: a low cutoff on a small support would ring too little to matter)."""


@functools.lru_cache(maxsize=64)
def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    ax = np.arange(-(size // 2), size // 2 + 1, dtype=np.float64)
    xx, yy = np.meshgrid(ax, ax)  # xx varies along columns (x), yy along rows (y), as basicsr
    xx.setflags(write=False)
    yy.setflags(write=False)
    return xx, yy


def _quadratic_form(size: int, sig_x: float, sig_y: float, theta: float) -> np.ndarray:
    """[x y] S^-1 [x y]^T on the grid, S = R diag(sig_x^2, sig_y^2) R^T (basicsr `sigma_matrix2`)."""
    xx, yy = _grid(size)
    c, s = math.cos(theta), math.sin(theta)
    rot = np.array([[c, -s], [s, c]])
    inv = np.linalg.inv(rot @ np.diag([sig_x**2, sig_y**2]) @ rot.T)
    return inv[0, 0] * xx * xx + (inv[0, 1] + inv[1, 0]) * xx * yy + inv[1, 1] * yy * yy


def gaussian_kernel(size: int, sig_x: float, sig_y: float, theta: float) -> np.ndarray:
    """Normalised (an)isotropic bivariate Gaussian; isotropic when sig_x == sig_y."""
    k = np.exp(-0.5 * _quadratic_form(size, sig_x, sig_y, theta))
    return k / k.sum()


def generalized_gaussian_kernel(
    size: int, sig_x: float, sig_y: float, theta: float, beta: float
) -> np.ndarray:
    """Normalised generalised Gaussian exp(-0.5 q^beta) (Pascal et al. 2013); beta = 1 is Gaussian."""
    k = np.exp(-0.5 * np.power(_quadratic_form(size, sig_x, sig_y, theta), beta))
    return k / k.sum()


def plateau_kernel(size: int, sig_x: float, sig_y: float, theta: float, beta: float) -> np.ndarray:
    """Normalised plateau-shaped kernel 1 / (1 + q^beta)."""
    k = np.reciprocal(np.power(_quadratic_form(size, sig_x, sig_y, theta), beta) + 1.0)
    return k / k.sum()


def sinc_kernel(cutoff: float, size: int) -> np.ndarray:
    """Normalised 2-D circularly symmetric low-pass (jinc) filter with cutoff in radians (pi = Nyquist).

    h(r) = cutoff * J1(cutoff r) / (2 pi r), h(0) = cutoff^2 / (4 pi): the ideal low-pass with a disc
    pass band, truncated to ``size`` x ``size``; Real-ESRGAN uses it for ringing and overshoot artefacts.
    """
    xx, yy = _grid(size)
    r = np.hypot(xx, yy)
    with np.errstate(divide="ignore", invalid="ignore"):
        k = cutoff * special.j1(cutoff * r) / (2 * np.pi * r)
    k[size // 2, size // 2] = cutoff**2 / (4 * np.pi)
    return k / k.sum()


def _beta(rng: np.random.Generator, lo: float, hi: float) -> float:
    # basicsr: half the draws below 1 (heavier tails), half above (flatter top)
    return float(rng.uniform(lo, 1.0) if rng.random() < 0.5 else rng.uniform(1.0, hi))


def random_mixed_kernel(
    rng: np.random.Generator,
    size: int,
    kernel_prob: Sequence[float],
    sigma: Sequence[float],
    betag: Sequence[float],
    betap: Sequence[float],
) -> tuple[np.ndarray, dict[str, Any]]:
    """One kernel of a family drawn with ``kernel_prob`` (basicsr `random_mixed_kernels`, no kernel noise).

    sigma_x and sigma_y are drawn from the same range and the rotation from [-pi, pi], as Real-ESRGAN
    passes the same `blur_sigma` for x and y.
    """
    kind = KERNEL_TYPES[int(rng.choice(len(KERNEL_TYPES), p=np.asarray(kernel_prob, dtype=np.float64)))]
    sig_x = float(rng.uniform(*sigma))
    if kind.endswith("aniso"):
        sig_y = float(rng.uniform(*sigma))
        theta = float(rng.uniform(-math.pi, math.pi))
    else:
        sig_y, theta = sig_x, 0.0
    beta = 1.0
    if kind.startswith("generalized"):
        beta = _beta(rng, *betag)
        kernel = generalized_gaussian_kernel(size, sig_x, sig_y, theta, beta)
    elif kind.startswith("plateau"):
        beta = _beta(rng, *betap)
        kernel = plateau_kernel(size, sig_x, sig_y, theta, beta)
    else:
        kernel = gaussian_kernel(size, sig_x, sig_y, theta)
    record = {"type": kind, "size": size, "sigma_x": sig_x, "sigma_y": sig_y, "theta": theta, "beta": beta}
    return kernel, record


def kernel_sizes(kernel_range: Sequence[int]) -> list[int]:
    """The odd sizes from lo to hi (Real-ESRGAN: 7, 9, ..., 21)."""
    lo, hi = kernel_range
    return list(range(lo | 1, hi + 1, 2))


def random_blur_kernel(
    rng: np.random.Generator,
    sizes: Sequence[int],
    sinc_prob: float,
    kernel_prob: Sequence[float],
    sigma: Sequence[float],
    betag: Sequence[float],
    betap: Sequence[float],
) -> tuple[np.ndarray, dict[str, Any]]:
    """The blur kernel of one degradation stage: sinc with ``sinc_prob``, else a mixed Gaussian kernel.

    Returned unpadded (size x size); Real-ESRGAN pads to 21 x 21 with zeros, which changes nothing
    in a same-size correlation.
    """
    size = int(sizes[int(rng.integers(len(sizes)))])
    if rng.random() < sinc_prob:
        lo = np.pi / 3 if size < SINC_SMALL_KERNEL else np.pi / 5
        omega = float(rng.uniform(lo, np.pi))
        return sinc_kernel(omega, size), {"type": "sinc", "size": size, "omega": omega}
    return random_mixed_kernel(rng, size, kernel_prob, sigma, betag, betap)


def random_final_sinc(
    rng: np.random.Generator, sizes: Sequence[int], final_sinc_prob: float
) -> tuple[np.ndarray | None, dict[str, Any]]:
    """The final sinc filter with ``final_sinc_prob``; otherwise None (Real-ESRGAN's identity pulse)."""
    if rng.random() < final_sinc_prob:
        size = int(sizes[int(rng.integers(len(sizes)))])
        omega = float(rng.uniform(np.pi / 3, np.pi))
        return sinc_kernel(omega, size), {"type": "sinc", "size": size, "omega": omega}
    return None, {"type": "pulse"}
