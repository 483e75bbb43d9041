"""Benchmark metrics: values on known pairs, directions, and absent metrics reported with their reason."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from fluxir.benchmark.metrics import PSNR_CAP_DB, build_suite
from fluxir.config import ConfigError
from fluxir.iqa import configure_torch_home, fr_setting, psnr


@pytest.fixture(autouse=True)
def _restore_torch_home(tmp_path, monkeypatch):
    """Tests point TORCH_HOME (and pyiqa's cache dir) at an empty folder; put both back afterwards."""
    import pyiqa.utils.download_util as download_util

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))
    monkeypatch.setattr(download_util, "DEFAULT_CACHE_DIR", download_util.DEFAULT_CACHE_DIR)


def _image(seed: int = 0) -> np.ndarray:
    # values in [20, 230] so the offsets below never clip
    return np.random.default_rng(seed).integers(20, 230, (48, 40, 3)).astype(np.uint8)


def _psnr_db(mse01: float) -> float:
    """pyiqa's PSNR for an MSE on the [0, 1] scale: 10 log10(1 / (mse + 1e-8))."""
    return 10 * math.log10(1 / (mse01 + 1e-8))


@pytest.mark.parametrize("channel", ["y", "rgb"])
def test_identical_images_give_the_psnr_cap_and_ssim_one(channel):
    suite = build_suite(["psnr", "ssim"], "cpu", configure_torch_home(""), fr_channel=channel)
    a = _image()
    scores = suite.score(a, a.copy())
    assert scores["psnr"] == pytest.approx(PSNR_CAP_DB) == pytest.approx(80.0)
    assert scores["ssim"] == pytest.approx(1.0, abs=1e-12)


def test_psnr_matches_a_hand_computed_mse_on_rgb_and_on_y():
    # +6 on the red channel of every other row: RGB MSE = (1/3)(1/2)(6/255)^2,
    # YCbCr Y (BT.601: Y = 16 + (65.481 R + 128.553 G + 24.966 B) / 255 on 0-255) MSE = (1/2)(65.481 * 6/255 / 255)^2.
    a = _image(1)
    b = a.copy()
    b[::2, :, 0] += 6
    hub = configure_torch_home("")
    rgb = build_suite(["psnr"], "cpu", hub, fr_channel="rgb").score(b, a)["psnr"]
    y = build_suite(["psnr"], "cpu", hub, fr_channel="y").score(b, a)["psnr"]
    assert rgb == pytest.approx(_psnr_db((6 / 255) ** 2 / 6), abs=1e-3)
    y_db = _psnr_db((65.481 * 6 / 255 / 255) ** 2 / 2)
    assert y == pytest.approx(y_db, abs=1e-2)
    assert y_db == pytest.approx(47.38, abs=0.01)  # by hand: Y moves 1.5407 of 255 on half the pixels
    assert y > rgb  # only red changed, and red weighs 65.481 / 255 = 0.257 in Y
    # The trainer's held-out PSNR is the same definition in NumPy, without pyiqa's eps (1e-8 on the MSE)
    assert psnr(b, a, "y") == pytest.approx(10 * math.log10(2 * 255**2 / (65.481 * 6 / 255) ** 2), abs=1e-9)
    assert psnr(b, a, "y") == pytest.approx(y, abs=5e-3) and psnr(b, a, "rgb") == pytest.approx(rgb, abs=5e-3)


def test_y_is_ycbcr_not_pyiqas_default_yiq():
    # YIQ's luma weighs red 0.299, YCbCr's Y 65.481 / 255 = 0.2568 (and all of Y's range is 219/255 of RGB's):
    # on the same change the two differ by 20 log10(0.299 / 0.2568) = 1.32 dB.
    a = _image(2)
    b = a.copy()
    b[::2, :, 0] += 6
    hub = configure_torch_home("")
    y = build_suite(["psnr"], "cpu", hub, fr_channel="y").score(b, a)["psnr"]
    yiq = build_suite(["psnr"], "cpu", hub, extra_kwargs={"psnr": {"color_space": "yiq"}}).score(b, a)["psnr"]
    assert y - yiq == pytest.approx(20 * math.log10(0.299 / (65.481 / 255)), abs=0.02)


def test_the_border_is_cut_before_psnr_and_ssim_and_tables_say_so():
    # Change only a 4-pixel frame: with a 4 px border cut the images are equal (PSNR cap, SSIM 1).
    a = _image(3)
    b = a.copy()
    b[:4] += 10
    b[-4:] += 10
    b[:, :4] += 10
    b[:, -4:] += 10
    hub = configure_torch_home("")
    cut = build_suite(["psnr", "ssim"], "cpu", hub, fr_channel="y", fr_border=4)
    whole = build_suite(["psnr", "ssim"], "cpu", hub, fr_channel="y", fr_border=0)
    assert cut.score(b, a) == pytest.approx({"psnr": PSNR_CAP_DB, "ssim": 1.0})
    assert whole.score(b, a)["psnr"] < 40
    assert psnr(b, a, "y", border=4) == math.inf and psnr(b, a, "y") < 40
    assert cut.info["psnr"].setting.startswith("YCbCr Y (BT.601), 4 px border cut")
    assert cut.info["ssim"].setting == fr_setting("y", 4) == "YCbCr Y (BT.601), 4 px border cut"
    assert fr_setting("rgb", 0) == "RGB, no border cut"


