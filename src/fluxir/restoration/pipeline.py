"""FluxIRPipeline: restore a low-quality image with the frozen FLUX base driven by a FluxIR adapter.

Restoration of one LQ image (paper section 3.2-3.3):
  1. upscale the LQ image x``scale`` (bicubic) to the output size,
  2. VAE-encode it to the control latent ``z_lq`` (in the VAE's scaled space, as in training),
  3. start from Gaussian noise ``z1`` and integrate the flow with ``steps`` Euler steps, the adapter
     conditioning every base block on ``z_lq`` (eq. 1-4); the prompt is empty and its embeddings are
     computed once and cached,
  4. decode the final latent, and (``restore.color_fix``) take its colours from the bicubic upscale.
Outputs larger than one tile are restored in overlapping tiles, so the model's working memory depends on
the tile size, not the image size (``restore.tile_mode``):
  fused     every tile is denoised at every step and the tiles' velocities are averaged in latent space
            with smooth weights before the next step (MultiDiffusion), so all tiles follow one trajectory
            (:mod:`fluxir.restoration.fused`); the VAE encodes and decodes tile by tile;
  per_tile  each tile is restored completely on its own and the finished pixels are blended. A tile's
            noise is the matching crop of the whole image's noise, so a tile restores exactly as that crop
            would on its own.
The empty prompt's embeddings come from the adapter folder when it stores them (the text encoders are
then never loaded), else they are encoded once at load time and the encoders released.
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
from fluxir.models.adapter_files import read_prompt
from fluxir.models.controlled import ControlledFlux
from fluxir.models.flux import NO_TEXT_ENCODERS, load_flux
from fluxir.restoration.color import apply_color_fix
from fluxir.restoration.offload import Offload, OffloadHooks, place
from fluxir.restoration.tiling import Tile, blend_weights, layout

# 8x VAE downsampling x 2x2 latent packing: output sizes and tile offsets live on this grid.
PIXELS_PER_TOKEN = 16
MIN_INPUT_SIDE = 4


class RestoreInputError(ValueError):
    """An input image that cannot be restored; the message names the file and the reason."""


RestoreOptions = RestoreConfig
"""How one image is restored (scale, steps, guidance, tile, overlap, seed, colour fix, tile mode, ...): the
restore section of params.yaml, validated the same way whether it comes from the file or is built in code."""


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
        self._device: torch.device | None = None  # set by place(); else where the transformer is
        self._hooks = OffloadHooks()

    @classmethod
    def from_pretrained(
        cls,
        base: str | Path,
        adapter: str | Path,
        dtype: torch.dtype = torch.float32,
        device: str | torch.device = "cpu",
        offload: Offload = "none",
        prompt_file: str | Path | None = None,
    ) -> FluxIRPipeline:
        """Base FLUX + adapter folder (its EMA weights when it has them). With stored empty-prompt
        embeddings (in the folder, or ``prompt_file``) the text encoders are not loaded at all; ``offload``
        as :func:`~fluxir.restoration.offload.place`."""
        fluxir = FluxIRAdapter.from_pretrained(str(adapter), torch_dtype=dtype).eval()
        stored = fluxir.stored_prompt or (read_prompt(prompt_file) if prompt_file else None)
        device = torch.device(device)
        load_device = device if offload == "none" else torch.device("cpu")
        pipe = load_flux(base, torch_dtype=dtype, device=load_device, **(NO_TEXT_ENCODERS if stored else {}))
        pipeline = cls(pipe, fluxir.to(load_device), max_sequence_length=fluxir.config.max_sequence_length)
        if stored is not None:
            pipeline.set_empty_prompt(*stored.to(device, dtype).as_tuple())
        else:  # an adapter saved without its prompt: encode it once on the device, then free T5 and CLIP
            for name in ("text_encoder", "text_encoder_2"):
                getattr(pipe, name).to(device)
            pipeline._device = device
            pipeline.empty_prompt()
            pipe.text_encoder = pipe.text_encoder_2 = None
        pipeline.place(device, offload)
        return pipeline

    def place(self, device: str | torch.device, offload: Offload = "none") -> None:
        """Run on ``device``, keeping the weights there (``none``) or on the CPU until used (``model``,
        ``sequential``); see :mod:`fluxir.restoration.offload`."""
        self._device = torch.device(device)
        self._hooks = place(self, self._device, offload)

    @property
    def device(self) -> torch.device:
        """Where the sampling runs (under offloading the weights may live elsewhere)."""
        return self._device if self._device is not None else self.base.transformer.device

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

    def timesteps(self, image_seq_len: int, steps: int) -> torch.Tensor:
        """Set the scheduler to ``steps`` Euler steps from t=1, shifted for ``image_seq_len`` tokens."""
        scheduler = self.base.scheduler
        config = scheduler.config
        mu = calculate_shift(
            image_seq_len,
            config.get("base_image_seq_len", 256),
            config.get("max_image_seq_len", 4096),
            config.get("base_shift", 0.5),
            config.get("max_shift", 1.15),
        )
        sigmas = np.linspace(1.0, 1 / steps, steps)
        timesteps, _ = retrieve_timesteps(scheduler, steps, self.device, sigmas=sigmas, mu=mu)
        scheduler.set_begin_index(0)
        return timesteps

    @torch.no_grad()
    def velocity(
        self,
        latents: torch.Tensor,
        control: torch.Tensor,
        t: torch.Tensor,
        img_ids: torch.Tensor,
        guidance: float,
    ) -> torch.Tensor:
        """The controlled model's velocity for packed latents and control latents (B, N, 64) at timestep t."""
        batch = latents.shape[0]
        prompt_embeds, pooled, text_ids = self.empty_prompt()
        return self.model(
            hidden_states=latents,
            control_latents=control,
            encoder_hidden_states=prompt_embeds.expand(batch, -1, -1),
            pooled_projections=pooled.expand(batch, -1),
            timestep=(t.expand(batch) / 1000).to(latents.dtype),
            img_ids=img_ids,
            txt_ids=text_ids,
            guidance=torch.full((batch,), guidance, device=self.device, dtype=torch.float32),
            return_dict=False,
        )[0]

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
        scheduler = self.base.scheduler
        for t in self.timesteps(latents.shape[1], steps):
            velocity = self.velocity(latents, control, t, img_ids, guidance)
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
        try:
            if len(tiles) == 1:
                restored = self.restore_array(control, noise, opts.steps, opts.guidance)
            elif opts.tile_mode == "per_tile":
                restored = self._restore_tiled(control, noise, tiles, opts, progress)
            else:
                from fluxir.restoration.fused import restore_fused

                restored = restore_fused(self, control, noise, tiles, opts, progress)
        finally:
            self._hooks.offload_all()  # model offload: nothing stays on the device between images
        # The fix takes low frequencies from the control image, i.e. the bicubic upscale (padding cut off).
        return apply_color_fix(restored[:out_h, :out_w], control[:out_h, :out_w], opts.color_fix)

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
