"""The `pretrain` section: training the `mini` base model here, on CPU (photos -> VAE -> prior -> pipeline).

Used only by the `mini` profile's pipeline (``mini/dvc.yaml``: its ``pretrain`` stage); see
:mod:`fluxir.pretrain`. The defaults are the measured CPU profile.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from fluxir.config.base import ConfigError, Float, Int, Str, section


@section("pretrain")
class PretrainConfig:
    """Every knob of the mini pretraining run."""

    out_dir: Str = "data/models/mini-flux"
    """The diffusers FluxPipeline folder to write (loadable by fluxir.models.flux.load_flux)."""
    photos_dir: Str = "data/pretrain/photos"
    """Photo folder with manifest.json; written from the packaged photos when it has no manifest."""
    work_dir: Str = "data/pretrain/work"
    """Checkpoints of the VAE and the prior (a rerun resumes from them)."""
    reports_dir: Str = "reports/pretrain"
    """Loss curves (CSV), metrics.json and the sample grids."""
    seed: Int = Field(0, ge=0)
    """Seeds weights, crops, noise and timesteps; the same seed and settings give the same files."""
    threads: Int = Field(2, ge=0, le=256)
    """torch CPU threads (0: torch's default)."""
    checkpoint_every: Int = Field(100, ge=1)
    """Save the training state every this many steps (and at the end)."""
    pyramid_levels: Int = Field(3, ge=1, le=6)
    """Crops come from each photo at scales 1, 1/2, ... (this many levels): fine texture and whole scenes."""

    vae_widths: list[Int] = Field(default_factory=lambda: [16, 32, 64, 128])
    """Channels of the VAE's 4 blocks (FLUX.1-dev: 128, 256, 512, 512); 4 blocks give x8 downsampling."""
    vae_layers_per_block: Int = Field(1, ge=1, le=4)
    """Resnet layers per VAE block (FLUX.1-dev: 2)."""
    vae_init: Literal["identity", "default"] = "identity"
    """identity: start as the 8x8 block-mean autoencoder and learn the detail (fluxir.pretrain.vae_init);
    default: diffusers' random initialisation (held-out PSNR 21.3 dB after 8000 steps at vae_lr 1e-3)."""
    vae_crop: Int = Field(48, ge=16, multiple_of=16)
    """Side of the square training crops of the VAE, in pixels. 48 px (6x6 latents) rather than 32 (4x4, every
    latent at the zero-padded border): in runs of equal time, 48 px x 4 scored 25.40 dB held-out against
    25.04 for 32 px x 8, and 64 px x 4 scored 25.31."""
    vae_batch: Int = Field(4, ge=1)
    """Crops per VAE training step (4 of 48 px cost about what 8 of 32 px do on one CPU core)."""
    vae_steps: Int = Field(10000, ge=0)
    """VAE optimizer steps (4e-4 peak lr, 48 px crops x 4): 26.96 dB held-out after 7000, 27.05 after 9000; about
    140 ms a step on two threads."""
    vae_lr: Float = Field(4e-4, gt=0, le=1)
    """Peak AdamW learning rate of the VAE (linear warm-up, then cosine decay to 5%). 7000-step runs on 48 px
    crops x 4: 26.96 dB held-out at 4e-4, 26.44 at 3e-4; at 5e-4 the loss rose during warm-up and the run ended
    at 24.90 (at 3840 steps 5e-4 had recovered, 26.45). 9000-step runs: 27.05 at 4e-4, 26.95 at 4.5e-4. The identity init starts near a good solution: 1e-3
    held over 8000 steps (L1, 32 px crops) undid it (loss 0.22 for 1000 steps, worse than from random
    weights)."""
    vae_kl_weight: Float = Field(1e-4, ge=0)
    """Weight of the KL term (per latent element) against the reconstruction loss (per pixel)."""
    vae_mse_weight: Float = Field(30.0, ge=0)
    """Weight of the MSE term (per pixel) beside the L1 loss; at 30 its gradient dominates, and MSE is what
    PSNR measures (2000-step runs: 24.56 dB held-out against 23.60 with L1 alone)."""
    eval_crops_per_photo: Int = Field(8, ge=1)
    """Held-out crops per photo and pyramid level for the PSNR and the held-out flow-matching loss."""

    prior_heads: Int = Field(4, ge=1)
    """Attention heads of the transformer (FLUX.1-dev: 24)."""
    prior_head_dim: Int = Field(32, ge=8, multiple_of=4)
    """Width of one head (FLUX.1-dev: 128); RoPE axes take 1/8, 7/16, 7/16 of it, as FLUX does."""
    prior_double_blocks: Int = Field(2, ge=1)
    """MM-DiT (double-stream) blocks (FLUX.1-dev: 19)."""
    prior_single_blocks: Int = Field(4, ge=0)
    """Single-stream blocks (FLUX.1-dev: 38)."""
    prior_crop: Int = Field(128, ge=32, multiple_of=16)
    """Side of the square photo crops whose latents the prior learns (128 px -> 8x8 packed tokens)."""
    prior_batch: Int = Field(16, ge=1)
    """Latents per prior training step."""
    prior_steps: Int = Field(800, ge=0)
    """Prior optimizer steps."""
    prior_lr: Float = Field(5e-4, gt=0, le=1)
    """Peak AdamW learning rate of the prior (linear warm-up, then cosine decay to 5%)."""
    prior_bank: Int = Field(1024, ge=1)
    """Train crops encoded once by the trained VAE; the prior samples its batches from them."""
    max_sequence_length: Int = Field(32, ge=1, le=512)
    """T5 tokens of the (empty) prompt at training; sample with the same model.max_sequence_length."""
    guidance_min: Float = Field(1.0, ge=0)
    """Lowest guidance value fed to the guidance embedder in training (drawn uniformly per sample)."""
    guidance_max: Float = Field(5.0, ge=0)
    """Highest guidance value in training; FluxGen samples at 4 and restoration at 3.5, inside the range."""

    grid_images: Int = Field(16, ge=1)
    """Images in the sample grid generated from the saved pipeline (empty prompt)."""
    grid_size: Int = Field(128, ge=16, multiple_of=16)
    """Side of each sample grid image, in pixels."""
    grid_steps: Int = Field(20, ge=1)
    """Sampling steps of the grid (FLUX's Euler flow-matching scheduler with its shift)."""
    grid_guidance: Float = Field(4.0, ge=0)
    """Guidance value of the grid (FluxGen's)."""

    @model_validator(mode="after")
    def _check(self) -> PretrainConfig:
        if len(self.vae_widths) != 4 or any(w < 8 or w % 8 for w in self.vae_widths):
            raise ConfigError(
                f"pretrain.vae_widths={self.vae_widths}: must be 4 multiples of 8 (x8 downsampling)"
            )
        if self.guidance_max < self.guidance_min:
            raise ConfigError(
                f"pretrain.guidance_max={self.guidance_max}: must be >= pretrain.guidance_min={self.guidance_min}"
            )
        return self
