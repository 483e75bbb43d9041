"""The degrade section, and the one definition of the Real-ESRGAN degradation values.

:class:`DegradationFields` names every value of the second-order degradation once: its type, its range
and its help. Two classes are derived from it, so adding a degradation value is one edit here:

* :class:`DegradeOverrides` (``degrade.overrides`` in params.yaml): every field optional, ``null`` keeps
  the preset's value; lists are checked (probabilities sum to 1, ``[lo, hi]`` ranges, odd kernel sizes).
* ``fluxir.degradation.presets.DegradationParams``: the frozen record the degradation code reads, built
  from :func:`degradation_param_fields` (lists become tuples). The presets (seesr-paired, seesr-online)
  fill it; they live with the degradation code, above this layer.
"""

from __future__ import annotations

import typing
from typing import Annotated, Any, Literal

from pydantic import ConfigDict, Field, model_validator
from pydantic import dataclasses as pydantic_dataclasses

from fluxir.config.base import SETTINGS, Bool, ConfigError, Float, Int, Str, section

Prob = Annotated[Float, Field(ge=0, le=1)]
Positive = Annotated[Float, Field(gt=0)]
NonNegative = Annotated[Float, Field(ge=0)]
Quality = Annotated[Float, Field(ge=0, le=100)]
KernelSize = Annotated[Int, Field(ge=1, le=99)]


@pydantic_dataclasses.dataclass(
    config=SETTINGS | ConfigDict(defer_build=True)
)  # a definition, never validated
class DegradationFields:
    """Every number of the second-order degradation; names follow Real-ESRGAN's option files."""

    gt_usm: Bool
    """Unsharp-mask the GT before degrading it; the sharpened GT is the HQ output (seesr-paired: true)."""
    usm_weight: NonNegative
    """USM strength: sharp = I + weight * (I - blur(I)) (basicsr default 0.5)."""
    usm_radius: Annotated[Int, Field(ge=1, le=1001)]
    """USM Gaussian window in pixels, made odd (basicsr default 50, i.e. 51)."""
    usm_threshold: Annotated[Float, Field(ge=0, le=255)]
    """USM sharpens only where |I - blur(I)| exceeds this, on the 0-255 scale (basicsr default 10)."""
    kernel_range: list[KernelSize]
    """[smallest, largest] odd blur/sinc kernel size; sizes are drawn uniformly from the odd ones ([7, 21])."""
    # first degradation
    kernel_prob: list[Prob]
    """First blur: probabilities of iso, aniso, generalized_iso, generalized_aniso, plateau_iso, plateau_aniso."""
    sinc_prob: Prob
    """First blur: probability of a sinc (ringing) kernel instead of the Gaussian family."""
    blur_sigma: list[Positive]
    """First blur: [lo, hi] of the kernel's sigma_x and sigma_y, in pixels."""
    betag_range: list[Positive]
    """First blur: [lo, hi] shape beta of generalized Gaussian kernels (lo <= 1 <= hi)."""
    betap_range: list[Positive]
    """First blur: [lo, hi] shape beta of plateau kernels (lo <= 1 <= hi)."""
    resize_prob: list[Prob]
    """First resize: probabilities of [up, down, keep]."""
    resize_range: list[Positive]
    """First resize: [lo, hi] scale; down draws from [lo, 1], up from [1, hi]."""
    gaussian_noise_prob: Prob
    """First noise: probability of Gaussian noise; Poisson noise otherwise."""
    noise_range: list[NonNegative]
    """First noise: [lo, hi] Gaussian sigma on the 0-255 scale."""
    poisson_scale_range: list[NonNegative]
    """First noise: [lo, hi] Poisson noise scale."""
    gray_noise_prob: Prob
    """First noise: probability that the noise is gray (the same in every channel)."""
    jpeg_range: list[Quality]
    """First JPEG: [lo, hi] quality; the quality used is the integer part of a uniform draw, as basicsr's cv2 path."""
    # second degradation
    second_blur_prob: Prob
    """Probability that the second degradation blurs at all."""
    kernel_prob2: list[Prob]
    """Second blur: kernel family probabilities (order as kernel_prob)."""
    sinc_prob2: Prob
    """Second blur: probability of a sinc kernel."""
    blur_sigma2: list[Positive]
    """Second blur: [lo, hi] kernel sigma in pixels."""
    betag_range2: list[Positive]
    """Second blur: [lo, hi] generalized Gaussian beta (lo <= 1 <= hi)."""
    betap_range2: list[Positive]
    """Second blur: [lo, hi] plateau beta (lo <= 1 <= hi)."""
    resize_prob2: list[Prob]
    """Second resize: probabilities of [up, down, keep], relative to HQ size / scale."""
    resize_range2: list[Positive]
    """Second resize: [lo, hi] scale around HQ size / scale."""
    gaussian_noise_prob2: Prob
    """Second noise: probability of Gaussian noise; Poisson noise otherwise."""
    noise_range2: list[NonNegative]
    """Second noise: [lo, hi] Gaussian sigma on the 0-255 scale."""
    poisson_scale_range2: list[NonNegative]
    """Second noise: [lo, hi] Poisson noise scale."""
    gray_noise_prob2: Prob
    """Second noise: probability of gray noise."""
    jpeg_range2: list[Quality]
    """Final JPEG: [lo, hi] quality (integer part of a uniform draw)."""
    # final step
    final_sinc_prob: Prob
    """Probability of the final sinc filter (applied with the resize to HQ / scale)."""
    sinc_first_prob: Prob
    """Probability of [resize + sinc] then JPEG rather than JPEG then [resize + sinc] (Real-ESRGAN: 0.5)."""


