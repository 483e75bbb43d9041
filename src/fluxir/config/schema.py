"""Typed configuration: one dataclass per top-level section of params.yaml.

Everything is validated up front, before any work starts: an unknown key, a value of the wrong type
or one out of range stops the run with a single line naming the key, the value and what is allowed,
e.g. ``score.keep_quantile=1.7: must be in (0, 1]``.

A field may carry a constraint in its metadata:
  ``interval("(0, 1]")``  numeric range, brackets say open/closed, ``inf`` allowed as a bound;
  ``Literal[...]`` in the annotation lists the allowed strings.
Every field has a one-line docstring right under it (read by ``fluxir config show``).
"""

from __future__ import annotations

import ast
import dataclasses
import inspect
import math
import textwrap
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from fluxir.errors import UserError


class ConfigError(UserError, ValueError):
    """A params file that cannot be used; the message is one line naming key, value and the fix."""


def interval(spec: str) -> dict[str, Any]:
    """Field metadata for a numeric range written like ``"(0, 1]"`` or ``"[1, inf)"``."""
    spec = spec.strip()
    if spec[0] not in "([" or spec[-1] not in ")]":
        raise ValueError(f"bad interval spec {spec!r}")
    lo, hi = (float(part) for part in spec[1:-1].split(","))
    return {"interval": (spec, lo, hi, spec[0] == "(", spec[-1] == ")")}


# ----------------------------------------------------------------------------------------------
# Sections


@dataclass
class ModelConfig:
    base: str = "tiny"
    """Base text-to-image model: 'tiny' (random-weight FLUX architecture), a hub id or a local folder."""
    tiny_dir: str = "data/models/tiny-flux"
    """Folder where `fluxir models build-tiny` writes the tiny FLUX pipeline used when base is 'tiny'."""
    tiny_seed: int = field(default=0, metadata=interval("[0, inf)"))
    """Seed for the tiny model's random weights; the same seed gives bitwise-identical files."""
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"
    """Weight dtype for the base model; bfloat16 on GPUs, float32 on CPU."""
    device: str = "auto"
    """Torch device for model work: 'auto' (cuda if available, else cpu), 'cpu', 'cuda', 'cuda:N'."""
    max_sequence_length: int = field(default=512, metadata=interval("[1, 512]"))
    """T5 prompt length in tokens (FLUX.1-dev uses 512; it also sets the size of theta_p)."""

    def __post_init__(self) -> None:
        if self.device != "auto" and not (self.device == "cpu" or self.device.startswith("cuda")):
            raise ConfigError(f"model.device={self.device!r}: must be 'auto', 'cpu', 'cuda' or 'cuda:N'")


@dataclass
class TrackingConfig:
    uri: str = "sqlite:///mlruns.db"
    """MLflow tracking URI; the MLFLOW_TRACKING_URI environment variable overrides it."""
    experiment: str = "fluxir"
    """MLflow experiment name that runs are recorded under."""


@dataclass
class RestoreConfig:
    scale: int = field(default=4, metadata=interval("[1, 16]"))
    """Upscaling factor from the LQ input to the restored output (the paper trains x4)."""
    steps: int = field(default=20, metadata=interval("[1, 1000]"))
    """Flow-matching Euler sampling steps (paper: 20)."""
    guidance: float = field(default=3.5, metadata=interval("[0, 100]"))
    """Value fed to FLUX.1-dev's guidance embedding; must match what the adapter was trained with."""
    tile: int = field(default=1024, metadata=interval("[16, inf)"))
    """Tile size in output pixels (multiple of 16); larger outputs are restored tile by tile."""
    overlap: int = field(default=128, metadata=interval("[0, inf)"))
    """Overlap between neighbouring tiles in output pixels (multiple of 16); seams are blended."""
    seed: int = field(default=0, metadata=interval("[0, inf)"))
    """Seed of the initial noise; the same seed and input give the same output."""
    max_input_pixels: int = field(default=50_000_000, metadata=interval("[1, inf)"))
    """Refuse LQ inputs with more pixels than this (protects against decompression bombs)."""

    def __post_init__(self) -> None:
        for name in ("tile", "overlap"):
            if getattr(self, name) % 16:
                raise ConfigError(f"restore.{name}={getattr(self, name)}: must be a multiple of 16")
        if self.overlap >= self.tile:
            raise ConfigError(
                f"restore.overlap={self.overlap}: must be smaller than restore.tile={self.tile}"
            )


