"""Stage score: batched pyiqa scoring, weights checked before anything is built, resumable."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from fluxir.cli import main as cli_main
from fluxir.config import ConfigError, config_from_dict
from fluxir.data.images import write_image_atomic
from fluxir.data.manifest import read_manifest, write_manifest
from fluxir.iqa import DamagedWeightsError, MissingWeightsError, check_weights, create_metrics
from fluxir.stages import score as score_stage
from fluxir.stages.score import run_score, score_images

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def _restore_torch_home(tmp_path, monkeypatch):
    """The stage sets TORCH_HOME (and pyiqa's cache dir); put both back after each test."""
    import pyiqa.utils.download_util as download_util

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))
    monkeypatch.setattr(download_util, "DEFAULT_CACHE_DIR", download_util.DEFAULT_CACHE_DIR)


class MeanMetric:
    """Mean pixel value per image (a hand-checkable score); records the batch shapes it saw."""

    lower_better = False

    def __init__(self) -> None:
        self.shapes: list[tuple[int, ...]] = []

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        self.shapes.append(tuple(x.shape))
        return x.mean(dim=(1, 2, 3)).unsqueeze(1)  # N x 1, like several pyiqa metrics


def _images(folder: Path, specs: list[tuple[int, int, int]]) -> tuple[list[str], list[tuple[int, int]]]:
    paths, sizes = [], []
    for i, (h, w, value) in enumerate(specs):
        path = folder / f"{i}.png"
        write_image_atomic(path, np.full((h, w, 3), value, np.uint8))
        paths.append(str(path))
        sizes.append((h, w))
    return paths, sizes


def test_scores_are_batched_by_size_and_aligned_with_the_input(tmp_path):
    paths, sizes = _images(tmp_path, [(8, 8, 0), (8, 12, 51), (8, 8, 102), (8, 8, 255), (8, 12, 204)])
    metric = MeanMetric()
    scores = score_images(paths, sizes, {"mean": metric}, batch_size=2, progress=False)
    np.testing.assert_allclose(scores["mean"], [0.0, 0.2, 0.4, 1.0, 0.8], rtol=1e-6)
    assert metric.shapes == [(2, 3, 8, 8), (1, 3, 8, 8), (2, 3, 8, 12)]


def test_unreadable_images_and_non_finite_scores_become_nan(tmp_path):
    paths, sizes = _images(tmp_path, [(4, 4, 10), (4, 4, 20), (4, 4, 30)])
    Path(paths[1]).write_bytes(b"")  # damaged after generate
    log_metric = lambda x: torch.log(x.mean(dim=(1, 2, 3)) - 20 / 255)  # noqa: E731  -inf or nan for <= 20
    scores = score_images(paths, sizes, {"log": log_metric}, batch_size=8, progress=False)
    assert np.isnan(scores["log"][0]) and np.isnan(scores["log"][1])
    assert scores["log"][2] == pytest.approx(np.log(10 / 255), rel=1e-5)


def test_piqe_on_real_photos_is_lower_better_and_in_range(photo_dir, tmp_path):
    from fluxir.data.images import load_rgb

    metrics = create_metrics(["piqe"], "cpu", tmp_path / "hub")
    assert metrics["piqe"].lower_better is True
    paths = sorted(str(p) for p in photo_dir.rglob("*") if p.is_file())
    sizes = [load_rgb(p).shape[:2] for p in paths]
    scores = score_images(paths, sizes, metrics, batch_size=4, progress=False)["piqe"]
    assert np.isfinite(scores).all() and ((scores >= 0) & (scores <= 100)).all()
    assert len(set(np.round(scores, 6))) == len(paths)  # four different photos, four different scores


def test_missing_weights_name_the_file_and_folder_before_anything_is_built(tmp_path, monkeypatch):
    monkeypatch.setattr(score_stage, "create_metrics", None)  # would fail if reached
    hub = tmp_path / "hub"
    with pytest.raises(MissingWeightsError) as info:
        check_weights(["piqe", "musiq"], hub)
    msg = str(info.value)
    assert msg.startswith(
        f"score metric 'musiq' needs weight file musiq_koniq_ckpt-e95806b9.pth in {hub / 'pyiqa'}"
    )
    assert (
        "https://huggingface.co/chaofengc/IQA-PyTorch-Weights/resolve/main/musiq_koniq_ckpt-e95806b9.pth"
        in msg
    )
    (hub / "pyiqa").mkdir(parents=True)
    (hub / "pyiqa" / "CLIPIQA+_ViTL14_512-e66488f2.pth").write_bytes(b"x")
    with pytest.raises(MissingWeightsError, match=rf"needs weight file ViT-L-14.pt in {hub / 'clip'}"):
        check_weights(["clipiqa+_vitL14_512"], hub)
    check_weights(["piqe", "niqe"], hub)  # nothing known to check


