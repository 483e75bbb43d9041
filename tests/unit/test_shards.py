"""fluxir.orchestration.shards: index ranges, and gathering shard results where the stages resume from."""

from __future__ import annotations

import json
import sys

import numpy as np
import pandas as pd
import pytest

from fluxir.data.manifest import read_manifest, write_manifest
from fluxir.io import TMP_SUFFIX
from fluxir.orchestration import shards


@pytest.mark.parametrize(
    "total, n, align, expected",
    [
        (8, 2, 2, [(0, 4), (4, 4)]),
        (10, 3, 2, [(0, 4), (4, 4), (8, 2)]),  # 5 batches of 2: 2 + 2 + 1
        (7, 2, 4, [(0, 4), (4, 3)]),  # the last batch is short
        (3, 5, 1, [(0, 1), (1, 1), (2, 1)]),  # more shards than work: no empty ranges
        (0, 2, 1, []),
        (350_000, 4, 2, [(0, 87_500), (87_500, 87_500), (175_000, 87_500), (262_500, 87_500)]),
    ],
)
def test_split_range(total, n, align, expected):
    ranges = shards.split_range(total, n, align)
    assert ranges == expected
    assert sum(c for _, c in ranges) == total
    assert all(s % align == 0 for s, _ in ranges)


def test_split_range_rejects_nonsense():
    with pytest.raises(ValueError, match="shards >= 1"):
        shards.split_range(4, 0)


def _shard(folder, record, names):
    (folder / "shard_000").mkdir(parents=True)
    (folder / "run.json").write_text(json.dumps(record))
    for name in names:
        (folder / "shard_000" / name).write_bytes(name.encode())
    return folder


def test_gather_generate_moves_images_and_keeps_existing(tmp_path):
    rec = {"seed": 0, "width": 128}
    a = _shard(tmp_path / "a", rec, ["0000000.png", "0000001.png"])
    b = _shard(tmp_path / "b", rec, ["0000002.png", "0000003.png"])
    out = tmp_path / "out"
    (out / "shard_000").mkdir(parents=True)
    (out / "shard_000" / "0000001.png").write_bytes(b"already here")
    (a / "shard_000" / f".0000004.png.x{TMP_SUFFIX}").write_bytes(b"partial")

    assert shards.gather_generate([a, b], out) == 3
    assert sorted(p.name for p in (out / "shard_000").iterdir()) == [f"000000{i}.png" for i in range(4)]
    assert (out / "shard_000" / "0000001.png").read_bytes() == b"already here"
    assert (out / "shard_000" / "0000002.png").read_bytes() == b"0000002.png"


def test_gather_generate_refuses_other_settings(tmp_path):
    a = _shard(tmp_path / "a", {"seed": 0, "width": 128}, ["0000000.png"])
    b = _shard(tmp_path / "b", {"seed": 0, "width": 256}, ["0000001.png"])
    with pytest.raises(shards.ShardError, match=r"other settings .*\(width\)"):
        shards.gather_generate([a, b], tmp_path / "out")
    out = tmp_path / "out2"
    out.mkdir()
    (out / "run.json").write_text(json.dumps({"seed": 1, "width": 128}))
    with pytest.raises(shards.ShardError, match=r"\(seed\); delete"):
        shards.gather_generate([a], out)
    assert not (out / "shard_000").exists()


def _generate_manifest(root, n=5):
    rows = []
    for k in range(n):
        path = root / "shard_000" / f"{k:07d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(bytes([k]) * 10)
        rows.append({"id": f"{k:07d}", "index": k, "path": str(path), "sha256": f"{k:064x}"})
    return write_manifest(pd.DataFrame(rows), root / "manifest.parquet", kind="generate")


def test_score_slice_and_gather(tmp_path):
    manifest = _generate_manifest(tmp_path / "generate")
    assert shards.count_rows(manifest) == 5
    sliced = shards.make_score_slice(manifest, 2, 2, tmp_path / "slice")
    df = read_manifest(sliced)
    assert list(df["id"]) == ["0000002", "0000003"]
    for p in df["path"]:
        assert p.startswith(str(tmp_path / "slice")) and open(p, "rb").read() == bytes([int(p[-5])]) * 10

    parts = []
    for start, count in [(0, 2), (2, 3)]:
        part = read_manifest(manifest).iloc[start : start + count].copy()
        part["score_piqe"] = np.arange(start, start + count, dtype=float) + 0.5
        parts.append(write_manifest(part, tmp_path / f"part{start}" / "manifest.parquet", kind="score"))
    progress = shards.gather_scores(parts, tmp_path / "score")
    assert progress.name == ".progress.parquet"
    got = read_manifest(progress)
    assert list(got.columns) == ["id", "sha256", "score_piqe"]
    assert list(got["score_piqe"]) == [0.5, 1.5, 2.5, 3.5, 4.5]


def test_gather_scores_needs_score_columns(tmp_path):
    manifest = _generate_manifest(tmp_path / "generate", n=2)
    with pytest.raises(shards.ShardError, match="no score columns"):
        shards.gather_scores([manifest], tmp_path / "score")


# ----------------------------------------------------------------------------------------------
# Local shards' share of the machine


def test_each_local_shard_gets_its_share_of_cores_and_one_gpu(monkeypatch):
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    envs = [shards.shard_env(i, 4, cores=16, gpus=2) for i in range(4)]
    assert {e["OMP_NUM_THREADS"] for e in envs} == {"4"} and envs[0]["MKL_NUM_THREADS"] == "4"
    assert [e["CUDA_VISIBLE_DEVICES"] for e in envs] == ["0", "1", "0", "1"]
    assert shards.shard_env(0, 8, cores=2, gpus=0) == dict.fromkeys(shards.THREAD_VARIABLES, "1")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,5")  # a machine share given to us: pin within it
    assert shards.gpu_count() == 2
    assert [shards.shard_env(i, 2, cores=4)["CUDA_VISIBLE_DEVICES"] for i in range(2)] == ["3", "5"]


def test_a_shard_process_receives_its_threads_and_gpu(tmp_path):
    from fluxir.orchestration.dvc import run_command

    probe = "import os, torch; print(os.environ['CUDA_VISIBLE_DEVICES'], torch.get_num_threads())"
    lines = run_command(
        [sys.executable, "-c", probe], tmp_path, shards.shard_env(1, 2, cores=4, gpus=2), lambda _: None
    )
    assert lines[-1] == "1 2"  # torch's intra-op pool follows OMP_NUM_THREADS


def test_shard_workers_are_pinned_one_per_gpu(tmp_path, monkeypatch):
    from fluxir.orchestration import services

    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    monkeypatch.setattr(shards, "gpu_count", lambda: 2)
    monkeypatch.setattr(shards.os, "cpu_count", lambda: 16)
    planned, _ = services.plan(tmp_path, shard_workers=2, fixed_ports=False)
    workers = [s for s in planned if s.name.startswith("shard-worker-")]
    assert [(w.env["CUDA_VISIBLE_DEVICES"], w.env["OMP_NUM_THREADS"]) for w in workers] == [
        ("0", "8"),
        ("1", "8"),
    ]
