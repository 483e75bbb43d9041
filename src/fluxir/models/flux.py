"""Load the base FLUX pipeline: the tiny random-weight model, a local folder, or a hub id.

One code path for all three: ``FluxPipeline.from_pretrained``. A local folder is checked first so a
missing or half-copied snapshot fails with a message that names what is missing, not a stack trace
from deep inside diffusers.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors import SafetensorError

from fluxir.errors import UserError

TINY = "tiny"
FLUX_DEV = "black-forest-labs/FLUX.1-dev"

# What a diffusers FluxPipeline folder must hold: component -> (config file, weight file patterns).
_REQUIRED = {
    "transformer": ("config.json", ("diffusion_pytorch_model*.safetensors", "diffusion_pytorch_model*.bin")),
    "vae": ("config.json", ("diffusion_pytorch_model*.safetensors", "diffusion_pytorch_model*.bin")),
    "text_encoder": ("config.json", ("model*.safetensors", "pytorch_model*.bin")),
    "text_encoder_2": ("config.json", ("model*.safetensors", "pytorch_model*.bin")),
    "tokenizer": (None, ("tokenizer.json", "vocab.json")),
    "tokenizer_2": (None, ("tokenizer.json", "spiece.model")),
    "scheduler": ("scheduler_config.json", ()),
}
# load_flux keywords that leave out what only encodes prompts (restore with stored embeddings).
NO_TEXT_ENCODERS = dict(text_encoder=None, text_encoder_2=None, tokenizer=None, tokenizer_2=None)


class ModelNotFoundError(UserError, FileNotFoundError):
    """The base model is absent or incomplete; the message says what is missing and how to fix it."""


class DamagedModelError(UserError):
    """A file of the base model is there but damaged (truncated, half-copied, garbage); the message names it."""


_REFETCH = "re-download the snapshot, or rebuild the tiny model with `fluxir models build-tiny`"


def _damaged(path: Path, what: str) -> DamagedModelError:
    return DamagedModelError(f"{path}: damaged model file ({what}); {_REFETCH}")


def _check_json(path: Path) -> object:
    try:
        data = json.loads(path.read_bytes().decode("utf-8"))
    except UnicodeDecodeError:
        raise _damaged(path, "not UTF-8 text") from None
    except json.JSONDecodeError as exc:
        raise _damaged(path, f"truncated or invalid JSON at line {exc.lineno} column {exc.colno}") from None
    return data


def _check_safetensors(path: Path) -> None:
    """Check a .safetensors file's header and size agree (a truncated copy does not), reading only the header."""
    size = path.stat().st_size
    with path.open("rb") as handle:
        head = handle.read(8)
        length = int.from_bytes(head, "little") if len(head) == 8 else -1
        if length < 2 or 8 + length > size:
            raise _damaged(path, f"truncated or not a safetensors file ({size} bytes)")
        try:
            header = json.loads(handle.read(length).decode("utf-8"))
            end = max(
                (int(t["data_offsets"][1]) for k, t in header.items() if k != "__metadata__"), default=0
            )
        except (ValueError, UnicodeDecodeError, TypeError, KeyError, IndexError, AttributeError):
            raise _damaged(path, "its safetensors header is unreadable") from None
    if 8 + length + end != size:
        raise _damaged(path, f"truncated: {size} bytes where its header says {8 + length + end}")


def damaged_files(folder: Path, components: tuple[str, ...] | None = None) -> None:
    """Raise DamagedModelError naming the first damaged file of a pipeline folder: every JSON file (configs,
    tokenizers, shard indexes) is parsed and every safetensors file's size is checked against its header.
    Cheap (headers only), so a truncated copy is one line here rather than a traceback deep in a loader."""
    if (folder / "model_index.json").is_file():
        _check_json(folder / "model_index.json")
    for name in components or tuple(_REQUIRED):
        sub = folder / name
        if not sub.is_dir():
            continue
        for path in sorted(sub.iterdir()):
            if path.suffix == ".json" and path.is_file():
                _check_json(path)
            elif path.suffix == ".safetensors" and path.is_file():
                _check_safetensors(path)


def missing_components(folder: Path, components: tuple[str, ...] | None = None) -> list[str]:
    """Paths (relative to ``folder``) a FLUX pipeline folder should have but does not."""
    missing = []
    if not (folder / "model_index.json").is_file():
        missing.append("model_index.json")
    for name in components or tuple(_REQUIRED):
        config, weights = _REQUIRED[name]
        sub = folder / name
        if config and not (sub / config).is_file():
            missing.append(f"{name}/{config}")
        if weights and not any(any(sub.glob(pattern)) for pattern in weights):
            missing.append(f"{name}/{weights[0]}")
    return missing


def is_hub_id(source: str) -> bool:
    """True when ``source`` names a Hugging Face hub repo (``owner/name``), not a local folder.

    A path that exists, starts with '.', '/' or '~', or does not have exactly one '/' is a folder.
    """
    return not (Path(source).exists() or source.startswith((".", "/", "~")) or source.count("/") != 1)


