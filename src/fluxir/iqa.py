"""pyiqa plumbing shared by the score stage and the benchmark: weight files, the offline guard, the metric factory.

The paper's no-reference metrics (``clipiqa+_vitL14_512``, ``maniqa-pipal``, ``musiq``) and LPIPS need
weight files no offline machine can fetch. They are looked up in the torch hub cache (``$TORCH_HOME/hub``,
or ``score.torch_home``) BEFORE any metric is built, and downloads are blocked while metrics are built
(unless ``score.allow_download``), so a missing file stops at once with one line naming the file and the
folder it belongs in (:class:`MissingWeightsError`, a :class:`~fluxir.errors.UserError`). A file that is
there but damaged (garbage, truncated, another model's weights) is one line naming it too
(:class:`DamagedWeightsError`): delete it and place the real file.

The full-reference fidelity convention (PSNR and SSIM on YCbCr Y or RGB, with a border cut) is defined
here once, below both the benchmark (which runs pyiqa with :func:`fr_kwargs`) and the trainer's held-out
check (which runs :func:`psnr`, the same definition in NumPy, without importing pyiqa).

pyiqa is imported inside the functions, so ``import fluxir.iqa`` stays cheap.
"""

from __future__ import annotations

import contextlib
import difflib
import os
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from fluxir.config import ConfigError
from fluxir.errors import UserError

PYIQA_WEIGHTS_URL = "https://huggingface.co/chaofengc/IQA-PyTorch-Weights/resolve/main"
# Files the paper's metrics load, relative to the torch hub dir (pyiqa 0.1.16; ../ANCHORS.md section 4).
WEIGHT_FILES: dict[str, tuple[str, ...]] = {
    "clipiqa+_vitL14_512": ("pyiqa/CLIPIQA+_ViTL14_512-e66488f2.pth", "clip/ViT-L-14.pt"),
    "maniqa-pipal": ("pyiqa/MANIQA_PIPAL-ae6d356b.pth",),
    "musiq": ("pyiqa/musiq_koniq_ckpt-e95806b9.pth",),
}
# MANIQA also builds timm's ViT-B/8 with pretrained=True, read from the Hugging Face cache.
HF_FILES: dict[str, tuple[tuple[str, str], ...]] = {
    "maniqa-pipal": (("timm/vit_base_patch8_224.augreg2_in21k_ft_in1k", "model.safetensors"),),
}
# Full-reference weight files (the table above covers the no-reference ones), relative to the torch hub dir.
FR_WEIGHT_FILES: dict[str, tuple[str, ...]] = {
    "lpips": ("pyiqa/LPIPS_v0.1_alex-df73285e.pth", "checkpoints/alexnet-owt-7be5be79.pth"),
    "lpips-vgg": ("pyiqa/LPIPS_v0.1_vgg-a78928a0.pth", "checkpoints/vgg16-397923af.pth"),
}
_FR_URLS = {
    "pyiqa/": f"{PYIQA_WEIGHTS_URL}/",
    "checkpoints/": "https://download.pytorch.org/models/",
}


class MissingWeightsError(UserError, FileNotFoundError):
    """A metric's weight file is not in the cache; the message names the file and where it goes."""


class DamagedWeightsError(UserError):
    """A metric's weight file is there but cannot be read (garbage, truncated) or does not fit the metric."""


def configure_torch_home(torch_home: str = "") -> Path:
    """Point TORCH_HOME at ``torch_home`` (if given) before pyiqa is imported; return the hub dir."""
    import torch.hub

    if torch_home:
        os.environ["TORCH_HOME"] = str(Path(torch_home).expanduser().absolute())
    hub = Path(torch.hub.get_dir())
    # pyiqa reads its cache dir once, at import: keep it in step if it was imported already.
    if "pyiqa.utils.download_util" in sys.modules:
        sys.modules["pyiqa.utils.download_util"].DEFAULT_CACHE_DIR = str(hub / "pyiqa")
    return hub


# ----------------------------------------------------------------------------------------------
# Weight files


def _missing_message(metric: str, path: Path, url: str | None = None, section: str = "score") -> str:
    where = f" (from {url})" if url else ""
    return (
        f"{section} metric '{metric}' needs weight file {path.name} in {path.parent}{where}; copy it there, "
        "set score.torch_home to a folder holding hub/pyiqa/, or set score.allow_download: true where "
        "the network is reachable"
    )


def check_weights(metrics: Sequence[str], hub: Path, section: str = "score") -> None:
    """Raise MissingWeightsError for the first known weight file of ``metrics`` not in the cache; the
    message names the metric as ``section``'s (the stage whose settings list it)."""
    for metric in metrics:
        for rel in WEIGHT_FILES.get(metric, ()):
            path = hub / rel
            if not path.is_file():
                url = f"{PYIQA_WEIGHTS_URL}/{path.name}" if rel.startswith("pyiqa/") else None
                raise MissingWeightsError(_missing_message(metric, path, url, section))
        for repo, filename in HF_FILES.get(metric, ()):
            from huggingface_hub import constants, try_to_load_from_cache

            if not isinstance(try_to_load_from_cache(repo, filename), str):
                raise MissingWeightsError(
                    f"{section} metric '{metric}' needs {repo}/{filename} in the Hugging Face cache "
                    f"{constants.HF_HUB_CACHE}; run `huggingface-cli download {repo}` where the hub is "
                    "reachable and copy the cache, or set score.allow_download: true"
                )


