"""The model registry on a demo run of the tiny profile (train then benchmark, in a git project).

The train stage leaves a registered version of ``fluxir-adapter`` tagged with the git SHA, the dvc.lock hash
and the profile, alias ``candidate``; ``fluxir models promote`` moves ``champion``; the champion loads
through ``mlflow.pyfunc.load_model`` and restores a 64x64 image; the benchmark run links to the version it
scored; ``fluxir models export`` writes a folder ready for ``push_to_hub`` whose card has that table.
"""

from __future__ import annotations

import io
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from train_pairs import write_pairs, write_params

from fluxir.cli import main
from fluxir.io import sha256_file

pytestmark = pytest.mark.slow
NAME = "fluxir-adapter"


def _git(project: Path, *args: str) -> str:
    done = subprocess.run(
        ["git", "-c", "user.name=fluxir", "-c", "user.email=fluxir@localhost", *args],
        cwd=project, capture_output=True, text=True, check=True, timeout=60,
    )  # fmt: skip
    return done.stdout.strip()


@pytest.fixture(scope="module")
def demo(tmp_path_factory, tiny_model_dir):
    """A git project with 4 training pairs: `fluxir train` (2 steps) then `fluxir benchmark` (bicubic, fluxir)."""
    import torch

    project = tmp_path_factory.mktemp("registry-demo")
    write_pairs(project, per_photo=1)
    fast = {
        "model.max_sequence_length": 32,
        "model.device": "cpu",
        "restore.steps": 2,
        "benchmark.adapter": "data/train/adapter",
        "benchmark.methods": ["bicubic", "fluxir"],
        "benchmark.metrics": ["psnr"],
        "benchmark.datasets": [{"name": "DIV2K-Val", "kind": "synthetic", "hq_dir": "skimage", "num_crops": 1,
                                "hq_crop": 64}],
        "benchmark.grid_images": 0,
        "benchmark.device": "cpu",
        "score.torch_home": str(project / "torch-home"),
    }  # fmt: skip
    write_params(
        project, tiny_model_dir, fast, max_steps=2, engine="torch", eval_every=0, val_size=1, batch_size=2
    )
    (project / "dvc.lock").write_text("schema: '2.0'\nstages: {}\n")
    _git(project, "init", "-q")
    _git(project, "add", "params.yaml", "dvc.lock")
    _git(project, "commit", "-qm", "demo")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a second intra-op thread on a busy 2-core machine makes steps ~10x slower
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(project)
        # fluxir.tracking prefers $MLFLOW_TRACKING_URI; mlflow.set_tracking_uri sets it: keep it to this test
        mp.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{project / 'mlruns.db'}")
        assert main(["train", "--params", "params.yaml"]) == 0
        assert main(["benchmark", "--params", "params.yaml", "--no-progress"]) == 0
        yield project
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def client(demo):
    from mlflow import MlflowClient

    return MlflowClient(f"sqlite:///{demo / 'mlruns.db'}")


def test_train_registers_a_version_with_lineage_tags_and_alias_candidate(demo, client):
    from mlflow.exceptions import MlflowException

    from fluxir.tracking.registry import adapter_digest

    version = client.get_model_version_by_alias(NAME, "candidate")
    assert str(version.version) == "1"
    tags = version.tags
    assert tags["git.sha"] == _git(demo, "rev-parse", "HEAD")
    assert tags["dvc.lock.sha256"] == sha256_file(demo / "dvc.lock")
    assert tags["profile"] == "tiny"
    assert tags["adapter.sha256"] == adapter_digest(demo / "data/train/adapter")
    with pytest.raises(MlflowException):  # champion moves by command only
        client.get_model_version_by_alias(NAME, "champion")

    import mlflow

    mlflow.set_tracking_uri(f"sqlite:///{demo / 'mlruns.db'}")
    info = mlflow.models.get_model_info(f"models:/{NAME}/1")
    assert info.metadata["base_model"] == "tiny" and info.metadata["licence"] == "apache-2.0"
    assert info.metadata["base_revision"]
    assert {i.name for i in info.signature.inputs} == {"image"}
    assert {p.name for p in info.signature.params} >= {"steps", "tile", "seed", "color_fix"}
    local = Path(mlflow.artifacts.download_artifacts(f"models:/{NAME}/1", dst_path=str(demo / "downloaded")))
    artefacts = {k: local / v["path"] for k, v in info.flavors["python_function"]["artifacts"].items()}
    assert (artefacts["adapter"] / "README.md").is_file(), "the model card travels with the weights"
    assert artefacts["prompt"].is_file(), "stored prompt embeddings: no text encoders needed"
    assert (artefacts["base"] / "model_index.json").is_file(), "the ~1 MB tiny base is bundled"


def test_the_adapter_folder_has_a_model_card(demo):
    from huggingface_hub import ModelCard

    card = ModelCard.load(demo / "data/train/adapter/README.md")
    assert card.data.license == "apache-2.0" and card.data.library_name == "diffusers"
    text = card.text
    for needed in ("Base: `tiny`", "apache-2.0", "Training data (FluxGen)", "train.max_steps | 2", "## Cost"):
        assert needed in text, needed


