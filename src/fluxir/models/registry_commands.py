"""`fluxir models promote | list | export`: the registered adapter versions, from the command line.

The registered model and the tracking server come from params.yaml (``tracking.registered_model``,
``tracking.uri``; ``$MLFLOW_TRACKING_URI`` wins), or built-in defaults outside a project folder.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from fluxir.errors import UserError

if TYPE_CHECKING:
    from mlflow.entities.model_registry import ModelVersion

# Version tags `list` shows, in order.
LIST_TAGS = ("profile", "git.sha", "dvc.lock.sha256", "benchmark.run_id")


def _settings(args: argparse.Namespace) -> tuple[str, str]:
    """(registered model name, tracking URI)."""
    from fluxir.config import config_from_dict, load_config
    from fluxir.tracking.lineage import resolve_uri

    cfg = load_config(args.params) if args.params.is_file() else config_from_dict({})
    name = args.name or cfg.tracking.registered_model
    if not name:
        raise UserError("tracking.registered_model is ''; pass --name NAME")
    return name, resolve_uri(cfg.tracking.uri)


def promote(args: argparse.Namespace) -> int:
    from fluxir.tracking.registry import promote as move_alias

    name, uri = _settings(args)
    version, before = move_alias(name, args.version, args.alias, uri)
    was = f" (was version {before})" if before and before != version else ""
    print(f"{name}: alias {args.alias} -> version {version}{was}")
    return 0


def list_versions(args: argparse.Namespace) -> int:
    from mlflow import MlflowClient

    name, uri = _settings(args)
    client = MlflowClient(uri)
    versions = client.search_model_versions(f"name = '{name}'")
    if not versions:
        print(f"{name}: no versions (train with train.track: true to register one)")
        return 0
    by_version: dict[str, list[str]] = {}
    # search results carry no aliases on the SQL store: the registered model has them
    for alias, number in client.get_registered_model(name).aliases.items():
        by_version.setdefault(str(number), []).append(alias)
    for v in sorted(versions, key=lambda v: int(v.version)):
        aliases = ",".join(sorted(by_version.get(str(v.version), []))) or "-"
        tags = "  ".join(f"{k}={v.tags[k][:12]}" for k in LIST_TAGS if k in v.tags)
        print(f"{name} v{v.version}  [{aliases}]  {tags}")
    return 0


def export(args: argparse.Namespace) -> int:
    """The adapter artefact of a version, into ``out_dir``, with its card completed by that version's
    benchmark table (when a benchmark run is linked): a folder ``huggingface_hub.upload_folder`` takes."""
    from fluxir.tracking.registry import get_version

    name, uri = _settings(args)
    version = get_version(name, args.version, uri)
    out = Path(args.out_dir)
    if out.exists() and any(out.iterdir()):
        raise UserError(f"{out} is not empty; export into a new folder")
    with tempfile.TemporaryDirectory(prefix="fluxir-export-") as tmp:
        adapter = _download_adapter(version, uri, Path(tmp))
        out.parent.mkdir(parents=True, exist_ok=True)
        shutil.copytree(adapter, out, dirs_exist_ok=True)
    table = _benchmark_table(version, uri)
    if (out / "README.md").is_file():
        from fluxir.models.card import add_benchmark

        if table:
            add_benchmark(out, table, version.version)
    benchmarked = "with its benchmark table" if table else "not benchmarked yet"
    print(f"{name} v{version.version} -> {out} ({benchmarked}); push with huggingface_hub.upload_folder")
    return 0


def _download_adapter(version: ModelVersion, uri: str, into: Path) -> Path:
    """The ``adapter`` artefact folder of a registered pyfunc version, downloaded under ``into``."""
    import mlflow
    from mlflow.models import Model

    mlflow.set_tracking_uri(uri)
    local = Path(mlflow.artifacts.download_artifacts(artifact_uri=version.source, dst_path=str(into)))
    flavor = Model.load(str(local)).flavors.get("python_function", {})
    entry = flavor.get("artifacts", {}).get("adapter")
    if not entry:
        raise UserError(f"version {version.version} of {version.name} holds no adapter artefact")
    return local / entry["path"]


def _benchmark_table(version: ModelVersion, uri: str) -> str | None:
    """table1.md of the benchmark run linked to ``version`` (its tag benchmark.run_id), if any."""
    import mlflow
    from mlflow.exceptions import MlflowException

    from fluxir.tracking.registry import BENCHMARK_RUN_TAG

    run_id = version.tags.get(BENCHMARK_RUN_TAG)
    if not run_id:
        return None
    mlflow.set_tracking_uri(uri)
    try:
        return mlflow.artifacts.load_text(f"runs:/{run_id}/benchmark/table1.md")
    except (MlflowException, OSError):
        return None


def run_registry_command(args: argparse.Namespace) -> int:
    return {"promote": promote, "list": list_versions, "export": export}[args.models_command](args)
