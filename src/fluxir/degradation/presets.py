"""Named Real-ESRGAN degradation settings, as functions returning the full set of values.

`seesr_paired` is Real-ESRGAN's `options/train_realesrnet_x4plus.yml`, which SeeSR's
`utils_data/make_paired_data.py` (the recipe for its training pairs) repeats; `seesr_online` is SeeSR's
lighter on-the-fly `dataloaders/params_realesrgan.yml`. Any value can be overridden from params.yaml
(`degrade.overrides.<name>`); `resolve_params` applies the overrides to the chosen preset.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

from fluxir.config import DegradeConfig, degradation_param_fields

DegradationParams = dataclasses.make_dataclass(
    "DegradationParams",
    degradation_param_fields(),
    frozen=True,
    namespace={
        "__module__": __name__,
        "__doc__": "Every number of the second-order degradation; names follow Real-ESRGAN's option files. "
        "The fields, their ranges and help are defined once, in fluxir.config.DegradationFields.",
    },
)


_KERNEL_PROB = (0.45, 0.25, 0.12, 0.03, 0.12, 0.03)  # iso, aniso, gen. iso, gen. aniso, plateau iso/aniso


def seesr_paired() -> DegradationParams:
    """Real-ESRGAN x4plus == SeeSR make_paired_data (full strength); USM-sharpened GT."""
    return DegradationParams(
        gt_usm=True,
        usm_weight=0.5,
        usm_radius=50,
        usm_threshold=10,
        kernel_range=(7, 21),
        kernel_prob=_KERNEL_PROB,
        sinc_prob=0.1,
        blur_sigma=(0.2, 3.0),
        betag_range=(0.5, 4.0),
        betap_range=(1.0, 2.0),
        resize_prob=(0.2, 0.7, 0.1),
        resize_range=(0.15, 1.5),
        gaussian_noise_prob=0.5,
        noise_range=(1.0, 30.0),
        poisson_scale_range=(0.05, 3.0),
        gray_noise_prob=0.4,
        jpeg_range=(30, 95),
        second_blur_prob=0.8,
        kernel_prob2=_KERNEL_PROB,
        sinc_prob2=0.1,
        blur_sigma2=(0.2, 1.5),
        betag_range2=(0.5, 4.0),
        betap_range2=(1.0, 2.0),
        resize_prob2=(0.3, 0.4, 0.3),
        resize_range2=(0.3, 1.2),
        gaussian_noise_prob2=0.5,
        noise_range2=(1.0, 25.0),
        poisson_scale_range2=(0.05, 2.5),
        gray_noise_prob2=0.4,
        jpeg_range2=(30, 95),
        final_sinc_prob=0.8,
        sinc_first_prob=0.5,
    )


def seesr_online() -> DegradationParams:
    """SeeSR dataloaders/params_realesrgan.yml (milder); its loader leaves the GT unsharpened."""
    return dataclasses.replace(
        seesr_paired(),
        gt_usm=False,
        resize_range=(0.3, 1.5),
        noise_range=(1.0, 15.0),
        poisson_scale_range=(0.05, 2.0),
        jpeg_range=(60, 95),
        second_blur_prob=0.5,
        resize_range2=(0.6, 1.2),
        noise_range2=(1.0, 12.0),
        poisson_scale_range2=(0.05, 1.0),
        jpeg_range2=(60, 100),
    )


PRESETS: dict[str, Callable[[], DegradationParams]] = {
    "seesr-paired": seesr_paired,
    "seesr-online": seesr_online,
}


def resolve_params(cfg: DegradeConfig) -> DegradationParams:
    """The chosen preset with every non-null value of ``cfg.overrides`` applied (lists become tuples)."""
    changes = {
        name: tuple(value) if isinstance(value, list) else value
        for name, value in dataclasses.asdict(cfg.overrides).items()
        if value is not None
    }
    return dataclasses.replace(PRESETS[cfg.preset](), **changes)
