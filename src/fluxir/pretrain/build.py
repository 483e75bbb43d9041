"""The whole mini pretraining run: photos -> VAE -> latent statistics -> prior -> FluxPipeline folder.

``run_pretrain(cfg)`` writes

* ``cfg.out_dir``: a complete diffusers FluxPipeline folder (trained transformer and VAE, the tiny
  model's text encoders and tokenizers, FLUX.1-dev's scheduler config), written atomically and loadable
  by ``fluxir.models.flux.load_flux`` exactly like FLUX.1-dev;
* ``cfg.reports_dir``: ``vae_loss.csv`` and ``prior_loss.csv`` (step, loss) for DVC plots,
  ``metrics.json`` (held-out VAE PSNR, held-out flow-matching loss at init and end), ``vae_heldout.png``
  (held-out crops over their reconstructions) and ``samples.png`` (empty-prompt samples from the saved
  folder).

Every output is a pure function of code, settings and photos: timings go to the log only. A rerun
resumes each training from its checkpoint in ``cfg.work_dir``.

Run it as ``python -m fluxir.pretrain.build key=value ...`` (any PretrainConfig field).
"""

from __future__ import annotations

import csv
import io
import json
import logging
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from diffusers import FlowMatchEulerDiscreteScheduler, FluxPipeline
from PIL import Image

from fluxir.config import PretrainConfig
from fluxir.io import replace_dir, write_bytes_atomic
from fluxir.models.tiny import FLUX_SCHEDULER, build_tiny_pipeline
from fluxir.pretrain import crops as C
from fluxir.pretrain import photos as P
from fluxir.pretrain.checkpoint import fingerprint, publish_dir
from fluxir.pretrain.prior import (
    build_transformer,
    empty_prompt,
    held_out_loss,
    image_ids,
    latent_bank,
    pack,
    to_model_space,
    train_prior,
)
from fluxir.pretrain.vae import latent_stats, mean_psnr, psnr, set_latent_stats, train_vae

log = logging.getLogger(__name__)

BANK_CROPS_STREAM = 5  # step_rng stream of the prior's training crops


def _write_atomic(path: Path, data: bytes) -> None:
    write_bytes_atomic(path, data)


def write_curve(path: Path, curve: list[tuple[int, float]]) -> None:
    """A (step, loss) CSV for DVC plots."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["step", "loss"])
    writer.writerows((step, f"{loss:.6g}") for step, loss in curve)
    _write_atomic(path, buf.getvalue().encode())


def _png(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG", compress_level=6)
    return buf.getvalue()


def image_grid(images: list[Image.Image], columns: int) -> Image.Image:
    """Equal-size images tiled row by row."""
    w, h = images[0].size
    rows = -(-len(images) // columns)
    grid = Image.new("RGB", (columns * w, rows * h))
    for i, image in enumerate(images):
        grid.paste(image, ((i % columns) * w, (i // columns) * h))
    return grid


def _to_pil(x: torch.Tensor) -> list[Image.Image]:
    arr = ((x.clamp(-1, 1) + 1) * 127.5).round().byte().permute(0, 2, 3, 1).numpy()
    return [Image.fromarray(a) for a in arr]


def assemble_pipeline(vae, transformer, seed: int) -> FluxPipeline:
    """The trained VAE and transformer with the tiny model's text encoders, tokenizers and FLUX's scheduler."""
    tiny = build_tiny_pipeline(seed)
    return FluxPipeline(
        scheduler=FlowMatchEulerDiscreteScheduler(**FLUX_SCHEDULER),
        vae=vae,
        text_encoder=tiny.text_encoder,
        tokenizer=tiny.tokenizer,
        text_encoder_2=tiny.text_encoder_2,
        tokenizer_2=tiny.tokenizer_2,
        transformer=transformer,
    )


def save_pipeline(pipe: FluxPipeline, out_dir: Path, note: str) -> Path:
    """Save ``pipe`` in diffusers format to ``out_dir`` atomically (temporary folder, then rename)."""
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        pipe.save_pretrained(tmp, safe_serialization=True)
        (tmp / "FLUXIR_MINI.txt").write_text(note)
        publish_dir(tmp)
        replace_dir(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out_dir


def sample_grid(folder: Path, cfg: PretrainConfig) -> Image.Image:
    """Empty-prompt samples from the saved folder, loaded the way every stage loads a base model."""
    from fluxir.models.flux import load_flux

    pipe = load_flux(folder)
    pipe.set_progress_bar_config(disable=True)
    generator = torch.Generator().manual_seed(cfg.seed)
    images = pipe(
        prompt="",
        height=cfg.grid_size,
        width=cfg.grid_size,
        num_inference_steps=cfg.grid_steps,
        guidance_scale=cfg.grid_guidance,
        num_images_per_prompt=cfg.grid_images,
        generator=generator,
        max_sequence_length=cfg.max_sequence_length,
    ).images
    return image_grid(images, columns=min(8, len(images)))


def _note(cfg: PretrainConfig, records: list[P.PhotoRecord], metrics: dict[str, Any]) -> str:
    lines = [
        "Mini FLUX-architecture pipeline: VAE and transformer trained on CPU on real photos (fluxir.pretrain).",
        "Empty-prompt generator; text encoders are the tiny model's random-weight ones.",
        f"Sample with max_sequence_length={cfg.max_sequence_length} (its training length).",
        f"Held-out VAE PSNR {metrics['vae']['held_out_psnr_db']} dB; held-out flow-matching loss "
        f"{metrics['prior']['held_out_loss_init']} -> {metrics['prior']['held_out_loss_end']}.",
        "",
        "Training photos (name, package, licence as stated by the package):",
    ]
    lines += [
        f"  {r.name} ({r.distribution} {r.version}): {r.licence}" for r in records if r.split == P.TRAIN
    ]
    return "\n".join(lines) + "\n"


def ensure_photos(photos_dir: Path) -> list[P.PhotoRecord]:
    """The photo set's manifest, writing the packaged photos first if the folder has none."""
    if not (photos_dir / P.MANIFEST).is_file():
        P.write_photo_set(photos_dir)
    return P.read_manifest(photos_dir)


