"""Latent tile fusion (MultiDiffusion, Bar-Tal et al. 2023) for outputs larger than one tile.

Restoring tiles one after the other lets each follow its own trajectory: neighbours disagree in their
overlap and blending finished pixels can only hide it (the seams and inconsistent tiles that HYPIR#16,
LucidFlux#4, SeeSR#21 and DreamClear#16 report). Here every step denoises all tiles of the whole latent and
averages their velocities with smooth weights before the next Euler step, so the image has one latent
trajectory and neighbouring tiles see the same latent in their overlap at every step:

    v(x) = sum_i w_i(x) v_i(x) / sum_i w_i(x)       over the tiles i covering latent position x
    z <- scheduler.step(v, t, z)                      on the whole (1, 16, H/8, W/8) latent

The weights are the tiles' blend ramps at latent resolution (:func:`fluxir.restoration.tiling.blend_weights`:
linear across each overlap, 1 elsewhere). The model sees tiles only, so its memory depends on the tile
size; tiles of a step go through it in batches of ``restore.tile_batch`` (0: all at once on a GPU, halved
on out-of-memory; one at a time on the CPU, where batching saves no time but costs memory). Each tile keeps
its own position ids and timestep shift, exactly as a tile restored alone, so a tile's model call is the
per-tile mode's.

The VAE works tile by tile too, on the same layout: the control image is encoded tile by tile and the
latents blended with the same ramps, and the final latent is decoded tile by tile with the ramps blending
the pixels. (diffusers' ``enable_tiling`` would cut the image into its own 25%-overlap grid of
``sample_size`` tiles; blending over the whole overlap of the restore's tiles keeps one layout.)
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch
from diffusers.pipelines.flux.pipeline_flux import FluxPipeline
from tqdm.auto import tqdm

from fluxir.restoration.tiling import Tile, blend_weights

if TYPE_CHECKING:
    from fluxir.config import RestoreConfig
    from fluxir.restoration.pipeline import FluxIRPipeline

LATENT_SCALE = 8  # VAE downsampling


def latent_tiles(tiles: list[Tile]) -> list[Tile]:
    """The pixel tiles on the latent grid (pixel tiles lie on the 16-px grid, so this is exact)."""
    s = LATENT_SCALE
    return [Tile(t.top // s, t.left // s, t.height // s, t.width // s) for t in tiles]


def weight_maps(tiles: list[Tile], device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-tile weights (n, 1, h, w) and their sum over the image (1, 1, H, W), float32 on ``device``."""
    height = max(t.top + t.height for t in tiles)
    width = max(t.left + t.width for t in tiles)
    weights = torch.from_numpy(np.stack([blend_weights(t, tiles) for t in tiles]))[:, None]
    total = torch.zeros(1, 1, height, width)
    for tile, w in zip(tiles, weights, strict=True):
        rows, cols = tile.slices
        total[..., rows, cols] += w
    return weights.to(device), total.to(device)


def tile_batch(pipe: FluxIRPipeline, setting: int, count: int) -> int:
    """Tiles per model call: the setting, or (0) all tiles on a GPU and one on the CPU."""
    if setting:
        return min(setting, count)
    return count if pipe.device.type == "cuda" else 1


