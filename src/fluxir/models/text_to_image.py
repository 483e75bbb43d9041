"""Text-to-image renderers for the generate stage: FLUX, SDXL or any diffusers pipeline, one batch call.

A renderer takes one prompt and one seed per image and returns ``B x H x W x 3`` uint8 (:class:`Render`).
Text embeddings are computed once per distinct prompt and reused; noise comes from CPU generators, so
image k is the same on every device. :func:`make_render` builds the one ``generate.source`` names,
lazily: a rerun with every image on disk never loads a model.

Sources: ``flux`` (``model.base``: the tiny model, or FLUX.1-dev by id or folder), ``sdxl``
(stabilityai/stable-diffusion-xl-base-1.0), any other diffusers text-to-image id or folder; ``folder``
(real photos) has no renderer.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from fluxir.data.images import to_uint8

if TYPE_CHECKING:
    from fluxir.config import Config, GenerateConfig

FLUX, FOLDER, SDXL = "flux", "folder", "sdxl"
SDXL_ID = "stabilityai/stable-diffusion-xl-base-1.0"


class Render(Protocol):
    """Text-to-image batch call: one prompt and one seed per image -> B x H x W x 3 uint8."""

    def __call__(self, prompts: Sequence[str], seeds: Sequence[int]) -> np.ndarray: ...


class FluxRender:
    """FluxPipeline batch renderer; text embeddings are computed once per distinct prompt and reused."""

    def __init__(self, pipe: Any, cfg: GenerateConfig, max_sequence_length: int = 512) -> None:
        self.pipe, self.cfg, self.max_sequence_length = pipe, cfg, max_sequence_length
        self.embeddings: dict[str, tuple[Any, Any]] = {}
        self.encode_calls = 0

    def _embed(self, prompt: str) -> tuple[Any, Any]:
        if prompt not in self.embeddings:
            import torch

            with torch.no_grad():
                prompt_embeds, pooled, _ = self.pipe.encode_prompt(
                    prompt=prompt,
                    prompt_2=None,
                    device=self.pipe._execution_device,
                    max_sequence_length=self.max_sequence_length,
                )
            self.embeddings[prompt] = (prompt_embeds, pooled)
            self.encode_calls += 1
        return self.embeddings[prompt]

    def __call__(self, prompts: Sequence[str], seeds: Sequence[int]) -> np.ndarray:
        import torch

        embeds = [self._embed(p) for p in prompts]
        # CPU generators: the initial noise of image k is the same on every device.
        generators = [torch.Generator("cpu").manual_seed(s) for s in seeds]
        out = self.pipe(
            prompt_embeds=torch.cat([e[0] for e in embeds]),
            pooled_prompt_embeds=torch.cat([e[1] for e in embeds]),
            height=self.cfg.height,
            width=self.cfg.width,
            num_inference_steps=self.cfg.num_inference_steps,
            guidance_scale=self.cfg.guidance_scale,
            generator=generators,
            max_sequence_length=self.max_sequence_length,
            output_type="np",
        )
        return to_uint8(out.images)


class DiffusersRender:
    """Any diffusers text-to-image pipeline; SDXL's text embeddings are cached per prompt too."""

    def __init__(self, pipe: Any, cfg: GenerateConfig) -> None:
        from diffusers import StableDiffusionXLPipeline

        self.pipe, self.cfg = pipe, cfg
        self.is_sdxl = isinstance(pipe, StableDiffusionXLPipeline)
        self.embeddings: dict[str, tuple[Any, ...]] = {}

    def _embed(self, prompt: str) -> tuple[Any, ...]:
        if prompt not in self.embeddings:
            import torch

            with torch.no_grad():
                self.embeddings[prompt] = tuple(
                    self.pipe.encode_prompt(
                        prompt=prompt,
                        device=self.pipe._execution_device,
                        num_images_per_prompt=1,
                        do_classifier_free_guidance=self.cfg.guidance_scale > 1,
                    )
                )
        return self.embeddings[prompt]

    def __call__(self, prompts: Sequence[str], seeds: Sequence[int]) -> np.ndarray:
        import torch

        generators = [torch.Generator("cpu").manual_seed(s) for s in seeds]
        kwargs: dict[str, Any] = {}
        if self.is_sdxl:
            names = (
                "prompt_embeds",
                "negative_prompt_embeds",
                "pooled_prompt_embeds",
                "negative_pooled_prompt_embeds",
            )
            embeds = [self._embed(p) for p in prompts]
            for i, name in enumerate(names):
                if embeds[0][i] is not None:
                    kwargs[name] = torch.cat([e[i] for e in embeds])
        else:  # generic pipelines: no common embedding API, so prompts go in as text
            kwargs["prompt"] = list(prompts)
        out = self.pipe(
            height=self.cfg.height,
            width=self.cfg.width,
            num_inference_steps=self.cfg.num_inference_steps,
            guidance_scale=self.cfg.guidance_scale,
            generator=generators,
            output_type="np",
            **kwargs,
        )
        return to_uint8(out.images)


