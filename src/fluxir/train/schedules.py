"""Learning-rate multipliers: linear warm-up, then constant or cosine decay.

The paper trains with AdamW at a fixed lr of 1e-5 (section 4.1) and states no schedule, so ``constant``
is the faithful choice; warm-up and cosine are there for short runs. Use with
``torch.optim.lr_scheduler.LambdaLR(opt, functools.partial(lr_multiplier, warmup_steps=..., total_steps=...))``.
"""

from __future__ import annotations

import math
from typing import Literal

ScheduleKind = Literal["constant", "cosine"]


def lr_multiplier(step: int, warmup_steps: int, total_steps: int, kind: ScheduleKind = "constant") -> float:
    """The factor on the base lr at optimizer step ``step`` (0-based).

    Warm-up ramps linearly as ``(step + 1) / warmup_steps``, so the first step already trains and step
    ``warmup_steps - 1`` reaches 1. After it, ``constant`` stays at 1 and ``cosine`` follows
    ``0.5 (1 + cos(pi p))`` with ``p = (step - warmup_steps) / (total_steps - warmup_steps)``, reaching 0
    at ``total_steps`` and staying there.
    """
    if step < 0:
        raise ValueError(f"step={step}: must be >= 0")
    if total_steps < 1:
        raise ValueError(f"total_steps={total_steps}: must be >= 1")
    if not 0 <= warmup_steps <= total_steps:
        raise ValueError(f"warmup_steps={warmup_steps}: must be in [0, total_steps={total_steps}]")
    if kind not in ("constant", "cosine"):
        raise ValueError(f"kind={kind!r}: must be 'constant' or 'cosine'")

    if step < warmup_steps:
        return (step + 1) / warmup_steps
    if kind == "constant":
        return 1.0
    decay_steps = total_steps - warmup_steps
    if decay_steps == 0:
        return 1.0 if step < total_steps else 0.0
    progress = min(1.0, (step - warmup_steps) / decay_steps)
    return 0.5 * (1.0 + math.cos(math.pi * progress))