@torch.no_grad()
def fused_sample(
    pipe: FluxIRPipeline,
    z_lq: torch.Tensor,
    noise: torch.Tensor,
    tiles: list[Tile],
    steps: int,
    guidance: float,
    batch: int = 1,
    progress: bool = False,
) -> torch.Tensor:
    """Integrate the flow on the whole latent (1, 16, H, W), fusing the tiles' velocities at every step.

    ``tiles`` are on the latent grid (:func:`latent_tiles`), all of the same size; returns the clean latent.
    """
    channels, th, tw = z_lq.shape[1], tiles[0].height, tiles[0].width
    pack = FluxPipeline._pack_latents
    controls = torch.cat([pack(z_lq[..., t.slices[0], t.slices[1]], 1, channels, th, tw) for t in tiles])
    img_ids = FluxPipeline._prepare_latent_image_ids(1, th // 2, tw // 2, pipe.device, pipe.dtype)
    weights, total = weight_maps(tiles, pipe.device)
    latents = noise.to(z_lq.dtype).clone()
    scheduler = pipe.base.scheduler
    timesteps = pipe.timesteps(controls.shape[1], steps)
    for t in tqdm(timesteps, desc="fused steps", unit="step", disable=not progress, leave=False):
        velocity = torch.zeros(latents.shape, device=latents.device, dtype=torch.float32)
        start = 0
        while start < len(tiles):
            chunk = range(start, min(start + batch, len(tiles)))
            try:
                crops = torch.cat([latents[..., tiles[i].slices[0], tiles[i].slices[1]] for i in chunk])
                v = pipe.velocity(
                    pack(crops, len(chunk), channels, th, tw),
                    controls[chunk.start : chunk.stop],
                    t,
                    img_ids,
                    guidance,
                )
            except torch.OutOfMemoryError:
                if batch == 1:
                    raise
                batch = max(1, batch // 2)  # the same chunk again, in smaller batches
                continue
            v = FluxPipeline._unpack_latents(v, th * LATENT_SCALE, tw * LATENT_SCALE, LATENT_SCALE)
            for j, i in enumerate(chunk):
                rows, cols = tiles[i].slices
                velocity[..., rows, cols] += v[j : j + 1].float() * weights[i]
            start = chunk.stop
        velocity /= total
        latents = scheduler.step(velocity.to(latents.dtype), t, latents, return_dict=False)[0]
    return latents


@torch.no_grad()
def tiled_encode(pipe: FluxIRPipeline, image: np.ndarray, tiles: list[Tile]) -> torch.Tensor:
    """(H, W, 3) uint8 control image -> scaled latent (1, 16, H/8, W/8), encoded tile by tile and blended."""
    small = latent_tiles(tiles)
    weights, total = weight_maps(small, pipe.device)
    height, width = image.shape[0] // LATENT_SCALE, image.shape[1] // LATENT_SCALE
    acc = torch.zeros(1, pipe.base.vae.config.latent_channels, height, width, device=pipe.device)
    for tile, tile_small, w in zip(tiles, small, weights, strict=True):
        rows, cols = tile.slices
        crop = torch.from_numpy(np.array(image[rows, cols])).permute(2, 0, 1)[None].float() / 255
        acc[..., tile_small.slices[0], tile_small.slices[1]] += pipe.encode(crop).float() * w
    return (acc / total).to(pipe.dtype)


@torch.no_grad()
def tiled_decode(pipe: FluxIRPipeline, latent: torch.Tensor, tiles: list[Tile]) -> np.ndarray:
    """Scaled latent (1, 16, H/8, W/8) -> (H, W, 3) uint8, decoded tile by tile with the pixels blended."""
    height = max(t.top + t.height for t in tiles)
    width = max(t.left + t.width for t in tiles)
    acc = np.zeros((height, width, 3), dtype=np.float32)
    for tile, tile_small in zip(tiles, latent_tiles(tiles), strict=True):
        rows, cols = tile.slices
        pixels = pipe.decode(latent[..., tile_small.slices[0], tile_small.slices[1]])
        acc[rows, cols] += pixels[0].permute(1, 2, 0).cpu().numpy() * blend_weights(tile, tiles)[..., None]
    # Blend weights sum to 1 over every pixel (the tiling's partition of unity).
    return np.clip(np.round(acc * 255), 0, 255).astype(np.uint8)


def restore_fused(
    pipe: FluxIRPipeline,
    control: np.ndarray,
    noise: torch.Tensor,
    tiles: list[Tile],
    opts: RestoreConfig,
    progress: bool = False,
) -> np.ndarray:
    """Restore a padded (H, W, 3) uint8 control image larger than one tile; returns (H, W, 3) uint8."""
    z_lq = tiled_encode(pipe, control, tiles)
    batch = tile_batch(pipe, opts.tile_batch, len(tiles))
    latent = fused_sample(pipe, z_lq, noise, latent_tiles(tiles), opts.steps, opts.guidance, batch, progress)
    return tiled_decode(pipe, latent, tiles)