@dataclass
class GenerateConfig:
    source: str = "flux"
    """'flux' (model.base), 'folder' (real photos in input_dir), 'sdxl', or any diffusers text-to-image id/folder."""
    input_dir: str = ""
    """Folder of real high-quality photos for source 'folder' (e.g. DIV2K, LSDIR); searched recursively."""
    out_dir: str = "data/generate"
    """Where images (shard_000/, ...), manifest.parquet and rejected.parquet are written."""
    num_images: int = field(default=8, metadata=interval("[1, inf)"))
    """Images to generate (paper: 350,000); a larger value on a rerun adds only the new ones. Unused by 'folder'."""
    width: int = field(default=128, metadata=interval("[16, 65535]"))
    """Generated image width in pixels, a multiple of 16 (paper: 1024)."""
    height: int = field(default=96, metadata=interval("[16, 65535]"))
    """Generated image height in pixels, a multiple of 16 (paper: 768)."""
    num_inference_steps: int = field(default=4, metadata=interval("[1, 1000]"))
    """Sampling steps per image (paper: 20)."""
    guidance_scale: float = field(default=4.0, metadata=interval("[0, 100]"))
    """Guidance scale (paper: 4); FLUX.1-dev takes it as its distilled guidance embedding."""
    seed: int = field(default=0, metadata=interval("[0, inf)"))
    """Image k uses seed + k, so every image is reproducible on its own."""
    prompt: str = ""
    """Prompt for every image when prompts_file is empty (paper: the empty prompt)."""
    prompts_file: str = ""
    """Optional text file with one prompt per line; image k gets line k mod (number of lines)."""
    batch_size: int = field(default=2, metadata=interval("[1, inf)"))
    """Images per pipeline call; batches are aligned to multiples of it, so a resumed run recomputes the same batches."""
    shard_size: int = field(default=4, metadata=interval("[1, inf)"))
    """Images per shard folder (shard_000/, shard_001/, ...); 1000 at paper scale."""
    image_format: Literal["png", "jpg"] = "png"
    """Output file format: lossless png, or jpg at quality 95 (4:4:4) to save disk at paper scale."""
    min_short_side: int = field(default=96, metadata=interval("[1, inf)"))
    """Source 'folder': reject photos whose shorter side is below this (paper crops need 768)."""
    min_long_side: int = field(default=128, metadata=interval("[1, inf)"))
    """Source 'folder': reject photos whose longer side is below this (paper crops need 1024)."""
    workers: int = field(default=2, metadata=interval("[1, 256]"))
    """Source 'folder': threads decoding and encoding photos in parallel."""

    def __post_init__(self) -> None:
        if self.source == "folder":
            if not self.input_dir:
                raise ConfigError(
                    "generate.input_dir='': must name a folder of photos when generate.source is 'folder'"
                )
        else:
            for name in ("width", "height"):
                if getattr(self, name) % 16:
                    raise ConfigError(
                        f"generate.{name}={getattr(self, name)}: must be a multiple of 16 (VAE x8 and 2x2 latent packing)"
                    )
        if self.min_short_side > self.min_long_side:
            raise ConfigError(
                f"generate.min_short_side={self.min_short_side}: must not exceed generate.min_long_side={self.min_long_side}"
            )


@dataclass
class ScoreConfig:
    metrics: list[str] = field(default_factory=lambda: ["piqe"])
    """pyiqa metric names (paper: clipiqa+_vitL14_512, maniqa-pipal, musiq); piqe needs no weights."""
    batch_size: int = field(default=8, metadata=interval("[1, inf)"))
    """Images per metric call (images of the same size are batched together)."""
    device: str = "auto"
    """Torch device for the metrics: 'auto' (cuda if available, else cpu), 'cpu', 'cuda', 'cuda:N'."""
    torch_home: str = ""
    """TORCH_HOME for pyiqa weights (files go in <torch_home>/hub/pyiqa/); empty: the environment's."""
    allow_download: bool = False
    """Let pyiqa download missing weights; off, a missing file stops the stage at once, naming it."""
    in_manifest: str = "data/generate/manifest.parquet"
    """Manifest of the images to score."""
    out_dir: str = "data/score"
    """Where the scored manifest (input columns + one score_<metric> column per metric) is written."""

    def __post_init__(self) -> None:
        if not self.metrics:
            raise ConfigError("score.metrics=[]: must name at least one pyiqa metric, e.g. [piqe]")
        if len(set(self.metrics)) != len(self.metrics):
            raise ConfigError(f"score.metrics={self.metrics!r}: must not repeat a metric")
        if self.device != "auto" and not (self.device == "cpu" or self.device.startswith("cuda")):
            raise ConfigError(f"score.device={self.device!r}: must be 'auto', 'cpu', 'cuda' or 'cuda:N'")


@dataclass
class FilterConfig:
    enabled: bool = True
    """Apply the IQA selection; false keeps every image (the paper's "w/o IQA" ablation, Table 4)."""
    keep_quantile: float = field(default=0.95, metadata=interval("(0, 1]"))
    """Per metric, the fraction kept from the best end: 0.95 drops the worst 5% of each metric (paper)."""
    hist_bins: int = field(default=20, metadata=interval("[1, 10000]"))
    """Bins of the per-metric score histograms written to reports/filter/."""
    in_manifest: str = "data/score/manifest.parquet"
    """Scored manifest to filter."""
    out_dir: str = "data/filter"
    """Where manifest.parquet (kept images) and dropped.parquet (with the metrics that dropped them) go."""


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


