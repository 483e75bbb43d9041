"""Stage degrade: real photos -> (HQ crop, LQ) pairs with a validated manifest; reruns are exact."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from helpers import write_params
from PIL import Image

from fluxir.cli import main as cli_main
from fluxir.data.manifest import read_manifest


def digests(folder: Path) -> dict[str, str]:
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*.png"))}  # fmt: skip


@pytest.fixture()
def filtered(photo_dir, tmp_path, monkeypatch) -> Path:
    """generate (folder ingest of scikit-image photos + one too small for any crop) -> score -> filter."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "th"))
    photos = tmp_path / "photos"
    shutil.copytree(photo_dir, photos)
    # Passes ingest (>= 96 x 128) but no 96x128 crop fits a 100 x 100 image in landscape: it is rejected
    # by degrade with a reason. (Ingest's own minimum is in params; degrade's sizes are checked here.)
    Image.fromarray(np.asarray(Image.open(photos / "astronaut.png"))[:100, :130]).save(photos / "small.png")
    params = write_params(
        tmp_path,
        generate={"source": "folder", "input_dir": str(photos)},
        score={"device": "cpu"},
        filter={"enabled": False},
        degrade={"sizes": [[112, 128], [128, 96]]},
    )
    for stage in ("generate", "score", "filter"):
        assert (
            cli_main([stage, "--params", str(params)] + (["--no-progress"] if stage != "filter" else [])) == 0
        )
    return params


