"""fluxir.data.expectations: the pandas twins give great-expectations' outcomes on the same suites."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from fluxir.data.images import write_image_atomic
from fluxir.data.validate import ENGINE_ENV, ManifestValidationError, validate_manifest


def _broken(tmp_path) -> pd.DataFrame:
    """Every rule of the generate and score suites broken at least once, and some nulls they skip."""
    rows = []
    for k in range(6):
        path = tmp_path / f"{k:07d}.png"
        sha = write_image_atomic(path, np.full((8, 8, 3), k, np.uint8))
        rows.append({
            "id": f"{k:07d}", "index": k, "path": str(path), "source": "flux", "model": "tiny", "seed": k,
            "prompt": "", "width": 8, "height": 8, "sha256": sha, "score_piqe": float(k),
        })  # fmt: skip
    df = pd.DataFrame(rows)
    df.loc[1, "id"] = df.loc[2, "id"]  # duplicate
    df.loc[3, ["sha256", "source", "width"]] = ["xyz", "camera", 0]  # regex, set, lower bound
    df.loc[4, ["model", "height"]] = [None, 10**9]  # null, upper bound
    df["seed"] = df["seed"].astype("Int64")
    df.loc[5, "seed"] = pd.NA  # a null seed is allowed (real photos)
    df.loc[0, "score_piqe"] = float("inf")
    df.attrs["metrics"] = {"piqe": {"column": "score_piqe", "lower_better": True}}
    return df


@pytest.mark.parametrize("kind", ["generate", "score"])
def test_pandas_and_great_expectations_agree(tmp_path, monkeypatch, kind):
    df = _broken(tmp_path)
    results = {}
    for engine in ("pandas", "great_expectations"):
        monkeypatch.setenv(ENGINE_ENV, engine)
        with pytest.raises(ManifestValidationError) as exc:
            validate_manifest(df, kind, tmp_path / engine)
        results[engine] = (
            json.loads((tmp_path / engine / f"{kind}.json").read_text())["results"],
            str(exc.value).replace(str(tmp_path / engine), "<reports>"),
        )
    assert results["pandas"] == results["great_expectations"]
    assert sum(not r["success"] for r in results["pandas"][0]) == {"generate": 6, "score": 7}[kind]


def test_an_empty_table_fails_the_row_count(tmp_path, monkeypatch):
    monkeypatch.setenv(ENGINE_ENV, "pandas")
    with pytest.raises(ManifestValidationError, match="expect_table_row_count_to_be_between"):
        validate_manifest(_broken(tmp_path).iloc[:0], "generate", tmp_path)