@dataclass
class DegradeOverrides:
    """Real-ESRGAN values that replace the preset's; null keeps the preset's value."""

    gt_usm: bool | None = None
    """Unsharp-mask the GT before degrading it; the sharpened GT is the HQ output (seesr-paired: true)."""
    usm_weight: float | None = field(default=None, metadata=interval("[0, inf)"))
    """USM strength: sharp = I + weight * (I - blur(I)) (basicsr default 0.5)."""
    usm_radius: int | None = field(default=None, metadata=interval("[1, 1001]"))
    """USM Gaussian window in pixels, made odd (basicsr default 50, i.e. 51)."""
    usm_threshold: float | None = field(default=None, metadata=interval("[0, 255]"))
    """USM sharpens only where |I - blur(I)| exceeds this, on the 0-255 scale (basicsr default 10)."""
    kernel_range: list[int] | None = field(default=None, metadata=interval("[1, 99]"))
    """[smallest, largest] odd blur/sinc kernel size; sizes are drawn uniformly from the odd ones ([7, 21])."""
    kernel_prob: list[float] | None = field(default=None, metadata=interval("[0, 1]"))
    """First blur: probabilities of iso, aniso, generalized_iso, generalized_aniso, plateau_iso, plateau_aniso."""
    sinc_prob: float | None = field(default=None, metadata=interval("[0, 1]"))
    """First blur: probability of a sinc (ringing) kernel instead of the Gaussian family."""
    blur_sigma: list[float] | None = field(default=None, metadata=interval("(0, inf)"))
    """First blur: [lo, hi] of the kernel's sigma_x and sigma_y, in pixels."""
    betag_range: list[float] | None = field(default=None, metadata=interval("(0, inf)"))
    """First blur: [lo, hi] shape beta of generalized Gaussian kernels (lo <= 1 <= hi)."""
    betap_range: list[float] | None = field(default=None, metadata=interval("(0, inf)"))
    """First blur: [lo, hi] shape beta of plateau kernels (lo <= 1 <= hi)."""
    resize_prob: list[float] | None = field(default=None, metadata=interval("[0, 1]"))
    """First resize: probabilities of [up, down, keep]."""
    resize_range: list[float] | None = field(default=None, metadata=interval("(0, inf)"))
    """First resize: [lo, hi] scale; down draws from [lo, 1], up from [1, hi]."""
    gaussian_noise_prob: float | None = field(default=None, metadata=interval("[0, 1]"))
    """First noise: probability of Gaussian noise; Poisson noise otherwise."""
    noise_range: list[float] | None = field(default=None, metadata=interval("[0, inf)"))
    """First noise: [lo, hi] Gaussian sigma on the 0-255 scale."""
    poisson_scale_range: list[float] | None = field(default=None, metadata=interval("[0, inf)"))
    """First noise: [lo, hi] Poisson noise scale."""
    gray_noise_prob: float | None = field(default=None, metadata=interval("[0, 1]"))
    """First noise: probability that the noise is gray (the same in every channel)."""
    jpeg_range: list[float] | None = field(default=None, metadata=interval("[0, 100]"))
    """First JPEG: [lo, hi] quality; the quality used is the integer part of a uniform draw, as basicsr's cv2 path."""
    second_blur_prob: float | None = field(default=None, metadata=interval("[0, 1]"))
    """Probability that the second degradation blurs at all."""
    kernel_prob2: list[float] | None = field(default=None, metadata=interval("[0, 1]"))
    """Second blur: kernel family probabilities (order as kernel_prob)."""
    sinc_prob2: float | None = field(default=None, metadata=interval("[0, 1]"))
    """Second blur: probability of a sinc kernel."""
    blur_sigma2: list[float] | None = field(default=None, metadata=interval("(0, inf)"))
    """Second blur: [lo, hi] kernel sigma in pixels."""
    betag_range2: list[float] | None = field(default=None, metadata=interval("(0, inf)"))
    """Second blur: [lo, hi] generalized Gaussian beta (lo <= 1 <= hi)."""
    betap_range2: list[float] | None = field(default=None, metadata=interval("(0, inf)"))
    """Second blur: [lo, hi] plateau beta (lo <= 1 <= hi)."""
    resize_prob2: list[float] | None = field(default=None, metadata=interval("[0, 1]"))
    """Second resize: probabilities of [up, down, keep], relative to HQ size / scale."""
    resize_range2: list[float] | None = field(default=None, metadata=interval("(0, inf)"))
    """Second resize: [lo, hi] scale around HQ size / scale."""
    gaussian_noise_prob2: float | None = field(default=None, metadata=interval("[0, 1]"))
    """Second noise: probability of Gaussian noise; Poisson noise otherwise."""
    noise_range2: list[float] | None = field(default=None, metadata=interval("[0, inf)"))
    """Second noise: [lo, hi] Gaussian sigma on the 0-255 scale."""
    poisson_scale_range2: list[float] | None = field(default=None, metadata=interval("[0, inf)"))
    """Second noise: [lo, hi] Poisson noise scale."""
    gray_noise_prob2: float | None = field(default=None, metadata=interval("[0, 1]"))
    """Second noise: probability of gray noise."""
    jpeg_range2: list[float] | None = field(default=None, metadata=interval("[0, 100]"))
    """Final JPEG: [lo, hi] quality (integer part of a uniform draw)."""
    final_sinc_prob: float | None = field(default=None, metadata=interval("[0, 1]"))
    """Probability of the final sinc filter (applied with the resize to HQ / scale)."""
    sinc_first_prob: float | None = field(default=None, metadata=interval("[0, 1]"))
    """Probability of [resize + sinc] then JPEG rather than JPEG then [resize + sinc] (Real-ESRGAN: 0.5)."""

    def __post_init__(self) -> None:
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


