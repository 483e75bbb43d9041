"""Restore one decoded image, colour fix included: what the pyfunc model and the web page both call.

The colour fix (:mod:`fluxir.restoration.color`) is applied here, after sampling, against the bicubic
upscale the adapter saw as its control image. Should ``RestoreOptions`` carry a ``color_fix`` of its own,
it is set to ``none`` for the pipeline call, so the fix is never applied twice.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from fluxir.models.adapter_files import PROMPT_KEYS
from fluxir.models.flux import NO_TEXT_ENCODERS
from fluxir.restoration.color import COLOR_FIXES, apply_color_fix
from fluxir.restoration.pipeline import FluxIRPipeline, RestoreOptions, upscale_lq

if TYPE_CHECKING:
    from collections.abc import Callable

# Components a FluxPipeline needs only to encode prompts: skipped when stored embeddings stand in.


def load_pipeline(
    base: str | Path,
    adapter: str | Path,
    prompt_file: str | Path | None = None,
    dtype: torch.dtype = torch.float32,
    device: str | torch.device = "cpu",
) -> FluxIRPipeline:
    """Base FLUX + adapter folder; with ``prompt_file`` (stored empty-prompt embeddings) the text encoders
    are not loaded at all, which saves T5-XXL's ~9 GB at FLUX.1-dev size."""
    from safetensors.torch import load_file

    from fluxir.models.adapter import FluxIRAdapter
    from fluxir.models.flux import load_flux

    skip = NO_TEXT_ENCODERS if prompt_file else {}
    base_pipe = load_flux(base, torch_dtype=dtype, device=device, **skip)
    fluxir = FluxIRAdapter.from_pretrained(str(adapter), torch_dtype=dtype).to(device).eval()
    fluxir.check_compatible(base_pipe.transformer)
    pipeline = FluxIRPipeline(base_pipe, fluxir, max_sequence_length=fluxir.config.max_sequence_length)
    if prompt_file:
        tensors = load_file(str(prompt_file))
        pipeline.set_empty_prompt(*(tensors[k].to(device, dtype) for k in PROMPT_KEYS))
    return pipeline


def restore_image(
    pipeline: FluxIRPipeline,
    lq: np.ndarray,
    options: RestoreOptions,
    color_fix: str = "none",
    progress: bool = False,
    on_stage: Callable[[str], None] | None = None,
) -> np.ndarray:
    """Restore an (h, w, 3) uint8 image and colour-fix it (wavelet | adain | none) against its bicubic upscale.

    ``progress`` shows the per-tile tqdm bar (the web page's progress bar follows it); ``on_stage`` is
    told 'restoring' and 'colour fix' as the work moves on.
    """
    if color_fix not in COLOR_FIXES:
        raise ValueError(f"colour fix {color_fix!r}: must be one of {', '.join(COLOR_FIXES)}")
    if hasattr(options, "color_fix"):  # a pipeline that fixes colour itself must not do it a second time
        options = dataclasses.replace(options, color_fix="none")
    if on_stage:
        on_stage("restoring")
    restored = pipeline(lq, options, progress=progress)
    if color_fix == "none":
        return restored
    if on_stage:
        on_stage("colour fix")
    return apply_color_fix(restored, upscale_lq(lq, options.scale), color_fix)