def test_pairs_have_the_configured_sizes_and_a_record(filtered, tmp_path, capsys):
    assert cli_main(["degrade", "--params", str(filtered), "--no-progress"]) == 0
    pairs = read_manifest("data/degrade/manifest.parquet")
    rejected = read_manifest("data/degrade/rejected.parquet")
    assert len(pairs) == 4  # the four photos
    assert rejected["reason"].tolist() == [
        "image 100x130 (HxW) is smaller than every crop size (112x128, 128x96)"
    ]
    for row in pairs.itertuples():
        hq, lq = np.asarray(Image.open(row.hq_path)), np.asarray(Image.open(row.lq_path))
        assert hq.shape[:2] in [(112, 128), (128, 96)] and hq.shape == (row.hq_height, row.hq_width, 3)
        assert lq.shape == (hq.shape[0] // 4, hq.shape[1] // 4, 3)
        record = json.loads(row.record)
        assert {"crop", "gt_usm"} <= set(record)
        assert hashlib.sha256(Path(row.lq_path).read_bytes()).hexdigest() != row.hq_sha256
    summary = json.loads(Path("reports/degrade/summary.json").read_text())
    assert summary["pairs"] == 4 and summary["rejected"] == 1
    assert "PASSED" in Path("reports/validation/degrade/manifest.md").read_text()


def test_rerun_and_resume_are_bitwise_equal(filtered, tmp_path, caplog):
    assert cli_main(["degrade", "--params", str(filtered), "--no-progress"]) == 0
    first = digests(Path("data/degrade"))
    manifest = Path("data/degrade/manifest.parquet").read_bytes()

    # A crash after two pairs: remove the others' files and sidecars, then rerun.
    pairs = read_manifest("data/degrade/manifest.parquet")
    for row in pairs.iloc[2:].itertuples():
        Path(row.hq_path).unlink()
        Path(f"data/degrade/records/{row.id}.json").unlink()
    summary = Path("reports/degrade/summary.json").read_bytes()
    with caplog.at_level("INFO", logger="fluxir"):
        assert cli_main(["degrade", "--params", str(filtered), "--no-progress"]) == 0
    assert "degrade run: reused 2" in caplog.text  # the run's history: the log and MLflow, not the report
    assert Path("reports/degrade/summary.json").read_bytes() == summary
    assert digests(Path("data/degrade")) == first
    assert Path("data/degrade/manifest.parquet").read_bytes() == manifest

    # From scratch in another folder: same bytes.
    other_folder = ["--set", "degrade.out_dir=data/degrade2"]
    assert cli_main(["degrade", "--params", str(filtered), *other_folder, "--no-progress"]) == 0
    assert digests(Path("data/degrade2")) == first
    records = {p.name: p.read_bytes() for p in Path("data/degrade/records").glob("*.json")}
    assert records == {p.name: p.read_bytes() for p in Path("data/degrade2/records").glob("*.json")}


def test_new_settings_do_not_reuse_pairs(filtered, caplog):
    assert cli_main(["degrade", "--params", str(filtered), "--no-progress"]) == 0
    first = digests(Path("data/degrade"))
    with caplog.at_level("INFO", logger="fluxir"):
        assert (
            cli_main(["degrade", "--params", str(filtered), "--set", "degrade.seed=1", "--no-progress"]) == 0
        )
    assert "degrade run: reused 0" in caplog.text
    assert digests(Path("data/degrade")) != first


def test_pairs_of_images_gone_from_the_input_are_removed(filtered, tmp_path, caplog):
    import pandas as pd

    assert cli_main(["degrade", "--params", str(filtered), "--no-progress"]) == 0
    pairs = read_manifest("data/degrade/manifest.parquet")
    gone = pairs["id"].iloc[0]
    # the filter output shrinks: one image less (the manifest read and written as the filter stage does)
    source = pd.read_parquet("data/filter/manifest.parquet")
    source[source["id"] != gone].to_parquet("data/filter/manifest.parquet")
    with caplog.at_level("INFO", logger="fluxir"):
        assert cli_main(["degrade", "--params", str(filtered), "--no-progress"]) == 0
    assert "removed 3 files of pairs no longer in the input" in caplog.text
    left = {p.relative_to("data/degrade").as_posix() for p in Path("data/degrade").rglob("*") if p.is_file()}
    assert not [name for name in left if gone in name], left
    assert len(read_manifest("data/degrade/manifest.parquet")) == len(pairs) - 1

    # the folder is what a run from scratch on the smaller input writes
    assert (
        cli_main(
            ["degrade", "--params", str(filtered), "--set", "degrade.out_dir=data/fresh", "--no-progress"]
        )
        == 0
    )
    fresh = {p.relative_to("data/fresh").as_posix() for p in Path("data/fresh").rglob("*") if p.is_file()}
    assert left == fresh and digests(Path("data/degrade")) == digests(Path("data/fresh"))


def test_missing_input_manifest_is_a_one_line_error(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    params = write_params(tmp_path)
    assert cli_main(["degrade", "--params", str(params)]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert (
        err
        == "fluxir degrade: error: data/filter/manifest.parquet: manifest not found; run the stage that writes it first"
    )


def test_a_killed_run_leaves_no_temp_file_in_the_output_after_the_rerun(filtered, tmp_path):
    """SIGKILL mid-run, then a rerun to completion: the folder (a DVC output) holds no temp file of a write
    the kill cut short, and the same bytes as an uninterrupted run."""
    import os
    import signal
    import subprocess
    import sys
    import time

    from fluxir.io import TMP_SUFFIX

    out = tmp_path / "data" / "degrade"
    cmd = [sys.executable, "-m", "fluxir.stages.degrade", "--params", str(filtered), "--no-progress"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 240
    while not list(out.glob("hq/*.png")) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    # What a kill inside a write leaves, wherever the kill above happened to land: a temp file beside the
    # file being written, in each folder the stage writes (a user's own *.tmp is not the stage's to remove).
    for folder in (out, out / "hq", out / "lq", out / "records"):
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f".0000003.png.k1ll3d{TMP_SUFFIX}").write_bytes(b"half a png")
    (out / "notes.tmp").write_text("the user's")

    assert cli_main(["degrade", "--params", str(filtered), "--no-progress"]) == 0
    assert not [p for p in out.rglob("*") if p.name.endswith(TMP_SUFFIX)]
    assert (out / "notes.tmp").read_text() == "the user's"
    assert len(read_manifest(out / "manifest.parquet")) == 4

    other = ["--set", "degrade.out_dir=data/degrade-clean"]
    assert cli_main(["degrade", "--params", str(filtered), *other, "--no-progress"]) == 0
    assert digests(out) == digests(tmp_path / "data" / "degrade-clean")