@dataclass
class DegradeConfig:
    preset: Literal["seesr-paired", "seesr-online"] = "seesr-paired"
    """Real-ESRGAN settings: seesr-paired (Real-ESRGAN x4plus == SeeSR make_paired_data) or seesr-online."""
    scale: int = field(default=4, metadata=interval("[1, 16]"))
    """Super-resolution factor: the LQ image is HQ crop size / scale."""
    sizes: list[list[int]] = field(default_factory=lambda: [[96, 128], [96, 96], [96, 64]])
    """HQ crop sizes as [height, width], one drawn per image (paper: [[768, 1024], [768, 768], [768, 512]])."""
    crop: Literal["random", "center"] = "random"
    """Crop position: uniform over the image, or centred (the paper's text says "randomly center-crop")."""
    hflip_prob: float = field(default=0.5, metadata=interval("[0, 1]"))
    """Probability of flipping the HQ crop left-right (SeeSR and Real-ESRGAN flip half the crops)."""
    seed: int = field(default=0, metadata=interval("[0, inf)"))
    """With the image id it seeds each image's random draws: a rerun gives bitwise-equal pairs."""
    in_manifest: str = "data/filter/manifest.parquet"
    """Manifest of the HQ images to degrade."""
    out_dir: str = "data/degrade"
    """Where HQ crops, LQ images and the manifest (with each pair's degradation record) are written."""
    overrides: DegradeOverrides = field(default_factory=DegradeOverrides)
    """Values that replace the preset's (any key of the Real-ESRGAN option files listed here)."""

    def __post_init__(self) -> None:
        if not self.sizes:
            raise ConfigError("degrade.sizes=[]: must list at least one [height, width] crop size")
        for i, size in enumerate(self.sizes):
            if len(size) != 2 or min(size) < 1 or any(side % self.scale for side in size):
                raise ConfigError(
                    f"degrade.sizes[{i}]={size!r}: must be [height, width], positive multiples of degrade.scale={self.scale}"
                )


