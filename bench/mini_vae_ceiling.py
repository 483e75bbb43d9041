"""How far the mini VAE is from what its latent layout allows, on the held-out photo crops it is scored on.

The mini VAE (FLUX.1's layout: x8 down, 16 latent channels) caps every method that decodes through it, so
this asks whether the cap is the layout or the training. On the crops of ``fluxir pretrain``'s held-out
evaluation (pretrain.prior_crop px, every pyramid level, the same seed) it prints the RGB PSNR of:
  vae          the trained mini VAE (posterior mean), as ``reports/mini/pretrain/metrics.json`` records;
  block-mean   each 8x8 block replaced by its mean colour: 3 numbers per block, no training;
  pca-16       a linear code of 16 numbers per 8x8x3 block (principal components fitted on crops of the
               training photos): the same 16 values per 8x8 block as the VAE's latent, linear both ways.
A pca-16 figure far above vae means the layout holds more than the trained network gets out of it.

    python bench/mini_vae_ceiling.py                         # the mini pipeline's base and photos
    python bench/mini_vae_ceiling.py --params mini/params.yaml --model data/mini/models/mini-flux
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from fluxir.config import load_config
from fluxir.pretrain import crops as C
from fluxir.pretrain import photos as P
from fluxir.pretrain import vae as V

BLOCK = 8  # FLUX.1's VAE downsampling
LATENT = 16  # its latent channels


def _psnr(x: torch.Tensor, y: torch.Tensor) -> float:
    """Mean per-crop RGB PSNR, quantised to 8 bits as pretrain's VAE figure is."""
    return float(V.psnr_8bit(x, y).mean())


def _blocks(x: torch.Tensor) -> torch.Tensor:
    """(N, 3, H, W) -> (N * H/8 * W/8, 192): every 8x8x3 block as a row."""
    n, c, h, w = x.shape
    b = x.reshape(n, c, h // BLOCK, BLOCK, w // BLOCK, BLOCK).permute(0, 2, 4, 1, 3, 5)
    return b.reshape(-1, c * BLOCK * BLOCK)


def _unblocks(rows: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    n, c, h, w = shape
    b = rows.reshape(n, h // BLOCK, w // BLOCK, c, BLOCK, BLOCK).permute(0, 3, 1, 4, 2, 5)
    return b.reshape(n, c, h, w)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--params", default="mini/params.yaml")
    parser.add_argument("--model", default=None, help="mini FluxPipeline folder (default: model.base)")
    parser.add_argument(
        "--fit-crops", type=int, default=4, help="training crops per pyramid level for pca-16"
    )
    args = parser.parse_args()
    cfg = load_config(args.params).pretrain
    model = Path(args.model or load_config(args.params).model.base)

    held_out = P.load_split(cfg.photos_dir, P.HELD_OUT)
    # the crops fluxir.pretrain.build scores the VAE on
    crops = C.eval_crops(held_out, cfg.pyramid_levels, cfg.prior_crop, cfg.eval_crops_per_photo, cfg.seed)
    train_photos = P.load_split(cfg.photos_dir, P.TRAIN)
    train = C.eval_crops(train_photos, cfg.pyramid_levels, cfg.prior_crop, args.fit_crops, cfg.seed + 1)

    from diffusers import AutoencoderKL

    vae = AutoencoderKL.from_pretrained(model, subfolder="vae").eval()
    with torch.no_grad():
        figures = {"vae": float(V.psnr(vae, crops).mean())}
    blocks = _blocks(crops).double()
    means = blocks.reshape(len(blocks), 3, -1).mean(dim=2, keepdim=True).expand(-1, -1, BLOCK * BLOCK)
    figures["block-mean"] = _psnr(crops, _unblocks(means.reshape(len(blocks), -1).float(), crops.shape))
    fit = _blocks(train).double()
    centre = fit.mean(dim=0)
    basis = torch.linalg.svd(fit - centre, full_matrices=False).Vh[:LATENT]
    coded = (blocks - centre) @ basis.T @ basis + centre
    figures[f"pca-{LATENT}"] = _psnr(crops, _unblocks(coded.float(), crops.shape))

    print(f"{len(crops)} held-out crops of {cfg.prior_crop} px ({', '.join(sorted(held_out))}); RGB PSNR:")
    for name, value in figures.items():
        print(f"  {name:<11} {value:6.2f} dB")
    print(f"pca-{LATENT} over vae: {figures[f'pca-{LATENT}'] - figures['vae']:+.2f} dB")


if __name__ == "__main__":
    main()
