"""fluxir.data.manifest: Parquet manifests with relative paths on disk and absolute paths in memory."""

from __future__ import annotations

import shutil
from datetime import UTC, datetime

import pandas as pd
import pytest

from fluxir.data import images
from fluxir.data.manifest import ManifestError, read_manifest, shard_relpath, write_manifest


def _frame(folder) -> pd.DataFrame:
    df = pd.DataFrame(
        {
            "id": ["0000000", "0000001"],
            "path": [str(folder / "shard_000" / "0000000.png"), str(folder / "shard_000" / "0000001.png")],
            "seed": pd.array([7, None], dtype="Int64"),
            "created_at": [datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)] * 2,
            "score_piqe": [1.5, float("nan")],
        }
    )
    df.attrs["metrics"] = {"piqe": {"column": "score_piqe", "lower_better": True}}
    return df


def test_round_trip_keeps_values_dtypes_and_attrs(tmp_path):
    df = _frame(tmp_path / "data")
    path = write_manifest(df, tmp_path / "data" / "manifest.parquet", kind="score")
    back = read_manifest(path)
    assert back["path"].tolist() == df["path"].tolist()
    assert back["seed"].dtype == "Int64" and back["seed"].isna().tolist() == [False, True]
    assert back["created_at"].iloc[0] == pd.Timestamp("2025-01-02 03:04:05", tz="UTC")
    assert back["score_piqe"].iloc[0] == 1.5 and pd.isna(back["score_piqe"].iloc[1])
    assert back.attrs["kind"] == "score"
    assert back.attrs["metrics"] == {"piqe": {"column": "score_piqe", "lower_better": True}}
    assert "kind" not in df.attrs  # the caller's frame is not modified


def test_paths_are_stored_relative_so_the_folder_can_move(tmp_path):
    data = tmp_path / "data"
    write_manifest(_frame(data), data / "manifest.parquet")
    raw = pd.read_parquet(data / "manifest.parquet")
    assert raw["path"].tolist() == ["shard_000/0000000.png", "shard_000/0000001.png"]

    moved = tmp_path / "elsewhere" / "data"
    shutil.copytree(data, moved)
    assert read_manifest(moved / "manifest.parquet")["path"].tolist() == [
        str(moved / "shard_000" / "0000000.png"),
        str(moved / "shard_000" / "0000001.png"),
    ]


def test_paths_outside_the_manifest_folder_use_dotdot(tmp_path):
    df = _frame(tmp_path / "generate")
    write_manifest(df, tmp_path / "score" / "manifest.parquet")
    raw = pd.read_parquet(tmp_path / "score" / "manifest.parquet")
    assert raw["path"].iloc[0] == "../generate/shard_000/0000000.png"
    assert read_manifest(tmp_path / "score" / "manifest.parquet")["path"].tolist() == df["path"].tolist()


def test_missing_and_damaged_manifests_give_one_line_errors(tmp_path):
    with pytest.raises(ManifestError, match="manifest not found"):
        read_manifest(tmp_path / "nope.parquet")
    bad = tmp_path / "bad.parquet"
    bad.write_bytes(b"PAR1 not really")
    with pytest.raises(ManifestError, match="not a readable Parquet manifest") as info:
        read_manifest(bad)
    assert "\n" not in str(info.value)


def test_a_failed_write_keeps_the_previous_manifest(tmp_path, monkeypatch):
    path = tmp_path / "manifest.parquet"
    write_manifest(_frame(tmp_path), path)
    before = path.read_bytes()

    def crash(src, dst):
        raise OSError("killed")

    monkeypatch.setattr(images.os, "replace", crash)
    with pytest.raises(OSError):
        write_manifest(_frame(tmp_path).iloc[:1], path)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["manifest.parquet"]


def test_shard_relpath():
    assert shard_relpath(0, 4) == "shard_000/0000000.png"
    assert shard_relpath(17, 4, "jpg") == "shard_004/0000017.jpg"
    assert shard_relpath(349_999, 1000) == "shard_349/0349999.png"
