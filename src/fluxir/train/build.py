"""Assembling a :class:`~fluxir.train.trainer.Trainer` from params: processes, data, latents, model, engine.

:func:`build_trainer` does, in order:
  1. the processes (:func:`~fluxir.train.engine.init_world`) and this one's device;
  2. the pairs of ``train.manifest``, the held-out split and the size-bucketed batches;
  3. the base FLUX (its text encoders skipped when the latent cache already holds the prompt embeddings)
     and a fresh FluxIR adapter, seeded by ``train.seed``;
  4. the latent cache, built here when incomplete (every process encodes its share);
  5. the engine (DeepSpeed or torch) over the controlled model.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import torch
from accelerate.utils import set_seed

from fluxir.config import Config, ConfigError
from fluxir.io import sha256_file
from fluxir.models.adapter import FluxIRAdapter
from fluxir.models.flux import DTYPES, NO_TEXT_ENCODERS, load_flux, resolve_base
from fluxir.restoration.pipeline import FluxIRPipeline
from fluxir.train.data import (
    BucketBatches,
    LatentCache,
    Pair,
    PairLatents,
    cache_key,
    files_digest,
    read_pairs,
    split_heldout,
)
from fluxir.train.engine import World, barrier, build_engine, init_world
from fluxir.train.losses import vae_decoder
from fluxir.train.trainer import Prompt, TrainData, Trainer

log = logging.getLogger(__name__)


def build_trainer(config: Config, trainer_class: type[Trainer] = Trainer) -> Trainer:
    """Everything a run needs from params: processes, data, cached latents, base + adapter, engine."""
    cfg = config.train
    if config.model.dtype == "float16":
        raise ConfigError("model.dtype='float16': training runs in float32 (CPU) or bfloat16 (GPU)")
    world = init_world(cfg.engine, config.model.device)
    dtype = DTYPES[config.model.dtype]
    scale, max_len = config.degrade.scale, config.model.max_sequence_length
    pairs = read_pairs(cfg.manifest)
    train_pairs, val_pairs = split_heldout(pairs, cfg.val_size)
    batches = BucketBatches([(p.height, p.width) for p in train_pairs], cfg.batch_size, cfg.seed)

    # Base model; the text encoders are skipped when the cache already holds the prompt embeddings.
    source = resolve_base(config.model.base, config.model.tiny_dir)
    manifest_sha = sha256_file(cfg.manifest)

    def make_cache() -> LatentCache | None:
        folder = _local_snapshot(source)
        if not cfg.cache_latents or folder is None:
            return None
        return LatentCache(
            cfg.cache_dir, cache_key(manifest_sha, files_digest(folder), dtype, scale, max_len)
        )

    cache = make_cache()
    skip_text = cache is not None and cache.complete
    base = load_flux(
        source, torch_dtype=dtype, device=world.device, **(NO_TEXT_ENCODERS if skip_text else {})
    )
    # The SE squeeze layers' random init (torch), and Python's and NumPy's global generators too: the
    # trainer saves all three in each checkpoint, so unseeded ones made every checkpoint (a DVC output)
    # differ between identical runs.
    set_seed(cfg.seed)
    adapter = FluxIRAdapter.from_flux(
        base.transformer,
        rank=cfg.rank,
        control=cfg.control,
        text_control=cfg.text_control,
        learnable_embeddings=cfg.learnable_embeddings,
        max_sequence_length=max_len,
        dtype=torch.float32,
    )
    pipe = FluxIRPipeline(base, adapter, max_sequence_length=max_len)
    if skip_text:
        # The text encoders were skipped: the empty-prompt embeddings come from the latent cache.
        pipe.set_empty_prompt(*(x.to(world.device, dtype) for x in cache.load_prompt()))
    else:
        pipe.empty_prompt()
        base.text_encoder = base.text_encoder_2 = None  # no longer needed: free their memory
        cache = cache or make_cache()  # a hub id is only in the local cache after loading
    if cache is not None and not cache.complete:
        meta = {"manifest": str(cfg.manifest), "base": str(source), "dtype": str(dtype)}
        _build_cache(cache, pairs, scale, pipe, world, meta)
    encode = None if cache is not None else pipe.encode
    data = TrainData(
        train=PairLatents(train_pairs, scale, cache, encode),
        batches=batches,
        val=PairLatents(val_pairs, scale, cache, encode),
        scale=scale,
    )

    if cfg.gradient_checkpointing:
        pipe.model.enable_gradient_checkpointing()
        base.vae.enable_gradient_checkpointing()  # the pixel loss backpropagates through the decoder
    use_pixel = cfg.pixel_loss and cfg.alpha > 0
    engine = build_engine(pipe.model, cfg, world, dtype)
    log.info(
        "train: %d pairs (%d held out) in %d size bucket(s), %d batches/epoch; %d process(es) on %s, %s",
        len(pairs),
        len(val_pairs),
        len(batches.buckets),
        batches.batches_per_epoch,
        world.size,
        world.device,
        cfg.engine,
    )
    return trainer_class(
        config,
        pipe.model,
        engine,
        world,
        Prompt(*pipe.empty_prompt()),
        vae_decoder(base.vae) if use_pixel else None,
        data=data,
        pipe=pipe,
        compute_dtype=dtype,
        latent_channels=base.vae.config.latent_channels,
    )


def _build_cache(
    cache: LatentCache,
    pairs: Sequence[Pair],
    scale: int,
    pipe: FluxIRPipeline,
    world: World,
    meta: dict[str, str],
) -> None:
    """Every process encodes its share of the missing latents; process 0 adds the prompt and the index."""
    made = cache.build(pairs, scale, pipe.encode, world.rank, world.size)
    log.info("latent cache %s: encoded %d pair(s)", cache.folder, made)
    if world.is_main:
        cache.save_prompt(*pipe.empty_prompt())
    barrier(world)
    if world.is_main:
        cache.finish(pairs, meta)
    barrier(world)


def _local_snapshot(source: str) -> Path | None:
    """The local folder of a base: the folder itself, or a hub id's snapshot in the HF cache (None if absent)."""
    folder = Path(source).expanduser()
    if folder.is_dir():
        return folder
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(source, local_files_only=True))
    except Exception:  # not downloaded yet (or not a hub id): no cache key before loading
        return None