def resolve_base(base: str, tiny_dir: str | Path = "data/models/tiny-flux") -> str:
    """Map ``model.base`` to what ``from_pretrained`` takes: 'tiny' -> the tiny folder."""
    if base == TINY:
        folder = Path(tiny_dir)
        if not folder.is_dir():
            raise ModelNotFoundError(
                f"tiny model not built at {folder}: run `fluxir models build-tiny {folder}` (or `dvc repro build-model`)"
            )
        return str(folder)
    return base


def check_local_pipeline(folder: Path, components: tuple[str, ...] | None = None) -> None:
    """Raise ModelNotFoundError naming every missing file of a local FLUX pipeline folder, and
    DamagedModelError naming a damaged one (a truncated config, tokenizer or weight file)."""
    missing = missing_components(folder, components)
    if missing:
        raise ModelNotFoundError(
            f"{folder} is not a complete FLUX pipeline folder; missing: {', '.join(missing)} "
            "(re-download the snapshot, or rebuild the tiny model with `fluxir models build-tiny`)"
        )
    damaged_files(folder, components)
    index = _check_json(folder / "model_index.json")
    if not isinstance(index, dict):
        raise _damaged(folder / "model_index.json", f"a JSON {type(index).__name__}, not an object")
    if index.get("_class_name") not in ("FluxPipeline", None):
        raise ModelNotFoundError(
            f"{folder}/model_index.json describes a {index.get('_class_name')}, not a FluxPipeline"
        )


def load_flux(
    path_or_id: str | Path,
    torch_dtype: torch.dtype = torch.float32,
    device: str | torch.device = "cpu",
    **kwargs,
):
    """Load a FluxPipeline from a local diffusers folder or a Hugging Face hub id.

    Extra ``kwargs`` go to ``FluxPipeline.from_pretrained`` (e.g. ``text_encoder=None`` to skip one).
    Every component is put in eval mode and has gradients off: the base model is always frozen.
    """
    from diffusers import FluxPipeline

    source = str(path_or_id)
    local_folder = not is_hub_id(source)
    if local_folder:
        local = Path(source).expanduser()
        if not local.is_dir():
            raise ModelNotFoundError(
                f"base model folder {local} does not exist; pass a FLUX pipeline folder, a hub id like "
                f"{FLUX_DEV}, or build the tiny model with `fluxir models build-tiny {local}`"
            )
        skipped = tuple(name for name in _REQUIRED if name in kwargs and kwargs[name] is None)
        check_local_pipeline(local, tuple(n for n in _REQUIRED if n not in skipped))
        source = str(local)
    else:
        _check_cached_snapshot(source, kwargs)
    try:
        pipe = FluxPipeline.from_pretrained(source, dtype=torch_dtype, **kwargs)
    except (OSError, json.JSONDecodeError, UnicodeDecodeError, SafetensorError) as exc:
        if local_folder:  # checked above; what is left is a damaged file the checks cannot see (a .bin)
            raise DamagedModelError(
                f"{source}: a file of this model folder is damaged ({type(exc).__name__}: {exc}); {_REFETCH}"
            ) from exc
        if not isinstance(exc, OSError):
            raise
        raise ModelNotFoundError(
            f"could not load {source!r}: not in the local Hugging Face cache and the hub is unreachable "
            f"({type(exc).__name__}); for a hub id, accept its licence and run "
            f"`huggingface-cli download {source}` where the hub is reachable, or pass a local folder"
        ) from exc
    for name in ("transformer", "vae", "text_encoder", "text_encoder_2"):
        module = getattr(pipe, name, None)
        if module is not None:
            module.eval().requires_grad_(False)
    return pipe.to(device)


def _check_cached_snapshot(repo_id: str, kwargs: dict) -> None:
    """For a hub id already in the local cache, check its files for damage as for a local folder."""
    try:
        from huggingface_hub import snapshot_download

        folder = Path(snapshot_download(repo_id, local_files_only=True))
    except Exception:  # noqa: BLE001 - not cached (or no hub client): from_pretrained reports that
        return
    damaged_files(folder, tuple(name for name in _REQUIRED if kwargs.get(name, True) is not None))


def pick_device(device: str = "auto") -> torch.device:
    """'auto' -> cuda when present, else cpu; anything else as given, if this machine has it.

    A CUDA device that is not there is a one-line UserError here, before any model is loaded, rather
    than torch's traceback at the first tensor moved to it.
    """
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise UserError(
                f"device {device!r}: no CUDA GPU is visible to torch; set the device to 'auto' or 'cpu'"
            )
        if dev.index is not None and dev.index >= count:
            raise UserError(
                f"device {device!r}: this machine has {count} CUDA device(s) (cuda:0 .. cuda:{count - 1})"
            )
    return dev


DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
