"""`fluxir benchmark` end to end on the tiny profile: synthetic (scikit-image photos), paired (RealSR
layout) and LQ-only sets; bicubic, Lanczos, a spandrel ESRGAN checkpoint and the FluxIR adapter."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from PIL import Image

from fluxir.cli import main
from fluxir.data.images import load_rgb

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


@pytest.fixture(autouse=True)
def _isolate(tmp_path, monkeypatch):
    """pyiqa's cache dir back after each test; MLflow to this test's database (mlflow.set_tracking_uri
    also sets $MLFLOW_TRACKING_URI, which fluxir.tracking.runs prefers: it would leak into the next test)."""
    import pyiqa.utils.download_util as download_util

    monkeypatch.setattr(download_util, "DEFAULT_CACHE_DIR", download_util.DEFAULT_CACHE_DIR)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlruns.db'}")


def _save(path: Path, rgb: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rgb).save(path)


def _setup(tmp_path: Path, tiny_model_dir: Path) -> Path:
    from spandrel.architectures.ESRGAN import ESRGAN

    from fluxir.models.adapter import FluxIRAdapter
    from fluxir.models.flux import load_flux

    torch.manual_seed(0)
    FluxIRAdapter.from_flux(load_flux(tiny_model_dir).transformer, rank=4).save_pretrained(
        tmp_path / "adapter"
    )
    torch.save(ESRGAN(num_filters=8, num_blocks=1, scale=4).state_dict(), tmp_path / "esrgan_x4.pth")
    # RealSR layout: test_HR/<name>_HR.png is 4x test_LR/<name>_LR4.png (crops of real photos)
    from skimage import data

    for name, photo in (("Canon_001", data.astronaut()), ("Nikon_002", data.coffee())):
        hq = np.ascontiguousarray(photo[100:196, 100:184])
        _save(tmp_path / "RealSR" / "test_HR" / f"{name}_HR.png", hq)
        _save(
            tmp_path / "RealSR" / "test_LR" / f"{name}_LR4.png",
            np.asarray(Image.fromarray(hq).resize((21, 24), Image.BICUBIC)),
        )
    _save(tmp_path / "RealLQ" / "cat.png", np.ascontiguousarray(data.chelsea()[100:124, 150:174]))

    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["model"].update(tiny_dir=str(tiny_model_dir), device="cpu")
    params["restore"].update(steps=2)
    params["score"].update(torch_home=str(tmp_path / "torch-home"))
    params["tracking"]["uri"] = f"sqlite:///{tmp_path / 'mlruns.db'}"
    params["benchmark"].update(
        adapter=str(tmp_path / "adapter"),
        datasets=[
            {"name": "DIV2K-Val", "kind": "synthetic", "hq_dir": "skimage", "num_crops": 3, "hq_crop": 64},
            {"name": "RealSR", "kind": "paired", "hq_dir": str(tmp_path / "RealSR" / "test_HR"),
             "lq_dir": str(tmp_path / "RealSR" / "test_LR"), "hq_crop": 64, "lq_crop": 16},
            {"name": "RealLQ250", "kind": "lq_only", "lq_dir": str(tmp_path / "RealLQ"), "lq_crop": 0},
        ],
        # the real Real-ESRGAN x4plus column has its own tests (test_ncnn_convert); here a random checkpoint
        methods=["bicubic", "lanczos", "fluxir"],
        sr_models=[{"name": "Real-ESRGAN", "path": str(tmp_path / "esrgan_x4.pth")}],
        device="cpu",
    )  # fmt: skip
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(params, sort_keys=False))
    return path


def _y(rgb: np.ndarray) -> np.ndarray:
    """YCbCr Y (ITU-R BT.601) on [0, 1], as BasicSR's test_y_channel."""
    x = rgb.astype(np.float64) / 255
    return (16 + 65.481 * x[..., 0] + 128.553 * x[..., 1] + 24.966 * x[..., 2]) / 255


