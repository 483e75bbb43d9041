"""Stages that need neither torch nor a model do not import them (each costs seconds per process)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
from helpers import write_params

from fluxir.data.images import write_image_atomic
from fluxir.data.manifest import read_manifest, write_manifest

HEAVY = ("torch", "diffusers", "transformers", "great_expectations", "mlflow")

# Runs one stage's main in a fresh interpreter and prints which heavy modules it imported.
PROBE = """
import json, sys
from importlib import import_module
heavy = sys.argv[1].split(",")
code = import_module("fluxir.stages." + sys.argv[2]).main(sys.argv[3:])
print(json.dumps({"code": code, "heavy": [m for m in heavy if m in sys.modules]}))
"""


def _score_manifest(folder: Path, n: int = 6) -> None:
    rows = []
    for k in range(n):
        path = folder / "images" / f"{k}.png"
        sha = write_image_atomic(path, np.full((128, 160, 3), 30 * k, np.uint8))
        rows.append(dict(id=f"{k:07d}", index=k, path=str(path), source="folder", model="photos", seed=None,
                         prompt="", width=160, height=128, sha256=sha, score_sharp=float(k)))  # fmt: skip
    df = pd.DataFrame(rows)
    df["seed"] = df["seed"].astype("Int64")
    df.attrs["metrics"] = {"sharp": {"column": "score_sharp", "lower_better": False}}
    write_manifest(df, folder / "manifest.parquet", kind="score")


def _probe(stage: str, params: Path, cwd: Path) -> dict:
    proc = subprocess.run(
        [sys.executable, "-c", PROBE, ",".join(HEAVY), stage, "--params", str(params)],
        cwd=cwd, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_filter_and_degrade_import_neither_torch_nor_a_model_library(tmp_path):
    _score_manifest(tmp_path / "data" / "score")
    params = write_params(tmp_path)
    assert _probe("filter", params, tmp_path) == {"code": 0, "heavy": []}
    assert _probe("degrade", params, tmp_path) == {"code": 0, "heavy": []}
    assert (tmp_path / "data" / "degrade" / "manifest.parquet").is_file()


def test_score_with_nothing_left_to_score_imports_neither_torch_nor_pyiqa(tmp_path):
    """A rerun over scored images reads the metric directions from the earlier manifest: no model is built."""
    _score_manifest(tmp_path / "data" / "prev")
    scored = read_manifest(tmp_path / "data" / "prev" / "manifest.parquet")
    generated = scored.drop(columns=["score_sharp"])
    generated.attrs = {}
    write_manifest(generated, tmp_path / "data" / "generate" / "manifest.parquet", kind="generate")
    scored = scored.rename(columns={"score_sharp": "score_piqe"})
    scored.attrs["metrics"] = {"piqe": {"column": "score_piqe", "lower_better": True}}
    write_manifest(scored, tmp_path / "data" / "score" / "manifest.parquet", kind="score")
    params = write_params(tmp_path, score={"metrics": ["piqe"], "device": "cpu"})
    assert _probe("score", params, tmp_path) == {"code": 0, "heavy": []}
    summary = json.loads((tmp_path / "reports" / "score" / "summary.json").read_text())
    assert summary["metrics"]["piqe"]["lower_better"] is True  # from the earlier run, not from pyiqa
    assert summary["metrics"]["piqe"]["mean"] == 2.5  # the six stored scores 0..5, none recomputed
