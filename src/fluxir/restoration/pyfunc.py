"""A trained adapter as an ``mlflow.pyfunc`` model whose ``predict`` restores images with FluxIRPipeline.

    model = mlflow.pyfunc.load_model("models:/fluxir-adapter@champion")
    out = model.predict(pd.DataFrame({"image": [png_bytes]}), params={"steps": 20, "color_fix": "wavelet"})
    out["image"][0]   # the restored image, PNG bytes; out["width"], out["height"] its size

Artefacts of the logged model:
  adapter   the ``save_pretrained`` folder (config.json, weights, README.md model card)
  prompt    ``prompt.safetensors``, the empty-prompt embeddings the adapter was trained with, when given:
            the text encoders (T5-XXL is ~9 GB at FLUX.1-dev size) are then never loaded
  base      the base FLUX folder itself, only when it is small (the tiny and mini bases, about 1 MB): a
            FLUX.1-dev base is named in the metadata and loaded from the Hugging Face cache, never copied
Metadata: ``base_model`` and ``base_revision`` (what the adapter needs to run), ``licence``,
``adapter_sha256``. ``model_config`` holds base, dtype and device, which ``load_model(...,
model_config={"device": "cuda"})`` can override.
"""

from __future__ import annotations

import base64
import importlib.metadata
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import mlflow.pyfunc

if TYPE_CHECKING:
    import pandas as pd
    from mlflow.models import ModelSignature
    from mlflow.models.model import ModelInfo

    from fluxir.restoration.pipeline import FluxIRPipeline

ARTIFACT_NAME = "adapter"
"""Name of the logged model inside its run."""
BUNDLE_LIMIT_BYTES = 64 * 2**20
"""A local base folder up to this size travels with the model; larger ones are referenced by name."""
# Packages the model needs at load time, pinned to what logged it. Listing them avoids MLflow's
# requirement inference, which loads the model in a subprocess (a whole FLUX base) just to watch imports.
REQUIREMENTS = ("torch", "diffusers", "transformers", "safetensors", "mlflow", "pillow", "numpy", "pandas")
# restore.* settings a caller may set per predict call, with their MLflow types.
PARAM_TYPES = {
    "scale": "integer",
    "steps": "integer",
    "guidance": "double",
    "tile": "integer",
    "overlap": "integer",
    "seed": "integer",
    "color_fix": "string",
}


class FluxIRModel(mlflow.pyfunc.PythonModel):
    """Restores every image of the input frame's ``image`` column (encoded bytes) into PNG bytes."""

    pipeline: FluxIRPipeline | None = None

    def load_context(self, context: Any) -> None:
        from fluxir.models.flux import DTYPES, pick_device
        from fluxir.restoration.single import load_pipeline

        config = dict(context.model_config or {})
        artifacts = context.artifacts
        self.defaults = dict(config.get("defaults", {}))
        adapter = Path(artifacts[ARTIFACT_NAME])
        # the prompt artefact, else the one an adapter folder may carry itself
        prompt = artifacts.get("prompt") or next(iter(adapter.glob("prompt.safetensors")), None)
        self.pipeline = load_pipeline(
            artifacts.get("base") or config["base"],
            adapter,
            prompt,
            dtype=DTYPES[config.get("dtype", "float32")],
            device=pick_device(config.get("device", "auto")),
        )

    # No type hints on predict: MLflow would read them as a second, competing input schema.
    def predict(self, context, model_input, params=None):
        import pandas as pd

        from fluxir.data.images import decode_image, encode_image
        from fluxir.restoration.pipeline import RestoreOptions
        from fluxir.restoration.single import restore_image

        if self.pipeline is None:
            raise RuntimeError(
                "FluxIRModel.predict before load_context: load it with mlflow.pyfunc.load_model"
            )
        settings = {**self.defaults, **{k: v for k, v in (params or {}).items() if v is not None}}
        color_fix = str(settings.pop("color_fix", "none"))
        options = RestoreOptions(**{k: v for k, v in settings.items() if k in PARAM_TYPES})
        rows = []
        for value in _images(model_input):
            restored = restore_image(self.pipeline, decode_image(value).rgb, options, color_fix)
            rows.append(
                {"image": encode_image(restored), "width": restored.shape[1], "height": restored.shape[0]}
            )
        return pd.DataFrame(rows, columns=["image", "width", "height"])