def test_a_download_the_table_does_not_know_is_blocked_and_named(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "th"))
    hub = score_stage.configure_torch_home("")
    with pytest.raises(
        MissingWeightsError, match=rf"'niqe' needs weight file niqe_modelparameters.mat in {hub / 'pyiqa'}"
    ):
        create_metrics(["niqe"], "cpu", hub)
    assert not (hub / "pyiqa" / "niqe_modelparameters.mat").exists()


def test_unknown_and_full_reference_metrics_are_config_errors(tmp_path):
    with pytest.raises(ConfigError, match="'musiqq' is not a pyiqa metric; did you mean musiq"):
        create_metrics(["musiqq"], "cpu", tmp_path)
    with pytest.raises(ConfigError, match="'psnr' is a full-reference metric"):
        create_metrics(["psnr"], "cpu", tmp_path)
    with pytest.raises(ConfigError, match="score.metrics=\\[\\]: must name at least one"):
        config_from_dict({"score": {"metrics": []}})
    with pytest.raises(ConfigError, match="must not repeat"):
        config_from_dict({"score": {"metrics": ["piqe", "piqe"]}})


def test_a_paper_metric_loads_from_the_configured_torch_home(tmp_path, monkeypatch):
    # MUSIQ with random weights saved under the file name pyiqa expects: the real loading code path,
    # offline. The scores mean nothing.
    import pyiqa

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "elsewhere"))
    random_musiq = pyiqa.create_metric("musiq", pretrained=False, device="cpu")
    weights = tmp_path / "th" / "hub" / "pyiqa" / "musiq_koniq_ckpt-e95806b9.pth"
    weights.parent.mkdir(parents=True)
    torch.save(random_musiq.net.state_dict(), weights)
    hub = score_stage.configure_torch_home(str(tmp_path / "th"))
    assert hub == tmp_path / "th" / "hub"
    metrics = create_metrics(["musiq"], "cpu", hub)
    x = torch.rand(1, 3, 64, 64)
    assert metrics["musiq"](x).item() == pytest.approx(random_musiq(x).item(), rel=1e-5)


# ----------------------------------------------------------------------------------------------
# The stage


def _generate_manifest(folder: Path, n: int = 5) -> Path:
    rows = []
    for k in range(n):
        path = folder / "shard_000" / f"{k:07d}.png"
        sha = write_image_atomic(path, np.full((16, 16, 3), 50 * k, np.uint8))
        rows.append(
            dict(id=f"{k:07d}", index=k, path=str(path), source="flux", model="tiny", seed=k, prompt="",
                 width=16, height=16, sha256=sha, created_at=pd.Timestamp("2025-01-01", tz="UTC"))
        )  # fmt: skip
    df = pd.DataFrame(rows)
    df["seed"] = df["seed"].astype("Int64")
    return write_manifest(df, folder / "manifest.parquet", kind="generate")


def _params(tmp_path: Path, **score) -> Path:
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["score"].update({"device": "cpu", "torch_home": str(tmp_path / "th")} | score)
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(params))
    return path


