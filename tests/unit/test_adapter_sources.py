"""`fluxir restore --adapter`: a folder, an MLflow model (models:/, runs:/) or a Hugging Face repo in the cache."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from skimage import data as skdata

from fluxir.cli import main
from fluxir.models.adapter import FluxIRAdapter
from fluxir.models.adapter_files import PROMPT_FILE, StoredPrompt
from fluxir.models.flux import load_flux
from fluxir.restoration.sources import AdapterSourceError, adapter_source

FAST = ["--steps", "1", "--tile", "128", "--overlap", "32"]


@pytest.fixture(scope="module")
def adapter_dir(tiny_model_dir, tmp_path_factory) -> Path:
    """An adapter folder saved with its empty-prompt embeddings, as training exports it."""
    base = load_flux(tiny_model_dir)
    adapter = FluxIRAdapter.from_flux(base.transformer, rank=4, max_sequence_length=16)
    adapter.stored_prompt = StoredPrompt(*base.encode_prompt(prompt="", prompt_2="", max_sequence_length=16))
    folder = tmp_path_factory.mktemp("sources") / "adapter"
    adapter.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def registered(adapter_dir, tmp_path_factory) -> tuple[str, str]:
    """The adapter logged as an MLflow pyfunc model (adapter folder without its prompt + a prompt artefact,
    as the train stage logs it) and registered as version 1 of 'restore-test'; returns (tracking uri, run id)."""
    import mlflow

    root = tmp_path_factory.mktemp("mlflow")
    folder = root / "adapter"
    shutil.copytree(adapter_dir, folder)
    prompt = root / PROMPT_FILE
    (folder / PROMPT_FILE).rename(prompt)
    uri = f"sqlite:///{root / 'mlruns.db'}"
    mlflow.set_tracking_uri(uri)
    mlflow.set_experiment("restore-test")  # by name: an experiment id left by another test means nothing here
    with mlflow.start_run() as run:
        info = mlflow.pyfunc.log_model(
            name="adapter",
            python_model=mlflow.pyfunc.PythonModel(),
            artifacts={"adapter": str(folder), "prompt": str(prompt)},
            pip_requirements=[],
        )
    mlflow.register_model(info.model_uri, "restore-test")
    return uri, run.info.run_id


def test_a_local_folder_and_its_misses(adapter_dir, tmp_path):
    with adapter_source(str(adapter_dir)) as source:
        assert source.folder == adapter_dir and source.prompt_file is None
    (tmp_path / "empty").mkdir()
    (tmp_path / "file.txt").write_text("x")
    for ref, message in (
        (tmp_path / "missing", "is not an adapter folder (it does not exist)"),
        (tmp_path / "empty", "is not an adapter folder (no config.json)"),
        (tmp_path / "file.txt", "is a file, not an adapter folder"),
    ):
        with pytest.raises(AdapterSourceError, match=re.escape(message)) as err, adapter_source(str(ref)):
            pass
        assert "\n" not in str(err.value)


def test_mlflow_model_uris_resolve_to_the_adapter_and_its_prompt(registered):
    uri, run_id = registered
    for ref in ("models:/restore-test/1", f"runs:/{run_id}/adapter"):
        with adapter_source(ref, uri) as source:
            assert (source.folder / "config.json").is_file() and source.prompt_file.name == PROMPT_FILE
            loaded = FluxIRAdapter.from_pretrained(source.folder)
            assert loaded.stored_prompt is None  # the prompt came as a separate artefact
        assert not source.folder.exists()  # the download lived as long as the block
    with pytest.raises(AdapterSourceError, match=r"MLflow has no models:/restore-test/7 at sqlite") as err:
        with adapter_source("models:/restore-test/7", uri):
            pass
    assert "\n" not in str(err.value)


def test_hugging_face_repo_from_the_local_cache_only(adapter_dir, tmp_path, monkeypatch):
    from huggingface_hub import constants

    cache = tmp_path / "hub"
    repo = cache / "models--someone--fluxir-adapter"
    commit = "0" * 40
    shutil.copytree(adapter_dir, repo / "snapshots" / commit)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with adapter_source("someone/fluxir-adapter") as source:
        assert source.folder == repo / "snapshots" / commit
    with pytest.raises(
        AdapterSourceError, match="not-here/adapter is neither a folder nor a Hugging Face repo"
    ):
        with adapter_source("not-here/adapter"):
            pass


def test_restore_cli_with_a_registered_model_matches_the_folder(
    adapter_dir, registered, tiny_model_dir, tmp_path, monkeypatch
):
    uri, _ = registered
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    lq = tmp_path / "lq.png"
    Image.fromarray(skdata.astronaut()).resize((24, 20)).save(lq)
    outputs = {}
    for name, ref in (("folder", str(adapter_dir)), ("mlflow", "models:/restore-test/1")):
        out = tmp_path / f"{name}.png"
        args = ["restore", str(lq), str(out), "--base", str(tiny_model_dir), "--adapter", ref, *FAST]
        assert main([*args, "--params", str(tmp_path / "none.yaml")]) == 0
        outputs[name] = np.asarray(Image.open(out))
    np.testing.assert_array_equal(outputs["mlflow"], outputs["folder"])