def test_benchmark_writes_table1_per_image_grids_and_mlflow(tmp_path, tiny_model_dir, monkeypatch):
    params = _setup(tmp_path, tiny_model_dir)
    monkeypatch.chdir(tmp_path)
    assert main(["benchmark", "--params", str(params), "--no-progress"]) == 0
    reports = tmp_path / "reports" / "benchmark"
    methods = ["bicubic", "lanczos", "Real-ESRGAN", "fluxir"]

    # Table 1: the paper's layout, tiny-model header, LPIPS absent with its file, no FR rows for RealLQ250
    md = (reports / "table1.md").read_text()
    assert "tiny random-weight FLUX model" in md.splitlines()[2] and "plumbing" in md
    assert "| Datasets | Metrics | bicubic | lanczos | Real-ESRGAN | fluxir |" in md
    table = pd.read_csv(reports / "table1.csv")
    assert list(zip(table["dataset"], table["metric"], strict=True)) == [
        ("DIV2K-Val", "PSNR"), ("DIV2K-Val", "SSIM"), ("DIV2K-Val", "LPIPS"), ("DIV2K-Val", "PIQE"),
        ("RealSR", "PSNR"), ("RealSR", "SSIM"), ("RealSR", "LPIPS"), ("RealSR", "PIQE"),
        ("RealLQ250", "PIQE"),
    ]  # fmt: skip
    assert (table.loc[table["metric"] == "LPIPS", methods] == "absent").all().all()
    assert "LPIPS_v0.1_alex-df73285e.pth" in md and "$TORCH_HOME/hub/pyiqa" in md  # same on every machine

    # per-image scores: one row per image and method; metrics.json holds their means
    per_image = pd.read_csv(reports / "per_image.csv")
    assert len(per_image) == (3 + 2 + 1) * 4
    assert per_image["method"].unique().tolist() == methods
    metrics = json.loads((reports / "metrics.json").read_text())
    for (dataset, method), group in per_image.groupby(["dataset", "method"]):
        assert metrics[dataset][method]["piqe"] == pytest.approx(group["piqe"].mean())
        if dataset != "RealLQ250":
            assert metrics[dataset][method]["psnr"] == pytest.approx(group["psnr"].mean())
    assert set(metrics["RealLQ250"]["fluxir"]) == {"piqe"}

    # a PSNR recomputed by hand from the files the stage wrote (YCbCr Y, 4 px border = the scale, pyiqa's eps)
    restored = load_rgb(tmp_path / "data" / "benchmark" / "RealSR" / "bicubic" / "Canon_001.png")
    hq = load_rgb(tmp_path / "data" / "benchmark" / "RealSR" / "hq" / "Canon_001.png")
    assert restored.shape == hq.shape == (64, 64, 3)
    inner = (slice(4, -4), slice(4, -4))
    by_hand = 10 * np.log10(1 / (np.mean((_y(restored)[inner] - _y(hq)[inner]) ** 2) + 1e-8))
    assert "PSNR and SSIM: YCbCr Y (BT.601), 4 px border cut" in md
    assert "DIV2K-Val (synthetic): 3 random 64 px HQ crops" in md and "reference: original HQ crop" in md
    assert "RealLQ250 (lq_only): whole images, no crop." in md
    row = per_image[
        (per_image["dataset"] == "RealSR")
        & (per_image["id"] == "Canon_001")
        & (per_image["method"] == "bicubic")
    ]
    assert float(row["psnr"].iloc[0]) == pytest.approx(by_hand, abs=1e-3)

    # grids: LQ | 4 methods | HQ (no HQ panel for RealLQ250)
    grids = sorted(p.name for p in (reports / "grids").glob("*.png"))
    assert grids == ["DIV2K-Val_astronaut_000.png", "DIV2K-Val_chelsea_000.png", "RealLQ250_cat.png",
                     "RealSR_Canon_001.png", "RealSR_Nikon_002.png"]  # fmt: skip
    assert load_rgb(reports / "grids" / "RealSR_Canon_001.png").shape[1] == 6 * 64 + 5 * 4
    assert load_rgb(reports / "grids" / "RealLQ250_cat.png").shape[1] == 5 * 96 + 4 * 4

    summary = json.loads((reports / "summary.json").read_text())
    assert summary["profile"] == "tiny" and "lpips" in summary["absent"]
    assert summary["methods"]["Real-ESRGAN"].startswith("ESRGAN x4")
    # wall-clock figures are not in the reports (DVC outputs), they are in MLflow
    assert "seconds" not in per_image.columns and not [k for k in summary if "second" in k]

    # MLflow: one run with the metrics, both tables under fixed names, and the grids as images
    import mlflow

    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlruns.db'}")
    runs = mlflow.search_runs(experiment_names=["fluxir"])
    assert len(runs) == 1 and runs.loc[0, "tags.mlflow.runName"] == "benchmark"
    assert runs.loc[0, "metrics.RealSR/fluxir/psnr"] == pytest.approx(metrics["RealSR"]["fluxir"]["psnr"])
    assert (
        runs.loc[0, "metrics.time/seconds"] > 0
        and runs.loc[0, "metrics.time/seconds_per_image/RealSR/fluxir"] > 0
    )
    client = mlflow.MlflowClient()
    run_id = runs.loc[0, "run_id"]
    assert {a.path for a in client.list_artifacts(run_id, "tables")} == {
        "tables/table1.json",
        "tables/per_image.json",
    }
    assert len(client.list_artifacts(run_id, "grids")) == 5
    mlflow.set_experiment("fluxir")
    logged = mlflow.load_table("tables/table1.json", run_ids=[run_id])
    assert len(logged) == len(table)