def run_pretrain(cfg: PretrainConfig) -> dict[str, Any]:
    """Run (or resume) the whole pretraining and write the pipeline folder and reports; returns the metrics."""
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    photos_dir, work_dir, out_dir = Path(cfg.photos_dir), Path(cfg.work_dir), Path(cfg.out_dir)
    records = ensure_photos(photos_dir)
    train_photos = P.load_split(photos_dir, P.TRAIN)
    held_photos = P.load_split(photos_dir, P.HELD_OUT)
    if not held_photos:
        raise P.PhotoSourceError(f"{photos_dir} has no held-out photo: evaluation would be impossible")
    work_dir.mkdir(parents=True, exist_ok=True)

    t0 = time.perf_counter()
    vae, vae_curve = train_vae(cfg, train_photos, work_dir / "vae.pt")
    held_crops = C.eval_crops(
        held_photos, cfg.pyramid_levels, cfg.prior_crop, cfg.eval_crops_per_photo, cfg.seed
    )
    psnrs = psnr(vae, held_crops)
    log.info(
        "vae: held-out PSNR %.2f dB on %d crops (%.0f s)", psnrs.mean(), len(psnrs), time.perf_counter() - t0
    )

    # The prior's data: one fixed bank of train crops, encoded once; its statistics set shift and scale.
    t1 = time.perf_counter()
    images = C.build_pyramids(train_photos, cfg.pyramid_levels, cfg.prior_crop)
    rng = np.random.default_rng([cfg.seed, BANK_CROPS_STREAM])
    train_raw = latent_bank(vae, C.random_crops(images, cfg.prior_bank, cfg.prior_crop, rng), cfg.seed)
    shift, scale = latent_stats(train_raw)
    set_latent_stats(vae, shift, scale)
    bank = pack(to_model_space(train_raw, shift, scale))
    held = pack(to_model_space(latent_bank(vae, held_crops, cfg.seed + 1), shift, scale))

    pipe = assemble_pipeline(vae, None, cfg.seed)
    text = empty_prompt(pipe, cfg.max_sequence_length)
    side = cfg.prior_crop // 8
    ids = image_ids(side, side)
    loss_init = held_out_loss(build_transformer(cfg, text), held, ids, text, cfg)
    # shift and scale (exact floats) stand for the VAE weights and the bank the prior learns from.
    data_key = fingerprint({"shift": shift, "scale": scale})
    transformer, prior_curve = train_prior(cfg, bank, text, work_dir / "prior.pt", data_key)
    loss_end = held_out_loss(transformer, held, ids, text, cfg)
    log.info("prior: held-out loss %.4f -> %.4f (%.0f s)", loss_init, loss_end, time.perf_counter() - t1)

    metrics = {
        "vae": {
            "held_out_psnr_db": mean_psnr(psnrs),
            "held_out_crops": len(psnrs),
            "crop": cfg.prior_crop,
            "shift_factor": round(shift, 6),
            "scaling_factor": round(scale, 6),
            "parameters": sum(p.numel() for p in vae.parameters()),
        },
        "prior": {
            "held_out_loss_init": round(loss_init, 5),
            "held_out_loss_end": round(loss_end, 5),
            "held_out_reduction": round(1 - loss_end / loss_init, 4),
            "held_out_latents": len(held),
            "parameters": sum(p.numel() for p in transformer.parameters()),
        },
        "photos": {"train": len(train_photos), "held_out": len(held_photos)},
    }

    pipe.transformer = transformer
    pipe.register_modules(transformer=transformer)
    save_pipeline(pipe, out_dir, _note(cfg, records, metrics))

    reports = Path(cfg.reports_dir)
    write_curve(reports / "vae_loss.csv", vae_curve)
    write_curve(reports / "prior_loss.csv", prior_curve)
    _write_atomic(reports / "metrics.json", (json.dumps(metrics, indent=2) + "\n").encode())
    with torch.no_grad():
        shown = held_crops[:: max(1, len(held_crops) // 8)][:8]
        recon = vae.decode(vae.encode(shown).latent_dist.mode()).sample
    _write_atomic(reports / "vae_heldout.png", _png(image_grid(_to_pil(shown) + _to_pil(recon), len(shown))))
    t2 = time.perf_counter()
    _write_atomic(reports / "samples.png", _png(sample_grid(out_dir, cfg)))
    log.info("samples: %.0f s; total %.0f s", time.perf_counter() - t2, time.perf_counter() - t0)
    return metrics


def parse_overrides(args: list[str]) -> PretrainConfig:
    """``key=value`` arguments -> PretrainConfig (values parsed as JSON when they are JSON, else strings)."""
    values: dict[str, Any] = {}
    for arg in args:
        key, sep, raw = arg.partition("=")
        if not sep:
            raise ValueError(f"{arg!r}: expected key=value (a PretrainConfig field)")
        try:
            values[key] = json.loads(raw)
        except json.JSONDecodeError:
            values[key] = raw
    return PretrainConfig(**values)


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    cfg = parse_overrides(sys.argv[1:] if argv is None else argv)
    metrics = run_pretrain(cfg)
    print(json.dumps(metrics, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
