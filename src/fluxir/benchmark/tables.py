"""Means per dataset x method x metric, and Table 1 in the paper's layout.

Table 1 (paper): one block of rows per dataset, one row per metric (with its arrow), one column per
method, "Ours" last; the best value of each row is red and the second blue. Here the best is **bold**
and the second <u>underlined</u>, judged in each metric's direction (ties share the mark; a row with
one finite value marks only the best). Metrics reported absent keep their row, with "absent" cells
and the reason in a note under the table. Full-reference rows are left out of sets without HQ (RealLQ250),
as in the paper.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from fluxir.benchmark.metrics import MetricInfo

ABSENT = "absent"


def means(per_image: pd.DataFrame, metrics: Sequence[str]) -> dict[str, dict[str, dict[str, float]]]:
    """``{dataset: {method: {metric: mean over images}}}`` from the per-image table (NaN-free means)."""
    out: dict[str, dict[str, dict[str, float]]] = {}
    cols = [m for m in metrics if m in per_image.columns]
    for (dataset, method), group in per_image.groupby(["dataset", "method"], sort=False):
        values = {}
        for m in cols:
            v = group[m].astype(float).dropna()
            if len(v):
                values[m] = float(v.mean())
        out.setdefault(str(dataset), {})[str(method)] = values
    return out


def ranks(values: Sequence[float], lower_better: bool) -> list[str]:
    """'best', 'second' or '' per value, in the metric's direction; NaN gets ''."""
    finite = sorted({v for v in values if v is not None and math.isfinite(v)}, reverse=not lower_better)
    best = finite[0] if finite else None
    second = finite[1] if len(finite) > 1 else None
    return ["best" if v == best else "second" if v == second else "" for v in values]


def table1_rows(
    results: Mapping[str, Mapping[str, Mapping[str, float]]],
    datasets: Sequence[tuple[str, bool]],
    methods: Sequence[str],
    info: Mapping[str, MetricInfo],
    absent: Mapping[str, str],
) -> list[dict[str, Any]]:
    """One row per (dataset, metric) in table order: dataset, metric, arrow, then one value per method.

    ``datasets`` is ``[(name, has_hq)]``; values are floats, NaN when missing, or ``ABSENT``.
    """
    rows = []
    for dataset, has_hq in datasets:
        for name, mi in info.items():
            if mi.full_reference and not has_hq:
                continue
            row: dict[str, Any] = {
                "dataset": dataset,
                "metric": mi.label,
                "direction": mi.arrow,
                "pyiqa": name,
            }
            for method in methods:
                row[method] = (
                    ABSENT if name in absent else results.get(dataset, {}).get(method, {}).get(name, np.nan)
                )
            rows.append(row)
    return rows


def _fmt(value: Any) -> str:
    if value == ABSENT:
        return ABSENT
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    v = float(value)
    return f"{v:.2f}" if abs(v) >= 10 else f"{v:.4f}"


def table1_markdown(
    rows: Sequence[Mapping[str, Any]],
    methods: Sequence[str],
    info: Mapping[str, MetricInfo],
    absent: Mapping[str, str],
    header: Sequence[str] = (),
    notes: Sequence[str] = (),
    unranked: Sequence[str] = (),
) -> str:
    """Table 1 as markdown: Datasets | Metrics | methods..., best bold, second underlined.

    Methods in ``unranked`` (references that see the HQ) are shown but take no part in the marks.
    """
    lines = ["# Table 1: quantitative comparison", "", *header]
    if header:
        lines.append("")
    lines += ["| Datasets | Metrics | " + " | ".join(methods) + " |", "|---|---|" + "---|" * len(methods)]
    previous = None
    by_label = {mi.label: mi for mi in info.values()}
    for row in rows:
        mi = by_label[row["metric"]]
        values = [row[m] for m in methods]
        numeric = [
            float(v) if v != ABSENT and m not in unranked else float("nan")
            for v, m in zip(values, methods, strict=True)
        ]
        marks = ranks(numeric, mi.lower_better)
        cells = []
        for value, mark in zip(values, marks, strict=True):
            text = _fmt(value)
            cells.append(f"**{text}**" if mark == "best" else f"<u>{text}</u>" if mark == "second" else text)
        name = row["dataset"] if row["dataset"] != previous else ""
        previous = row["dataset"]
        lines.append(f"| {name} | {row['metric']} {row['direction']} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "Best per row in **bold**, second <u>underlined</u> (↑ higher is better, ↓ lower is better).",
    ]
    settings = [
        f"{mi.label}: pyiqa `{mi.name}`" + (f", {mi.setting}" if mi.setting else "") for mi in info.values()
    ]
    lines.append("Metrics: " + "; ".join(settings) + ".")
    for name, reason in absent.items():
        lines.append(f"- {label_of(info, name)} absent: {reason}")
    lines += [f"- {n}" for n in notes]
    return "\n".join(lines) + "\n"


def label_of(info: Mapping[str, MetricInfo], name: str) -> str:
    return info[name].label if name in info else name


def table1_csv(rows: Sequence[Mapping[str, Any]]) -> str:
    """Table 1 as CSV in the same layout (values unrounded; 'absent' where a metric could not be built)."""
    return pd.DataFrame(list(rows)).to_csv(index=False)
