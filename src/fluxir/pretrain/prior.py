"""Train the mini base model's transformer: a small FLUX.1 MM-DiT as an empty-prompt flow-matching prior.

FLUX.1's conventions throughout, so the saved folder runs through diffusers' FluxPipeline unchanged:

* latents are the VAE's, mapped to model space as ``(z - shift_factor) * scaling_factor`` and packed
  2x2 into 64-channel tokens (``FluxPipeline._pack_latents``), with the pipeline's image ids;
* ``x_t = (1 - t) x0 + t noise`` and the velocity target is ``noise - x0``;
* the model gets ``timestep = t`` in [0, 1]: the pipeline passes ``scheduler_timestep / 1000`` with
  scheduler timesteps ``sigma * 1000`` (and the transformer scales it by 1000 again inside);
* the text input is the empty prompt through the pipeline's own ``encode_prompt`` (T5 tokens, CLIP
  pooled vector, text ids), computed once;
* ``guidance_embeds=True`` as in FLUX.1-dev: the guidance value is drawn per sample from
  [guidance_min, guidance_max], so any value in that range (FluxGen's 4, restoration's 3.5) is in
  distribution at sampling time.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from diffusers import AutoencoderKL, FluxPipeline, FluxTransformer2DModel

from fluxir.config import PretrainConfig
from fluxir.pretrain import crops as C
from fluxir.pretrain.checkpoint import fingerprint
from fluxir.pretrain.loop import train
from fluxir.pretrain.vae import encode

PRIOR_STREAM = 2  # step_rng stream id of prior training
BANK_STREAM = 3  # crops of the latent bank
HELD_OUT_STREAM = 4  # the fixed (t, noise, guidance) draws of the held-out loss


@dataclass(frozen=True)
class PromptEmbeddings:
    """The empty prompt as FluxPipeline.encode_prompt returns it (batch of one)."""

    prompt_embeds: torch.Tensor
    """1 x max_sequence_length x joint_attention_dim (T5)."""
    pooled: torch.Tensor
    """1 x pooled_projection_dim (CLIP's pooled output)."""
    text_ids: torch.Tensor
    """max_sequence_length x 3 (all zeros in FLUX)."""


@torch.no_grad()
def empty_prompt(pipe: FluxPipeline, max_sequence_length: int) -> PromptEmbeddings:
    """Encode "" with the pipeline's own text encoders, exactly as a FluxPipeline call would."""
    embeds, pooled, text_ids = pipe.encode_prompt(
        prompt="", prompt_2=None, device=torch.device("cpu"), max_sequence_length=max_sequence_length
    )
    return PromptEmbeddings(embeds.float(), pooled.float(), text_ids.float())


def rope_axes(head_dim: int) -> tuple[int, int, int]:
    """RoPE axes (id, height, width) in FLUX.1's proportions (16, 56, 56 of 128), each even, summing to head_dim."""
    side = (head_dim * 7 // 16) // 2 * 2
    return (head_dim - 2 * side, side, side)


def transformer_config(cfg: PretrainConfig, text: PromptEmbeddings) -> dict[str, Any]:
    """FluxTransformer2DModel kwargs: FLUX.1-dev's layout at the configured widths and depths."""
    return dict(
        patch_size=1,
        in_channels=64,  # 16 latent channels x 2x2 packing
        num_layers=cfg.prior_double_blocks,
        num_single_layers=cfg.prior_single_blocks,
        attention_head_dim=cfg.prior_head_dim,
        num_attention_heads=cfg.prior_heads,
        joint_attention_dim=text.prompt_embeds.shape[-1],
        pooled_projection_dim=text.pooled.shape[-1],
        guidance_embeds=True,
        axes_dims_rope=rope_axes(cfg.prior_head_dim),
    )


def build_transformer(cfg: PretrainConfig, text: PromptEmbeddings) -> FluxTransformer2DModel:
    """A freshly initialised transformer (seeded by ``cfg.seed``)."""
    torch.manual_seed(cfg.seed + 1)
    return FluxTransformer2DModel(**transformer_config(cfg, text))


def pack(latents: torch.Tensor) -> torch.Tensor:
    """B x 16 x H x W model-space latents -> B x (H/2 * W/2) x 64 tokens, as FluxPipeline packs them."""
    b, c, h, w = latents.shape
    return FluxPipeline._pack_latents(latents, b, c, h, w)


def image_ids(latent_height: int, latent_width: int) -> torch.Tensor:
    """The pipeline's image position ids for a latent of that size (before packing)."""
    return FluxPipeline._prepare_latent_image_ids(
        1, latent_height // 2, latent_width // 2, "cpu", torch.float32
    )


@torch.no_grad()
def latent_bank(vae: AutoencoderKL, crops: torch.Tensor, seed: int, batch: int = 32) -> torch.Tensor:
    """Raw latents (posterior samples, as FLUX trainers draw them) of image crops in [-1, 1]."""
    generator = C.torch_generator(np.random.default_rng([seed, BANK_STREAM]))
    return encode(vae, crops, batch=batch, generator=generator)


def to_model_space(latents: torch.Tensor, shift: float, scale: float) -> torch.Tensor:
    """Raw VAE latents -> what the transformer sees (the inverse of the pipeline's decode step)."""
    return (latents - shift) * scale


def flow_matching_loss(
    model: FluxTransformer2DModel,
    x0: torch.Tensor,
    ids: torch.Tensor,
    text: PromptEmbeddings,
    t: torch.Tensor,
    noise: torch.Tensor,
    guidance: torch.Tensor,
) -> torch.Tensor:
    """Mean squared error between the predicted and the true velocity ``noise - x0`` at ``x_t``."""
    b = x0.shape[0]
    tb = t.view(b, 1, 1)
    x_t = (1 - tb) * x0 + tb * noise
    pred = model(
        hidden_states=x_t,
        timestep=t,
        guidance=guidance,
        pooled_projections=text.pooled.expand(b, -1),
        encoder_hidden_states=text.prompt_embeds.expand(b, -1, -1),
        txt_ids=text.text_ids,
        img_ids=ids,
        return_dict=False,
    )[0]
    return (pred - (noise - x0)).pow(2).mean()


def draws(rng: np.random.Generator, x0: torch.Tensor, guidance_range: tuple[float, float]):
    """(t ~ U(0, 1), noise ~ N(0, I), guidance ~ U(range)) for a batch, from ``rng`` alone."""
    b = x0.shape[0]
    generator = C.torch_generator(rng)
    t = torch.rand(b, generator=generator)
    noise = torch.randn(x0.shape, generator=generator)
    lo, hi = guidance_range
    guidance = lo + (hi - lo) * torch.rand(b, generator=generator)
    return t, noise, guidance


@torch.no_grad()
def held_out_loss(
    model: FluxTransformer2DModel,
    x0: torch.Tensor,
    ids: torch.Tensor,
    text: PromptEmbeddings,
    cfg: PretrainConfig,
    batch: int = 32,
) -> float:
    """Flow-matching loss on held-out latents at fixed (t, noise, guidance) draws: comparable across runs."""
    was_training = model.training
    model.eval()
    t, noise, guidance = draws(
        np.random.default_rng([cfg.seed, HELD_OUT_STREAM]), x0, (cfg.guidance_min, cfg.guidance_max)
    )
    total = 0.0
    for i in range(0, len(x0), batch):
        sl = slice(i, i + batch)
        loss = flow_matching_loss(model, x0[sl], ids, text, t[sl], noise[sl], guidance[sl])
        total += float(loss) * len(x0[sl])
    model.train(was_training)
    return total / len(x0)


def _settings(cfg: PretrainConfig) -> dict[str, Any]:
    keys = ("seed", "prior_heads", "prior_head_dim", "prior_double_blocks", "prior_single_blocks")
    keys += ("prior_crop", "prior_batch", "prior_steps", "prior_lr", "prior_bank", "max_sequence_length")
    keys += ("guidance_min", "guidance_max")
    return {k: getattr(cfg, k) for k in keys}


def train_prior(
    cfg: PretrainConfig,
    bank: torch.Tensor,
    text: PromptEmbeddings,
    checkpoint: Path,
    data_fingerprint: str,
    stop_after: int | None = None,
) -> tuple[FluxTransformer2DModel, list[tuple[int, float]]]:
    """Train the transformer on packed model-space latents ``bank`` (N x tokens x 64); resumes from ``checkpoint``.

    ``data_fingerprint`` identifies the bank (the VAE and its settings): a checkpoint made on other
    latents is not resumed.
    """
    model = build_transformer(cfg, text)
    side = int(round(bank.shape[1] ** 0.5))
    ids = image_ids(2 * side, 2 * side)

    def loss_at(step: int) -> torch.Tensor:
        rng = C.step_rng(cfg.seed, PRIOR_STREAM, step)
        x0 = bank[torch.from_numpy(rng.integers(len(bank), size=cfg.prior_batch))]
        t, noise, guidance = draws(rng, x0, (cfg.guidance_min, cfg.guidance_max))
        return flow_matching_loss(model, x0, ids, text, t, noise, guidance)

    curve = train(
        model,
        loss_at,
        steps=cfg.prior_steps,
        lr=cfg.prior_lr,
        checkpoint=checkpoint,
        fingerprint=fingerprint(_settings(cfg) | {"data": data_fingerprint}),
        checkpoint_every=cfg.checkpoint_every,
        desc="prior",
        stop_after=stop_after,
    )
    model.requires_grad_(False)
    return model, curve
