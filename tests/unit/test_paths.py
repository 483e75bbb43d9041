"""A hostile manifest, record, shard folder or S3 key can neither write nor read outside its data root."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from helpers import write_params
from PIL import Image

from fluxir.cli import main as cli_main
from fluxir.data.manifest import read_manifest, write_manifest
from fluxir.data.paths import UnsafePathError, check_id, check_inside, resolve_inside
from fluxir.errors import UserError

HOSTILE_IDS = ["../../../x", "/abs/x", "a/b", "..", ".hidden", "-rf", "x" * 201, "a\nb", "ab\n", ""]
HOSTILE_PATHS = ["../../etc/passwd", "/etc/passwd", "hq/../../../etc/passwd"]


@pytest.mark.parametrize("value", HOSTILE_IDS)
def test_ids_must_be_plain_names(value: str) -> None:
    with pytest.raises(UnsafePathError, match="row 3"):
        check_id(value, "m.parquet row 3")


@pytest.mark.parametrize("value", ["0000017", "astronaut-00", "0801_c0.x"])
def test_plain_ids_pass(value: str) -> None:
    assert check_id(value, "row") == value


@pytest.mark.parametrize("rel", HOSTILE_PATHS)
def test_relative_paths_with_dots_or_absolute_are_refused(tmp_path: Path, rel: str) -> None:
    with pytest.raises(UnsafePathError, match="row 1"):
        resolve_inside(tmp_path, rel, "row 1")


def test_a_link_out_of_the_root_is_refused(tmp_path: Path) -> None:
    root = tmp_path / "data"
    root.mkdir()
    (tmp_path / "secret").write_text("x")
    (root / "link.png").symlink_to(tmp_path / "secret")
    with pytest.raises(UnsafePathError, match="outside"):
        resolve_inside(root, "link.png", "row 0")
    (root / "ok.png").write_text("x")
    assert resolve_inside(root, "ok.png", "row 0") == root / "ok.png"
    assert check_inside(root, root / "ok.png", "row 0") == root / "ok.png"


def _manifest(tmp_path: Path, rows: list[dict]) -> Path:
    """A manifest written raw (as an attacker would), under data/filter of a fresh project."""
    folder = tmp_path / "data" / "filter"
    folder.mkdir(parents=True)
    pd.DataFrame(rows).to_parquet(folder / "manifest.parquet", index=False)
    return folder / "manifest.parquet"


@pytest.mark.parametrize("bad_id", ["../../../x", "/abs/x"])
def test_read_manifest_refuses_hostile_ids(tmp_path: Path, bad_id: str) -> None:
    path = _manifest(
        tmp_path, [{"id": "0000000", "path": "../generate/a.png"}, {"id": bad_id, "path": "b.png"}]
    )
    with pytest.raises(UnsafePathError, match=r"row 1: id"):
        read_manifest(path)


@pytest.mark.parametrize("bad_path", ["../../etc/passwd", "/etc/passwd", "../../../../../../../etc/passwd"])
def test_read_manifest_refuses_paths_outside_the_data_root(tmp_path: Path, bad_path: str) -> None:
    path = _manifest(tmp_path, [{"id": "0000000", "path": bad_path}])
    with pytest.raises(UnsafePathError, match="row 0 path"):
        read_manifest(path)


def test_read_manifest_refuses_a_link_out(tmp_path: Path) -> None:
    (tmp_path / "outside.png").write_bytes(b"x")
    path = _manifest(tmp_path, [{"id": "0000000", "path": "a.png"}])
    (path.parent / "a.png").symlink_to(tmp_path / "outside.png")
    with pytest.raises(UnsafePathError, match="row 0 path"):
        read_manifest(path)


def test_sibling_stage_folders_stay_readable(tmp_path: Path) -> None:
    df = pd.DataFrame({"id": ["0000000"], "path": [str(tmp_path / "data" / "generate" / "a.png")]})
    write_manifest(df, tmp_path / "data" / "score" / "manifest.parquet")
    back = read_manifest(tmp_path / "data" / "score" / "manifest.parquet")
    assert back["path"].tolist() == [str(tmp_path / "data" / "generate" / "a.png")]


@pytest.mark.parametrize(
    "row",
    [
        {"id": "../../../x", "hq_path": "hq/a.png", "lq_path": "lq/a.png"},
        {"id": "a", "hq_path": "../../etc/passwd", "lq_path": "lq/a.png"},
        {"id": "a", "hq_path": "hq/a.png", "lq_path": "/etc/passwd"},
        {"id": "a", "hq_path": "hq/link.png", "lq_path": "lq/a.png"},
    ],
)
def test_training_manifest_reads_nothing_outside(tmp_path: Path, row: dict) -> None:
    from fluxir.train.data import read_pairs

    folder = tmp_path / "data" / "degrade"
    for sub in ("hq", "lq"):
        (folder / sub).mkdir(parents=True)
        (folder / sub / "a.png").write_bytes(b"x")
    (tmp_path / "outside.png").write_bytes(b"x")
    (folder / "hq" / "link.png").symlink_to(tmp_path / "outside.png")
    pd.DataFrame([{**row, "hq_height": 16, "hq_width": 16}]).to_parquet(folder / "manifest.parquet")
    with pytest.raises(UserError, match="row 0"):
        read_pairs(folder / "manifest.parquet")


def test_storage_keys_use_the_same_rule(tmp_path: Path) -> None:
    from fluxir.orchestration.storage import StorageError, _inside, parse_url

    loc = parse_url("s3://bucket/prefix")
    for key in ("../x", "/abs/x", "a/../../x"):
        with pytest.raises(StorageError, match="escapes"):
            _inside(tmp_path, key, loc)


@pytest.mark.parametrize("bad_id", ["../../../x", "/abs/x"])
def test_degrade_stops_on_a_hostile_id_and_writes_nothing(tmp_path, monkeypatch, capsys, bad_id) -> None:
    monkeypatch.chdir(tmp_path)
    image = tmp_path / "data" / "generate" / "a.png"
    image.parent.mkdir(parents=True)
    Image.fromarray(np.zeros((128, 128, 3), np.uint8)).save(image)
    manifest = _manifest(tmp_path, [{"id": bad_id, "path": "../generate/a.png", "width": 128, "height": 128}])
    params = write_params(tmp_path, degrade={"in_manifest": str(manifest), "out_dir": "data/degrade"})
    before = sorted(p for p in Path("/").glob("x")) + sorted(tmp_path.parent.glob("*x"))
    assert cli_main(["degrade", "--params", str(params), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "row 0: id" in err[0] and "Traceback" not in err[0]
    assert not (tmp_path / "data" / "degrade").exists()
    assert sorted(p for p in Path("/").glob("x")) + sorted(tmp_path.parent.glob("*x")) == before
    assert not os.path.exists(tmp_path.parent.parent / "x")


@pytest.mark.parametrize(
    "record",
    [
        {"id": "a", "hq_path": "../../etc/passwd", "lq_path": "lq/a.png"},
        {"id": "a", "hq_path": "hq/a.png", "lq_path": "/etc/passwd"},
        {"id": "../../x", "hq_path": "hq/a.png", "lq_path": "lq/a.png"},
    ],
)
def test_degrade_records_stay_inside_out_dir(tmp_path: Path, record: dict) -> None:
    import json

    from fluxir.stages.degrade import RUN_RECORD, _previous_rows

    (tmp_path / RUN_RECORD).write_text(json.dumps({"key": "k"}))
    (tmp_path / "records").mkdir()
    (tmp_path / "records" / "a.json").write_text(json.dumps(record))
    with pytest.raises(UnsafePathError, match="a.json"):
        _previous_rows(tmp_path, "k")
