"""Real-ESRGAN second-order degradation: the pure core of the `degrade` stage (no file I/O).

rng = image_rng(image_id, cfg.seed)
if (reason := crop_skip_reason(img.shape, cfg.sizes)) is None:
    hq, lq, record = degrade_pair(img, cfg, rng)
"""

from fluxir.degradation.pipeline import (
    DegradedPair,
    ImageTooSmall,
    crop_skip_reason,
    degrade,
    degrade_pair,
    flat_record,
    image_rng,
    random_crop,
)
from fluxir.degradation.presets import PRESETS, DegradationParams, resolve_params

__all__ = [
    "PRESETS",
    "DegradationParams",
    "ImageTooSmall",
    "DegradedPair",
    "crop_skip_reason",
    "degrade",
    "degrade_pair",
    "flat_record",
    "image_rng",
    "random_crop",
    "resolve_params",
]
