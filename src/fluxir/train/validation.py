"""Held-out checks during and after training: a deterministic validation loss, image grids and PSNR.

- Validation loss: the training loss (eq. 10) on held-out pairs at fixed t values with fixed noise, so
  two evaluations of the same weights give the same number and curves compare across runs.
- Grid: LQ (bicubic to HQ size) | restored | HQ of one held-out pair, restored by :class:`FluxIRPipeline`
  with a few Euler steps.
- PSNR: ``restore.steps``-step restoration vs the bicubic upscale, both against HQ, with Table 1's
  definition (:func:`fluxir.iqa.psnr`: YCbCr Y, the scale cut from every border, peak 255), so the
  trainer's ``psnr_restored`` and the benchmark's PSNR measure the same thing. With the tiny
  random-weight model the numbers test plumbing, not quality.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch

from fluxir.iqa import psnr
from fluxir.restoration.pipeline import FluxIRPipeline, RestoreOptions, upscale_lq
from fluxir.train.data import Pair, pair_images
from fluxir.train.losses import LossTerms

# (z0, z_lq, t, noise) -> loss terms, without gradients; the trainer's forward + loss.
LossFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor], LossTerms]
VAL_NOISE_SEED = 1_000_003  # fixed: independent of train.seed, so runs with other seeds compare


def val_noise(index: int, shape: Sequence[int]) -> torch.Tensor:
    """The fixed noise of held-out pair ``index`` (one draw per t value: shape (len(t), C, h, w))."""
    generator = torch.Generator().manual_seed(VAL_NOISE_SEED + index)
    return torch.randn(tuple(shape), generator=generator)


@torch.no_grad()
def validation_loss(
    latents: Sequence[tuple[torch.Tensor, torch.Tensor]], timesteps: Sequence[float], loss_fn: LossFn
) -> dict[str, float]:
    """Mean loss terms over held-out pairs ``(z0, z_lq)`` (each (C, h, w)), every pair at every t."""
    t = torch.tensor(list(timesteps), dtype=torch.float32)
    sums = torch.zeros(3, dtype=torch.float64)
    for index, (z0, z_lq) in enumerate(latents):
        n = len(t)
        noise = val_noise(index, (n, *z0.shape))
        terms = loss_fn(z0.expand(n, *z0.shape), z_lq.expand(n, *z_lq.shape), t, noise)
        sums += torch.stack([terms.total, terms.mse, terms.pixel]).double().cpu()
    mean = (sums / max(len(latents), 1)).tolist()
    return {"val_loss": mean[0], "val_mse": mean[1], "val_pixel": mean[2]}


def restore_grid(
    pipe: FluxIRPipeline, pair: Pair, scale: int, steps: int, guidance: float, seed: int = 0
) -> np.ndarray:
    """LQ (bicubic x scale) | restored | HQ side by side, (H, 3W, 3) uint8."""
    hq, lq, control = pair_images(pair, scale)
    restored = pipe(
        lq, RestoreOptions(scale=scale, steps=steps, guidance=guidance, tile=_whole(hq), overlap=0, seed=seed)
    )
    return np.concatenate([control, restored, hq], axis=1)


def _whole(image: np.ndarray) -> int:
    # One tile covering the image (rounded up to the 16-pixel grid): held-out pairs are training-size crops.
    return -(-max(image.shape[:2]) // 16) * 16


def heldout_psnr(
    pipe: FluxIRPipeline, pairs: Sequence[Pair], scale: int, steps: int, guidance: float, seed: int = 0
) -> dict[str, float]:
    """Mean PSNR over ``pairs`` of the ``steps``-step restoration and of the bicubic upscale, vs HQ.

    YCbCr Y with ``scale`` pixels cut from each border: the benchmark's default PSNR.
    """
    restored, bicubic = [], []
    for pair in pairs:
        hq, lq, _ = pair_images(pair, scale)
        out = pipe(
            lq,
            RestoreOptions(
                scale=scale, steps=steps, guidance=guidance, tile=_whole(hq), overlap=0, seed=seed
            ),
        )
        restored.append(psnr(out, hq, "y", border=scale))
        bicubic.append(psnr(upscale_lq(lq, scale), hq, "y", border=scale))
    return {
        "psnr_restored": float(np.mean(restored)),
        "psnr_bicubic": float(np.mean(bicubic)),
        "psnr_pairs": len(pairs),
        "psnr_steps": steps,
    }