@dataclass
class TrainConfig:
    """FluxIR adapter training (paper section 3.3, 4.1). The guidance value fed to FLUX is restore.guidance and
    the LQ factor degrade.scale, so training sees exactly what `fluxir restore` will feed the model."""

    manifest: str = "data/degrade/manifest.parquet"
    """Degrade-stage manifest of pairs (columns id, hq_path, lq_path, hq_height, hq_width)."""
    out_dir: str = "data/train"
    """Stage output: adapter/ (the trained adapter, save_pretrained) and checkpoints/ (resumable state)."""
    report_dir: str = "reports/train"
    """loss.csv (step, loss, mse, pixel, lr) and val.csv for DVC plots, metrics.json and the last LQ | restored | HQ grid."""
    cache_latents: bool = True
    """Encode HQ/LQ latents and the empty-prompt embeddings once per dataset and model version, and reuse them."""
    cache_dir: str = "data/cache"
    """Where latent caches live: one folder per key (manifest hash, VAE and text-encoder files, dtype, scale)."""
    engine: Literal["deepspeed", "torch"] = "deepspeed"
    """deepspeed: ZeRO over one or more processes (gloo on CPU, nccl on GPU); torch: plain AdamW, one process."""
    deepspeed_config: str = "configs/deepspeed/zero2.json"
    """ZeRO settings (configs/deepspeed/zero2.json or zero3.json); batch sizes, optimizer, clipping and bf16 come from here."""
    rank: int | None = field(default=32, metadata=interval("[1, inf)"))
    """SE rank r of eq. 3 (paper: 32; Table 2 also 16, 64, 128); null is full rank."""
    control: Literal["se", "single_mlp"] = "se"
    """se: one SE pair per FLUX block (eq. 3-4); single_mlp: one full-rank MLP shared by all blocks (Table 5)."""
    text_control: bool = True
    """Add text-stream residuals SE_p (false: Table 6 'w/o SE_p')."""
    learnable_embeddings: bool = True
    """Learn theta_p and theta_y added to the prompt embeddings (false: Table 6 'w/o theta')."""
    lr: float = field(default=1e-2, metadata=interval("(0, 1]"))
    """AdamW learning rate; paper: 1e-5. The tiny random-weight profile uses 1e-2 so a CPU run learns in 60 steps."""
    weight_decay: float = field(default=0.01, metadata=interval("[0, inf)"))
    """AdamW decoupled weight decay (torch's default; the paper states none)."""
    adam_betas: list[float] = field(default_factory=lambda: [0.9, 0.999], metadata=interval("[0, 1)"))
    """AdamW (beta1, beta2)."""
    warmup_steps: int = field(default=0, metadata=interval("[0, inf)"))
    """Optimizer steps of linear lr warm-up (the paper states no schedule)."""
    schedule: Literal["constant", "cosine"] = "constant"
    """After warm-up: constant (the paper's fixed lr) or cosine decay to 0 at max_steps."""
    max_steps: int = field(default=60, metadata=interval("[1, inf)"))
    """Optimizer steps to train; a resumed run continues up to this count."""
    batch_size: int = field(default=4, metadata=interval("[1, inf)"))
    """Global batch: images per optimizer step over all processes and accumulation steps (paper: 64)."""
    grad_accum: int = field(default=1, metadata=interval("[1, inf)"))
    """Micro-batches accumulated per optimizer step; each process's micro-batch is batch_size / (grad_accum x processes)."""
    grad_clip: float = field(default=1.0, metadata=interval("[0, inf)"))
    """Clip the global gradient norm to this before each update; 0 turns clipping off."""
    gradient_checkpointing: bool = True
    """Recompute activations of the frozen base, the control block and the VAE decoder in backward (less memory)."""
    timestep_sampler: Literal["clamped_uniform", "logit_normal"] = "clamped_uniform"
    """t ~ clamp(U(-eps, 1 + eps), 0, 1) (eq. 5-6) or SD3's logit-normal (Table 3 baseline)."""
    sampler_eps: float = field(default=0.05, metadata=interval("[0, 1]"))
    """eps of the clamped-uniform sampler (paper: 0.05)."""
    logit_mean: float = 0.0
    """Mean of the logit-normal sampler's normal."""
    logit_std: float = field(default=1.0, metadata=interval("(0, inf)"))
    """Standard deviation of the logit-normal sampler's normal."""
    pixel_loss: bool = True
    """Add the VAE-decoded L1 term L_P (eq. 9); false: Table 3's 'w/o L_P' rows."""
    alpha: float = field(default=1.0, metadata=interval("[0, inf)"))
    """Weight of L_P in L = L_MSE + alpha L_P (eq. 10; paper: 1)."""
    seed: int = field(default=0, metadata=interval("[0, inf)"))
    """Seeds the adapter's init, data order, t and noise; step k's draws depend only on (seed, k), so resumes repeat exactly."""
    val_size: int = field(default=2, metadata=interval("[0, inf)"))
    """Pairs held out of training for the validation loss, grids and PSNR (picked by hashing ids: stable as data grows)."""
    val_timesteps: list[float] = field(
        default_factory=lambda: [0.1, 0.3, 0.5, 0.7, 0.9], metadata=interval("[0, 1]")
    )
    """Fixed t values of the validation loss; with fixed noise it is deterministic."""
    eval_every: int = field(default=20, metadata=interval("[0, inf)"))
    """Validation loss every N steps, plus at step 0 and the last step (0: only those two)."""
    checkpoint_every: int = field(default=20, metadata=interval("[1, inf)"))
    """Save a resumable checkpoint every N steps; the last step always saves."""
    keep_checkpoints: int = field(default=2, metadata=interval("[1, inf)"))
    """How many of the newest checkpoints to keep; older ones are deleted once a newer one is complete."""
    grid_every: int = field(default=0, metadata=interval("[0, inf)"))
    """Log an LQ | restored | HQ grid of one held-out pair every N steps (0: only after the last step)."""
    grid_steps: int = field(default=4, metadata=interval("[1, 1000]"))
    """Euler steps of the grid restorations (the final held-out PSNR uses restore.steps)."""
    track: bool = True
    """Record the run in MLflow (tracking.uri): config, curves, throughput, memory, grids and a cost ledger."""

    def __post_init__(self) -> None:
        if self.batch_size % self.grad_accum:
            raise ConfigError(
                f"train.batch_size={self.batch_size}: must be a multiple of train.grad_accum={self.grad_accum}"
            )
        if len(self.adam_betas) != 2:
            raise ConfigError(f"train.adam_betas={self.adam_betas!r}: must be [beta1, beta2]")
        if not self.val_timesteps:
            raise ConfigError("train.val_timesteps=[]: must list at least one t in [0, 1]")
        if self.warmup_steps > self.max_steps:
            raise ConfigError(
                f"train.warmup_steps={self.warmup_steps}: must not exceed train.max_steps={self.max_steps}"
            )


