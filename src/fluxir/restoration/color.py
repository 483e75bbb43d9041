"""Colour correction of a restoration against its input: the fix peers ship for diffusion restorers' colour shifts.

A generative restorer may drift in global colour (SeeSR#54, S3Diff#2); StableSR, SUPIR and DreamClear
correct it after sampling by taking the low frequencies (colour, shading) from the upscaled input and
keeping only the restoration's high frequencies (detail):

  wavelet  restoration - lowpass(restoration) + lowpass(bicubic input), the lowpass being a 5-level
           dilated 3x3 binomial ("a trous") wavelet, as StableSR's ``wavelet_reconstruction``;
  adain    per-channel mean and standard deviation of the restoration matched to the input's
           (StableSR's ``adaptive_instance_normalization``): global, so it leaves local contrast alone;
  none     the restoration as sampled.

Both operate on uint8 H x W x 3 arrays of the same size and return uint8.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from scipy import ndimage

ColorFix = Literal["wavelet", "adain", "none"]
COLOR_FIXES: tuple[str, ...] = ("wavelet", "adain", "none")
WAVELET_LEVELS = 5
_BINOMIAL = np.array([0.25, 0.5, 0.25])


def _lowpass(image: np.ndarray, levels: int = WAVELET_LEVELS) -> np.ndarray:
    """The low-frequency residue of an a-trous wavelet decomposition (float H x W, or H x W x C)."""
    low = image
    for level in range(levels):
        # the 3x3 binomial kernel dilated by 2**level, applied separably, with edge replication
        step = 2**level
        kernel = np.zeros(2 * step + 1)
        kernel[::step] = _BINOMIAL
        low = ndimage.convolve1d(low, kernel, axis=0, mode="nearest")
        low = ndimage.convolve1d(low, kernel, axis=1, mode="nearest")
    return low


def wavelet_color_fix(
    restored: np.ndarray, reference: np.ndarray, levels: int = WAVELET_LEVELS
) -> np.ndarray:
    """High frequencies of ``restored`` over the low frequencies of ``reference`` (both uint8 H x W x 3).

    One channel at a time in float32: a restore of a large output then holds a few float32 planes, not
    a dozen float64 copies of the whole image (~85 MiB at 768 x 768); float32 sums of uint8 values are
    exact to far below the final rounding.
    """
    fixed = np.empty_like(restored)
    for c in range(restored.shape[2]):
        out = restored[..., c].astype(np.float32)
        out -= _lowpass(out, levels)
        out += _lowpass(reference[..., c].astype(np.float32), levels)
        fixed[..., c] = np.clip(np.rint(out), 0, 255)
    return fixed


def adain_color_fix(restored: np.ndarray, reference: np.ndarray, eps: float = 1e-5) -> np.ndarray:
    """Per-channel mean and standard deviation of ``restored`` set to those of ``reference``."""
    fixed = np.empty_like(restored)
    for c in range(restored.shape[2]):  # one channel at a time: bounded memory, as the wavelet fix
        out, ref = restored[..., c].astype(np.float64), reference[..., c].astype(np.float64)
        out = (out - out.mean()) / (out.std() + eps) * ref.std() + ref.mean()
        fixed[..., c] = np.clip(np.rint(out), 0, 255)
    return fixed


def apply_color_fix(restored: np.ndarray, reference: np.ndarray, method: str) -> np.ndarray:
    """Dispatch on ``method`` (wavelet | adain | none); ``none`` returns ``restored`` itself, untouched."""
    if restored.shape != reference.shape:
        raise ValueError(f"colour fix needs equal shapes, got {restored.shape} and {reference.shape}")
    if method == "none":
        return restored
    if method == "wavelet":
        return wavelet_color_fix(restored, reference)
    if method == "adain":
        return adain_color_fix(restored, reference)
    raise ValueError(f"colour fix {method!r}: must be one of {', '.join(COLOR_FIXES)}")