def test_directions_labels_and_the_no_weight_profile():
    suite = build_suite(["psnr", "ssim", "piqe"], "cpu", configure_torch_home(""))
    assert {n: (i.label, i.arrow, i.full_reference) for n, i in suite.info.items()} == {
        "psnr": ("PSNR", "↑", True),
        "ssim": ("SSIM", "↑", True),
        "piqe": ("PIQE", "↓", False),
    }
    assert suite.absent == {}
    scores = suite.score(_image(), None)  # no HQ: full-reference metrics are skipped, not guessed
    assert set(scores) == {"piqe"} and 0 <= scores["piqe"] <= 100


def test_metrics_without_weights_are_absent_with_file_and_folder(tmp_path):
    hub = configure_torch_home(str(tmp_path / "th"))
    suite = build_suite(["psnr", "lpips", "musiq", "clipiqa+_vitL14_512"], "cpu", hub)
    assert list(suite.built) == ["psnr"]
    assert list(suite.info) == ["psnr", "lpips", "musiq", "clipiqa+_vitL14_512"]  # rows kept, in order
    assert "LPIPS_v0.1_alex-df73285e.pth" in suite.absent["lpips"]
    assert "$TORCH_HOME/hub/pyiqa" in suite.absent["lpips"]  # named the same on every machine
    assert (
        "musiq_koniq_ckpt-e95806b9.pth" in suite.absent["musiq"]
        and str(hub / "pyiqa") in suite.absent["musiq"]
    )
    assert "CLIPIQA+_ViTL14_512-e66488f2.pth" in suite.absent["clipiqa+_vitL14_512"]
    assert suite.absent["musiq"].startswith(
        "benchmark metric 'musiq' needs weight file"
    )  # the stage that asked
    assert suite.info["lpips"].lower_better and not suite.info["musiq"].lower_better


def test_lpips_needs_the_torchvision_backbone_too(tmp_path):
    hub = configure_torch_home(str(tmp_path / "th"))
    (hub / "pyiqa").mkdir(parents=True)
    (hub / "pyiqa" / "LPIPS_v0.1_alex-df73285e.pth").write_bytes(b"")
    suite = build_suite(["lpips"], "cpu", hub)
    assert (
        "alexnet-owt-7be5be79.pth" in suite.absent["lpips"]
        and "$TORCH_HOME/hub/checkpoints" in suite.absent["lpips"]
    )


@pytest.mark.parametrize("damage", [b"not a torch file", b"PK\x03\x04 cut short"])
def test_damaged_lpips_weights_are_one_line_naming_the_files(tmp_path, damage):
    from fluxir.errors import UserError

    hub = configure_torch_home(str(tmp_path / "th"))
    for rel in ("pyiqa/LPIPS_v0.1_alex-df73285e.pth", "checkpoints/alexnet-owt-7be5be79.pth"):
        (hub / rel).parent.mkdir(parents=True, exist_ok=True)
        (hub / rel).write_bytes(damage)
    with pytest.raises(UserError) as refused:
        build_suite(["lpips"], "cpu", hub)
    message = str(refused.value)
    # torchvision's backbone loads first: the file that failed is named, with the fix
    damaged = hub / "checkpoints" / "alexnet-owt-7be5be79.pth"
    assert "\n" not in message
    assert message.startswith(
        f"benchmark metric 'lpips': weight file {damaged} is damaged or not a torch file ("
    )
    assert "delete it and place the real file there" in message


def test_a_paper_metric_with_its_weights_in_place_is_built_and_scores(tmp_path):
    # MUSIQ with random weights under the file name pyiqa expects: the real loading path, offline.
    import pyiqa

    random_musiq = pyiqa.create_metric("musiq", pretrained=False, device="cpu")
    weights = tmp_path / "th" / "hub" / "pyiqa" / "musiq_koniq_ckpt-e95806b9.pth"
    weights.parent.mkdir(parents=True)
    torch.save(random_musiq.net.state_dict(), weights)
    suite = build_suite(["musiq"], "cpu", configure_torch_home(str(tmp_path / "th")))
    assert suite.absent == {} and suite.info["musiq"].label == "MUSIQ"
    a = _image()
    expected = random_musiq(torch.from_numpy(a).permute(2, 0, 1)[None].float() / 255).item()
    assert suite.score(a, None)["musiq"] == pytest.approx(expected, rel=1e-5)


def test_unknown_metric_names_suggest_close_ones():
    with pytest.raises(ConfigError, match="'psnrr' is not a pyiqa metric; did you mean psnr"):
        build_suite(["psnrr"], "cpu", configure_torch_home(""))