@dataclass
class BenchmarkDataset:
    """One test set of Table 1. Layouts: synthetic (HQ photos, degraded like training), paired (RealSR /
    DRealSR: HQ and LQ folders matched by file name), lq_only (RealLQ250: LQ images, no HQ)."""

    name: str = "DIV2K-Val"
    """Name in the tables (e.g. DIV2K-Val, RealSR, DRealSR, RealLQ250) and output folder name."""
    kind: Literal["synthetic", "paired", "lq_only"] = "synthetic"
    """synthetic: random HQ crops degraded with the degrade settings; paired: HQ/LQ folders; lq_only: LQ only."""
    hq_dir: str = "skimage"
    """HQ folder (synthetic, paired); 'skimage' is scikit-image's bundled sample photos (offline demo)."""
    lq_dir: str = ""
    """LQ folder (paired, lq_only); paired files match HQ ones by name, ignoring _HR/_LR4/_x1/_x4 suffixes."""
    num_crops: int = field(default=8, metadata=interval("[1, inf)"))
    """synthetic: crops to make, spread evenly over the HQ photos (paper: 600 from DIV2K's 100 val images)."""
    hq_crop: int = field(default=128, metadata=interval("[4, inf)"))
    """synthetic: random HQ crop side; paired: HQ centre-crop side (paper: 1024)."""
    lq_crop: int = field(default=32, metadata=interval("[0, inf)"))
    """paired: LQ centre-crop side, must equal hq_crop / restore.scale (paper: 256); lq_only: centre crop, 0 keeps the size."""
    max_images: int = field(default=0, metadata=interval("[0, inf)"))
    """Use at most this many source images (sorted by name); 0 uses all."""
    seed: int = field(default=0, metadata=interval("[0, inf)"))
    """synthetic: with each crop's id it seeds the crop position and the degradation draws."""

    def __post_init__(self) -> None:
        if not self.name or "/" in self.name or self.name in (".", ".."):
            raise ConfigError(f"benchmark.datasets name={self.name!r}: must be a non-empty name without '/'")
        needs = {"synthetic": ("hq_dir",), "paired": ("hq_dir", "lq_dir"), "lq_only": ("lq_dir",)}[self.kind]
        for key in needs:
            if not getattr(self, key):
                raise ConfigError(f"benchmark.datasets[{self.name}].{key}='': a {self.kind} set needs it")


@dataclass
class SRModel:
    """A single-image SR checkpoint loaded with spandrel (Real-ESRGAN, BSRGAN, SwinIR, ...)."""

    name: str = ""
    """Column name in Table 1, e.g. Real-ESRGAN."""
    path: str = ""
    """Checkpoint file (.pth, .safetensors) spandrel recognises, e.g. weights/RealESRGAN_x4plus.pth."""

    def __post_init__(self) -> None:
        if not self.name or not self.path:
            raise ConfigError(f"benchmark.sr_models name={self.name!r} path={self.path!r}: both must be set")


@dataclass
class BenchmarkConfig:
    """Table 1: restore test sets with FluxIR and baselines, score them with pyiqa (paper section 4)."""

    adapter: str = "data/train/adapter"
    """Trained FluxIR adapter folder (save_pretrained); the base is model.base, sampling is restore.*."""
    datasets: list[BenchmarkDataset] = field(default_factory=lambda: [BenchmarkDataset()])
    """Test sets, in table order (paper: DIV2K-Val, RealSR, DRealSR, RealLQ250)."""
    methods: list[str] = field(default_factory=lambda: ["bicubic", "lanczos", "fluxir"])
    """Table columns in order: fluxir, bicubic, lanczos, or an sr_models name (unlisted sr_models go before fluxir)."""
    sr_models: list[SRModel] = field(default_factory=list)
    """Single-image SR checkpoints to run side by side, loaded with spandrel; their scale must be restore.scale."""
    metrics: list[str] = field(default_factory=lambda: ["psnr", "ssim", "lpips", "piqe"])
    """pyiqa metrics, rows in this order (paper: clipiqa+_vitL14_512, musiq, maniqa-pipal, psnr, ssim, lpips)."""
    fr_channel: Literal["y", "rgb"] = "y"
    """PSNR and SSIM on the Y channel (pyiqa test_y_channel, YIQ luma) or on RGB."""
    device: str = "auto"
    """Torch device for the metrics and sr_models: 'auto', 'cpu', 'cuda', 'cuda:N' (FluxIR uses model.device)."""
    grid_images: int = field(default=2, metadata=interval("[0, inf)"))
    """Images per dataset shown as LQ | methods | HQ grids."""
    out_dir: str = "data/benchmark"
    """Prepared test sets (<name>/lq, hq, manifest.parquet) and restored images (<name>/<method>/)."""
    report_dir: str = "reports/benchmark"
    """metrics.json, summary.json, table1.md/.csv, per_image.csv and grids/."""
    track: bool = True
    """Record the run in MLflow (tracking.uri): params, metrics, tables and grids."""

    def __post_init__(self) -> None:
        if not self.datasets:
            raise ConfigError("benchmark.datasets=[]: must list at least one test set")
        names = [d.name for d in self.datasets]
        if len(set(names)) != len(names):
            raise ConfigError(f"benchmark.datasets names {names!r}: must be unique")
        if not self.metrics or len(set(self.metrics)) != len(self.metrics):
            raise ConfigError(f"benchmark.metrics={self.metrics!r}: must name pyiqa metrics, each once")
        models = [m.name for m in self.sr_models]
        builtin = ("fluxir", "bicubic", "lanczos")
        if set(models) & set(builtin) or len(set(models)) != len(models):
            raise ConfigError(
                f"benchmark.sr_models names {models!r}: must be unique and not {', '.join(builtin)}"
            )
        for name in self.methods:
            if name not in builtin and name not in models:
                raise ConfigError(
                    f"benchmark.methods: {name!r} is neither fluxir, bicubic, lanczos nor an sr_models name"
                )
        if len(set(self.methods)) != len(self.methods) or not (self.methods or self.sr_models):
            raise ConfigError(f"benchmark.methods={self.methods!r}: must list at least one method, each once")
        if self.device != "auto" and not (self.device == "cpu" or self.device.startswith("cuda")):
            raise ConfigError(f"benchmark.device={self.device!r}: must be 'auto', 'cpu', 'cuda' or 'cuda:N'")


