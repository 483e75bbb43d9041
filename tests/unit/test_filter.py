"""Stage filter: the per-metric quantile rule, its reports, and generate -> score -> filter end to end."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from helpers import write_params

from fluxir.cli import main as cli_main
from fluxir.data.images import write_image_atomic
from fluxir.data.manifest import read_manifest, write_manifest
from fluxir.stages.filter import histogram, select

# Ten images, two metrics. By hand, keep_quantile 0.8 (linear interpolation over sorted values):
#   sharp (higher is better): cut = quantile(0.2) = 0.2 + 0.8 * (0.3 - 0.2) = 0.28 -> fails b (0.1), g (0.2)
#   noise (lower is better):  sorted 2 3 4 5 6 7 8 9 9.5 10, cut = quantile(0.8) = 9 + 0.2 * 0.5 = 9.1
#                             -> fails b (9.5), i (10)
# Kept: every image but b (both metrics), g (sharp) and i (noise).
TABLE = pd.DataFrame(
    {
        "sharp": [0.9, 0.1, 0.5, 0.7, 0.3, 0.8, 0.2, 0.6, 0.4, 1.0],
        "noise": [5, 9.5, 2, 9, 3, 4, 6, 7, 10, 8],
    },
    index=list("abcdefghij"),
)
DIRECTIONS = {"sharp": False, "noise": True}


def test_hand_made_table():
    sel = select(TABLE, DIRECTIONS, keep_quantile=0.8)
    assert sel.thresholds == pytest.approx({"sharp": 0.28, "noise": 9.1})
    assert list(TABLE.index[sel.keep]) == list("acdefhj")
    assert sel.dropped_by[~sel.keep].to_dict() == {"b": "sharp,noise", "g": "sharp", "i": "noise"}
    assert sel.dropped_by[sel.keep].eq("").all()
    assert sel.failed == {"sharp": 2, "noise": 2}


def test_095_drops_exactly_the_worst_of_twenty():
    scores = pd.DataFrame({"m": np.arange(1.0, 21.0)})
    assert list(scores.index[~select(scores, {"m": False}, 0.95).keep]) == [0]  # cut 1.95
    assert list(scores.index[~select(scores, {"m": True}, 0.95).keep]) == [19]  # cut 19.05


def test_ties_at_the_cut_are_kept_and_nan_is_dropped():
    scores = pd.DataFrame({"m": [1.0, 1.0, 1.0, 2.0, np.nan]})
    sel = select(scores, {"m": False}, 0.5)  # cut = median of 1 1 1 2 = 1: the ties pass
    assert sel.keep.tolist() == [True, True, True, True, False]
    assert sel.dropped_by.iloc[4] == "m"


def test_keep_quantile_one_and_disabled():
    assert select(TABLE, DIRECTIONS, 1.0).keep.all()  # the cut is each metric's worst value
    off = select(TABLE.assign(noise=np.nan), DIRECTIONS, 0.5, enabled=False)
    assert off.keep.all() and off.thresholds == {"sharp": None, "noise": None}
    with pytest.raises(ValueError, match="keep_quantile=0"):
        select(TABLE, DIRECTIONS, 0.0)


def test_histogram_counts():
    kept = pd.Series([True] * 8 + [False] * 2)
    hist = histogram(pd.Series(np.arange(10.0)), kept, bins=5)
    assert hist["count"].tolist() == [2, 2, 2, 2, 2]
    assert hist["kept"].tolist() == [2, 2, 2, 2, 0]
    assert hist["bin_left"].iloc[0] == 0.0 and hist["bin_right"].iloc[-1] == 9.0


# ----------------------------------------------------------------------------------------------
# The stage on a hand-made score manifest


def _score_manifest(folder: Path) -> Path:
    rows = []
    for k, name in enumerate(TABLE.index):
        path = folder / "images" / f"{name}.png"
        sha = write_image_atomic(path, np.full((8, 8, 3), 20 * k, np.uint8))
        rows.append(
            dict(id=name, index=k, path=str(path), source="folder", model="photos", seed=None, prompt="",
                 width=8, height=8, sha256=sha, created_at=pd.Timestamp("2025-01-01", tz="UTC"),
                 score_sharp=TABLE.loc[name, "sharp"], score_noise=float(TABLE.loc[name, "noise"]))
        )  # fmt: skip
    df = pd.DataFrame(rows)
    df["seed"] = df["seed"].astype("Int64")
    df.attrs["metrics"] = {
        "sharp": {"column": "score_sharp", "lower_better": False},
        "noise": {"column": "score_noise", "lower_better": True},
    }
    return write_manifest(df, folder / "manifest.parquet", kind="score")


def test_stage_writes_kept_dropped_and_reports(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _score_manifest(tmp_path / "data" / "score")
    assert cli_main(["filter", "--params", str(write_params(tmp_path, filter={"keep_quantile": 0.8}))]) == 0
    kept = read_manifest("data/filter/manifest.parquet")
    dropped = read_manifest("data/filter/dropped.parquet")
    assert kept["id"].tolist() == list("acdefhj")
    assert dict(zip(dropped["id"], dropped["dropped_by"], strict=True)) == {
        "b": "sharp,noise",
        "g": "sharp",
        "i": "noise",
    }
    assert kept.attrs["filter"]["thresholds"] == pytest.approx({"sharp": 0.28, "noise": 9.1})
    assert kept.attrs["metrics"]["noise"]["lower_better"] is True  # carried on for later stages
    summary = json.loads(Path("reports/filter/summary.json").read_text())
    assert (summary["images"], summary["kept"], summary["dropped"]) == (10, 7, 3)
    assert summary["metrics"]["sharp"] == {
        "lower_better": False,
        "threshold": pytest.approx(0.28),
        "failed": 2,
        "dropped_only_by_this": 1,
    }
    assert "| noise | lower | 9.1 | 2 | 1 |" in Path("reports/filter/summary.md").read_text()
    hist = pd.read_csv("reports/filter/hist_noise.csv")
    assert hist["count"].sum() == 10 and hist["kept"].sum() == 7


def test_disabled_filter_keeps_everything(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _score_manifest(tmp_path / "data" / "score")
    assert cli_main(["filter", "--params", str(write_params(tmp_path, filter={"enabled": False}))]) == 0
    assert len(read_manifest("data/filter/manifest.parquet")) == 10
    assert read_manifest("data/filter/dropped.parquet").empty
    assert "disabled: all kept" in Path("reports/filter/summary.md").read_text()


def test_a_score_manifest_without_directions_is_refused(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    path = _score_manifest(tmp_path / "data" / "score")
    df = read_manifest(path)
    df.attrs.pop("metrics")
    write_manifest(df, path)
    assert cli_main(["filter", "--params", str(write_params(tmp_path))]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith(
        "fluxir filter: error: data/score/manifest.parquet: fails expect_table_attrs_to_describe_score_columns()"
    )


# ----------------------------------------------------------------------------------------------
# generate -> score -> filter through the CLI


def _chain(params: Path) -> None:
    for stage in ("generate", "score", "filter"):
        args = [stage, "--params", str(params)] + (["--no-progress"] if stage != "filter" else [])
        assert cli_main(args) == 0, stage


def test_chain_on_the_tiny_profile(tiny_model_dir, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "th"))
    params = write_params(
        tmp_path,
        model={"tiny_dir": str(tiny_model_dir), "device": "cpu"},
        generate={"num_images": 8, "width": 32, "height": 32, "num_inference_steps": 2},
        score={"device": "cpu"},
    )
    _chain(params)
    gen = read_manifest("data/generate/manifest.parquet")
    scored = read_manifest("data/score/manifest.parquet")
    kept = read_manifest("data/filter/manifest.parquet")
    dropped = read_manifest("data/filter/dropped.parquet")
    assert len(gen) == len(scored) == 8 and scored["score_piqe"].notna().all()
    # PIQE, lower is better, keep 0.95 of 8: cut = quantile(0.95) between the two worst -> the worst goes.
    worst = scored.loc[scored["score_piqe"].idxmax(), "id"]
    assert dropped["id"].tolist() == [worst] and len(kept) == 7
    for report in ("generate/manifest", "generate/rejected", "score/input", "score/manifest", "filter/input",
                   "filter/manifest", "filter/dropped"):  # fmt: skip
        assert "PASSED" in Path(f"reports/validation/{report}.md").read_text()


def test_chain_on_real_photos(photo_dir, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "th"))
    params = write_params(
        tmp_path,
        generate={"source": "folder", "input_dir": str(photo_dir)},
        score={"device": "cpu"},
        filter={"keep_quantile": 0.7},
    )
    _chain(params)
    gen = read_manifest("data/generate/manifest.parquet")
    assert gen["origin_path"].tolist() == [
        "astronaut.png",
        "nature/cats/chelsea.png",
        "nature/coffee.jpg",
        "rocket.jpg",
    ]
    assert gen[["width", "height"]].values.tolist() == [[512, 512], [451, 300], [600, 400], [640, 427]]
    scored = read_manifest("data/score/manifest.parquet")
    kept = read_manifest("data/filter/manifest.parquet")
    cut = np.quantile(scored["score_piqe"], 0.7)  # lower is better
    assert kept["id"].tolist() == scored.loc[scored["score_piqe"] <= cut, "id"].tolist()
    assert 1 <= len(kept) < 4