def test_promote_moves_champion_by_command(demo, client, capsys):
    assert main(["models", "promote", "1", "--params", str(demo / "params.yaml")]) == 0
    assert "champion -> version 1" in capsys.readouterr().out
    assert str(client.get_model_version_by_alias(NAME, "champion").version) == "1"
    assert main(["models", "promote", "7", "--params", str(demo / "params.yaml")]) == 2
    assert "has no version 7" in capsys.readouterr().err


def test_champion_loads_with_pyfunc_and_restores_a_64x64_image(demo, client):
    import mlflow

    if client.get_registered_model(NAME).aliases.get("champion") is None:
        client.set_registered_model_alias(NAME, "champion", "1")
    mlflow.set_tracking_uri(f"sqlite:///{demo / 'mlruns.db'}")
    model = mlflow.pyfunc.load_model(f"models:/{NAME}@champion")
    from skimage import data

    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(data.astronaut()[100:164, 180:244])).save(buf, format="PNG")
    out = model.predict(
        pd.DataFrame({"image": [buf.getvalue()]}), params={"steps": 2, "color_fix": "wavelet"}
    )
    restored = Image.open(io.BytesIO(out["image"][0]))
    assert restored.size == (256, 256) and restored.mode == "RGB"
    assert (out["width"][0], out["height"][0]) == (256, 256)


def test_benchmark_run_links_to_the_version_it_scored(demo, client):
    version = client.get_model_version(NAME, "1")
    run = client.get_run(version.tags["benchmark.run_id"])
    assert run.data.tags["stage"] == "benchmark"
    assert run.data.tags["fluxir.model.version"] == "1" and run.data.tags["fluxir.model.name"] == NAME
    model_id = run.data.tags["fluxir.model.id"]
    assert version.source == f"models:/{model_id}"
    metrics = {m.key for m in client.get_logged_model(model_id).metrics or []}
    assert any(key.endswith("fluxir/psnr") for key in metrics), metrics


def test_export_writes_a_push_to_hub_folder_with_the_benchmark_table(demo, capsys):
    from huggingface_hub import ModelCard

    from fluxir.models.adapter import FluxIRAdapter

    out = demo / "export"
    assert main(["models", "export", "1", str(out), "--params", str(demo / "params.yaml")]) == 0
    assert "with its benchmark table" in capsys.readouterr().out
    # What huggingface_hub.upload_folder / push_to_hub publish: the card, the config and the weights (and
    # the adapter's own extra files, if it has them), nothing of MLflow's.
    files = {p.name for p in out.iterdir()}
    assert {"README.md", "config.json", "diffusion_pytorch_model.safetensors"} <= files, files
    assert files <= {"README.md", "config.json", "diffusion_pytorch_model.safetensors", "prompt.safetensors",
                     "ema.safetensors"}, files  # fmt: skip
    card = ModelCard.load(out / "README.md")
    assert card.data.license == "apache-2.0" and "image-restoration" in card.data.tags
    assert card.text.startswith("# FluxIR adapter (version 1)")
    evaluation = card.text.split("## Evaluation", 1)[1]
    table = (demo / "reports/benchmark/table1.md").read_text()
    assert table.strip().splitlines()[-1] in evaluation, "the version's Table 1 is in the card"
    assert "bicubic" in evaluation and "fluxir" in evaluation
    FluxIRAdapter.from_pretrained(out)  # and the folder loads as it is


def test_the_web_page_restores_with_the_registry_champion(demo, client):
    import torch

    from fluxir.serving.adapters import AdapterCache
    from fluxir.serving.app import AppSettings, RestoreRequest, on_restore

    if client.get_registered_model(NAME).aliases.get("champion") is None:
        client.set_registered_model_alias(NAME, "champion", "1")
    from skimage import data

    photo = demo / "photo.png"
    Image.fromarray(np.ascontiguousarray(data.astronaut()[100:164, 180:244])).save(photo)
    settings = AppSettings(
        base="unused: the registered model carries its base", registered_model=NAME, adapters=[],
        adapter="registry: champion", steps=2, device="cpu", output_dir=demo / "app-out",
    )  # fmt: skip
    cache = AdapterCache(settings.base, torch.float32, torch.device("cpu"), NAME)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{demo / 'mlruns.db'}")
        request = RestoreRequest(str(photo), "registry: champion", 2, 1024, "none", 0)
        pair, download, status = on_restore(request, settings, cache)
        assert pair[1].shape == (256, 256, 3) and Image.open(download).size == (256, 256), status
        request = RestoreRequest(str(photo), "registry: 9", 2, 1024, "none", 0)
        _, _, status = on_restore(request, settings, cache)
    assert "Cannot restore" in status and "models:/fluxir-adapter/9" in status
