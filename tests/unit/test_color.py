"""Colour fix: a restoration with a known global colour cast is brought back to the input's colours."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image
from skimage import data

from fluxir.restoration.color import adain_color_fix, apply_color_fix, wavelet_color_fix


@pytest.fixture(scope="module")
def photo() -> tuple[np.ndarray, np.ndarray]:
    """A real 128 x 128 photo crop (HQ) and its x4 bicubic round trip (what the input looks like upscaled)."""
    hq = np.ascontiguousarray(data.astronaut()[64:192, 160:288])
    lq = Image.fromarray(hq).resize((32, 32), Image.BICUBIC)
    return hq, np.asarray(lq.resize((128, 128), Image.BICUBIC))


def cast(image: np.ndarray) -> np.ndarray:
    """A global colour cast: red +24, blue x 0.85."""
    out = image.astype(np.float64)
    out[..., 0] += 24
    out[..., 2] *= 0.85
    return np.clip(out, 0, 255).astype(np.uint8)


def channel_mean_error(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a.astype(float).mean(axis=(0, 1)) - b.astype(float).mean(axis=(0, 1))).max())


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(float) - b.astype(float)) ** 2)
    return float(10 * np.log10(255**2 / mse))


@pytest.mark.parametrize("fix", [wavelet_color_fix, adain_color_fix])
def test_a_global_colour_cast_is_removed(photo, fix):
    hq, reference = photo
    restored = cast(hq)  # a perfect restoration, but with a colour cast
    assert channel_mean_error(restored, hq) > 15
    fixed = fix(restored, reference)
    # stated tolerance: every channel's mean within 2 grey levels of the true image's
    assert channel_mean_error(fixed, hq) < 2.0
    # and the restoration's detail is kept: closer to HQ than the blurry reference and the cast image
    assert psnr(fixed, hq) > psnr(restored, hq) + 3


def test_wavelet_keeps_high_frequencies_of_the_restoration(photo):
    hq, reference = photo
    fixed = wavelet_color_fix(cast(hq), reference)
    # the detail comes from the restoration, not the blurry input: closer to HQ than the input is
    assert psnr(fixed, hq) > psnr(reference, hq) + 2
    # fixing an exact restoration against its own blurry input changes it only a little
    assert psnr(wavelet_color_fix(hq, reference), hq) > 30


def test_adain_matches_each_channels_mean_and_std(photo):
    hq, reference = photo
    fixed = adain_color_fix(cast(hq), reference).astype(float)
    np.testing.assert_allclose(fixed.mean(axis=(0, 1)), reference.astype(float).mean(axis=(0, 1)), atol=0.6)
    np.testing.assert_allclose(fixed.std(axis=(0, 1)), reference.astype(float).std(axis=(0, 1)), rtol=0.02)


def test_none_is_the_restoration_itself_and_bad_input_is_named(photo):
    hq, reference = photo
    assert apply_color_fix(hq, reference, "none") is hq
    with pytest.raises(ValueError, match="must be one of wavelet, adain, none"):
        apply_color_fix(hq, reference, "histogram")
    with pytest.raises(ValueError, match="equal shapes"):
        apply_color_fix(hq, reference[:64], "wavelet")
