"""Train the mini base model's VAE: diffusers' AutoencoderKL in FLUX.1's layout, on crops of real photos.

FLUX.1's layout: 4 blocks (x8 downsampling), 16 latent channels, no quant convs, one scalar
``shift_factor`` and ``scaling_factor`` in the config that map latents to zero mean and unit variance.
Only the widths (and layers per block) are smaller, so the folder loads exactly as FLUX.1-dev's does.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import torch
from diffusers import AutoencoderKL

from fluxir.config import PretrainConfig
from fluxir.pretrain import crops as C
from fluxir.pretrain.checkpoint import fingerprint
from fluxir.pretrain.loop import train
from fluxir.pretrain.vae_init import identity_init

VAE_STREAM = 1  # step_rng stream id of VAE training


# Channels per GroupNorm group, at least. The decoder ends with GroupNorm -> SiLU -> conv_out at full
# resolution: with one channel per group that norm erases each channel's mean over the crop, i.e. the
# crop's overall colour and brightness, and reconstructions stall near 13 dB. FLUX.1-dev has 4 (128 / 32).
MIN_CHANNELS_PER_GROUP = 8


def norm_groups(widths: tuple[int, ...]) -> int:
    """GroupNorm groups: the most (<= 32, FLUX's) that divide every width with MIN_CHANNELS_PER_GROUP each."""
    return next(
        g
        for g in (32, 16, 8, 4, 2, 1)
        if all(w % g == 0 and w // g >= MIN_CHANNELS_PER_GROUP for w in widths)
    )


def vae_config(widths: tuple[int, ...], layers_per_block: int, mid_attention: bool = True) -> dict[str, Any]:
    """AutoencoderKL kwargs in FLUX.1-dev's layout with the given block widths."""
    groups = norm_groups(widths)
    return dict(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        block_out_channels=tuple(widths),
        layers_per_block=layers_per_block,
        mid_block_add_attention=mid_attention,
        norm_num_groups=groups,
        latent_channels=16,
        use_quant_conv=False,
        use_post_quant_conv=False,
        # Placeholders until the trained latents are measured (latent_stats).
        shift_factor=0.0,
        scaling_factor=1.0,
    )


# Initial log-variance of the posterior. diffusers initialises it near 0 (std 1), which buries the
# still-small latent means in noise: the decoder then learns nothing until the encoder has slowly pushed
# the variance down. Starting at std ~0.05 lets reconstruction learn from the first step.
INIT_LOGVAR = -6.0


def build_vae(cfg: PretrainConfig) -> AutoencoderKL:
    """A freshly initialised VAE (seeded by ``cfg.seed``), posterior log-variance starting at INIT_LOGVAR;
    with ``cfg.vae_init == "identity"`` it starts as the 8x8 block-mean autoencoder (vae_init)."""
    torch.manual_seed(cfg.seed)
    vae = AutoencoderKL(**vae_config(cfg.vae_widths, cfg.vae_layers_per_block))
    latent = vae.config.latent_channels
    with torch.no_grad():
        # conv_out emits [mean, logvar] along channels; only the logvar half is shifted.
        vae.encoder.conv_out.bias[latent:].fill_(INIT_LOGVAR)
    if cfg.vae_init == "identity":
        identity_init(vae)
    return vae


def _settings(cfg: PretrainConfig) -> dict[str, Any]:
    keys = (
        "seed",
        "pyramid_levels",
        "vae_widths",
        "vae_layers_per_block",
        "vae_init",
        "vae_crop",
        "vae_batch",
    )
    keys += ("vae_steps", "vae_lr", "vae_kl_weight", "vae_mse_weight")
    return {k: getattr(cfg, k) for k in keys}


def vae_loss(
    vae: AutoencoderKL, x: torch.Tensor, generator: torch.Generator, kl_weight: float, mse_weight: float
) -> torch.Tensor:
    """L1 + ``mse_weight`` x MSE reconstruction of a posterior sample, + ``kl_weight`` x KL per latent element.

    Why MSE: it is what PSNR measures. With the MSE term's gradient dominating (pretrain.vae_mse_weight
    30) the held-out PSNR after 2000 steps rose from 23.60 dB (L1 alone) to 24.56; that is the setting
    measured, so L1 stays beside it. Why a small KL on a sampled latent: the prior's generated latents are
    never exact, so the decoder must tolerate small latent perturbations (the posterior noise teaches that)
    and the latents must stay bounded and roughly isotropic so that one shift and one scale normalise
    them; a large KL would instead blur the reconstructions (it pushes information out of the latent).
    """
    posterior = vae.encode(x).latent_dist
    recon = vae.decode(posterior.sample(generator=generator)).sample
    loss = (recon - x).abs().mean()
    if mse_weight:
        loss = loss + mse_weight * (recon - x).pow(2).mean()
    if kl_weight:
        loss = loss + kl_weight * posterior.kl().mean() / posterior.mean[0].numel()
    return loss


def train_vae(
    cfg: PretrainConfig, train_photos: dict[str, np.ndarray], checkpoint: Path, stop_after: int | None = None
) -> tuple[AutoencoderKL, list[tuple[int, float]]]:
    """Train the VAE on random flipped crops of ``train_photos``; resumes from ``checkpoint``."""
    vae = build_vae(cfg)
    images = C.build_pyramids(train_photos, cfg.pyramid_levels, cfg.vae_crop)

    def loss_at(step: int) -> torch.Tensor:
        rng = C.step_rng(cfg.seed, VAE_STREAM, step)
        x = C.random_crops(images, cfg.vae_batch, cfg.vae_crop, rng)
        return vae_loss(vae, x, C.torch_generator(rng), cfg.vae_kl_weight, cfg.vae_mse_weight)

    curve = train(
        vae,
        loss_at,
        steps=cfg.vae_steps,
        lr=cfg.vae_lr,
        checkpoint=checkpoint,
        fingerprint=fingerprint(_settings(cfg)),
        checkpoint_every=cfg.checkpoint_every,
        desc="vae",
        stop_after=stop_after,
    )
    vae.requires_grad_(False)
    return vae, curve


@torch.no_grad()
def encode(vae: AutoencoderKL, x: torch.Tensor, batch: int = 32, generator: torch.Generator | None = None):
    """Raw latents (before shift and scale) of images in [-1, 1]: posterior samples, or means if no generator."""
    out = []
    for i in range(0, len(x), batch):
        dist = vae.encode(x[i : i + batch]).latent_dist
        out.append(dist.mode() if generator is None else dist.sample(generator=generator))
    return torch.cat(out)


def latent_stats(latents: torch.Tensor) -> tuple[float, float]:
    """(shift_factor, scaling_factor) = (mean, 1 / std) over every latent element, as in FLUX's config.

    FLUX's pipeline maps raw latents z to model space as (z - shift_factor) * scaling_factor, so these
    values give the prior zero-mean, unit-variance inputs. Computed in float64 (population std).
    """
    z = latents.double()
    mean = z.mean()
    std = (z - mean).pow(2).mean().sqrt()
    return float(mean), float(1.0 / std)


def set_latent_stats(vae: AutoencoderKL, shift: float, scale: float) -> None:
    """Write the measured shift and scale into the VAE's config (saved with it)."""
    vae.register_to_config(shift_factor=shift, scaling_factor=scale)


def psnr_8bit(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Per-image RGB PSNR (dB) of images in [-1, 1], both quantised to 8 bits first (what would be saved)."""
    quantise = lambda t: ((t.clamp(-1, 1) + 1) * 127.5).round() / 255  # noqa: E731
    mse = (quantise(x) - quantise(y)).pow(2).mean(dim=(1, 2, 3)).clamp_min(1e-10)
    return -10 * torch.log10(mse)


@torch.no_grad()
def psnr(vae: AutoencoderKL, x: torch.Tensor, batch: int = 32) -> torch.Tensor:
    """Per-crop RGB PSNR (dB) of the VAE's reconstruction (posterior mean), both as 8-bit images."""
    values = []
    for i in range(0, len(x), batch):
        xb = x[i : i + batch]
        values.append(psnr_8bit(xb, vae.decode(vae.encode(xb).latent_dist.mode()).sample))
    return torch.cat(values)


def mean_psnr(values: torch.Tensor) -> float:
    """Mean of per-crop PSNRs, rounded to 0.01 dB (what metrics.json records)."""
    return round(float(values.mean()), 2) if len(values) else math.nan