@dataclass
class AblateConfig:
    """Tables 2-7: variants of the same params run as MLflow children of one parent (`fluxir ablate tableN`)."""

    dataset: str = ""
    """benchmark.datasets name the variants are scored on (paper: RealLQ250); empty: the first one."""
    out_dir: str = "data/ablations"
    """Per table and variant: train/, benchmark/ and (tables 4, 7) generated data."""
    report_dir: str = "reports/ablations"
    """tableN.md, .csv and .json, with the paper's numbers beside ours."""
    table7_sources: list[str] = field(
        default_factory=lambda: [
            "PixArt-alpha/PixArt-Sigma-XL-2-1024-MS",
            "Efficient-Large-Model/Sana_1600M_1024px_diffusers",
            "sdxl",
            "playgroundai/playground-v2.5-1024px-aesthetic",
            "flux",
        ]
    )
    """Table 7 generators (generate.source values); 'flux' is model.base, and FluxGen is its IQA-filtered subset."""
    table7_images: int = field(default=4, metadata=interval("[1, inf)"))
    """Images generated per Table 7 source (paper: 2,000)."""
    allow_download: bool = False
    """Let Table 7 fetch generator weights from the hub; off, a generator not in the local cache is reported absent at once."""


@dataclass
class Config:
    """The whole params.yaml: one attribute per section."""

    model: ModelConfig = field(default_factory=ModelConfig)
    """The base FLUX model (tiny or real) and where it runs."""
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    """MLflow tracking settings."""
    restore: RestoreConfig = field(default_factory=RestoreConfig)
    """Restoring images with a trained adapter (`fluxir restore`)."""
    generate: GenerateConfig = field(default_factory=GenerateConfig)
    """FluxGen step 1: generate images (or ingest real photos) with a manifest."""
    score: ScoreConfig = field(default_factory=ScoreConfig)
    """FluxGen step 2a: no-reference IQA scores per image (pyiqa)."""
    filter: FilterConfig = field(default_factory=FilterConfig)
    """FluxGen step 2b: keep images in the top keep_quantile of every metric."""
    degrade: DegradeConfig = field(default_factory=DegradeConfig)
    """FluxGen step 3: Real-ESRGAN second-order degradation into HQ crop / LQ pairs."""
    train: TrainConfig = field(default_factory=TrainConfig)
    """FluxIR adapter training (DeepSpeed ZeRO), checkpoints and tracking."""
    benchmark: BenchmarkConfig = field(default_factory=BenchmarkConfig)
    """Table 1: FluxIR and baselines on the test sets, scored with pyiqa."""
    ablate: AblateConfig = field(default_factory=AblateConfig)
    """Tables 2-7: the paper's ablations as variants of these params."""


# ----------------------------------------------------------------------------------------------
# Loading and validation


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return " | ".join(repr(a) for a in typing.get_args(tp))
    if origin in (types.UnionType, typing.Union):
        return " or ".join(_type_name(a) for a in typing.get_args(tp))
    if origin in (list, tuple):
        args = typing.get_args(tp)
        return f"list of {_type_name(args[0])}" if args else "list"
    if tp is type(None):
        return "null"
    return getattr(tp, "__name__", str(tp))


