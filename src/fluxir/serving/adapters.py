"""The adapter a page restores with: a registry alias or version, or an adapter folder; loaded once, kept.

A choice is text, as the page's drop-down shows it or a person types it:

    registry: champion            alias of tracking.registered_model (also 'registry: candidate', 'registry: 3')
    models:/fluxir-adapter@champion   any MLflow model URI of a FluxIR pyfunc model
    folder: data/train/adapter    a save_pretrained folder (also a bare path)

Only the most recent pipeline is kept: at FLUX.1-dev size each one is a 12B-parameter base.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from fluxir.errors import UserError

if TYPE_CHECKING:
    import torch

    from fluxir.restoration.pipeline import FluxIRPipeline

REGISTRY = "registry:"
FOLDER = "folder:"


class AdapterChoiceError(UserError, ValueError):
    """A choice that names no loadable adapter; the message is shown on the page."""


@dataclass(frozen=True)
class Choice:
    kind: str  # "registry" | "folder"
    target: str  # a models:/ URI, or a folder path


def parse_choice(text: str, registered_model: str) -> Choice:
    """What a drop-down value or typed text names (see the module docstring)."""
    from fluxir.tracking.registry import version_uri

    value = (text or "").strip()
    if not value:
        raise AdapterChoiceError("choose an adapter: a registry alias (registry: champion) or a folder")
    if value.startswith("models:/"):
        return Choice("registry", value)
    if value.startswith(REGISTRY):
        ref = value[len(REGISTRY) :].strip().lstrip("@")
        if not registered_model:
            raise AdapterChoiceError("tracking.registered_model is ''; choose an adapter folder")
        return Choice("registry", version_uri(registered_model, ref))
    if value.startswith(FOLDER):
        value = value[len(FOLDER) :].strip()
    return Choice("folder", value)


def default_choices(registered_model: str, folders: list[str]) -> list[str]:
    """The drop-down's entries: champion and candidate of the registry, then the given folders."""
    aliases = [f"{REGISTRY} champion", f"{REGISTRY} candidate"] if registered_model else []
    return [*aliases, *(f"{FOLDER} {f}" for f in folders)]


class AdapterCache:
    """Loads the chosen adapter's pipeline (base + adapter) and keeps the last one."""

    def __init__(self, base: str, dtype: torch.dtype, device: torch.device, registered_model: str):
        self.base, self.dtype, self.device = base, dtype, device
        self.registered_model = registered_model
        self._lock = threading.Lock()
        self._key: Choice | None = None
        self._pipeline: FluxIRPipeline | None = None

    def get(self, text: str) -> FluxIRPipeline:
        choice = parse_choice(text, self.registered_model)
        with self._lock:  # two requests for a new adapter load it once
            if choice != self._key:
                self._pipeline = None  # free the old one before loading the next
                self._pipeline = self._load(choice)
                self._key = choice
            assert self._pipeline is not None
            return self._pipeline

    def _load(self, choice: Choice) -> FluxIRPipeline:
        if choice.kind == "registry":
            return self._from_registry(choice.target)
        folder = Path(choice.target).expanduser()
        if not (folder / "config.json").is_file():
            raise AdapterChoiceError(f"{folder} is not an adapter folder (no config.json)")
        from fluxir.restoration.single import load_pipeline

        return load_pipeline(self.base, folder, dtype=self.dtype, device=self.device)

    def _from_registry(self, uri: str) -> FluxIRPipeline:
        """The pipeline inside a registered pyfunc model (its own base, prompt embeddings and adapter)."""
        import mlflow
        from mlflow.exceptions import MlflowException

        from fluxir.restoration.pyfunc import FluxIRModel

        try:
            model = mlflow.pyfunc.load_model(uri, model_config={"device": str(self.device)})
        except MlflowException as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise AdapterChoiceError(f"{uri}: not in the registry ({first})") from exc
        inner = model.unwrap_python_model()
        if not isinstance(inner, FluxIRModel) or inner.pipeline is None:
            raise AdapterChoiceError(f"{uri} is not a FluxIR adapter model")
        return inner.pipeline
