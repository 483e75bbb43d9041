"""Exponential moving average of the adapter's weights (``train.ema_decay``; 0, the paper's setting, is off).

After every optimizer step, for every trainable adapter parameter (its fp32 master weight):

    ema <- d_k ema + (1 - d_k) w,     d_k = min(ema_decay, (1 + k) / (10 + k)),  k = updates so far

The warm-up of d_k is diffusers' ``EMAModel`` default: early averages are not dominated by the initial
(zero-excitation) weights, which matters for short runs. The average starts at the initial weights and
lives in fp32 on the training device; every process keeps the same copy (ZeRO gathers the masters).

Checkpoints hold it as ``ema.safetensors`` (with the update count), written by process 0 into the partial
folder, so a resumed run continues the very same average; the exported adapter folder gets the full EMA
state dict (frozen parameters as trained) in ``ema.safetensors`` beside the raw weights, which
``FluxIRAdapter.from_pretrained`` loads in their place (restore, benchmark). Validation and image grids
during training use the raw weights.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import torch

from fluxir.models.adapter_files import EMA_FILE, save_ema
from fluxir.train.engine import Engine, TorchEngine


def master_weights(engine: Engine) -> dict[str, torch.Tensor]:
    """The fp32 master weights of the adapter's trainable parameters, by name, on the device.

    The torch engine trains the fp32 parameters themselves; DeepSpeed keeps the masters in its optimizer
    (the module may hold bf16 copies, or ZeRO-3 partitions) and gathers them on every process.
    """
    named = [(n, p) for n, p in engine.module.adapter.named_parameters() if p.requires_grad]
    if isinstance(engine, TorchEngine):
        return {n: p.detach() for n, p in named}
    from deepspeed.utils import safe_get_full_fp32_param

    weights = {}
    for name, p in named:
        full = safe_get_full_fp32_param(p)
        weights[name] = (full if full is not None else p).detach()
    return weights


class AdapterEMA:
    """The moving average of the adapter's trainable weights (see the module docstring)."""

    def __init__(self, decay: float, weights: Mapping[str, torch.Tensor]):
        if not 0 < decay < 1:
            raise ValueError(f"EMA decay {decay}: must be in (0, 1)")
        self.decay = decay
        self.shadow = {k: v.detach().float().clone() for k, v in weights.items()}
        self.updates = 0

    def decay_at(self, updates: int) -> float:
        return min(self.decay, (1 + updates) / (10 + updates))

    @torch.no_grad()
    def update(self, weights: Mapping[str, torch.Tensor]) -> None:
        d = self.decay_at(self.updates)
        for name, shadow in self.shadow.items():
            shadow.mul_(d).add_(weights[name].float(), alpha=1 - d)
        self.updates += 1

    def full_state(self, adapter_state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """An adapter state dict with the averaged weights in place of the trained ones (CPU, fp32)."""
        return {k: self.shadow.get(k, v).detach().float().cpu() for k, v in adapter_state.items()}

    # ------------------------------------------------------------------ checkpoints
    def save(self, folder: str | Path) -> Path:
        from safetensors.torch import save_file

        path = Path(folder) / EMA_FILE
        tensors = {k: v.cpu().contiguous() for k, v in self.shadow.items()}
        save_file(tensors, str(path), metadata={"updates": str(self.updates), "decay": repr(self.decay)})
        return path

    def load(self, folder: str | Path) -> None:
        from safetensors import safe_open

        path = Path(folder) / EMA_FILE
        if not path.is_file():
            raise FileNotFoundError(f"{path}: checkpoint without the EMA of a run with train.ema_decay > 0")
        with safe_open(str(path), framework="pt") as f:
            self.updates = int(f.metadata()["updates"])
            for name, shadow in self.shadow.items():
                shadow.copy_(f.get_tensor(name))

    def export(self, folder: str | Path, adapter_state: Mapping[str, torch.Tensor]) -> Path:
        """Write the full EMA state dict beside an exported adapter's weights."""
        return save_ema(folder, self.full_state(adapter_state))