def _coerce(key: str, value: Any, tp: Any) -> Any:
    """Check ``value`` against annotation ``tp``; return it (ints accepted for floats)."""
    origin = typing.get_origin(tp)
    if tp is Any:
        return value
    if origin is Literal:
        allowed = typing.get_args(tp)
        if value not in allowed:
            raise ConfigError(f"{key}={value!r}: must be one of {', '.join(repr(a) for a in allowed)}")
        return value
    if origin in (types.UnionType, typing.Union):
        for arg in typing.get_args(tp):
            try:
                return _coerce(key, value, arg)
            except ConfigError:
                continue
        raise ConfigError(f"{key}={value!r}: must be {_type_name(tp)}")
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}={value!r}: must be {_type_name(tp)}")
        (item_tp, *_) = typing.get_args(tp) or (Any,)
        items = [_coerce(f"{key}[{i}]", v, item_tp) for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if tp is type(None):
        if value is not None:
            raise ConfigError(f"{key}={value!r}: must be null")
        return None
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key}={value!r}: must be true or false")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key}={value!r}: must be an integer")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{key}={value!r}: must be a number")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key}={value!r}: must be a string")
        return value
    if dataclasses.is_dataclass(tp):
        return _build(tp, value, key)
    raise TypeError(f"config field {key} has an unsupported annotation {tp!r}")


def _check_interval(key: str, value: Any, meta: dict[str, Any]) -> None:
    if "interval" not in meta or value is None:
        return
    spec, lo, hi, lo_open, hi_open = meta["interval"]
    values = value if isinstance(value, (list, tuple)) else [value]
    for v in values:
        if isinstance(v, float) and math.isnan(v):
            raise ConfigError(f"{key}={value!r}: must be in {spec}")
        below = v <= lo if lo_open else v < lo
        above = v >= hi if hi_open else v > hi
        if below or above:
            raise ConfigError(f"{key}={value!r}: must be in {spec}")


def _build(cls: type, raw: Any, prefix: str) -> Any:
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{prefix}={raw!r}: must be a mapping of keys to values")
    hints = typing.get_type_hints(cls, include_extras=False)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(raw) - set(fields))
    if unknown:
        key = f"{prefix}.{unknown[0]}" if prefix else unknown[0]
        raise ConfigError(f"{key}: unknown key; allowed keys are {', '.join(fields)}")
    kwargs = {}
    for name, value in raw.items():
        key = f"{prefix}.{name}" if prefix else name
        value = _coerce(key, value, hints[name])
        _check_interval(key, value, fields[name].metadata)
        kwargs[name] = value
    try:
        return cls(**kwargs)
    except ConfigError:
        raise
    except (TypeError, ValueError) as exc:  # a __post_init__ check that forgot to name its key
        raise ConfigError(f"{prefix}: {exc}") from exc


def config_from_dict(raw: dict[str, Any] | None) -> Config:
    """Validate a parsed params mapping and return the typed Config."""
    return _build(Config, raw or {}, "")


def load_config(path: str | Path = "params.yaml", overrides: dict[str, Any] | None = None) -> Config:
    """Read, merge ``overrides`` (dotted keys, e.g. ``{"score.keep_quantile": 0.9}``) and validate."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: params file not found; run from the project root or pass --params PATH")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        raise ConfigError(f"{path}:{where} is not valid YAML ({getattr(exc, 'problem', exc)})") from exc
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: must be a mapping of sections (model:, tracking:, ...)")
    for dotted, value in (overrides or {}).items():
        apply_override(raw, dotted, value)
    return config_from_dict(raw)


def apply_override(raw: dict[str, Any], dotted: str, value: Any) -> None:
    """Set ``raw["a"]["b"] = value`` for ``dotted == "a.b"``, creating sections as needed."""
    *parents, leaf = dotted.split(".")
    node = raw
    for part in parents:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(f"{dotted}: cannot set a key inside a non-mapping value")
    node[leaf] = value


def parse_override(text: str) -> tuple[str, Any]:
    """Parse ``key=value`` from the command line; the value is read as YAML (``0.9``, ``true``, ``[1,2]``)."""
    if "=" not in text:
        raise ConfigError(f"{text!r}: overrides are written key=value, e.g. model.tiny_seed=3")
    key, value = text.split("=", 1)
    return key.strip(), yaml.safe_load(value)


def to_dict(cfg: Any) -> dict[str, Any]:
    """Plain nested dict of a config (for logging the resolved config to MLflow and to files)."""
    return dataclasses.asdict(cfg)


def field_docs(cls: type) -> dict[str, str]:
    """The one-line docstring under each field of a config dataclass, read from its source."""
    tree = ast.parse(textwrap.dedent(inspect.getsource(cls)))
    body = tree.body[0].body  # type: ignore[attr-defined]
    docs: dict[str, str] = {}
    for node, nxt in zip(body, body[1:], strict=False):
        if (
            isinstance(node, ast.AnnAssign)
            and isinstance(node.target, ast.Name)
            and isinstance(nxt, ast.Expr)
            and isinstance(nxt.value, ast.Constant)
            and isinstance(nxt.value.value, str)
        ):
            docs[node.target.id] = nxt.value.value.strip()
    return docs
