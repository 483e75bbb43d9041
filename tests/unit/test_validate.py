"""fluxir.data.validate: great-expectations suites per manifest kind, reports, one-line errors."""

from __future__ import annotations

import json
import time

import numpy as np
import pandas as pd
import pytest

from fluxir.data.images import write_image_atomic
from fluxir.data.validate import (
    SPECS,
    KindSpec,
    ManifestValidationError,
    Rule,
    read_validated,
    register_kind,
    validate_manifest,
)


@pytest.fixture
def manifest(tmp_path) -> pd.DataFrame:
    rows = []
    for k in range(4):
        path = tmp_path / "shard_000" / f"{k:07d}.png"
        sha = write_image_atomic(path, np.full((16, 24, 3), 40 * k, np.uint8))
        rows.append(
            {
                "id": f"{k:07d}",
                "index": k,
                "path": str(path),
                "source": "flux",
                "model": "tiny",
                "seed": k,
                "prompt": "",
                "width": 24,
                "height": 16,
                "sha256": sha,
            }
        )
    df = pd.DataFrame(rows)
    df["seed"] = df["seed"].astype("Int64")
    return df


def _scored(df: pd.DataFrame) -> pd.DataFrame:
    df = df.copy()
    df["score_piqe"] = [10.0, 20.0, float("nan"), 40.0]
    df.attrs["metrics"] = {"piqe": {"column": "score_piqe", "lower_better": True}}
    return df


def test_a_valid_manifest_passes_and_writes_reports(manifest, tmp_path):
    report = validate_manifest(manifest, "generate", tmp_path / "reports", source="m.parquet")
    assert report.success and report.rows == 4 and report.expectations == 15
    md, page, js = report.paths
    assert md.read_text().startswith("# Validation of m.parquet (kind 'generate', 4 rows): PASSED")
    assert "expect_column_values_to_match_regex" in md.read_text()
    assert "<table>" in page.read_text()
    payload = json.loads(js.read_text())
    assert payload["success"] is True and len(payload["results"]) == 15


def test_reports_are_the_same_bytes_on_every_run(manifest, tmp_path):
    # They are DVC outputs: no creation times in the manifest, no timings in the reports (the log has them).
    first = validate_manifest(manifest, "generate", tmp_path / "a", source="m.parquet").paths
    again = validate_manifest(manifest, "generate", tmp_path / "b", source="m.parquet").paths
    assert [p.read_bytes() for p in first] == [p.read_bytes() for p in again]
    assert "seconds" not in json.loads(first[2].read_text())


@pytest.mark.parametrize(
    ("column", "row", "value", "expectation"),
    [
        ("sha256", 2, "xyz", "expect_column_values_to_match_regex(column='sha256'"),
        ("width", 1, 0, "expect_column_values_to_be_between(column='width', min_value=1"),
        ("source", 0, "midjourney", "expect_column_values_to_be_in_set(column='source'"),
        ("path", 2, "/nonexistent/0000002.png", "expect_column_values_to_be_existing_files(column='path')"),
        ("prompt", 3, None, "expect_column_values_to_not_be_null(column='prompt')"),
        ("seed", 1, -5, "expect_column_values_to_be_between(column='seed', min_value=0)"),
    ],
)
def test_a_broken_row_is_named_with_its_expectation(manifest, tmp_path, column, row, value, expectation):
    broken = manifest.copy()
    broken[column] = broken[column].astype(object)
    broken.loc[row, column] = value
    with pytest.raises(ManifestValidationError) as info:
        validate_manifest(broken, "generate", tmp_path, source="data/generate/manifest.parquet")
    msg = str(info.value)
    assert "\n" not in msg
    assert msg.startswith(
        f"data/generate/manifest.parquet: row {row} (id '{broken.loc[row, 'id']}') fails {expectation}"
    )
    assert str(tmp_path / "generate.md") in msg
    assert "FAILED" in (tmp_path / "generate.md").read_text()


def test_duplicate_ids_name_the_first_duplicate(manifest, tmp_path):
    broken = manifest.copy()
    broken.loc[3, "id"] = "0000001"
    with pytest.raises(
        ManifestValidationError, match=r"row 1 \(id '0000001'\) fails expect_column_values_to_be_unique"
    ):
        validate_manifest(broken, "generate", tmp_path)


