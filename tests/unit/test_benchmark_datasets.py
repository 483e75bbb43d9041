"""Benchmark test sets: the three layouts, alignment of paired crops, and errors that say what is wrong."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fluxir.benchmark.datasets import DatasetLayoutError, pair_key, prepare, read_set
from fluxir.config import BenchmarkDataset, ConfigError, DegradeConfig, config_from_dict
from fluxir.data.images import load_rgb


def _save(path: Path, rgb: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rgb).save(path)


def realsr_layout(root: Path, names: tuple[str, ...] = ("Canon_001", "Nikon_002"), lq_side: int = 37) -> Path:
    """RealSR-style test folders: test_HR/<name>_HR.png is exactly test_LR/<name>_LR4.png with 4x4 blocks."""
    rng = np.random.default_rng(0)
    for name in names:
        lq = rng.integers(0, 256, (lq_side, lq_side + 3, 3), dtype=np.uint8)
        _save(root / "test_LR" / f"{name}_LR4.png", lq)
        _save(root / "test_HR" / f"{name}_HR.png", np.kron(lq, np.ones((4, 4, 1), np.uint8)))
    return root


def _paired(root: Path, **kw) -> BenchmarkDataset:
    spec = dict(name="RealSR", kind="paired", hq_dir=str(root / "test_HR"), lq_dir=str(root / "test_LR"),
                hq_crop=64, lq_crop=16) | kw  # fmt: skip
    return BenchmarkDataset(**spec)


def test_pair_keys_ignore_case_and_resolution_tags():
    assert pair_key(Path("Canon_001_HR.png")) == pair_key(Path("canon_001_LR4.png")) == "canon_001"
    assert pair_key(Path("sub/0001_x1.png")) == pair_key(Path("sub/0001_x4.png")) == "sub/0001"
    assert pair_key(Path("img_gt.png")) == pair_key(Path("img_lq.jpg")) == "img"


def test_paired_crops_are_centred_and_aligned(tmp_path):
    root = realsr_layout(tmp_path / "RealSR")
    bench = prepare(_paired(root), 4, DegradeConfig(), tmp_path / "out", tmp_path / "val")
    assert [s.id for s in bench.samples] == ["Canon_001", "Nikon_002"]
    for sample in bench.samples:
        lq, hq = load_rgb(sample.lq_path), load_rgb(sample.hq_path)
        assert lq.shape == (16, 16, 3) and hq.shape == (64, 64, 3)
        assert np.array_equal(hq[::4, ::4], lq)  # same region at both scales (37 - 16 is odd: no drift)
        source = load_rgb(root / "test_LR" / f"{sample.id}_LR4.png")
        assert np.array_equal(lq, source[10:26, 12:28])  # centre: (37-16)//2, (40-16)//2
    df = read_set(bench.root)
    assert list(df["id"]) == ["Canon_001", "Nikon_002"] and Path(df["hq_path"][0]).is_file()


def test_unpaired_files_are_listed_by_name(tmp_path):
    root = realsr_layout(tmp_path / "RealSR")
    _save(root / "test_HR" / "Sony_003_HR.png", np.zeros((148, 160, 3), np.uint8))
    _save(root / "test_LR" / "Sony_004_LR4.png", np.zeros((37, 40, 3), np.uint8))
    with pytest.raises(DatasetLayoutError) as err:
        prepare(_paired(root), 4, DegradeConfig(), tmp_path / "out", tmp_path / "val")
    msg = str(err.value)
    assert "benchmark dataset 'RealSR' (paired)" in msg
    assert "1 HQ files have no LQ partner" in msg and "Sony_003_HR.png" in msg
    assert "1 LQ files have no HQ partner" in msg and "Sony_004_LR4.png" in msg


def test_sizes_that_do_not_fit_are_named(tmp_path):
    root = realsr_layout(tmp_path / "RealSR", names=("a",))
    _save(root / "test_HR" / "b_HR.png", np.zeros((100, 100, 3), np.uint8))  # not 4 x 37
    _save(root / "test_LR" / "b_LR4.png", np.zeros((37, 37, 3), np.uint8))
    _save(root / "test_HR" / "c_HR.png", np.zeros((40, 40, 3), np.uint8))
    _save(root / "test_LR" / "c_LR4.png", np.zeros((10, 10, 3), np.uint8))  # smaller than lq_crop 16
    with pytest.raises(DatasetLayoutError) as err:
        prepare(_paired(root), 4, DegradeConfig(), tmp_path / "out", tmp_path / "val")
    msg = str(err.value)
    assert "b_LR4.png: HQ 100x100 is not 4 x LQ 37x37 (restore.scale=4)" in msg
    assert "c_LR4.png: LQ 10x10 is smaller than lq_crop 16" in msg


def test_paired_crop_sizes_must_agree_with_the_scale(tmp_path):
    root = realsr_layout(tmp_path / "RealSR")
    with pytest.raises(DatasetLayoutError, match=r"lq_crop=16 x restore.scale=2 must equal hq_crop=64"):
        prepare(_paired(root), 2, DegradeConfig(), tmp_path / "out", tmp_path / "val")
    with pytest.raises(DatasetLayoutError, match="hq_dir and lq_dir are the same folder"):
        prepare(
            _paired(root, lq_dir=str(root / "test_HR")), 4, DegradeConfig(), tmp_path / "out", tmp_path / "v"
        )
    with pytest.raises(DatasetLayoutError, match="lq_dir=.*missing.* is not a folder"):
        prepare(
            _paired(root, lq_dir=str(root / "missing")), 4, DegradeConfig(), tmp_path / "out", tmp_path / "v"
        )


def test_lq_only_sets_centre_crop_and_have_no_hq(tmp_path):
    folder = tmp_path / "RealLQ250"
    _save(folder / "0001.png", np.arange(40 * 30 * 3, dtype=np.uint32).reshape(40, 30, 3).astype(np.uint8))
    spec = BenchmarkDataset(name="RealLQ250", kind="lq_only", lq_dir=str(folder), lq_crop=20)
    bench = prepare(spec, 4, DegradeConfig(), tmp_path / "out", tmp_path / "val")
    (sample,) = bench.samples
    assert sample.hq_path is None and not bench.has_hq
    original = load_rgb(folder / "0001.png")
    assert np.array_equal(load_rgb(sample.lq_path), original[10:30, 5:25])
    _save(folder / "0002.png", np.zeros((12, 50, 3), np.uint8))
    with pytest.raises(DatasetLayoutError, match="0002.png: 50x12 is smaller than lq_crop 20"):
        prepare(spec, 4, DegradeConfig(), tmp_path / "out", tmp_path / "val")


def test_synthetic_crops_from_skimage_are_degraded_and_reproducible(tmp_path):
    spec = BenchmarkDataset(name="DIV2K-Val", kind="synthetic", hq_dir="skimage", num_crops=5, hq_crop=64)
    degrade = DegradeConfig(sizes=[[64, 64]])
    first = prepare(spec, 4, degrade, tmp_path / "a", tmp_path / "val")
    assert [s.id for s in first.samples] == [
        "astronaut_000",
        "chelsea_000",
        "coffee_000",
        "rocket_000",
        "astronaut_001",
    ]
    again = prepare(spec, 4, degrade, tmp_path / "b", tmp_path / "val")
    for s1, s2 in zip(first.samples, again.samples, strict=True):
        lq, hq = load_rgb(s1.lq_path), load_rgb(s1.hq_path)
        assert lq.shape == (16, 16, 3) and hq.shape == (64, 64, 3)
        assert s1.lq_path.read_bytes() == s2.lq_path.read_bytes()
        assert s1.hq_path.read_bytes() == s2.hq_path.read_bytes()
    a0, a1 = load_rgb(first.samples[0].hq_path), load_rgb(first.samples[4].hq_path)
    assert not np.array_equal(a0, a1)  # two crops of one photo differ


def test_synthetic_photos_too_small_for_the_crop_are_named(tmp_path):
    folder = tmp_path / "hq"
    _save(folder / "big.png", np.zeros((80, 80, 3), np.uint8))
    _save(folder / "small.png", np.zeros((30, 80, 3), np.uint8))
    spec = BenchmarkDataset(name="S", kind="synthetic", hq_dir=str(folder), num_crops=2, hq_crop=64)
    with pytest.raises(
        DatasetLayoutError, match=r"small: image 30x80 \(HxW\) is smaller than every crop size"
    ):
        prepare(spec, 4, DegradeConfig(), tmp_path / "out", tmp_path / "val")
    with pytest.raises(ConfigError, match="degrade.scale=4: must equal restore.scale=2"):
        prepare(spec, 2, DegradeConfig(), tmp_path / "out", tmp_path / "val")


def test_config_checks_the_benchmark_section():
    with pytest.raises(ConfigError, match=r"benchmark.datasets\[RealSR\].lq_dir='': a paired set needs it"):
        config_from_dict({"benchmark": {"datasets": [{"name": "RealSR", "kind": "paired", "hq_dir": "x"}]}})
    with pytest.raises(
        ConfigError,
        match="'esrgan' is neither fluxir, fluxir-untrained, bicubic, lanczos, realesrgan-x4plus, vae-reconstruction nor an sr_models name",
    ):
        config_from_dict({"benchmark": {"methods": ["fluxir", "esrgan"]}})
    with pytest.raises(ConfigError, match="must be unique and not fluxir"):
        config_from_dict({"benchmark": {"sr_models": [{"name": "bicubic", "path": "w.pth"}]}})
    with pytest.raises(ConfigError, match=r"benchmark.datasets\[0\].kind=.x.: must be one of"):
        config_from_dict({"benchmark": {"datasets": [{"kind": "x"}]}})
    cfg = config_from_dict({"benchmark": {"sr_models": [{"name": "Real-ESRGAN", "path": "w.pth"}]}})
    assert cfg.benchmark.sr_models[0].name == "Real-ESRGAN" and cfg.benchmark.datasets[0].hq_dir == "skimage"


def test_an_lq_only_set_is_used_whole_unless_a_crop_is_asked_for(tmp_path):
    # The params.yaml example for RealLQ250 names no crop: every image keeps its size, and the set says so.
    cfg = config_from_dict(
        {
            "benchmark": {
                "datasets": [{"name": "RealLQ250", "kind": "lq_only", "lq_dir": str(tmp_path / "lq")}]
            }
        }
    )
    spec = cfg.benchmark.datasets[0]
    assert spec.lq_crop == 0
    _save(tmp_path / "lq" / "0001.png", np.full((37, 45, 3), 7, np.uint8))
    _save(tmp_path / "lq" / "0002.png", np.full((64, 48, 3), 9, np.uint8))
    bench = prepare(spec, 4, DegradeConfig(), tmp_path / "out", tmp_path / "val")
    assert [load_rgb(s.lq_path).shape for s in bench.samples] == [(37, 45, 3), (64, 48, 3)]
    assert bench.framing == "whole images, no crop"
    asked = BenchmarkDataset(name="RealLQ250", kind="lq_only", lq_dir=str(tmp_path / "lq"), lq_crop=32)
    assert prepare(asked, 4, DegradeConfig(), tmp_path / "o2", tmp_path / "v2").framing == (
        "centre crops of 32 px (lq_crop)"
    )


def test_a_paired_set_without_lq_crop_takes_hq_crop_over_the_scale(tmp_path):
    root = realsr_layout(tmp_path / "RealSR")
    bench = prepare(_paired(root, lq_crop=0), 4, DegradeConfig(), tmp_path / "out", tmp_path / "val")
    assert {load_rgb(s.lq_path).shape for s in bench.samples} == {(16, 16, 3)}
    assert bench.framing == "centre crops, HQ 64 px / LQ 16 px"


def test_synthetic_sets_score_against_the_original_crop_unless_sharpened_is_asked(tmp_path):
    # seesr-paired sharpens the GT (gt_usm): training targets the sharpened crop, the benchmark the photo.
    degrade = DegradeConfig(sizes=[[64, 64]])
    spec = BenchmarkDataset(name="DIV2K-Val", kind="synthetic", hq_dir="skimage", num_crops=2, hq_crop=64)
    original = prepare(spec, 4, degrade, tmp_path / "a", tmp_path / "val")
    sharpened = prepare(
        BenchmarkDataset(**{**spec.__dict__, "reference": "sharpened"}),
        4,
        degrade,
        tmp_path / "b",
        tmp_path / "v",
    )
    from skimage import data

    for s_orig, s_sharp in zip(original.samples, sharpened.samples, strict=True):
        assert s_orig.lq_path.read_bytes() == s_sharp.lq_path.read_bytes()  # the same degradation
        hq, hq_sharp = load_rgb(s_orig.hq_path), load_rgb(s_sharp.hq_path)
        photo = getattr(data, s_orig.id.rsplit("_", 1)[0])()[..., :3]
        top, left = (int(v.split("=")[1]) for v in s_orig.source.split()[-2:])
        assert np.array_equal(hq, photo[top : top + 64, left : left + 64])  # the photo's pixels
        assert not np.array_equal(hq, hq_sharp)  # gt_usm changed the other one
    assert "reference: original HQ crop" in original.framing
    assert "reference: unsharp-masked HQ crop (reference: sharpened)" in sharpened.framing
