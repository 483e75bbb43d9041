"""FluxIRPipeline: restore a low-quality image with the frozen FLUX base driven by a FluxIR adapter.

Restoration of one LQ image (paper section 3.2-3.3):
  1. upscale the LQ image x``scale`` (bicubic) to the output size,
  2. VAE-encode it to the control latent ``z_lq`` (in the VAE's scaled space, as in training),
  3. start from Gaussian noise ``z1`` and integrate the flow with ``steps`` Euler steps, the adapter
     conditioning every base block on ``z_lq`` (eq. 1-4); the prompt is empty and its embeddings are
     computed once and cached,
  4. decode the final latent.
Outputs larger than one tile are restored tile by tile (overlapping tiles, blended seams), so the
model's working memory depends on the tile size, not the image size. A tile's noise is the matching
crop of the whole image's noise, so a tile restores exactly as that crop would on its own.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from diffusers.pipelines.flux.pipeline_flux import FluxPipeline, calculate_shift, retrieve_timesteps
from PIL import Image
from tqdm.auto import tqdm

from fluxir.config import RestoreConfig
from fluxir.models.adapter import FluxIRAdapter
from fluxir.models.controlled import ControlledFlux
from fluxir.models.flux import load_flux
from fluxir.restoration.tiling import Tile, blend_weights, layout

# 8x VAE downsampling x 2x2 latent packing: output sizes and tile offsets live on this grid.
PIXELS_PER_TOKEN = 16
MIN_INPUT_SIDE = 4


class RestoreInputError(ValueError):
    """An input image that cannot be restored; the message names the file and the reason."""


RestoreOptions = RestoreConfig
"""How one image is restored (scale, steps, guidance, tile, overlap, seed): the restore section of params.yaml,
validated the same way whether it comes from the file or is built in code."""


def upscale_lq(lq: np.ndarray, scale: int) -> np.ndarray:
    """Bicubic x``scale`` upscaling of an (H, W, 3) uint8 image: the control image the adapter sees."""
    h, w = lq.shape[:2]
    return np.asarray(Image.fromarray(lq).resize((w * scale, h * scale), Image.BICUBIC))


def pad_to_multiple(image: np.ndarray, multiple: int) -> np.ndarray:
    """Reflect-pad (H, W, C) on the bottom/right to multiples of ``multiple`` (crop back afterwards)."""
    h, w = image.shape[:2]
    ph, pw = -h % multiple, -w % multiple
    if not ph and not pw:
        return image
    mode = "reflect" if ph < h and pw < w else "edge"
    return np.pad(image, ((0, ph), (0, pw), (0, 0)), mode=mode)


class FluxIRPipeline:
    """The base FluxPipeline's VAE, scheduler and text encoders + ControlledFlux (base transformer + adapter)."""

    def __init__(self, base: FluxPipeline, adapter: FluxIRAdapter, max_sequence_length: int = 512):
        self.base = base
        self.model = ControlledFlux(base.transformer, adapter)
        self.max_sequence_length = max_sequence_length
        self._prompt_cache: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None

    @classmethod
    def from_pretrained(
        cls,
        base: str | Path,
        adapter: str | Path,
        dtype: torch.dtype = torch.float32,
        device: str | torch.device = "cpu",
    ) -> FluxIRPipeline:
        pipe = load_flux(base, torch_dtype=dtype, device=device)
        fluxir = FluxIRAdapter.from_pretrained(str(adapter), torch_dtype=dtype).to(device).eval()
        return cls(pipe, fluxir, max_sequence_length=fluxir.config.max_sequence_length)

    @property
    def device(self) -> torch.device:
        return self.base.transformer.device

    @property
    def dtype(self) -> torch.dtype:
        return self.base.transformer.dtype

    # -- building blocks ------------------------------------------------------------------------

    def empty_prompt(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """T5 embeddings p, pooled CLIP y and text ids for the empty prompt, computed once."""
        if self._prompt_cache is None:
            with torch.no_grad():
                self._prompt_cache = self.base.encode_prompt(
                    prompt="", prompt_2="", device=self.device, max_sequence_length=self.max_sequence_length
                )
        return self._prompt_cache

    def set_empty_prompt(self, embeds: torch.Tensor, pooled: torch.Tensor, text_ids: torch.Tensor) -> None:
        """Use precomputed empty-prompt embeddings (e.g. from the training latent cache)."""
        self._prompt_cache = (embeds, pooled, text_ids)

    @torch.no_grad()
    def encode(self, image: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) in [0, 1] -> scaled VAE latent (B, 16, H/8, W/8) (mean of the posterior)."""
        vae = self.base.vae
        latent = vae.encode(image.to(self.device, self.dtype) * 2 - 1).latent_dist.mode()
        return (latent - vae.config.shift_factor) * vae.config.scaling_factor

    @torch.no_grad()
    def decode(self, latent: torch.Tensor) -> torch.Tensor:
        """Scaled latent -> (B, 3, H, W) in [0, 1]."""
        vae = self.base.vae
        image = vae.decode(latent / vae.config.scaling_factor + vae.config.shift_factor).sample
        return ((image.float() + 1) / 2).clamp(0, 1)

    @torch.no_grad()
    def sample(self, z_lq: torch.Tensor, noise: torch.Tensor, steps: int, guidance: float) -> torch.Tensor:
        """Integrate the flow from ``noise`` (t=1) to a clean latent (t=0), conditioned on ``z_lq``.

        Both are (B, 16, h, w) scaled latents; returns the same shape.
        """
        batch, channels, h, w = z_lq.shape
        pack = FluxPipeline._pack_latents
        control = pack(z_lq, batch, channels, h, w)  # (B, h/2*w/2, 64)
        latents = pack(noise.to(z_lq.dtype), batch, channels, h, w)
        img_ids = FluxPipeline._prepare_latent_image_ids(batch, h // 2, w // 2, self.device, self.dtype)
        prompt_embeds, pooled, text_ids = self.empty_prompt()
        prompt_embeds, pooled = prompt_embeds.expand(batch, -1, -1), pooled.expand(batch, -1)

        scheduler = self.base.scheduler
        config = scheduler.config
        mu = calculate_shift(
            latents.shape[1],
            config.get("base_image_seq_len", 256),
            config.get("max_image_seq_len", 4096),
            config.get("base_shift", 0.5),
            config.get("max_shift", 1.15),
        )
        sigmas = np.linspace(1.0, 1 / steps, steps)
        timesteps, _ = retrieve_timesteps(scheduler, steps, self.device, sigmas=sigmas, mu=mu)
        scheduler.set_begin_index(0)
        guidance_vec = torch.full((batch,), guidance, device=self.device, dtype=torch.float32)
        for t in timesteps:
            velocity = self.model(
                hidden_states=latents,
                control_latents=control,
                encoder_hidden_states=prompt_embeds,
                pooled_projections=pooled,
                timestep=(t.expand(batch) / 1000).to(latents.dtype),
                img_ids=img_ids,
                txt_ids=text_ids,
                guidance=guidance_vec,
                return_dict=False,
            )[0]
            latents = scheduler.step(velocity, t, latents, return_dict=False)[0]
        # unpack (B, h/2*w/2, 64) -> (B, 16, h, w)
        return FluxPipeline._unpack_latents(latents, h * 8, w * 8, 8)

    def restore_array(
        self, upscaled: np.ndarray, noise: torch.Tensor, steps: int, guidance: float
    ) -> np.ndarray:
        """One untiled pass on an (H, W, 3) uint8 control image with H, W multiples of 16."""
        image = torch.from_numpy(np.array(upscaled)).permute(2, 0, 1)[None].float() / 255
        z_lq = self.encode(image)
        restored = self.decode(self.sample(z_lq, noise, steps, guidance))
        return (restored[0].permute(1, 2, 0).cpu().numpy() * 255).round().astype(np.uint8)

    def noise_for(self, height: int, width: int, seed: int) -> torch.Tensor:
        """Initial noise for a whole (padded) output: (1, 16, H/8, W/8), from a CPU generator for
        reproducibility across devices."""
        channels = self.base.vae.config.latent_channels
        generator = torch.Generator("cpu").manual_seed(seed)
        return torch.randn((1, channels, height // 8, width // 8), generator=generator).to(
            self.device, self.dtype
        )

    # -- public API ------------------------------------------------------------------------------

    def __call__(
        self, lq: np.ndarray, options: RestoreOptions | None = None, progress: bool = False
    ) -> np.ndarray:
        """Restore an (h, w, 3) uint8 LQ image; returns (h*scale, w*scale, 3) uint8."""
        opts = options or RestoreOptions()
        if lq.ndim != 3 or lq.shape[2] != 3 or lq.dtype != np.uint8:
            raise RestoreInputError(f"expected an (H, W, 3) uint8 RGB image, got {lq.shape} {lq.dtype}")
        if min(lq.shape[:2]) < MIN_INPUT_SIDE:
            raise RestoreInputError(
                f"image is {lq.shape[1]}x{lq.shape[0]} px; fluxir restore needs at least "
                f"{MIN_INPUT_SIDE}x{MIN_INPUT_SIDE}"
            )
        out_h, out_w = lq.shape[0] * opts.scale, lq.shape[1] * opts.scale
        control = pad_to_multiple(upscale_lq(lq, opts.scale), PIXELS_PER_TOKEN)
        height, width = control.shape[:2]
        noise = self.noise_for(height, width, opts.seed)
        tiles = layout(height, width, opts.tile, opts.overlap, unit=PIXELS_PER_TOKEN)
        if len(tiles) == 1:
            restored = self.restore_array(control, noise, opts.steps, opts.guidance)
        else:
            restored = self._restore_tiled(control, noise, tiles, opts, progress)
        return restored[:out_h, :out_w]

    def _restore_tiled(
        self,
        control: np.ndarray,
        noise: torch.Tensor,
        tiles: list[Tile],
        opts: RestoreOptions,
        progress: bool,
    ) -> np.ndarray:
        height, width = control.shape[:2]
        acc = np.zeros((height, width, 3), dtype=np.float32)
        weight_sum = np.zeros((height, width, 1), dtype=np.float32)
        for tile in tqdm(tiles, desc="tiles", unit="tile", disable=not progress, leave=False):
            rows, cols = tile.slices
            latent_rows = slice(tile.top // 8, (tile.top + tile.height) // 8)
            latent_cols = slice(tile.left // 8, (tile.left + tile.width) // 8)
            out = self.restore_array(
                np.ascontiguousarray(control[rows, cols]),
                noise[:, :, latent_rows, latent_cols],
                opts.steps,
                opts.guidance,
            )
            weights = blend_weights(tile, tiles)[..., None]
            acc[rows, cols] += out.astype(np.float32) * weights
            weight_sum[rows, cols] += weights
        return np.clip(np.round(acc / weight_sum), 0, 255).astype(np.uint8)