def test_missing_column_and_empty_table(manifest, tmp_path):
    with pytest.raises(
        ManifestValidationError, match=r"fails expect_column_to_exist\(column='sha256'\): column missing"
    ):
        validate_manifest(manifest.drop(columns="sha256"), "generate", tmp_path)
    with pytest.raises(
        ManifestValidationError, match=r"fails expect_table_row_count_to_be_between\(min_value=1\)"
    ):
        validate_manifest(manifest.iloc[:0], "generate", tmp_path)


def test_several_failures_are_counted(manifest, tmp_path):
    broken = manifest.copy()
    broken.loc[0, "sha256"] = "bad"
    broken.loc[1, "width"] = -1
    with pytest.raises(ManifestValidationError, match="1 more failed expectation"):
        validate_manifest(broken, "generate", tmp_path)


def test_score_manifests_allow_nan_but_not_infinity(manifest, tmp_path):
    scored = _scored(manifest)
    assert validate_manifest(scored, "score", tmp_path).success
    scored.loc[1, "score_piqe"] = np.inf
    with pytest.raises(
        ManifestValidationError, match=r"row 1 .* expect_column_values_to_be_between\(column='score_piqe'"
    ):
        validate_manifest(scored, "score", tmp_path)


def test_score_manifests_need_metric_attrs(manifest, tmp_path):
    scored = _scored(manifest)
    scored.attrs = {}
    with pytest.raises(
        ManifestValidationError,
        match=r"expect_table_attrs_to_describe_score_columns\(\): attrs\['metrics'\] is missing",
    ):
        validate_manifest(scored, "score", tmp_path)
    scored = _scored(manifest)
    scored["score_musiq"] = 1.0
    with pytest.raises(ManifestValidationError, match="column 'score_musiq' not in attrs"):
        validate_manifest(scored, "score", tmp_path)


def test_rejected_and_dropped_tables(tmp_path):
    rejected = pd.DataFrame({"path": ["a.png", "b.png"], "reason": ["empty file (0 bytes)", None]})
    with pytest.raises(
        ManifestValidationError, match=r"row 1 fails expect_column_values_to_not_be_null\(column='reason'\)"
    ):
        validate_manifest(rejected, "rejected", tmp_path)
    assert validate_manifest(rejected.iloc[:0], "rejected", tmp_path).success  # no rejects is fine
    dropped = pd.DataFrame({"id": ["1"], "path": ["x"], "dropped_by": ["piqe"]})
    assert validate_manifest(dropped, "dropped", tmp_path).success


def test_register_kind_adds_a_suite(tmp_path):
    register_kind(
        "pairs", KindSpec(("lq",), (Rule("expect_column_values_to_not_be_null", {"column": "lq"}),))
    )
    with pytest.raises(ManifestValidationError, match="row 0 fails expect_column_values_to_not_be_null"):
        validate_manifest(pd.DataFrame({"lq": [None, "x"]}), "pairs", tmp_path)
    with pytest.raises(ValueError, match="unknown manifest kind 'nope'"):
        validate_manifest(pd.DataFrame(), "nope", tmp_path)


def test_read_validated_reads_then_validates(manifest, tmp_path):
    from fluxir.data.manifest import write_manifest

    path = write_manifest(manifest, tmp_path / "manifest.parquet")
    assert read_validated(path, "generate", tmp_path / "r")["id"].tolist() == manifest["id"].tolist()
    broken = manifest.copy()
    broken.loc[2, "height"] = 0
    write_manifest(broken, path)
    with pytest.raises(ManifestValidationError, match=rf"{path}: row 2 \(id '0000002'\) fails"):
        read_validated(path, "generate", tmp_path / "r")


def test_validation_of_a_large_manifest_is_fast(manifest, tmp_path):
    # 10,000 rows that share 4 image files, so the path rules (unique, exists) are left out here.
    big = pd.concat([manifest] * 2500, ignore_index=True)
    big["id"] = [f"{i:07d}" for i in range(len(big))]
    big["index"] = range(len(big))
    rules = tuple(r for r in SPECS["generate"].rules if r.kwargs.get("column") != "path")
    register_kind("generate-shared-files", KindSpec(("id",), rules))
    validate_manifest(big.iloc[:4], "generate-shared-files", tmp_path)  # great_expectations imported
    t0 = time.perf_counter()
    report = validate_manifest(big, "generate-shared-files", tmp_path)
    seconds = time.perf_counter() - t0
    assert report.success and report.expectations == len(rules)
    assert seconds < 10, f"validating 10,000 rows took {seconds:.1f} s"