def test_stage_scores_then_rescoring_skips_what_is_done(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _generate_manifest(tmp_path / "data" / "generate")
    made: list[MeanMetric] = []

    def fake_create(names, device, hub, allow_download=False):
        made.append(MeanMetric())
        return {name: made[-1] for name in names}

    monkeypatch.setattr(score_stage, "create_metrics", fake_create)
    cfg = config_from_dict(yaml.safe_load(_params(tmp_path, metrics=["mean"]).read_text()))
    summary = run_score(cfg, progress=False)
    df = read_manifest("data/score/manifest.parquet")
    np.testing.assert_allclose(df["score_mean"], [0, 50 / 255, 100 / 255, 150 / 255, 200 / 255], rtol=1e-6)
    assert df.attrs["metrics"] == {"mean": {"column": "score_mean", "lower_better": False}}
    assert summary["scored_now"] == 5 and summary["metrics"]["mean"]["count"] == 5

    # Rerun: nothing to score, no metric built. Then a new image appears: only it is scored.
    assert run_score(cfg, progress=False)["scored_now"] == 0 and len(made) == 1
    gen = read_manifest("data/generate/manifest.parquet")
    extra = tmp_path / "data" / "generate" / "shard_001" / "0000005.png"
    sha = write_image_atomic(extra, np.full((16, 16, 3), 255, np.uint8))
    gen.loc[5] = gen.loc[4].to_dict() | {
        "id": "0000005",
        "index": 5,
        "path": str(extra),
        "sha256": sha,
        "seed": 5,
    }
    write_manifest(gen, "data/generate/manifest.parquet")
    assert run_score(cfg, progress=False)["scored_now"] == 1
    assert made[-1].shapes == [(1, 3, 16, 16)]
    assert read_manifest("data/score/manifest.parquet")["score_mean"].iloc[5] == pytest.approx(1.0)


def test_stage_with_piqe_through_the_cli(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _generate_manifest(tmp_path / "data" / "generate")
    assert cli_main(["score", "--params", str(_params(tmp_path)), "--no-progress"]) == 0
    df = read_manifest("data/score/manifest.parquet")
    assert df.attrs["metrics"]["piqe"]["lower_better"] is True and "score_piqe" in df
    assert "PASSED" in Path("reports/validation/score/manifest.md").read_text()
    summary = json.loads(Path("reports/score/summary.json").read_text())
    assert summary["metrics"]["piqe"]["lower_better"] is True and summary["images"] == 5


def test_missing_weights_stop_the_cli_with_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    _generate_manifest(tmp_path / "data" / "generate")
    params = _params(tmp_path, metrics=["clipiqa+_vitL14_512", "maniqa-pipal", "musiq"])
    assert cli_main(["score", "--params", str(params), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith(
        "fluxir score: error: score metric 'clipiqa+_vitL14_512' needs weight file CLIPIQA+_ViTL14_512-e66488f2.pth "
        f"in {tmp_path / 'th' / 'hub' / 'pyiqa'}"
    )
    assert not Path("data/score/manifest.parquet").exists()


def test_a_broken_input_manifest_stops_before_scoring(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    path = _generate_manifest(tmp_path / "data" / "generate")
    df = read_manifest(path)
    Path(df.loc[3, "path"]).unlink()
    assert cli_main(["score", "--params", str(_params(tmp_path)), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith(
        "fluxir score: error: data/generate/manifest.parquet: row 3 (id '0000003') fails "
        "expect_column_values_to_be_existing_files(column='path')"
    )


def test_a_crash_mid_scoring_keeps_the_finished_batches(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _generate_manifest(tmp_path / "data" / "generate")
    monkeypatch.setattr(score_stage, "CHECKPOINT_SECONDS", 0.0)  # checkpoint after every batch
    calls = []

    class Crashing(MeanMetric):
        def __call__(self, x):
            calls.append(x.shape[0])
            if len(calls) == 3:
                raise KeyboardInterrupt  # stands in for a kill after two batches
            return super().__call__(x)

    monkeypatch.setattr(score_stage, "create_metrics", lambda names, *a, **k: {n: Crashing() for n in names})
    cfg = config_from_dict(yaml.safe_load(_params(tmp_path, metrics=["mean"], batch_size=2).read_text()))
    with pytest.raises(KeyboardInterrupt):
        run_score(cfg, progress=False)
    assert not Path("data/score/manifest.parquet").exists()
    progress = read_manifest("data/score/.progress.parquet")
    assert progress["id"].tolist() == ["0000000", "0000001", "0000002", "0000003"]

    calls.clear()
    monkeypatch.setattr(
        score_stage, "create_metrics", lambda names, *a, **k: {n: MeanMetric() for n in names}
    )
    assert run_score(cfg, progress=False)["scored_now"] == 1
    df = read_manifest("data/score/manifest.parquet")
    np.testing.assert_allclose(df["score_mean"], np.arange(5) * 50 / 255, rtol=1e-6)
    assert not Path("data/score/.progress.parquet").exists()


# ----------------------------------------------------------------------------------------------
# A weight file that is there but damaged: one line naming it, "delete it and place the real file"

MUSIQ_FILE = "musiq_koniq_ckpt-e95806b9.pth"


@pytest.mark.parametrize("content", [b"garbage, not a torch file" * 40, b"", b"PK\x03\x04half a zip"])
def test_a_damaged_weight_file_stops_the_cli_with_one_line_naming_it(tmp_path, monkeypatch, capsys, content):
    monkeypatch.chdir(tmp_path)
    _generate_manifest(tmp_path / "data" / "generate")
    weights = tmp_path / "th" / "hub" / "pyiqa" / MUSIQ_FILE
    weights.parent.mkdir(parents=True)
    weights.write_bytes(content)
    # in process, an exception the CLI did not turn into its one line would fail the test right here
    assert cli_main(["score", "--params", str(_params(tmp_path, metrics=["musiq"])), "--no-progress"]) == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if ": error: " in line]
    assert len(errors) == 1, errors
    assert errors[0].startswith(
        f"fluxir score: error: score metric 'musiq': weight file {weights} is damaged or not a torch file ("
    )
    assert "delete it and place the real file there" in errors[0] and MUSIQ_FILE in errors[0]
    assert not Path("data/score/manifest.parquet").exists()
    assert weights.read_bytes() == content  # the user's file is named, not deleted


def test_a_weight_file_of_another_model_is_named_as_not_fitting(tmp_path):
    weights = tmp_path / "hub" / "pyiqa" / MUSIQ_FILE
    weights.parent.mkdir(parents=True)
    torch.save({"head.weight": torch.zeros(2)}, weights)
    hub = score_stage.configure_torch_home(str(tmp_path))
    with pytest.raises(DamagedWeightsError) as info:  # a UserError: one line, exit 2
        create_metrics(["musiq"], "cpu", hub)
    message = str(info.value)
    assert message.startswith(f"score metric 'musiq': weight file {weights} does not fit the metric")
    assert "delete it and place the real file there" in message and "\n" not in message
