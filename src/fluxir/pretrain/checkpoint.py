"""Atomic, resumable training state: model and optimizer weights, the step, and the loss curve so far.

Only what a resumed run needs to equal an uninterrupted one is saved: the per-step randomness is a
function of (seed, step) (see ``crops.step_rng``) and the learning rate a function of the step, so no RNG
state has to be carried. A checkpoint made under other settings (``fingerprint``) is ignored.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from fluxir.io import atomic_path


def fingerprint(settings: dict[str, Any]) -> str:
    """A short hash of the settings a training run depends on."""
    return hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()[:16]


@dataclass
class TrainState:
    """What is saved every ``checkpoint_every`` steps."""

    step: int
    model: dict[str, torch.Tensor]
    optimizer: dict[str, Any]
    curve: list[tuple[int, float]] = field(default_factory=list)
    """(step, training loss) for every step done."""
    fingerprint: str = ""


def save_state(path: Path, state: TrainState) -> None:
    """Write ``state`` to ``path`` via a temporary file and a rename (a crash leaves the old one intact)."""
    with atomic_path(path) as tmp:
        torch.save(state.__dict__, tmp)


def publish_dir(folder: Path) -> None:
    """Give a folder made by ``tempfile.mkdtemp`` (mode 0700) the mode a plain ``mkdir`` would give."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(folder, 0o777 & ~umask)


def load_state(path: Path, expected_fingerprint: str) -> TrainState | None:
    """The saved state at ``path`` if it exists and was made with the same settings, else None."""
    if not path.is_file():
        return None
    data = torch.load(path, map_location="cpu", weights_only=True)  # tensors and plain values only
    if data.get("fingerprint") != expected_fingerprint:
        return None
    return TrainState(**data)
