"""pyiqa metrics for Table 1, each with its direction; those that cannot be built are reported absent.

Paper (section 4, footnote 2): full-reference PSNR, SSIM, LPIPS; no-reference CLIPIQA
(``clipiqa+_vitL14_512``), MUSIQ (``musiq``), MANIQA (``maniqa-pipal``), all from pyiqa with its own
settings. Choices stated in every report:
  - PSNR and SSIM on the YCbCr Y channel (``benchmark.fr_channel: y``, the super-resolution convention:
    ITU-R BT.601 Y = 16 + 65.481 R + 128.553 G + 24.966 B for R, G, B in [0, 1], as BasicSR's
    ``calculate_psnr(test_y_channel=True)``; pyiqa ``test_y_channel=True, color_space='ycbcr'``, not
    pyiqa's default YIQ luma, which reads about 1.3 dB lower) or on RGB (``rgb``), after cutting
    ``benchmark.fr_border`` pixels from every border (default: the scale, 4 px at x4). Data range 1.
    :func:`fluxir.iqa.fr_kwargs` is the one place these choices become pyiqa arguments and
    :func:`fluxir.iqa.fr_setting` the one place they become words in a table header; the trainer's
    held-out PSNR uses the same definition (:func:`fluxir.iqa.psnr`, tested against pyiqa).
  - pyiqa's PSNR adds eps = 1e-8 to the MSE, so identical images score 10 log10(1 / 1e-8) = 80 dB,
    not inf: PSNR is capped at 80 dB.
  - LPIPS is pyiqa's ``lpips`` (AlexNet, v0.1), lower is better.

Weights are looked up before any metric is built (:mod:`fluxir.iqa`: ``check_weights``, and
``missing_fr_weights`` for LPIPS's two files), downloads stay blocked unless ``score.allow_download``,
and a metric whose files are missing is kept in the suite as *absent* with the reason (file name and
folder), so every table still shows its row. Nothing is replaced by another metric.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from fluxir.iqa import (
    FIDELITY,
    MissingWeightsError,
    create_metrics,
    fr_kwargs,
    fr_setting,
    metric_config,
    missing_fr_weights,
)

PSNR_CAP_DB = 80.0
"""What pyiqa's PSNR gives for identical images: 10 log10(1 / eps), eps = 1e-8."""
LABELS = {
    "clipiqa+_vitL14_512": "CLIPIQA",
    "musiq": "MUSIQ",
    "maniqa-pipal": "MANIQA",
    "psnr": "PSNR",
    "ssim": "SSIM",
    "lpips": "LPIPS",
    "piqe": "PIQE",
}
"""Row names the paper uses; other metrics show their pyiqa name in upper case."""


def label(name: str) -> str:
    return LABELS.get(name, name.upper())


@dataclass
class MetricInfo:
    name: str
    """pyiqa metric name."""
    label: str
    """Row name in the tables."""
    lower_better: bool
    full_reference: bool
    setting: str = ""
    """How it is computed, when that is a choice (e.g. 'Y channel')."""

    @property
    def arrow(self) -> str:
        return "↓" if self.lower_better else "↑"


@dataclass
class MetricSuite:
    """Built metrics (callables), metrics reported absent with their reason, and every metric's info."""

    info: dict[str, MetricInfo]
    built: dict[str, Any] = field(default_factory=dict)
    absent: dict[str, str] = field(default_factory=dict)
    device: Any = "cpu"

    def score(self, restored: np.ndarray, hq: np.ndarray | None) -> dict[str, float]:
        """Scores of one restored uint8 image (vs ``hq`` for full-reference metrics); NaN where not defined."""
        import torch

        out: dict[str, float] = {}
        x = _tensor(restored, self.device)
        ref = _tensor(hq, self.device) if hq is not None else None
        for name, metric in self.built.items():
            if self.info[name].full_reference:
                if ref is None:
                    continue  # lq_only sets have no reference
                if ref.shape != x.shape:
                    raise ValueError(
                        f"{name}: restored {tuple(x.shape)} and HQ {tuple(ref.shape)} differ in size"
                    )
                with torch.no_grad():
                    value = metric(x, ref)
            else:
                with torch.no_grad():
                    value = metric(x)
            v = float(torch.as_tensor(value).detach().reshape(-1)[0].double().cpu())
            out[name] = v if np.isfinite(v) else float("nan")
        return out


def _tensor(rgb: np.ndarray, device: Any) -> Any:
    import torch

    return torch.from_numpy(np.ascontiguousarray(rgb)).permute(2, 0, 1)[None].float().div(255).to(device)


def build_suite(
    names: Sequence[str],
    device: Any,
    hub: Path,
    allow_download: bool = False,
    fr_channel: str = "y",
    extra_kwargs: Mapping[str, Mapping[str, Any]] | None = None,
    fr_border: int = 0,
) -> MetricSuite:
    """Build each metric once; a metric whose weights are missing goes to ``absent`` with the reason.

    PSNR and SSIM use ``fr_channel`` and cut ``fr_border`` pixels per side (:func:`fr_kwargs`).

    ``hub`` is the torch hub dir (from :func:`fluxir.iqa.configure_torch_home`); unknown metric
    names are a ConfigError. ``extra_kwargs[name]`` is passed to ``pyiqa.create_metric`` (tests use it to
    build a weightless code path, e.g. ``musiq`` with ``pretrained=False``).
    """

    suite = MetricSuite(info={}, device=device)
    for name in names:
        conf = metric_config(name, "benchmark.metrics")
        fr = conf.get("metric_mode") == "FR"
        kwargs = dict((extra_kwargs or {}).get(name, {}))
        setting = ""
        if name in FIDELITY:
            kwargs = fr_kwargs(fr_channel, fr_border) | kwargs
            setting = fr_setting(fr_channel, fr_border)
        if name == "psnr":
            setting += f", capped at {PSNR_CAP_DB:g} dB (pyiqa eps 1e-8)"
        suite.info[name] = MetricInfo(name, label(name), bool(conf.get("lower_better", False)), fr, setting)
        if fr:
            reason = None if allow_download else missing_fr_weights(name, hub)
            if reason:
                suite.absent[name] = f"{name}: {reason}"
                continue
        try:
            suite.built.update(
                create_metrics([name], device, hub, allow_download, "benchmark", full_reference=fr, **kwargs)
            )
        except MissingWeightsError as exc:
            suite.absent[name] = str(exc)
        if name in suite.built:  # pyiqa's own flag wins over its config table
            suite.info[name].lower_better = bool(
                getattr(suite.built[name], "lower_better", suite.info[name].lower_better)
            )
    return suite