def _images(model_input: Any) -> list[bytes]:
    """The encoded images of a predict input: a frame's ``image`` column, a list, or one bytes value.

    The scoring server hands binary columns over as base64 text; those are decoded here.
    """
    import pandas as pd

    if isinstance(model_input, pd.DataFrame):
        values = list(model_input["image"])
    elif isinstance(model_input, bytes | str):
        values = [model_input]
    else:
        values = list(model_input)
    return [base64.b64decode(v) if isinstance(v, str) else bytes(v) for v in values]


def signature(defaults: Mapping[str, Any]) -> ModelSignature:
    """Input: encoded images in ``image``; output: PNG bytes, width, height; params: the restore settings."""
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, ParamSchema, ParamSpec, Schema

    return ModelSignature(
        inputs=Schema([ColSpec("binary", "image")]),
        outputs=Schema([ColSpec("binary", "image"), ColSpec("long", "width"), ColSpec("long", "height")]),
        params=ParamSchema([ParamSpec(k, t, defaults[k]) for k, t in PARAM_TYPES.items()]),
    )


def _requirements() -> list[str]:
    pins = []
    for name in REQUIREMENTS:
        try:
            pins.append(f"{name}=={importlib.metadata.version(name)}")
        except importlib.metadata.PackageNotFoundError:
            pins.append(name)
    return pins


def _folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def log_adapter_model(
    adapter: str | Path,
    base: str,
    base_source: str,
    defaults: Mapping[str, Any],
    prompt_file: str | Path | None = None,
    dtype: str = "float32",
    metadata: Mapping[str, Any] | None = None,
) -> ModelInfo:
    """Log the adapter folder as a pyfunc model into the active run; returns MLflow's ModelInfo.

    ``base`` is model.base as configured ('tiny', a hub id, a folder); ``base_source`` what loads it (the
    tiny folder, the hub id). ``defaults`` are the restore settings predict uses unless params say otherwise.
    """
    from fluxir.models.card import base_licence, base_revision
    from fluxir.tracking.registry import adapter_digest

    source = Path(base_source)
    artifacts = {ARTIFACT_NAME: str(adapter)}
    if prompt_file:
        artifacts["prompt"] = str(prompt_file)
    bundled = source.is_dir() and _folder_bytes(source) <= BUNDLE_LIMIT_BYTES
    if bundled:
        artifacts["base"] = str(source)
    defaults = {k: defaults.get(k, "none") if k == "color_fix" else defaults[k] for k in PARAM_TYPES}
    licence = base_licence(base)
    meta = {
        "base_model": base,
        "base_revision": base_revision(base_source),
        "base_bundled": bundled,
        "licence": licence.name or licence.license,
        "adapter_sha256": adapter_digest(adapter),
        **(metadata or {}),
    }
    with warnings.catch_warnings():
        # MLflow asks for predict type hints and an input example; the signature below says it all, and an
        # example would make MLflow load the whole base model at logging time to check it.
        warnings.filterwarnings("ignore", category=UserWarning, module=r"mlflow\.pyfunc.*")
        return mlflow.pyfunc.log_model(
            name=ARTIFACT_NAME,
            python_model=FluxIRModel(),
            artifacts=artifacts,
            signature=signature(defaults),
            model_config={
                "base": str(source.resolve()) if source.is_dir() else base_source,
                "dtype": dtype,
                "device": "auto",
                "defaults": defaults,
            },
            metadata=meta,
            pip_requirements=_requirements(),
        )


def restore_bytes(model: Any, data: bytes, **params: Any) -> pd.DataFrame:
    """``model.predict`` on one encoded image: a convenience for scripts and tests."""
    import pandas as pd

    return model.predict(pd.DataFrame({"image": [data]}), params=params or None)