def degradation_param_fields() -> list[tuple[str, Any]]:
    """``(name, type)`` of every degradation value, lists as tuples: the fields of ``DegradationParams``."""
    fields = []
    for name, info in DegradationFields.__pydantic_fields__.items():
        tp = info.annotation
        if typing.get_origin(tp) is list:
            (item,) = typing.get_args(tp)
            tp = tuple[typing.get_args(item)[0] if typing.get_origin(item) is Annotated else item, ...]
        fields.append((name, tp))
    return fields


def _prob_list(key: str, values: list[float] | None, length: int) -> None:
    if values is not None and (len(values) != length or abs(sum(values) - 1.0) > 1e-6):
        raise ConfigError(f"{key}={values!r}: must be {length} probabilities summing to 1")


def _value_range(key: str, values: list[float] | None, around_one: bool = False) -> None:
    if values is None:
        return
    if len(values) != 2 or values[0] > values[1]:
        raise ConfigError(f"{key}={values!r}: must be [lo, hi] with lo <= hi")
    if around_one and not values[0] <= 1 <= values[1]:
        raise ConfigError(f"{key}={values!r}: must have lo <= 1 <= hi (draws fall on both sides of 1)")


def _check_overrides(self: Any) -> Any:
    key = "degrade.overrides."
    for stage in ("", "2"):  # first and second degradation
        _prob_list(f"{key}kernel_prob{stage}", getattr(self, f"kernel_prob{stage}"), 6)
        _prob_list(f"{key}resize_prob{stage}", getattr(self, f"resize_prob{stage}"), 3)
        for name in ("blur_sigma", "noise_range", "poisson_scale_range", "jpeg_range"):
            _value_range(key + name + stage, getattr(self, name + stage))
        for name in ("betag_range", "betap_range", "resize_range"):
            _value_range(key + name + stage, getattr(self, name + stage), around_one=True)
    _value_range(key + "kernel_range", self.kernel_range)
    if self.kernel_range is not None and any(size % 2 == 0 for size in self.kernel_range):
        raise ConfigError(f"{key}kernel_range={self.kernel_range!r}: sizes must be odd")
    return self


def _overrides_class() -> type:
    """DegradationFields with every field optional (default null, same range and help)."""
    annotations: dict[str, Any] = {}
    namespace: dict[str, Any] = {
        "__module__": __name__,
        "__qualname__": "DegradeOverrides",
        "__doc__": "Real-ESRGAN values that replace the preset's; null keeps the preset's value.",
        "__annotations__": annotations,
        "_check": model_validator(mode="after")(_check_overrides),
    }
    for name, info in DegradationFields.__pydantic_fields__.items():
        tp = Annotated[(info.annotation, *info.metadata)] if info.metadata else info.annotation
        annotations[name] = typing.Optional[tp]  # noqa: UP045 (tp is a runtime value, not an annotation)
        namespace[name] = Field(default=None, description=info.description)
    return section("degrade.overrides")(type("DegradeOverrides", (), namespace))


DegradeOverrides = _overrides_class()


@section("degrade")
class DegradeConfig:
    preset: Literal["seesr-paired", "seesr-online"] = "seesr-paired"
    """Real-ESRGAN settings: seesr-paired (Real-ESRGAN x4plus == SeeSR make_paired_data) or seesr-online."""
    scale: Int = Field(4, ge=1, le=16)
    """Super-resolution factor: the LQ image is HQ crop size / scale."""
    sizes: list[list[Int]] = Field(default_factory=lambda: [[96, 128], [96, 96], [96, 64]])
    """HQ crop sizes as [height, width], one drawn per image (paper: [[768, 1024], [768, 768], [768, 512]])."""
    crop: Literal["random", "center"] = "random"
    """Crop position: uniform over the image, or centred (the paper's text says "randomly center-crop")."""
    hflip_prob: Prob = 0.5
    """Probability of flipping the HQ crop left-right (SeeSR and Real-ESRGAN flip half the crops)."""
    seed: Int = Field(0, ge=0)
    """With the image id it seeds each image's random draws: a rerun gives bitwise-equal pairs."""
    in_manifest: Str = "data/filter/manifest.parquet"
    """Manifest of the HQ images to degrade."""
    out_dir: Str = "data/degrade"
    """Where HQ crops, LQ images and the manifest (with each pair's degradation record) are written."""
    overrides: DegradeOverrides = Field(default_factory=DegradeOverrides)  # type: ignore[valid-type]
    """Values that replace the preset's, e.g. {noise_range: [1, 20], gt_usm: false}; `fluxir config show` lists every key."""

    @model_validator(mode="after")
    def _check(self) -> DegradeConfig:
        if not self.sizes:
            raise ConfigError("degrade.sizes=[]: must list at least one [height, width] crop size")
        for i, size in enumerate(self.sizes):
            if len(size) != 2 or min(size) < 1 or any(side % self.scale for side in size):
                raise ConfigError(
                    f"degrade.sizes[{i}]={size!r}: must be [height, width], positive multiples of degrade.scale={self.scale}"
                )
        return self
