"""The one training loop of pretraining: AdamW, warm-up + cosine learning rate, atomic checkpoints, resume.

The VAE and the prior differ only in their loss; both hand ``train`` a ``loss_at(step)`` closure whose
randomness depends on the step alone, so a run resumed from a checkpoint is bitwise equal to an
uninterrupted one.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from pathlib import Path

import torch
from tqdm.auto import tqdm

from fluxir.pretrain.checkpoint import TrainState, load_state, save_state

log = logging.getLogger(__name__)

WARMUP_FRACTION = 0.05
FINAL_LR_FRACTION = 0.05


def lr_at(step: int, steps: int, peak: float) -> float:
    """Linear warm-up over the first 5% of steps, then cosine decay to 5% of ``peak``."""
    warmup = max(1, round(WARMUP_FRACTION * steps))
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = (step - warmup) / max(1, steps - warmup)
    return peak * (FINAL_LR_FRACTION + (1 - FINAL_LR_FRACTION) * 0.5 * (1 + math.cos(math.pi * progress)))


def train(
    model: torch.nn.Module,
    loss_at: Callable[[int], torch.Tensor],
    *,
    steps: int,
    lr: float,
    checkpoint: Path,
    fingerprint: str,
    checkpoint_every: int,
    desc: str,
    weight_decay: float = 0.0,
    stop_after: int | None = None,
) -> list[tuple[int, float]]:
    """Train ``model`` for ``steps`` steps (resuming from ``checkpoint``); returns the (step, loss) curve.

    ``stop_after`` ends the run early after that many steps (a checkpoint is written): tests use it to
    simulate a crash and a resume.
    """
    model.train()
    # fused: one kernel for all parameters. The default for-loop implementation spends 16.7 ms per step on the
    # mini VAE's 184 tensors against 4.0 fused (two threads), a few percent of a step; the update is the same.
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay, fused=True)
    start, curve = 0, []
    state = load_state(checkpoint, fingerprint)
    if state is not None:
        model.load_state_dict(state.model)
        optimizer.load_state_dict(state.optimizer)
        start, curve = state.step, list(state.curve)
        log.info("%s: resuming at step %d of %d from %s", desc, start, steps, checkpoint)

    def save(step: int) -> None:
        save_state(
            checkpoint,
            TrainState(step, model.state_dict(), optimizer.state_dict(), curve, fingerprint),
        )

    t0 = time.perf_counter()
    end = steps if stop_after is None else min(steps, start + stop_after)
    with tqdm(total=steps, initial=start, desc=desc, unit="step", dynamic_ncols=True) as bar:
        for step in range(start, end):
            for group in optimizer.param_groups:
                group["lr"] = lr_at(step, steps, lr)
            loss = loss_at(step)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            curve.append((step, float(loss.detach())))
            bar.update()
            bar.set_postfix(loss=f"{curve[-1][1]:.4f}")
            if (step + 1) % checkpoint_every == 0 or step + 1 == end:
                save(step + 1)
    if end > start:
        log.info("%s: %d steps in %.1f s", desc, end - start, time.perf_counter() - t0)
    model.eval()
    return curve
