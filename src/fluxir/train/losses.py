"""FluxIR's training loss (paper section 3.3, eq. 7-10).

With ``z0`` the clean latent, ``z1`` Gaussian noise and ``z_t = (1 - t) z0 + t z1`` (eq. 1):

- eq. 7:  ``v_gt = z1 - z0``, the rectified-flow velocity target.
- eq. 8:  ``L_MSE = ||v_p - v_gt||^2``, velocity regression in latent space.
- eq. 9:  ``L_P = ||V_d(z0 + t v_p) - V_d(z0 + t v_gt)||_1``, an L1 loss between VAE decodings
  (``V_d`` = VAE decoder), computed exactly as printed.
- eq. 10: ``L = L_MSE + alpha L_P``, alpha = 1.

Note on eq. 9 as printed: ``z0 + t v_gt = z0 + t (z1 - z0) = z_t``, the noisy input itself, and
``z0 + t v_p`` is the latent the predicted velocity would give at the same point. The term therefore
compares, in pixel space, where the prediction lands against the true ``z_t``; it is zero at t = 0 and
largest at t = 1. That printed form is the default (``pixel_target="printed"``).

The pixel-space work the paper cites decodes the clean estimate instead: ``x0_hat = z_t - t v_p``
against ``z0``, i.e. ``L_P = ||V_d(z_t - t v_p) - V_d(z0)||_1`` (``pixel_target="x0"``,
``train.pixel_target: x0``, an ablation row of Table 3). The latent errors of the two forms are equal
and opposite (``t (v_p - v_gt)`` and ``t (v_gt - v_p)``), so through a linear decoder they give the same
L1; through the VAE decoder, which is not linear, they differ: the printed form decodes noisy latents
around ``z_t``, the x0 form clean ones around ``z0``. Both are zero when ``v_p = v_gt``.

Norms are means, not sums: ``L_MSE`` is the mean of squares over every latent element and ``L_P`` the
mean absolute difference over every decoded pixel value, so alpha weighs two per-element averages and
neither term scales with batch or image size.

Latents are the VAE's scaled latents, ``(z - shift) * scale``, unpacked, shape (B, 16, h, w); ``v_p`` and
``v_gt`` have the same layout and ``t`` is (B,), broadcast over the other dims. ``decode`` maps a scaled
latent to an image; ``vae_decoder(vae)`` builds one that undoes the scaling first.

Cost: L_P decodes twice per step and backpropagates through the decoder once; it was ~60% of a step at
FLUX.1-dev shapes. The target decode needs no gradient, so it runs under ``torch.inference_mode`` (no
graph, no saved activations) in the decoder's dtype, the training one. ``crop`` (``train.pixel_crop``,
default off) decodes both latents on the same random square of the latent instead of the whole: the
decoder's cost falls with the area, at the price of a term seen near the crop's borders through the
decoder's zero padding rather than the rest of the image.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

Decode = Callable[[torch.Tensor], torch.Tensor]
PIXEL_TARGETS = ("printed", "x0")
"""Forms of eq. 9: as printed (noisy latents) or on the clean estimate (see the module docstring)."""


@dataclass(frozen=True)
class Crop:
    """A window of the latent, (top, left, height, width) in latent pixels."""

    top: int
    left: int
    height: int
    width: int

    def apply(self, latents: torch.Tensor) -> torch.Tensor:
        return latents[..., self.top : self.top + self.height, self.left : self.left + self.width]


def draw_crop(height: int, width: int, size: int, generator: torch.Generator | None = None) -> Crop | None:
    """A uniformly placed ``size`` x ``size`` window (clipped to the latent) of an (height, width) latent;
    None when ``size`` is 0 or covers the whole latent."""
    if size <= 0 or (size >= height and size >= width):
        return None
    h, w = min(size, height), min(size, width)
    top = int(torch.randint(0, height - h + 1, (1,), generator=generator))
    left = int(torch.randint(0, width - w + 1, (1,), generator=generator))
    return Crop(top, left, h, w)


@dataclass(frozen=True)
class LossTerms:
    """The loss and its parts, each a 0-dim float32 tensor; ``pixel`` is 0 when the pixel loss is off."""

    total: torch.Tensor
    mse: torch.Tensor
    pixel: torch.Tensor


def velocity_target(z0: torch.Tensor, z1: torch.Tensor) -> torch.Tensor:
    """``v_gt = z1 - z0`` (eq. 7): from clean latent ``z0`` to noise ``z1``."""
    return z1 - z0


def vae_decoder(vae) -> Decode:
    """A ``decode`` for :func:`fluxir_loss`: scaled latent -> image, undoing ``(z - shift) * scale`` first.

    ``vae`` is a diffusers ``AutoencoderKL`` (its ``config.scaling_factor`` and ``config.shift_factor``).
    """
    scale = vae.config.scaling_factor
    shift = vae.config.shift_factor or 0.0

    def decode(latents: torch.Tensor) -> torch.Tensor:
        return vae.decode((latents / scale + shift).to(vae.dtype)).sample

    return decode


def fluxir_loss(
    v_pred: torch.Tensor,
    v_target: torch.Tensor,
    z0: torch.Tensor,
    t: torch.Tensor,
    decode: Decode | None = None,
    alpha: float = 1.0,
    pixel_loss: bool = True,
    pixel_target: str = "printed",
    crop: Crop | None = None,
) -> LossTerms:
    """``L = L_MSE + alpha L_P`` (eq. 10) for predicted velocity ``v_pred`` and target ``v_target`` (eq. 7).

    ``pixel_target`` picks the form of L_P: "printed" (eq. 9 as printed) or "x0" (the clean estimate).

    Gradients reach ``v_pred`` only: ``v_target``, ``z0`` and ``t`` are data and are detached, and the
    target decoding runs under inference mode. ``crop`` decodes both latents on that window only. ``pixel_loss=False`` or ``alpha=0`` (the Table 3 "w/o L_P"
    rows) returns the MSE alone and never calls ``decode``.
    """
    if v_pred.shape != v_target.shape or v_pred.shape != z0.shape:
        raise ValueError(
            f"v_pred {tuple(v_pred.shape)}, v_target {tuple(v_target.shape)} and z0 {tuple(z0.shape)} "
            "must have the same shape"
        )
    if t.shape != (z0.shape[0],):
        raise ValueError(f"t {tuple(t.shape)} must have shape (batch,) = ({z0.shape[0]},)")
    if alpha < 0:
        raise ValueError(f"alpha={alpha}: must be >= 0")
    if pixel_target not in PIXEL_TARGETS:
        raise ValueError(f"pixel_target={pixel_target!r}: must be one of {', '.join(PIXEL_TARGETS)}")

    v_target, z0, t = v_target.detach(), z0.detach(), t.detach()
    mse = (v_pred.float() - v_target.float()).square().mean()  # eq. 8
    use_pixel = pixel_loss and alpha != 0
    if not use_pixel:
        zero = torch.zeros((), dtype=torch.float32, device=mse.device)
        return LossTerms(total=mse, mse=mse, pixel=zero)
    if decode is None:
        raise ValueError("the pixel loss (eq. 9) needs a decode callable; pass pixel_loss=False to skip it")

    t_b = t.to(z0.dtype).reshape(-1, *([1] * (z0.ndim - 1)))  # (B,) -> (B, 1, 1, 1)
    v_pred_ = v_pred.to(z0.dtype)
    if pixel_target == "printed":
        z_pred = z0 + t_b * v_pred_  # eq. 9, first term
        z_target = z0 + t_b * v_target  # eq. 9, second term; equals z_t
    else:
        z_t = z0 + t_b * v_target  # = (1 - t) z0 + t z1, the model's input
        z_pred, z_target = z_t - t_b * v_pred_, z0  # the clean estimate x0_hat against z0
    if crop is not None:
        z_pred, z_target = crop.apply(z_pred), crop.apply(z_target)
    x_pred = decode(z_pred)
    # No graph and no saved activations for the target: only the prediction's decode is backpropagated
    # (the L1's backward does not need the target's values kept for autograd).
    with torch.inference_mode():
        x_target = decode(z_target)
    pixel = (x_pred.float() - x_target.float()).abs().mean()
    return LossTerms(total=mse + alpha * pixel, mse=mse, pixel=pixel)  # eq. 10