def missing_fr_weights(name: str, hub: Path) -> str | None:
    """Why full-reference metric ``name`` cannot be built offline (its first missing file), else None."""
    for rel in FR_WEIGHT_FILES.get(name, ()):
        path = hub / rel
        if not path.is_file():
            url = next((u + path.name for prefix, u in _FR_URLS.items() if rel.startswith(prefix)), "")
            return (
                # named relative to TORCH_HOME, not this machine's folder: the text lands in DVC-tracked reports
                f"weight file {path.name} is not in $TORCH_HOME/hub/{Path(rel).parent.as_posix()} (from {url}); "
                "copy it there (TORCH_HOME: score.torch_home, else the environment's or ~/.cache/torch), "
                "or set score.allow_download: true"
            )
    return None


@contextlib.contextmanager
def _no_downloads() -> Iterator[None]:
    """Turn every download pyiqa would start into a MissingWeightsError naming the file."""
    import huggingface_hub.constants as hf_constants
    import pyiqa.archs.clip_model as clip_model
    import pyiqa.utils.download_util as download_util

    def blocked_url(url: str, dst: str, *args: Any, **kwargs: Any) -> None:
        raise MissingWeightsError(_missing_message(_current[0], Path(dst), url, _current[1]))

    original_clip = clip_model._download

    def blocked_clip(url: str, root: str) -> str:
        target = Path(root) / os.path.basename(url)
        if target.is_file():
            return original_clip(url, root)
        raise MissingWeightsError(_missing_message(_current[0], target, url, _current[1]))

    saved = (download_util.download_url_to_file, clip_model._download, hf_constants.HF_HUB_OFFLINE)
    download_util.download_url_to_file, clip_model._download = blocked_url, blocked_clip
    hf_constants.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        download_util.download_url_to_file, clip_model._download, hf_constants.HF_HUB_OFFLINE = saved


_current = ["", "score"]  # the metric being built and its section, for the messages of the guards


def _damaged_message(metric: str, path: object, what: str) -> str:
    name = Path(str(path)).name
    url = f" (from {PYIQA_WEIGHTS_URL}/{name})" if Path(str(path)).parent.name == "pyiqa" else ""
    return (
        f"{_current[1]} metric '{metric}': weight file {path} {what}; delete it and place the real file there{url}, "
        "or set score.allow_download: true where the network is reachable"
    )


@contextlib.contextmanager
def _watch_weight_loads(loaded: list[str]) -> Iterator[None]:
    """Turn a weight file torch cannot read (garbage, truncated) into a DamagedWeightsError naming it;
    record in ``loaded`` each file read, so a file that loads but does not fit can be named too."""
    import torch

    original = torch.load

    def watched(f: Any, *args: Any, **kwargs: Any) -> Any:
        path = getattr(f, "name", f)  # a path, or an open file (clip opens the file itself)
        loaded.append(str(path))
        try:
            return original(f, *args, **kwargs)
        except MemoryError:
            raise
        except Exception as exc:  # noqa: BLE001 - unpickling garbage raises anything: EOFError, UnpicklingError, ...
            first = (str(exc).splitlines() or [""])[0].split(". ")[0][:160]
            raise DamagedWeightsError(
                _damaged_message(
                    _current[0], path, f"is damaged or not a torch file ({type(exc).__name__}: {first})"
                )
            ) from exc

    torch.load = watched
    try:
        yield
    finally:
        torch.load = original


# ----------------------------------------------------------------------------------------------
# Metrics


def metric_config(name: str, setting: str) -> dict[str, Any]:
    """pyiqa's default config of metric ``name``; a ConfigError naming ``setting`` when there is none."""
    from pyiqa.default_model_configs import DEFAULT_CONFIGS

    if name not in DEFAULT_CONFIGS:
        close = difflib.get_close_matches(name, list(DEFAULT_CONFIGS), n=3)
        hint = f"; did you mean {', '.join(close)}?" if close else "; see `pyiqa.list_models()`"
        raise ConfigError(f"{setting}: {name!r} is not a pyiqa metric{hint}")
    return DEFAULT_CONFIGS[name]


def metric_directions(names: Sequence[str]) -> dict[str, bool]:
    """``{metric: lower_better}`` from pyiqa's config table, without building the metrics."""
    from pyiqa.default_model_configs import DEFAULT_CONFIGS

    return {m: bool(DEFAULT_CONFIGS.get(m, {}).get("lower_better", False)) for m in names}


