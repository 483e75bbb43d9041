"""Resumable training checkpoints: layout, atomic commit, discovery of the newest complete one.

    <out_dir>/checkpoints/step_00000040/
        engine/ ...            the engine's own files: adapter weights, optimizer, lr scheduler
                               (DeepSpeed's save_checkpoint layout, or engine.pt for the torch engine)
        rng_rank<r>.pt         python, numpy, torch (and CUDA) RNG states of each process
        trainer_state.json     step, data position, loss history, config (written last)
    <out_dir>/cost_ledger.json device-seconds spent up to each checkpoint (beside the folder, not in it)

The checkpoints folder is a DVC output, so it holds only what code, params and inputs decide: the
wall-clock cost ledger, different on every run, lives beside it (:func:`record_cost`, :func:`read_cost`).

Every rank writes into ``.partial-step_XXXXXXXX/`` first; once all have finished, rank 0 writes
``trainer_state.json`` and renames the folder into place. A checkpoint counts only with its final name
and its state file, so a run killed mid-save (even by SIGKILL) is never resumed from a torn checkpoint,
and the leftover partial folder is removed by the next run.
"""

from __future__ import annotations

import csv
import io
import json
import os
import random
import re
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fluxir.io import replace_dir, write_json_atomic

STATE_FILE = "trainer_state.json"
ENGINE_DIR = "engine"
PARTIAL_PREFIX = ".partial-"
_NAME = re.compile(r"^step_(\d{8})$")

LOSS_COLUMNS = ("step", "loss", "mse", "pixel", "lr")
VAL_COLUMNS = ("step", "val_loss", "val_mse", "val_pixel")


@dataclass
class TrainerState:
    """Everything besides the engine's tensors that a resumed run needs to continue exactly."""

    step: int = 0
    """Optimizer steps done; also the data position (batch k is a pure function of the seed and k)."""
    epoch: int = 0
    batch_in_epoch: int = 0
    history: list[dict[str, float]] = field(default_factory=list)
    """One row per step: LOSS_COLUMNS plus grad_norm (pre-clipping global norm; not in the CSV)."""
    val_history: list[dict[str, float]] = field(default_factory=list)
    """One row per evaluation: VAL_COLUMNS."""
    device_seconds: dict[str, float] = field(default_factory=dict)
    """Cost ledger: device type -> device-seconds spent training (processes x wall time). In memory and in
    ``cost_ledger.json`` beside the checkpoints, never in ``trainer_state.json``."""
    world_size: int = 1
    config: dict[str, Any] = field(default_factory=dict)
    """The resolved params the run was started with (checked on resume)."""

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> TrainerState:
        return cls(**{k: d[k] for k in asdict(cls()) if k in d})


def checkpoint_name(step: int) -> str:
    return f"step_{step:08d}"


def list_checkpoints(root: str | os.PathLike) -> list[tuple[int, Path]]:
    """Complete checkpoints under ``root`` as ``(step, folder)``, oldest first."""
    root = Path(root)
    if not root.is_dir():
        return []
    found = []
    for child in root.iterdir():
        match = _NAME.match(child.name)
        if match and (child / STATE_FILE).is_file():
            found.append((int(match.group(1)), child))
    return sorted(found)


def latest_checkpoint(root: str | os.PathLike) -> tuple[int, Path] | None:
    found = list_checkpoints(root)
    return found[-1] if found else None


def partial_dir(root: str | os.PathLike, step: int) -> Path:
    return Path(root) / f"{PARTIAL_PREFIX}{checkpoint_name(step)}"


def remove_partials(root: str | os.PathLike) -> int:
    """Delete folders left by saves that never completed; return how many."""
    root = Path(root)
    if not root.is_dir():
        return 0
    stale = [p for p in root.iterdir() if p.name.startswith(PARTIAL_PREFIX)]
    for p in stale:
        shutil.rmtree(p, ignore_errors=True)
    return len(stale)


def state_record(state: TrainerState) -> dict[str, Any]:
    """What ``trainer_state.json`` holds: the state without its wall-clock cost ledger."""
    return {k: v for k, v in asdict(state).items() if k != "device_seconds"}


def commit(partial: Path, state: TrainerState) -> Path:
    """Write the state file last, then rename the partial folder to its final name (rank 0 only)."""
    write_json_atomic(partial / STATE_FILE, state_record(state))
    # The same step saved again (e.g. a rerun after completion) replaces the old folder whole.
    return replace_dir(partial, partial.parent / checkpoint_name(state.step))


def prune(root: str | os.PathLike, keep: int) -> list[Path]:
    """Delete all but the ``keep`` newest complete checkpoints; return the deleted folders."""
    old = [path for _, path in list_checkpoints(root)[:-keep]] if keep > 0 else []
    for path in old:
        shutil.rmtree(path, ignore_errors=True)
    return old


def read_state(folder: str | os.PathLike) -> TrainerState:
    """The state of a checkpoint, with its cost ledger from ``cost_ledger.json`` ({} if none was kept)."""
    folder = Path(folder)
    state = TrainerState.from_dict(json.loads((folder / STATE_FILE).read_text()))
    state.device_seconds = read_cost(folder.parent, folder.name)
    return state


# ----------------------------------------------------------------------------------------------
# The cost ledger, beside the checkpoints

COST_FILE = "cost_ledger.json"


def cost_path(root: str | os.PathLike) -> Path:
    """``<out_dir>/cost_ledger.json`` for the checkpoints folder ``<out_dir>/checkpoints``."""
    return Path(root).parent / COST_FILE


def read_cost(root: str | os.PathLike, name: str) -> dict[str, float]:
    """Device-seconds spent up to checkpoint ``name`` (e.g. ``step_00000040``); {} if not recorded."""
    path = cost_path(root)
    ledger = json.loads(path.read_text()) if path.is_file() else {}
    return {k: float(v) for k, v in ledger.get(name, {}).items()}


def record_cost(root: str | os.PathLike, step: int, device_seconds: Mapping[str, float]) -> Path:
    """Record the cost up to the checkpoint of ``step`` (before it is committed, so no complete checkpoint
    lacks one); entries of checkpoints that no longer exist are dropped."""
    path = cost_path(root)
    ledger = json.loads(path.read_text()) if path.is_file() else {}
    keep = {folder.name for _, folder in list_checkpoints(root)} | {checkpoint_name(step)}
    ledger = {k: v for k, v in ledger.items() if k in keep}
    ledger[checkpoint_name(step)] = dict(device_seconds)
    return write_json_atomic(path, ledger)


# ----------------------------------------------------------------------------------------------
# RNG states


def rng_path(folder: str | os.PathLike, rank: int) -> Path:
    return Path(folder) / f"rng_rank{rank}.pt"


def save_rng(path: str | os.PathLike) -> None:
    state = {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
    }
    torch.save(state, path)


def load_rng(path: str | os.PathLike) -> None:
    state = torch.load(path, weights_only=False)  # our own file: python and numpy states are tuples
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if state["cuda"] is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# ----------------------------------------------------------------------------------------------
# Curves as CSV


def csv_text(rows: Sequence[Mapping[str, Any]], columns: Sequence[str]) -> str:
    """CSV with a header; floats written with repr, so values read back exactly."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(columns), lineterminator="\n", extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()