def test_the_vae_reconstruction_is_an_unranked_ceiling_on_sets_with_hq(tmp_path, tiny_model_dir, monkeypatch):
    from diffusers import AutoencoderKL

    params = _setup(tmp_path, tiny_model_dir)
    settings = yaml.safe_load(params.read_text())
    settings["benchmark"].update(
        methods=["bicubic", "vae-reconstruction"], sr_models=[], metrics=["psnr", "piqe"]
    )
    params.write_text(yaml.safe_dump(settings, sort_keys=False))
    monkeypatch.chdir(tmp_path)
    assert main(["benchmark", "--params", str(params), "--no-progress"]) == 0
    reports = tmp_path / "reports" / "benchmark"

    per_image = pd.read_csv(reports / "per_image.csv")
    oracle = per_image[per_image["method"] == "vae-reconstruction"]
    assert sorted(oracle["dataset"].unique()) == ["DIV2K-Val", "RealSR"] and len(oracle) == 3 + 2
    # the HQ through the base VAE, by hand: posterior mean, decode, back to 8 bits
    hq = load_rgb(tmp_path / "data" / "benchmark" / "RealSR" / "hq" / "Canon_001.png")
    vae = AutoencoderKL.from_pretrained(tiny_model_dir, subfolder="vae").eval()
    with torch.no_grad():
        x = torch.from_numpy(hq).permute(2, 0, 1)[None].float() / 127.5 - 1
        y = vae.decode(vae.encode(x).latent_dist.mode()).sample.clamp(-1, 1)
    by_hand = ((y[0].permute(1, 2, 0).numpy() + 1) * 127.5).round().astype(np.uint8)
    written = load_rgb(tmp_path / "data" / "benchmark" / "RealSR" / "vae-reconstruction" / "Canon_001.png")
    assert np.abs(written.astype(int) - by_hand.astype(int)).max() <= 1

    md = (reports / "table1.md").read_text()
    assert "| RealLQ250 | PIQE ↓ | **" in md and md.split("| RealLQ250 | PIQE ↓ |")[1].split("\n")[
        0
    ].endswith(" - |")
    for line in md.splitlines():
        if line.startswith("| ") and "|---" not in line and "Datasets" not in line:
            assert "*" not in line.split("|")[-2] and "<u>" not in line.split("|")[-2], line  # never marked
    assert "Not ranked (they see the HQ; no value on sets without HQ): vae-reconstruction." in md
    assert (
        "a ceiling, not a restoration"
        in json.loads((reports / "summary.json").read_text())["methods"]["vae-reconstruction"]
    )