def create_metrics(
    names: Sequence[str],
    device: Any,
    hub: Path,
    allow_download: bool = False,
    section: str = "score",
    full_reference: bool = False,
    **kwargs: Any,
) -> dict[str, Any]:
    """Build each pyiqa metric once: no-reference ones, or full-reference ones with ``full_reference``.

    Missing weights raise before any is built; a weight file torch cannot read, or whose tensors are
    another model's, is a DamagedWeightsError naming it. Messages name each metric as ``section``'s
    (``score`` or ``benchmark``: the stage whose ``<section>.metrics`` lists it).
    """
    if not allow_download:
        check_weights(names, hub, section)
    import pyiqa

    mode = "FR" if full_reference else "NR"
    for name in names:
        if metric_config(name, f"{section}.metrics").get("metric_mode") != mode:
            kind, wanted = (
                ("no-reference", "full-reference") if full_reference else ("full-reference", "no-reference")
            )
            raise ConfigError(f"{section}.metrics: {name!r} is a {kind} metric; {wanted} ones are built here")
    metrics = {}
    guard = contextlib.nullcontext() if allow_download else _no_downloads()
    loaded: list[str] = []
    with guard, _watch_weight_loads(loaded):
        for name in names:
            _current[:] = [name, section]
            loaded.clear()
            try:
                metrics[name] = pyiqa.create_metric(name, device=device, as_loss=False, **kwargs)
            except (MissingWeightsError, DamagedWeightsError):
                raise
            except RuntimeError as exc:
                if not (loaded and "Error(s) in loading state_dict" in str(exc)):
                    raise
                raise DamagedWeightsError(
                    _damaged_message(name, loaded[-1], "does not fit the metric (its tensors do not match)")
                ) from exc
            except OSError as exc:  # e.g. huggingface_hub's offline error for a timm backbone
                raise MissingWeightsError(
                    f"{section} metric '{name}' could not load its weights offline ({type(exc).__name__}: "
                    f"{str(exc).splitlines()[0]}); set score.allow_download: true where the network is reachable"
                ) from exc
    return metrics


# ----------------------------------------------------------------------------------------------
# Full-reference fidelity: PSNR / SSIM channel and border

FIDELITY = ("psnr", "ssim")
"""The pyiqa metrics ``benchmark.fr_channel`` and ``benchmark.fr_border`` apply to."""
# ITU-R BT.601 luma for R, G, B in [0, 1], on the 0-255 scale (BasicSR's rgb2ycbcr, pyiqa's 'ycbcr').
_YCBCR_Y = np.array([65.481, 128.553, 24.966])
_YCBCR_OFFSET = 16.0


def fr_kwargs(channel: str, border: int) -> dict[str, Any]:
    """pyiqa ``create_metric`` arguments of PSNR and SSIM for a channel ('y' or 'rgb') and a border cut."""
    if channel not in ("y", "rgb"):
        raise ValueError(f"fr_channel={channel!r}: must be 'y' or 'rgb'")
    kwargs: dict[str, Any] = {"test_y_channel": channel == "y", "crop_border": int(border)}
    if channel == "y":
        kwargs["color_space"] = "ycbcr"  # pyiqa's own default is YIQ, about 1.3 dB below the SR convention
    return kwargs


def fr_setting(channel: str, border: int) -> str:
    """How PSNR / SSIM were computed, in words: 'YCbCr Y (BT.601), 4 px border cut'."""
    where = "YCbCr Y (BT.601)" if channel == "y" else "RGB"
    return f"{where}, {border} px border cut" if border else f"{where}, no border cut"


def ycbcr_y(rgb: np.ndarray) -> np.ndarray:
    """The BT.601 Y channel (16-235) of an RGB uint8 H x W x 3 image, as float64 without rounding."""
    return rgb.astype(np.float64) / 255.0 @ _YCBCR_Y + _YCBCR_OFFSET


def psnr(restored: np.ndarray, reference: np.ndarray, channel: str = "y", border: int = 0) -> float:
    """PSNR in dB of two RGB uint8 images on YCbCr Y or RGB after cutting ``border`` pixels per side.

    The definition of the benchmark's pyiqa PSNR (:func:`fr_kwargs`) and of BasicSR's ``calculate_psnr``
    (peak 255); inf when the images are equal (pyiqa instead caps at 80 dB through its eps).
    """
    if restored.shape != reference.shape:
        raise ValueError(f"psnr: shapes {restored.shape} and {reference.shape} differ")
    if border:
        restored = restored[border:-border, border:-border]
        reference = reference[border:-border, border:-border]
    if channel == "y":
        a, b = ycbcr_y(restored), ycbcr_y(reference)
    elif channel == "rgb":
        a, b = restored.astype(np.float64), reference.astype(np.float64)
    else:
        raise ValueError(f"channel={channel!r}: must be 'y' or 'rgb'")
    mse = float(np.mean((a - b) ** 2))
    return float("inf") if mse == 0 else float(10 * np.log10(255.0**2 / mse))
