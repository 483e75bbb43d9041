"""Files an adapter's ``save_pretrained`` folder may hold beside its weights and config.json.

    prompt.safetensors   the empty-prompt conditioning the adapter was trained with: T5 ``p`` (1, L, D),
                         pooled CLIP ``y`` (1, P) and the text ids (L, 3), L the adapter's
                         max_sequence_length. The prompt is always empty, so with this file restore never
                         loads T5 and CLIP (~9.5 GB of weights at FLUX.1-dev size).
    ema.safetensors      the exponential moving average of the weights (``train.ema_decay`` > 0), a full
                         state dict; loading the folder uses it instead of the raw weights.

Both are stored in float32: the training dtype (float32 or bfloat16) widens to it exactly, so a restore in
the training dtype gets the very values training used. The keys of the prompt file are those of
``fluxir.restoration.single`` (the MLflow model's prompt artefact), so either file serves both.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

PROMPT_FILE = "prompt.safetensors"
PROMPT_KEYS = ("prompt_embeds", "pooled", "text_ids")
EMA_FILE = "ema.safetensors"


@dataclass(frozen=True)
class StoredPrompt:
    """The empty-prompt conditioning: T5 embeddings (1, L, D), pooled CLIP (1, P), text ids (L, 3)."""

    embeds: torch.Tensor
    pooled: torch.Tensor
    text_ids: torch.Tensor

    def to(self, device: str | torch.device, dtype: torch.dtype) -> StoredPrompt:
        # diffusers' encode_prompt returns all three in the model dtype, text ids included.
        return StoredPrompt(*(t.to(device, dtype) for t in self.as_tuple()))

    def as_tuple(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return self.embeds, self.pooled, self.text_ids


def save_prompt(folder: str | Path, prompt: StoredPrompt) -> Path:
    """Write ``prompt.safetensors`` into ``folder`` (float32, CPU)."""
    from safetensors.torch import save_file

    path = Path(folder) / PROMPT_FILE
    tensors = {
        k: t.detach().float().cpu().contiguous() for k, t in zip(PROMPT_KEYS, prompt.as_tuple(), strict=True)
    }
    save_file(tensors, str(path))
    return path


def load_prompt(folder: str | Path) -> StoredPrompt | None:
    """The stored empty prompt of an adapter folder, or None for a folder saved without one."""
    path = Path(folder) / PROMPT_FILE
    return read_prompt(path) if path.is_file() else None


def read_prompt(path: str | Path) -> StoredPrompt:
    """A prompt file (``prompt.safetensors`` in an adapter folder, or an MLflow model's prompt artefact)."""
    from safetensors.torch import load_file

    tensors = load_file(str(path))
    return StoredPrompt(*(tensors[k] for k in PROMPT_KEYS))


def save_ema(folder: str | Path, state: dict[str, torch.Tensor]) -> Path:
    """Write the EMA weights (a full adapter state dict) as ``ema.safetensors`` into ``folder``."""
    from safetensors.torch import save_file

    path = Path(folder) / EMA_FILE
    save_file({k: v.detach().float().cpu().contiguous() for k, v in state.items()}, str(path))
    return path


def load_ema(folder: str | Path) -> dict[str, torch.Tensor] | None:
    """The EMA weights of an adapter folder, or None when it was trained without EMA."""
    from safetensors.torch import load_file

    path = Path(folder) / EMA_FILE
    return load_file(str(path)) if path.is_file() else None
