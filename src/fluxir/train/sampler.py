"""Timestep samplers for flow-matching training (paper section 3.3, eq. 5-6).

FluxIR draws ``u ~ U(-eps, 1 + eps)`` and clamps it to ``[0, 1]`` (eq. 5-6). The clamp puts a point mass
of ``eps / (1 + 2 eps)`` (0.0455 for eps = 0.05) on each endpoint, so the model sees pure noise (t = 1)
and the clean latent (t = 0) regularly, which a plain uniform draw almost never hits; in between, t is
uniform. SD3's logit-normal sampler, ``t = sigmoid(N(mean, std))``, is the Table 3 baseline.

A sampler is a callable ``(batch, generator, device) -> t`` returning a float32 tensor of shape (batch,).
Draws come from ``generator`` (on its own device) and are then moved to ``device``, so a seeded CPU
generator gives the same timesteps whatever device trains.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, Protocol

import torch

SamplerKind = Literal["clamped_uniform", "logit_normal"]


class TimestepSampler(Protocol):
    def __call__(
        self, batch: int, generator: torch.Generator | None = None, device: torch.device | str = "cpu"
    ) -> torch.Tensor: ...


def _draw(
    draw: Callable[..., torch.Tensor],
    batch: int,
    generator: torch.Generator | None,
    device: torch.device | str,
) -> torch.Tensor:
    """``batch`` float32 values of ``draw`` (torch.rand, torch.randn) from ``generator``, on its own device
    (torch requires the generator and the output on the same device)."""
    on = generator.device if generator is not None else torch.device(device)
    return draw(batch, generator=generator, device=on, dtype=torch.float32)


@dataclass(frozen=True)
class ClampedUniform:
    """``t = clamp(U(-eps, 1 + eps), 0, 1)`` (eq. 5-6); ``eps = 0`` is plain U(0, 1)."""

    eps: float = 0.05

    def __post_init__(self) -> None:
        if not self.eps >= 0:
            raise ValueError(f"eps={self.eps}: must be >= 0")

    def __call__(
        self, batch: int, generator: torch.Generator | None = None, device: torch.device | str = "cpu"
    ) -> torch.Tensor:
        r = _draw(torch.rand, batch, generator, device)
        u = r * (1 + 2 * self.eps) - self.eps  # eq. 5: U(-eps, 1 + eps)
        return u.clamp_(0.0, 1.0).to(device)  # eq. 6


@dataclass(frozen=True)
class LogitNormal:
    """SD3's logit-normal sampler (Esser et al. 2024): ``t = sigmoid(N(mean, std))``."""

    mean: float = 0.0
    std: float = 1.0

    def __post_init__(self) -> None:
        if not self.std > 0:
            raise ValueError(f"std={self.std}: must be > 0")

    def __call__(
        self, batch: int, generator: torch.Generator | None = None, device: torch.device | str = "cpu"
    ) -> torch.Tensor:
        n = _draw(torch.randn, batch, generator, device)
        return torch.sigmoid(n * self.std + self.mean).to(device)


def make_sampler(
    kind: SamplerKind, eps: float = 0.05, mean: float = 0.0, std: float = 1.0
) -> ClampedUniform | LogitNormal:
    """The timestep sampler named ``kind``; ``eps`` applies to clamped_uniform, ``mean``/``std`` to logit_normal."""
    if kind == "clamped_uniform":
        return ClampedUniform(eps=eps)
    if kind == "logit_normal":
        return LogitNormal(mean=mean, std=std)
    raise ValueError(f"kind={kind!r}: must be one of 'clamped_uniform', 'logit_normal'")