def test_an_mlflow_failure_after_the_restorations_keeps_the_reports(
    tmp_path, tiny_model_dir, monkeypatch, caplog
):
    import fluxir.stages.benchmark as stage

    params = _setup(tmp_path, tiny_model_dir)
    settings = yaml.safe_load(params.read_text())
    settings["benchmark"].update(methods=["bicubic"], sr_models=[], metrics=["psnr"])
    params.write_text(yaml.safe_dump(settings, sort_keys=False))
    monkeypatch.chdir(tmp_path)

    def server_gone(*args, **kwargs):
        raise ConnectionError("Connection refused by the tracking server")

    monkeypatch.setattr(stage, "log_benchmark", server_gone)
    with caplog.at_level("WARNING"):
        assert main(["benchmark", "--params", str(params), "--no-progress"]) == 0
    reports = tmp_path / "reports" / "benchmark"
    assert (reports / "table1.md").is_file() and (reports / "per_image.csv").is_file()
    note = json.loads((reports / "tracking.json").read_text())
    assert note["stage"] == "benchmark" and note["tracked"] is False
    assert note["warnings"] == [
        f"MLflow at sqlite:///{tmp_path / 'mlruns.db'} failed to log the benchmark (ConnectionError)"
    ]
    assert "Connection refused by the tracking server" in caplog.text


