"""Real-ESRGAN degradation core: settings, kernels, operations, and the statistics of the random chain.

Statistics are checked against the configured probabilities with binomial 3-sigma bounds over many
seeded draws, noise levels are recovered from flat patches, and reruns must be bitwise equal.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections import Counter
from pathlib import Path

import cv2
import numpy as np
import pytest
from scipy import special, stats
from skimage import data

from fluxir.config import ConfigError, DegradeConfig, config_from_dict, load_config
from fluxir.degradation import (
    ImageTooSmall,
    crop_skip_reason,
    degrade,
    degrade_pair,
    flat_record,
    image_rng,
    ops,
    random_crop,
    resolve_params,
)
from fluxir.degradation import kernels as K
from fluxir.degradation.presets import seesr_online, seesr_paired

REPO = Path(__file__).resolve().parents[2]


def cfg_with(**overrides) -> DegradeConfig:
    """The default degrade section with ``overrides``, validated as params.yaml would be."""
    return config_from_dict({"degrade": {"overrides": overrides}}).degrade


def within_3_sigma(hits: int, n: int, p: float) -> bool:
    return abs(hits - n * p) <= 3 * math.sqrt(n * p * (1 - p)) + 1e-9


# ----------------------------------------------------------------------------------------------
# Settings


def test_seesr_paired_is_realesrgan_x4plus():
    p = resolve_params(DegradeConfig())
    assert p == seesr_paired()
    assert p.gt_usm and (p.usm_weight, p.usm_radius, p.usm_threshold) == (0.5, 50, 10)
    assert p.kernel_range == (7, 21) and p.kernel_prob == (0.45, 0.25, 0.12, 0.03, 0.12, 0.03)
    assert (p.sinc_prob, p.sinc_prob2, p.final_sinc_prob) == (0.1, 0.1, 0.8)
    assert (p.blur_sigma, p.blur_sigma2) == ((0.2, 3.0), (0.2, 1.5))
    assert (p.betag_range, p.betap_range) == ((0.5, 4.0), (1.0, 2.0))
    assert (p.resize_prob, p.resize_range) == ((0.2, 0.7, 0.1), (0.15, 1.5))
    assert (p.noise_range, p.poisson_scale_range, p.jpeg_range) == ((1, 30), (0.05, 3.0), (30, 95))
    assert (p.gaussian_noise_prob, p.gray_noise_prob) == (0.5, 0.4)
    assert (p.second_blur_prob, p.resize_prob2, p.resize_range2) == (0.8, (0.3, 0.4, 0.3), (0.3, 1.2))
    assert (p.noise_range2, p.poisson_scale_range2, p.jpeg_range2) == ((1, 25), (0.05, 2.5), (30, 95))
    assert p.sinc_first_prob == 0.5


def test_seesr_online_is_params_realesrgan_yml():
    p = resolve_params(DegradeConfig(preset="seesr-online"))
    assert p == seesr_online()
    assert not p.gt_usm  # its loader has the USM line commented out
    assert (p.resize_range, p.noise_range) == ((0.3, 1.5), (1, 15))
    assert (p.poisson_scale_range, p.jpeg_range) == ((0.05, 2.0), (60, 95))
    assert (p.second_blur_prob, p.resize_range2, p.noise_range2) == (0.5, (0.6, 1.2), (1, 12))
    assert (p.poisson_scale_range2, p.jpeg_range2) == ((0.05, 1.0), (60, 100))
    assert p.kernel_prob == seesr_paired().kernel_prob and p.blur_sigma2 == (0.2, 1.5)


def test_overrides_replace_only_what_they_name():
    raw = {"degrade": {"preset": "seesr-online", "overrides": {"noise_range": [2, 5], "gt_usm": True}}}
    p = resolve_params(config_from_dict(raw).degrade)
    assert p.noise_range == (2.0, 5.0) and p.gt_usm is True
    assert dataclasses.replace(p, noise_range=(1.0, 15.0), gt_usm=False) == seesr_online()


def test_params_yaml_section_equals_the_defaults():
    assert load_config(REPO / "params.yaml").degrade == DegradeConfig()


@pytest.mark.parametrize(
    ("section", "message"),
    [
        (
            {"preset": "realesrgan"},
            "degrade.preset='realesrgan': must be one of 'seesr-paired', 'seesr-online'",
        ),
        ({"overrides": {"kernel_prob": [0.5, 0.5, 0, 0, 0, 0.1]}}, "degrade.overrides.kernel_prob="),
        ({"overrides": {"resize_prob2": [0.5, 0.5]}}, "must be 3 probabilities summing to 1"),
        (
            {"overrides": {"noise_range": [30, 1]}},
            "degrade.overrides.noise_range=[30.0, 1.0]: must be [lo, hi]",
        ),
        (
            {"overrides": {"resize_range": [0.2, 0.9]}},
            "degrade.overrides.resize_range=[0.2, 0.9]: must have lo <= 1",
        ),
        ({"overrides": {"betag_range2": [1.5, 4]}}, "degrade.overrides.betag_range2"),
        ({"overrides": {"sinc_prob": 1.2}}, "degrade.overrides.sinc_prob=1.2: must be in [0, 1]"),
        (
            {"overrides": {"jpeg_range": [30, 120]}},
            "degrade.overrides.jpeg_range=[30.0, 120.0]: must be in [0, 100]",
        ),
        (
            {"overrides": {"kernel_range": [8, 21]}},
            "degrade.overrides.kernel_range=[8, 21]: sizes must be odd",
        ),
        ({"overrides": {"blur_size": 3}}, "degrade.overrides.blur_size: unknown key"),
        (
            {"sizes": [[96, 130]]},
            "degrade.sizes[0]=[96, 130]: must be [height, width], positive multiples of",
        ),
        ({"sizes": []}, "degrade.sizes=[]"),
    ],
)
def test_bad_settings_fail_with_one_line_naming_the_key(section, message):
    with pytest.raises(ConfigError) as err:
        config_from_dict({"degrade": section})
    assert message in str(err.value) and "\n" not in str(err.value)


# ----------------------------------------------------------------------------------------------
# Kernels


def test_every_kernel_sums_to_one():
    rng = np.random.default_rng(0)
    for size in (7, 13, 21):
        for kind in range(len(K.KERNEL_TYPES)):
            prob = np.eye(len(K.KERNEL_TYPES))[kind]
            kernel, rec = K.random_mixed_kernel(rng, size, prob, (0.2, 3), (0.5, 4), (1, 2))
            assert rec["type"] == K.KERNEL_TYPES[kind] and kernel.shape == (size, size)
            assert kernel.sum() == pytest.approx(1.0, abs=1e-12) and np.isfinite(kernel).all()
        assert K.sinc_kernel(1.0, size).sum() == pytest.approx(1.0, abs=1e-12)


def test_gaussian_kernels_follow_the_formula():
    ax = np.arange(-10, 11)
    g = np.exp(-(ax[None, :] ** 2 + ax[:, None] ** 2) / (2 * 2.0**2))
    np.testing.assert_allclose(K.gaussian_kernel(21, 2.0, 2.0, 0.0), g / g.sum(), rtol=1e-12)
    # theta = 0: sigma_x along columns, sigma_y along rows; a quarter turn swaps them
    aniso = K.gaussian_kernel(21, 3.0, 1.0, 0.0)
    outer = np.outer(np.exp(-(ax**2) / 2.0), np.exp(-(ax**2) / 18.0))
    np.testing.assert_allclose(aniso, outer / outer.sum(), rtol=1e-12)
    np.testing.assert_allclose(K.gaussian_kernel(21, 3.0, 1.0, math.pi / 2), aniso.T, atol=1e-15)
    # beta = 1 is the Gaussian; plateau is 1 / (1 + q^beta)
    np.testing.assert_allclose(
        K.generalized_gaussian_kernel(21, 3.0, 1.0, 0.4, 1.0), K.gaussian_kernel(21, 3.0, 1.0, 0.4)
    )
    plateau = K.plateau_kernel(21, 2.0, 2.0, 0.0, 1.5)
    q = (ax[None, :] ** 2 + ax[:, None] ** 2) / 4.0
    np.testing.assert_allclose(plateau, 1 / (1 + q**1.5) / np.sum(1 / (1 + q**1.5)), rtol=1e-12)


def test_sinc_kernel_is_a_circular_low_pass():
    size, cutoff = 41, np.pi / 2
    k = K.sinc_kernel(cutoff, size)
    np.testing.assert_allclose(k, k.T, atol=1e-15)
    np.testing.assert_allclose(k, k[::-1, ::-1], atol=1e-15)
    assert k[20, 20] == k.max()
    ax = np.arange(-20, 21)
    r = np.hypot(ax[None, :], ax[:, None])[20, 23]
    assert k[20, 23] / k[20, 20] == pytest.approx(special.j1(cutoff * r) / r / (cutoff / 2))
    response = np.abs(np.fft.fft2(k, s=(256, 256)))  # frequency w = 2 pi m / 256
    assert response[0, 0] == pytest.approx(1.0)
    assert response[0, 26] > 0.9 and response[19, 19] > 0.9  # |w| ~ 0.2 pi, along an axis and diagonally
    assert response[0, 102] < 0.1 and response[72, 72] < 0.1  # |w| ~ 0.8 pi


def test_random_blur_kernel_draws_sizes_and_sinc_cutoffs_as_realesrgan():
    rng = np.random.default_rng(1)
    sizes = K.kernel_sizes((7, 21))
    assert sizes == [7, 9, 11, 13, 15, 17, 19, 21]
    draw = lambda: K.random_blur_kernel(rng, sizes, 1.0, (1, 0, 0, 0, 0, 0), (0.2, 3), (0.5, 4), (1, 2))  # noqa: E731
    records = [draw()[1] for _ in range(600)]
    for rec in records:
        lo = np.pi / 3 if rec["size"] < 13 else np.pi / 5
        assert rec["type"] == "sinc" and lo <= rec["omega"] <= np.pi
    counts = Counter(rec["size"] for rec in records)
    assert set(counts) == set(sizes) and all(within_3_sigma(counts[s], 600, 1 / 8) for s in sizes)


def test_filter_image_equals_cv2_filter2d_on_the_padded_kernel():
    rng = np.random.default_rng(2)
    img = rng.random((64, 80, 3), dtype=np.float32)
    sizes = K.kernel_sizes((7, 21))
    plans = Counter()
    for _ in range(60):
        kernel, rec = K.random_blur_kernel(
            rng, sizes, 0.2, seesr_paired().kernel_prob, (0.2, 3), (0.5, 4), (1, 2)
        )
        pad = (21 - kernel.shape[0]) // 2
        expected = cv2.filter2D(
            img, -1, np.pad(kernel, pad).astype(np.float32), borderType=cv2.BORDER_REFLECT_101
        )
        np.testing.assert_allclose(ops.filter_image(img, kernel), expected, atol=2e-6)
        kind, args = ops._plan(kernel)
        plans[kind] += 1
        if rec["type"] == "iso":  # a Gaussian is an outer product: one separable pass, or a tiny direct one
            assert len(args) == 1 and (kind == "separable" or args[0].shape[0] <= 5)
    assert plans["separable"] and plans["direct"]


# ----------------------------------------------------------------------------------------------
# Operations


@pytest.mark.parametrize("gray", [False, True])
def test_gaussian_noise_level_is_recovered_from_a_flat_patch(gray):
    flat = np.full((256, 256, 3), 0.5, np.float32)
    out = ops.add_gaussian_noise(flat, 20.0, gray, np.random.default_rng(3))
    noise = (out.astype(np.float64) - 0.5) * 255
    assert noise.std() == pytest.approx(20.0, rel=0.02) and abs(noise.mean()) < 0.2
    corr = np.corrcoef(noise[..., 0].ravel(), noise[..., 1].ravel())[0, 1]
    assert corr == pytest.approx(1.0) if gray else abs(corr) < 0.02


def test_box_muller_draws_are_standard_normal():
    z = ops.standard_normal((400_001,), np.random.default_rng(4)).astype(np.float64)
    assert z.dtype == np.float64 and abs(z.mean()) < 0.01 and z.std() == pytest.approx(1.0, abs=0.005)
    assert stats.kstest(z, "norm").pvalue > 1e-3


@pytest.mark.parametrize(("distinct", "vals"), [(256, 256), (100, 128), (3, 4)])
def test_poisson_noise_is_shot_noise_at_the_counted_levels(distinct, vals):
    # `distinct` 8-bit levels occur, so basicsr counts vals = next power of two photons per unit;
    # the flat right half (a middle level) then shows scale * (Poisson(level * vals) / vals - level) noise
    level = distinct // 2
    img = np.full((256, 512, 3), level / 255, np.float32)
    img[:, :256] = (np.arange(256 * 256 * 3).reshape(256, 256, 3) % distinct / 255).astype(np.float32)
    scale = 0.5
    out = ops.add_poisson_noise(img, scale, False, np.random.default_rng(5))
    noise = out[:, 256:].astype(np.float64) - level / 255
    rate = level / 255 * vals
    assert noise.std() == pytest.approx(scale * math.sqrt(rate) / vals, rel=0.02)
    assert abs(noise.mean()) < 3 * noise.std() / math.sqrt(noise.size)
    gray = ops.add_poisson_noise(img, scale, True, np.random.default_rng(5))
    np.testing.assert_array_equal(gray[:, 256:, 0], gray[:, 256:, 2])  # gray noise: the same in every channel
    assert not np.array_equal(out[:, 256:, 0], out[:, 256:, 2])


def test_poisson_sampler_is_exact_inverse_transform():
    levels = np.random.default_rng(6).integers(0, 256, 50_000).astype(np.uint8)
    for vals in (1.0, 16.0, 256.0):
        x = ops.sample_poisson_levels(levels, vals, np.random.default_rng(7))
        bits = np.random.default_rng(7).bit_generator.random_raw(levels.size)
        u = (bits >> np.uint64(11)).astype(np.float64) * 2.0**-53  # what Generator.random() returns
        rates = (np.arange(256, dtype=np.float32) / np.float32(255)).astype(np.float64) * vals
        cdf = special.pdtr(np.arange(600)[None, :], rates[:, None])
        expected = [np.searchsorted(cdf[k], ui, side="right") for k, ui in zip(levels, u, strict=True)]
        np.testing.assert_array_equal(x, expected)


def test_poisson_sampler_follows_the_poisson_law():
    x = ops.sample_poisson_levels(np.full(200_000, 100, np.uint8), 256.0, np.random.default_rng(8))
    rate = float(np.float32(100) / np.float32(255)) * 256
    values = np.arange(x.max() + 1)
    observed = np.bincount(x, minlength=values.size)
    expected = stats.poisson.pmf(values, rate) * x.size
    keep = expected > 5
    chi2 = ((observed[keep] - expected[keep]) ** 2 / expected[keep]).sum()
    assert stats.chi2.sf(chi2, keep.sum() - 1) > 1e-3


def _basicsr_usm(img: np.ndarray, weight=0.5, radius=51, threshold=10) -> np.ndarray:
    """basicsr.utils.img_process_util.usm_sharp, written out."""
    blur = cv2.GaussianBlur(img, (radius, radius), 0)
    residual = img - blur
    mask = (np.abs(residual) * 255 > threshold).astype(np.float32)
    soft = cv2.GaussianBlur(mask, (radius, radius), 0)
    sharp = np.clip(img + weight * residual, 0, 1)
    return soft * sharp + (1 - soft) * img


def test_usm_matches_basicsr_and_adds_high_frequencies():
    u8 = np.ascontiguousarray(data.astronaut()[100:228, 150:278])
    img = u8.astype(np.float32) / 255
    out = ops.usm_sharpen(img, img_u8=u8)
    np.testing.assert_allclose(out, _basicsr_usm(img), atol=1e-5)
    np.testing.assert_allclose(ops.usm_sharpen(img), out, atol=1e-5)
    assert out.min() >= 0 and out.max() <= 1
    energy = [cv2.Laplacian(x, cv2.CV_32F).var() for x in (img, out)]
    assert energy[1] > 1.3 * energy[0]
    flat = np.full((64, 64, 3), 0.3, np.float32)
    np.testing.assert_allclose(ops.usm_sharpen(flat), flat, atol=1e-6)


def test_jpeg_quality_sets_the_loss():
    img = np.ascontiguousarray(data.astronaut()[:128, :128]).astype(np.float32) / 255
    errors = [np.abs(ops.jpeg(img, q) - img).mean() for q in (20, 60, 95)]
    assert errors[0] > errors[1] > errors[2] > 0
    out = ops.jpeg(img, 60)
    np.testing.assert_allclose(out * 255, np.rint(out * 255), atol=1e-4)  # decoded bytes / 255


def test_to_uint8_rounds_and_clips_like_basicsr():
    x = np.array([[[-0.2, 0.5 / 255, 1.5 / 255], [2.5 / 255, 0.999, 1.3]]], np.float32)
    np.testing.assert_array_equal(ops.to_uint8(x), np.clip(np.round(x * 255), 0, 255).astype(np.uint8))


# ----------------------------------------------------------------------------------------------
# Crops, determinism, shapes


def test_random_crop_uses_fitting_sizes_and_records_the_window():
    img = np.arange(100 * 120 * 3, dtype=np.uint32).reshape(100, 120, 3)
    sizes = [[96, 128], [96, 96], [64, 64]]  # 96x128 does not fit a 100x120 image
    seen = Counter()
    rng = np.random.default_rng(9)
    for _ in range(200):
        crop, rec = random_crop(img, sizes, rng)
        seen[(rec["height"], rec["width"])] += 1
        window = img[rec["top"] : rec["top"] + rec["height"], rec["left"] : rec["left"] + rec["width"]]
        np.testing.assert_array_equal(crop, window[:, ::-1] if rec["hflip"] else window)
    assert set(seen) == {(96, 96), (64, 64)}
    crop, rec = random_crop(img, [[64, 64]], rng, position="center", hflip_prob=0.0)
    assert (rec["top"], rec["left"], rec["hflip"]) == (18, 28, False)


def test_too_small_images_are_refused_with_a_reason():
    assert crop_skip_reason((96, 128, 3), DegradeConfig().sizes) is None
    reason = crop_skip_reason((90, 200, 3), DegradeConfig().sizes)
    assert reason == "image 90x200 (HxW) is smaller than every crop size (96x128, 96x96, 96x64)"
    with pytest.raises(ImageTooSmall, match="smaller than every crop size"):
        degrade_pair(np.zeros((90, 200, 3), np.uint8), DegradeConfig(), image_rng("x", 0))
    with pytest.raises(ValueError, match="RGB uint8"):
        degrade_pair(np.zeros((96, 128, 3), np.float32), DegradeConfig(), image_rng("x", 0))


def test_image_rng_depends_on_id_and_seed_only():
    draw = lambda image_id, seed: image_rng(image_id, seed).integers(2**62, size=4).tolist()  # noqa: E731
    assert draw("img_000001", 0) == draw("img_000001", 0)
    assert draw("img_000001", 0) != draw("img_000002", 0) != draw("img_000001", 1)


@pytest.fixture(scope="module")
def photo() -> np.ndarray:
    return np.ascontiguousarray(data.astronaut()[:200, :300])


def test_pairs_have_the_crop_and_scale_sizes_and_rerun_bitwise_equal(photo):
    cfg = DegradeConfig()
    sizes = {tuple(s) for s in cfg.sizes}
    for i in range(6):
        hq, lq, record = degrade_pair(photo, cfg, image_rng(f"img_{i}", 7))
        assert hq.dtype == lq.dtype == np.uint8 and tuple(hq.shape[:2]) in sizes
        assert lq.shape == (hq.shape[0] // 4, hq.shape[1] // 4, 3)
        again = degrade_pair(photo, cfg, image_rng(f"img_{i}", 7))
        assert np.array_equal(hq, again.hq) and np.array_equal(lq, again.lq) and record == again.record
        json.dumps(record)  # plain values, ready for a manifest
    other = degrade_pair(photo, cfg, image_rng("img_0", 8))
    assert not np.array_equal(other.lq, degrade_pair(photo, cfg, image_rng("img_0", 7)).lq)


def test_hq_is_the_sharpened_crop_only_when_gt_usm(photo):
    cfg = DegradeConfig(sizes=[[96, 96]], hflip_prob=0.0, crop="center")
    plain_cfg = dataclasses.replace(cfg, overrides=cfg_with(gt_usm=False).overrides)
    window = photo[52:148, 102:198]
    np.testing.assert_array_equal(degrade_pair(photo, plain_cfg, image_rng("a", 0)).hq, window)
    sharp = degrade_pair(photo, cfg, image_rng("a", 0))
    expected = ops.to_uint8(_basicsr_usm(window.astype(np.float32) / 255))
    assert np.abs(sharp.hq.astype(int) - expected).max() <= 1 and not np.array_equal(sharp.hq, window)


def test_flat_record_uses_dotted_keys(photo):
    flat = flat_record(degrade_pair(photo, DegradeConfig(), image_rng("a", 0)).record)
    assert {
        "crop.height",
        "blur1.type",
        "noise1.kind",
        "jpeg1.quality",
        "final.order",
        "final.sinc.type",
    } <= set(flat)
    assert all(not isinstance(v, dict) for v in flat.values())


# ----------------------------------------------------------------------------------------------
# Statistics of the random chain


def _records(params, n: int, seed: int) -> list[dict]:
    img = np.random.default_rng(seed).random((32, 32, 3), dtype=np.float32)
    return [degrade(img, params, 4, image_rng(str(i), seed))[1] for i in range(n)]


@pytest.fixture(scope="module")
def paired_records() -> list[dict]:
    return _records(seesr_paired(), 1500, 11)


def test_choice_frequencies_match_the_configured_probabilities(paired_records):
    p, recs = seesr_paired(), paired_records
    n = len(recs)
    checks = [  # (hits, trials, probability)
        (sum(r["blur1"]["type"] == "sinc" for r in recs), n, p.sinc_prob),
        (sum(r["blur2"] is not None for r in recs), n, p.second_blur_prob),
        (sum(r["final"]["sinc"]["type"] == "sinc" for r in recs), n, p.final_sinc_prob),
        (sum(r["final"]["order"] == "sinc_first" for r in recs), n, p.sinc_first_prob),
    ]
    mixed = [r["blur1"]["type"] for r in recs if r["blur1"]["type"] != "sinc"]
    checks += [(mixed.count(t), len(mixed), q) for t, q in zip(K.KERNEL_TYPES, p.kernel_prob, strict=True)]
    for stage, prob in (("resize1", p.resize_prob), ("resize2", p.resize_prob2)):
        directions = [r[stage]["direction"] for r in recs]
        checks += [(directions.count(d), n, q) for d, q in zip(("up", "down", "keep"), prob, strict=True)]
    for stage in ("resize1", "resize2"):
        checks += [(sum(r[stage]["mode"] == m for r in recs), n, 1 / 3) for m in ops.RESIZE_MODES]
    checks += [(sum(r["final"]["mode"] == m for r in recs), n, 1 / 3) for m in ops.RESIZE_MODES]
    noise = (
        ("noise1", p.gaussian_noise_prob, p.gray_noise_prob),
        ("noise2", p.gaussian_noise_prob2, p.gray_noise_prob2),
    )
    for stage, gauss, gray in noise:
        checks.append((sum(r[stage]["kind"] == "gaussian" for r in recs), n, gauss))
        checks.append((sum(r[stage]["gray"] for r in recs), n, gray))
    failed = [(hits, trials, prob) for hits, trials, prob in checks if not within_3_sigma(hits, trials, prob)]
    assert not failed


def test_drawn_values_stay_in_their_ranges(paired_records):
    p, recs = seesr_paired(), paired_records
    for r in recs:
        for stage, bounds in (("resize1", p.resize_range), ("resize2", p.resize_range2)):
            s, direction = r[stage]["scale"], r[stage]["direction"]
            assert {"up": 1 <= s <= bounds[1], "down": bounds[0] <= s <= 1, "keep": s == 1}[direction]
        noise = (
            ("noise1", p.noise_range, p.poisson_scale_range),
            ("noise2", p.noise_range2, p.poisson_scale_range2),
        )
        for stage, sigma, scale in noise:
            value, bounds = (
                (r[stage]["sigma"], sigma) if r[stage]["kind"] == "gaussian" else (r[stage]["scale"], scale)
            )
            assert bounds[0] <= value <= bounds[1]
        for rec in (r["blur1"], r["blur2"]):
            if rec is not None and rec["type"] != "sinc":
                sig = p.blur_sigma if rec is r["blur1"] else p.blur_sigma2
                assert sig[0] <= rec["sigma_x"] <= sig[1] and sig[0] <= rec["sigma_y"] <= sig[1]
        assert r["resize1"]["height"] == max(1, int(32 * r["resize1"]["scale"]))
        assert r["resize2"]["height"] == int(32 / 4 * r["resize2"]["scale"])
    # every LQ went through both JPEG steps at integer qualities in range, spread as floor(U(30, 95))
    qualities = np.array([[r["jpeg1"]["quality"], r["final"]["jpeg_quality"]] for r in recs])
    assert qualities.min() >= 30 and qualities.max() <= 94
    assert abs(qualities.mean() - 62.0) < 3 * math.sqrt((65**2 - 1) / 12 / qualities.size)


def test_overrides_reach_the_draws():
    p = dataclasses.replace(
        seesr_online(), gaussian_noise_prob=1.0, noise_range=(5.0, 5.0), sinc_first_prob=0.0
    )
    recs = _records(p, 200, 12)
    assert all(r["noise1"] == {"kind": "gaussian", "sigma": 5.0, "gray": r["noise1"]["gray"]} for r in recs)
    assert all(r["final"]["order"] == "jpeg_first" for r in recs)
    assert all(60 <= r["final"]["jpeg_quality"] <= 99 for r in recs)
    assert within_3_sigma(sum(r["blur2"] is not None for r in recs), 200, 0.5)


def test_noise_only_chain_recovers_sigma_from_a_flat_patch():
    # scale 1, no resizes, no second blur or noise, no final sinc, JPEG at 100: only gray noise is left
    p = dataclasses.replace(
        seesr_paired(), resize_prob=(0, 0, 1), resize_prob2=(0, 0, 1), gaussian_noise_prob=1.0,
        noise_range=(12.0, 12.0), gray_noise_prob=1.0, jpeg_range=(100, 100), second_blur_prob=0.0,
        gaussian_noise_prob2=1.0, noise_range2=(0.0, 0.0), final_sinc_prob=0.0, jpeg_range2=(100, 100),
    )  # fmt: skip
    flat = np.full((192, 192, 3), 0.5, np.float32)  # blurring a flat patch changes nothing
    lq, rec = degrade(flat, p, 1, image_rng("flat", 0))
    assert rec["noise1"]["sigma"] == 12.0 and lq.shape == flat.shape
    noise = lq[..., 1].astype(np.float64) - 127.5
    assert noise.std() == pytest.approx(12.0, rel=0.04)


def test_recorded_blurs_act_on_the_image():
    # everything but the blurs is the identity (scale 1, keep, zero noise, JPEG 100): the second blur
    # must take high frequencies out when the record says it ran, and the first blur its share
    quiet = dataclasses.replace(
        seesr_paired(), kernel_prob=(1, 0, 0, 0, 0, 0), sinc_prob=0.0, blur_sigma=(0.2, 0.2), resize_prob=(0, 0, 1),
        resize_prob2=(0, 0, 1), gaussian_noise_prob=1.0, noise_range=(0.0, 0.0), jpeg_range=(100, 100),
        kernel_prob2=(1, 0, 0, 0, 0, 0), sinc_prob2=0.0, blur_sigma2=(1.5, 1.5), gaussian_noise_prob2=1.0,
        noise_range2=(0.0, 0.0), final_sinc_prob=0.0, jpeg_range2=(100, 100),
    )  # fmt: skip
    img = np.ascontiguousarray(data.astronaut()[:128, :128]).astype(np.float32) / 255
    energy = lambda x: cv2.Laplacian(x.astype(np.float32), cv2.CV_32F).var()  # noqa: E731
    sharp, rec = degrade(img, dataclasses.replace(quiet, second_blur_prob=0.0), 1, image_rng("b", 0))
    blurred, rec2 = degrade(img, dataclasses.replace(quiet, second_blur_prob=1.0), 1, image_rng("b", 0))
    assert rec["blur2"] is None and rec2["blur2"]["sigma_x"] == 1.5
    assert energy(blurred) < 0.5 * energy(sharp)
    assert energy(sharp) > 0.8 * energy(img * 255)
    wide, _ = degrade(
        img, dataclasses.replace(quiet, second_blur_prob=0.0, blur_sigma=(2.0, 2.0)), 1, image_rng("b", 0)
    )
    assert energy(wide) < 0.5 * energy(sharp)
