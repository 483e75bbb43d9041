"""Append-only progress parts: each row written once, read back on resume, removed at the end."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from fluxir.data.progress import ProgressLog, read_progress, remove_progress
from fluxir.stages.generate import generate_images, rows_to_frame


class _Render:
    def __call__(self, prompts, seeds):
        return np.zeros((len(seeds), 4, 4, 3), dtype=np.uint8)


def test_each_checkpoint_writes_only_its_new_rows(tmp_path):
    log = ProgressLog(tmp_path, "all", "generate-progress", rows_to_frame)
    rows, _ = generate_images(
        _Render(), tmp_path, num_images=12, seed=0, prompts=[""], batch_size=2, shard_size=4,
        checkpoint=log.append, progress=False, meta={"source": "flux", "model": "m", "width": 4, "height": 4},
    )  # fmt: skip
    parts = read_progress(tmp_path)
    assert [len(p) for p in parts] == [4, 4, 4]  # not 4, 8, 12: a checkpoint never rewrites old rows
    assert [i for p in parts for i in p["index"]] == list(range(12))
    assert log.append(rows) is None  # nothing new


def test_a_resumed_run_numbers_its_parts_after_the_crashed_ones(tmp_path):
    first = ProgressLog(tmp_path, "0-8", "generate-progress", rows_to_frame)
    row = {"id": "0000000", "index": 0, "path": str(tmp_path / "a.png"), "source": "flux", "model": "m",
           "seed": 0, "prompt": "", "width": 4, "height": 4, "sha256": "x", "origin_path": None,
           "origin_sha256": None, "note": ""}  # fmt: skip
    assert first.append([row]).name == ".progress-0-8-000000.parquet"
    again = ProgressLog(tmp_path, "0-8", "generate-progress", rows_to_frame)
    assert again.append([row, dict(row, index=1, id="0000001")]).name == ".progress-0-8-000001.parquet"
    assert ProgressLog(tmp_path, "0-80", "generate-progress", rows_to_frame).seq == 0  # tags kept apart
    assert read_progress(tmp_path)[0]["path"].tolist() == [str(tmp_path / "a.png")]
    remove_progress(tmp_path)
    assert not list(Path(tmp_path).iterdir())