def test_a_layout_error_stops_before_any_model_loads(tmp_path, tiny_model_dir, monkeypatch, capsys):
    params = _setup(tmp_path, tiny_model_dir)
    (tmp_path / "RealSR" / "test_LR" / "Nikon_002_LR4.png").unlink()
    monkeypatch.chdir(tmp_path)
    assert main(["benchmark", "--params", str(params), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert (
        "benchmark dataset 'RealSR' (paired): 1 HQ files have no LQ partner" in err
        and "Nikon_002_HR.png" in err
    )


# ----------------------------------------------------------------------------------------------
# fluxir ablate table2


def _train_pairs(project: Path, n: int = 4, side: int = 32) -> Path:
    """A degrade-stage manifest of n pairs (HQ side x side crops of scikit-image photos, LQ = HQ / 4)."""
    from skimage import data

    from fluxir.config import DegradeConfig
    from fluxir.degradation import degrade_pair, image_rng

    out = project / "data" / "degrade"
    cfg = DegradeConfig(sizes=[[side, side]])
    rows = []
    for k, name in enumerate(("astronaut", "coffee", "chelsea", "rocket")[:n]):
        hq, lq, _ = degrade_pair(getattr(data, name)(), cfg, image_rng(name, 0))
        _save(out / "hq" / f"{k}.png", hq)
        _save(out / "lq" / f"{k}.png", lq)
        rows.append({"id": name, "hq_path": str(out / "hq" / f"{k}.png"), "lq_path": str(out / "lq" / f"{k}.png"),
                     "hq_height": side, "hq_width": side})  # fmt: skip
    pd.DataFrame(rows).to_parquet(out / "manifest.parquet", index=False)
    return out / "manifest.parquet"


def _ablation_params(tmp_path: Path, tiny_model_dir: Path) -> None:
    """params.yaml in tmp_path: the tiny model, 4 pairs, one training step, one 32 px benchmark crop."""
    manifest = _train_pairs(tmp_path)
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["model"].update(tiny_dir=str(tiny_model_dir), device="cpu")
    params["restore"].update(steps=1)
    params["score"].update(torch_home=str(tmp_path / "torch-home"))
    params["tracking"]["uri"] = f"sqlite:///{tmp_path / 'mlruns.db'}"
    params["train"].update(manifest=str(manifest), engine="torch", max_steps=1, warmup_steps=0, batch_size=1,
                           val_size=1, eval_every=0, checkpoint_every=1, grid_steps=1, cache_dir=str(tmp_path / "cache"))  # fmt: skip
    params["benchmark"]["datasets"] = [{"name": "DIV2K-Val", "kind": "synthetic", "hq_dir": "skimage", "num_crops": 1,
                                        "hq_crop": 32}]  # fmt: skip
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


def test_ablate_table2_runs_five_children_of_one_parent(tmp_path, tiny_model_dir, monkeypatch, capsys):
    import mlflow

    from fluxir.models.adapter import FluxIRAdapter, count_parameters

    monkeypatch.chdir(tmp_path)
    _ablation_params(tmp_path, tiny_model_dir)
    assert main(["ablate", "table2", "--params", "params.yaml"]) == 0
    md = (tmp_path / "reports" / "ablations" / "table2.md").read_text()
    assert md == capsys.readouterr().out.rstrip("\n") + "\n"
    assert "tiny random-weight FLUX model" in md and "not comparable" in md
    lines = [line for line in md.splitlines() if line.startswith("| ")]
    assert [line.split(" | ")[0] for line in lines[1:]] == ["| 16", "| 32", "| 64", "| 128", "| Full"]
    assert all("trained 1 steps" in line for line in lines[1:])

    # parameter counts come from the adapters the rows trained and benchmarked
    table = pd.read_csv(tmp_path / "reports" / "ablations" / "table2.csv")
    for rank, se in zip(("16", "32", "64", "128", "Full"), table["params.se"], strict=True):
        adapter = FluxIRAdapter.from_pretrained(
            str(tmp_path / "data" / "ablations" / "table2" / rank / "train" / "adapter")
        )
        assert count_parameters(adapter)["se"] == se
        assert adapter.config.rank == (None if rank == "Full" else int(rank))
    assert table["params.se"].tolist()[:4] == [4 * (2 * 32 * r + r + 32) for r in (16, 32, 64, 128)]
    assert table["paper.CLIPIQA"].tolist() == [0.5389, 0.5639, 0.5529, 0.5606, 0.5720]

    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlruns.db'}")
    runs = mlflow.search_runs(experiment_names=["fluxir"])
    parent = runs[runs["tags.mlflow.runName"] == "ablate-table2"]
    assert len(parent) == 1
    children = runs[runs["tags.mlflow.parentRunId"] == parent["run_id"].iloc[0]]
    assert sorted(children["tags.mlflow.runName"]) == sorted(["16", "32", "64", "128", "Full"])
    assert len(runs) == 6  # no stray train or benchmark runs
    assert set(children["params.override.train.rank"]) == {"16", "32", "64", "128", "None"}
    assert children["metrics.ours/psnr"].notna().all()
    client = mlflow.MlflowClient()
    assert [a.path for a in client.list_artifacts(parent["run_id"].iloc[0], "tables")] == [
        "tables/table2.json"
    ]


def test_ablate_seeds_give_mean_and_half_range_and_the_velocity_error_at_t1(
    tmp_path, tiny_model_dir, monkeypatch
):
    import mlflow

    monkeypatch.chdir(tmp_path)
    _ablation_params(tmp_path, tiny_model_dir)
    args = ["ablate", "table3", "--row", "Full Setting", "--seeds", "0", "1", "--params", "params.yaml"]
    assert main(args) == 0
    (row,) = json.loads((tmp_path / "reports/ablations/table3.json").read_text())["rows"]
    assert [s["seed"] for s in row["seeds"]] == [0, 1] and row["status"] == "2 of 2 seeds ran"
    for key in ("psnr", "velocity_mse_t1"):
        values = [s["ours"][key] if key in s["ours"] else s["train"][key] for s in row["seeds"]]
        assert values[0] != values[1]  # two seeds, two different trainings
        assert row["ours"][key] == pytest.approx(sum(values) / 2)
        assert row["spread"][key] == pytest.approx(abs(values[0] - values[1]) / 2)
    for seed in (0, 1):
        folder = tmp_path / "data/ablations/table3/Full_Setting" / f"seed-{seed}"
        assert (folder / "train/adapter/config.json").is_file()
        assert (folder / "reports/validation/benchmark").is_dir()
    assert not (tmp_path / "reports/validation").exists()  # the pipeline's own reports are never touched
    md = (tmp_path / "reports/ablations/table3.md").read_text()
    line = next(line for line in md.splitlines() if line.startswith("| Full Setting |"))
    assert line.count(" ± ") == 4  # PSNR, SSIM, PIQE and the velocity error, each mean ± half-range
    assert "v-MSE t=1 ↓ (ours)" in md and "mean ± half the range over train.seed 0, 1" in md
    assert "Every row ran with" not in md  # no --set on this command line
    assert json.loads((tmp_path / "reports/ablations/table3.json").read_text())["shared_overrides"] == {}
    csv = pd.read_csv(tmp_path / "reports/ablations/table3.csv")
    assert csv.loc[0, "spread.velocity_mse_t1"] == pytest.approx(row["spread"]["velocity_mse_t1"])

    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlruns.db'}")
    runs = mlflow.search_runs(experiment_names=["fluxir"])
    children = sorted(runs["tags.mlflow.runName"].dropna())
    assert children == ["Full Setting (seed 0)", "Full Setting (seed 1)", "ablate-table3"]
    assert set(runs["params.train.seed"].dropna()) == {"0", "1"}
    assert main(["ablate", "table7", "--seeds", "0", "--params", "params.yaml"]) == 2


def test_ablate_row_with_checkpoints_of_other_settings_stops_or_restarts_on_request(
    tmp_path, tiny_model_dir, monkeypatch
):
    """A rerun after a setting changed: the row's old checkpoints are refused, naming the folder and the
    flag; with --restart-on-change they are removed and the row trains again on the new setting."""
    from fluxir.train import checkpoint as ckpt

    monkeypatch.chdir(tmp_path)
    _ablation_params(tmp_path, tiny_model_dir)
    args = ["ablate", "table3", "--row", "Full Setting", "--params", "params.yaml"]
    assert main(args) == 0
    checkpoints = tmp_path / "data/ablations/table3/Full_Setting/train/checkpoints"
    first_lr = ckpt.read_state(checkpoints / "step_00000001").config["train"]["lr"]
    assert first_lr != 0.02

    assert main([*args, "--set", "train.lr=0.02"]) == 0
    (row,) = json.loads((tmp_path / "reports/ablations/table3.json").read_text())["rows"]
    assert row["status"].startswith("not run: ConfigError: ")
    assert "move data/ablations/table3/Full_Setting/train/checkpoints away" in row["status"]
    assert f"train.lr: {first_lr!r} -> 0.02" in row["status"] and "--restart-on-change" in row["status"]

    assert main([*args, "--set", "train.lr=0.02", "--restart-on-change"]) == 0
    (row,) = json.loads((tmp_path / "reports/ablations/table3.json").read_text())["rows"]
    assert row["status"] == "trained 1 steps" and "psnr" in row["ours"]
    assert ckpt.read_state(checkpoints / "step_00000001").config["train"]["lr"] == 0.02
    # the command's --set values are part of every row: the reports and the parent run record them
    report = json.loads((tmp_path / "reports/ablations/table3.json").read_text())
    assert report["shared_overrides"] == {"train.lr": 0.02}
    assert (
        "Every row ran with `--set train.lr=0.02`." in (tmp_path / "reports/ablations/table3.md").read_text()
    )
    import mlflow

    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlruns.db'}")
    runs = mlflow.search_runs(experiment_names=["fluxir"], order_by=["start_time DESC"])
    parent = runs[runs["tags.mlflow.runName"] == "ablate-table3"].iloc[0]
    assert parent["params.ablation.set.train.lr"] == "0.02"