def load_text_to_image(model_id: str, torch_dtype: Any, device: Any) -> Any:
    """Load a diffusers text-to-image pipeline by hub id or folder; a clear error when it is not there."""
    from diffusers import AutoPipelineForText2Image

    from fluxir.models.flux import ModelNotFoundError, is_hub_id

    if not is_hub_id(model_id):
        local = Path(model_id).expanduser()
        if not local.is_dir():
            raise ModelNotFoundError(
                f"generate.source={model_id!r}: no such pipeline folder; use 'flux', 'sdxl', 'folder', "
                "a diffusers hub id (owner/name) or a local diffusers pipeline folder"
            )
        model_id = str(local)
    try:
        pipe = AutoPipelineForText2Image.from_pretrained(model_id, dtype=torch_dtype)
    except OSError as exc:
        raise ModelNotFoundError(
            f"generate.source: could not load the text-to-image pipeline {model_id!r}: not in the local "
            f"Hugging Face cache and the hub is unreachable ({type(exc).__name__}); run "
            f"`huggingface-cli download {model_id}` where the hub is reachable, or pass a local folder"
        ) from exc
    except ValueError as exc:
        reason = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
        raise ModelNotFoundError(
            f"generate.source: {model_id!r} does not load as a diffusers text-to-image pipeline ({reason})"
        ) from exc
    pipe.set_progress_bar_config(disable=True)
    return pipe.to(device)


class LazyRender:
    """Builds the renderer on first use, so a rerun with every image on disk never loads a model."""

    def __init__(self, factory: Callable[[], Render]) -> None:
        self.factory, self.render = factory, None
        self.load_seconds = 0.0

    def __call__(self, prompts: Sequence[str], seeds: Sequence[int]) -> np.ndarray:
        if self.render is None:
            t0 = time.perf_counter()
            self.render = self.factory()
            self.load_seconds = time.perf_counter() - t0
        return self.render(prompts, seeds)


def model_id(cfg: Config) -> str:
    """What the images come from, as recorded in the manifest's ``model`` column."""
    src = cfg.generate.source
    if src == FLUX:
        return cfg.model.base
    if src == FOLDER:
        return cfg.generate.input_dir
    return SDXL_ID if src == SDXL else src


def make_render(cfg: Config) -> Render:
    """The renderer for ``generate.source`` (flux, sdxl or a diffusers id); models load on first use."""
    from fluxir.models.flux import DTYPES, TINY, load_flux, pick_device, resolve_base

    dtype, device = DTYPES[cfg.model.dtype], pick_device(cfg.model.device)
    if cfg.generate.source == FLUX:
        path = resolve_base(cfg.model.base, cfg.model.tiny_dir) if cfg.model.base == TINY else cfg.model.base

        def flux() -> Render:
            pipe = load_flux(path, torch_dtype=dtype, device=device)
            pipe.set_progress_bar_config(disable=True)
            return FluxRender(pipe, cfg.generate, cfg.model.max_sequence_length)

        return LazyRender(flux)
    return LazyRender(lambda: DiffusersRender(load_text_to_image(model_id(cfg), dtype, device), cfg.generate))
