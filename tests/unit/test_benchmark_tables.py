"""Table 1 layout: rows per dataset and metric, methods as columns, best/second by each metric's direction."""

from __future__ import annotations

import io
import math

import pandas as pd

from fluxir.benchmark.metrics import MetricInfo
from fluxir.benchmark.tables import ABSENT, means, ranks, table1_csv, table1_markdown, table1_rows

INFO = {
    "psnr": MetricInfo("psnr", "PSNR", False, True, "Y channel"),
    "lpips": MetricInfo("lpips", "LPIPS", True, True),
    "piqe": MetricInfo("piqe", "PIQE", True, False),
}
METHODS = ["bicubic", "esrgan", "fluxir"]


def test_ranks_follow_the_metric_direction_and_share_ties():
    assert ranks([20.0, 24.0, 22.0], lower_better=False) == ["", "best", "second"]
    assert ranks([0.3, 0.2, 0.25], lower_better=True) == ["", "best", "second"]
    assert ranks([1.0, 1.0, 0.5], lower_better=False) == ["best", "best", "second"]
    assert ranks([float("nan"), 3.0, 2.0], lower_better=False) == ["", "best", "second"]
    assert ranks([5.0], lower_better=False) == ["best"]


def test_means_per_dataset_and_method_ignore_nan():
    per_image = pd.DataFrame(
        {
            "dataset": ["A", "A", "A", "A"],
            "method": ["m", "m", "n", "n"],
            "psnr": [10.0, 20.0, 30.0, float("nan")],
        }
    )
    assert means(per_image, ["psnr", "ssim"]) == {"A": {"m": {"psnr": 15.0}, "n": {"psnr": 30.0}}}


def _rows():
    results = {
        "Synth": {"bicubic": {"psnr": 24.0, "piqe": 40.0}, "esrgan": {"psnr": 23.0, "piqe": 30.0},
                  "fluxir": {"psnr": 21.0, "piqe": 20.0}},
        "LQ250": {"bicubic": {"piqe": 50.0}, "esrgan": {"piqe": 45.0}, "fluxir": {"piqe": 46.0}},
    }  # fmt: skip
    absent = {"lpips": "lpips: weight file LPIPS_v0.1_alex-df73285e.pth is not in /th/hub/pyiqa"}
    return table1_rows(results, [("Synth", True), ("LQ250", False)], METHODS, INFO, absent), absent


def test_rows_are_dataset_by_metric_and_sets_without_hq_have_no_full_reference_rows():
    rows, _ = _rows()
    assert [(r["dataset"], r["metric"], r["direction"]) for r in rows] == [
        ("Synth", "PSNR", "↑"),
        ("Synth", "LPIPS", "↓"),
        ("Synth", "PIQE", "↓"),
        ("LQ250", "PIQE", "↓"),
    ]
    assert rows[1]["fluxir"] == ABSENT
    assert rows[0]["esrgan"] == 23.0


def test_markdown_has_the_paper_layout_with_bold_best_and_underlined_second():
    rows, absent = _rows()
    md = table1_markdown(rows, METHODS, INFO, absent, header=["**tiny model: plumbing, not quality**"])
    lines = md.splitlines()
    assert "**tiny model: plumbing, not quality**" in lines[2]
    head = lines.index("| Datasets | Metrics | bicubic | esrgan | fluxir |")
    assert lines[head + 2] == "| Synth | PSNR ↑ | **24.00** | <u>23.00</u> | 21.00 |"
    assert lines[head + 3] == "|  | LPIPS ↓ | absent | absent | absent |"
    assert lines[head + 4] == "|  | PIQE ↓ | 40.00 | <u>30.00</u> | **20.00** |"  # lower is better
    assert lines[head + 5] == "| LQ250 | PIQE ↓ | 50.00 | **45.00** | <u>46.00</u> |"
    assert "LPIPS absent: lpips: weight file LPIPS_v0.1_alex-df73285e.pth is not in /th/hub/pyiqa" in md
    assert "PSNR: pyiqa `psnr`, Y channel" in md


def test_unranked_columns_take_no_part_in_the_marks():
    rows, absent = _rows()
    md = table1_markdown(rows, METHODS, INFO, absent, unranked=["bicubic"])
    # bicubic's 24.00 is the highest PSNR but is shown plain; esrgan and fluxir take best and second
    assert "| Synth | PSNR ↑ | 24.00 | **23.00** | <u>21.00</u> |" in md.splitlines()


def test_csv_keeps_the_layout_and_full_precision():
    rows, _ = _rows()
    df = pd.read_csv(io.StringIO(table1_csv(rows)))
    assert list(df.columns) == ["dataset", "metric", "direction", "pyiqa", *METHODS]
    assert df.loc[1, "fluxir"] == ABSENT
    assert math.isclose(float(df.loc[0, "bicubic"]), 24.0)
