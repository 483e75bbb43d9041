"""The great-expectations expectations the manifest suites use, evaluated in plain pandas.

Importing great_expectations and building its ephemeral context costs 4-4.7 s per process, while the
checks themselves take ~1 s at 100k rows; every stage validates its input and output, so that fixed
cost dominated the small stages (filter, degrade). These twins follow GE's semantics (null values are
skipped by every check but ``not_null``; ``unique`` flags every copy of a repeated value; bounds are
inclusive) and return what the rest of :mod:`fluxir.data.validate` needs: the bad row labels and their
values. ``tests/unit/test_validate.py`` runs the same suites through both and compares the outcomes;
``FLUXIR_VALIDATION_ENGINE=great_expectations`` sends these rules to GE again.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import pandas as pd

Check = Callable[..., tuple[list[int], list[Any]]]


def _bad(df: pd.DataFrame, column: str, mask: pd.Series) -> tuple[list[int], list[Any]]:
    rows = [int(i) for i in df.index[mask.to_numpy(dtype=bool)]]
    return rows, [df.at[i, column] for i in rows[:20]]


def row_count_between(
    df: pd.DataFrame, min_value: int | None = None, max_value: int | None = None
) -> tuple[list[int], list[Any]]:
    n = len(df)
    ok = (min_value is None or n >= min_value) and (max_value is None or n <= max_value)
    return ([], []) if ok else ([-1], [f"observed {n!r}"])


def not_null(df: pd.DataFrame, column: str) -> tuple[list[int], list[Any]]:
    return _bad(df, column, df[column].isna())


def unique(df: pd.DataFrame, column: str) -> tuple[list[int], list[Any]]:
    col = df[column]
    return _bad(df, column, col.notna() & col.duplicated(keep=False))


def between(
    df: pd.DataFrame, column: str, min_value: float | None = None, max_value: float | None = None
) -> tuple[list[int], list[Any]]:
    col = df[column]
    values = pd.to_numeric(col, errors="coerce")
    bad = col.notna() & values.isna()  # present but not a number: GE cannot compare it either
    if min_value is not None:
        bad |= values < min_value
    if max_value is not None:
        bad |= values > max_value
    return _bad(df, column, bad.fillna(False))


def in_set(df: pd.DataFrame, column: str, value_set: list[Any]) -> tuple[list[int], list[Any]]:
    col = df[column]
    return _bad(df, column, col.notna() & ~col.isin(value_set))


def match_regex(df: pd.DataFrame, column: str, regex: str) -> tuple[list[int], list[Any]]:
    pattern = re.compile(regex)
    col = df[column]
    # re.search, as GE's pandas backend (str.contains): the suite's patterns anchor themselves.
    hits = col.map(lambda v: isinstance(v, str) and pattern.search(v) is not None).astype(bool)
    return _bad(df, column, col.notna() & ~hits)


CHECKS: dict[str, Check] = {
    "expect_table_row_count_to_be_between": row_count_between,
    "expect_column_values_to_not_be_null": not_null,
    "expect_column_values_to_be_unique": unique,
    "expect_column_values_to_be_between": between,
    "expect_column_values_to_be_in_set": in_set,
    "expect_column_values_to_match_regex": match_regex,
}
