"""Validate a manifest with a great-expectations suite before any stage reads it.

Each manifest kind (``generate``, ``score``, ``filter``, ``rejected``, ``dropped``; more can be added
with :func:`register_kind`) has a list of rules. Rules named like great-expectations expectations run
through GE (ephemeral context, pandas datasource); a few that GE lacks (``path`` files exist, the
score metadata) run in plain pandas under the same naming. Every run writes
``<report_dir>/<name>.md``, ``.html`` and ``.json``; a failure raises :class:`ManifestValidationError`
whose one-line message names the first broken row and the expectation, e.g.

    data/generate/manifest.parquet: row 3 (id '0000003') fails
    expect_column_values_to_match_regex(column='sha256', regex='^[0-9a-f]{64}$'): value 'xyz'

The suites' GE expectations run through their pandas twins in :mod:`fluxir.data.expectations`
(great_expectations costs 4-4.7 s to import and set up in every stage process, the checks ~1 s at 100k
rows); ``FLUXIR_VALIDATION_ENGINE=great_expectations`` runs them through GE, which is imported on first
use and its context built once per process.
"""

from __future__ import annotations

import html
import json
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from fluxir.data.expectations import CHECKS as PANDAS_TWINS
from fluxir.data.manifest import ManifestError, read_manifest

log = logging.getLogger(__name__)

REPORT_DIR = Path("reports/validation")
SHA256_REGEX = r"^[0-9a-f]{64}$"
SCORE_PREFIX = "score_"
SOURCES = ("flux", "folder", "diffusers")
MAX_SIDE = 65535


class ManifestValidationError(ManifestError):
    """A manifest that breaks its suite; the message names the row and the expectation."""


@dataclass(frozen=True)
class Rule:
    """One expectation: a GE expectation name (snake case) and its keyword arguments."""

    expectation: str
    kwargs: dict[str, Any] = field(default_factory=dict)

    def describe(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.kwargs.items())
        return f"{self.expectation}({args})"


@dataclass(frozen=True)
class KindSpec:
    """What a manifest kind must look like."""

    columns: tuple[str, ...]
    """Columns that must exist (checked first, in pandas: GE cannot run on a missing column)."""
    rules: tuple[Rule, ...]
    """Expectations, run in this order and reported in this order."""
    dynamic: Callable[[pd.DataFrame], list[Rule]] | None = None
    """Extra rules that depend on the table (e.g. one per score column)."""


@dataclass
class ValidationReport:
    """The outcome of validating one manifest."""

    kind: str
    rows: int
    expectations: int
    failed: list[dict[str, Any]]
    seconds: float
    paths: list[Path]

    @property
    def success(self) -> bool:
        return not self.failed


# ----------------------------------------------------------------------------------------------
# Suites


def _r(expectation: str, **kwargs: Any) -> Rule:
    return Rule(expectation, kwargs)


IMAGE_COLUMNS = (
    "id",
    "index",
    "path",
    "source",
    "model",
    "seed",
    "prompt",
    "width",
    "height",
    "sha256",
)
IMAGE_RULES = (
    _r("expect_table_row_count_to_be_between", min_value=1),
    _r("expect_column_values_to_not_be_null", column="id"),
    _r("expect_column_values_to_be_unique", column="id"),
    _r("expect_column_values_to_be_between", column="index", min_value=0),
    _r("expect_column_values_to_not_be_null", column="path"),
    _r("expect_column_values_to_be_unique", column="path"),
    _r("expect_column_values_to_be_existing_files", column="path"),
    _r("expect_column_values_to_be_in_set", column="source", value_set=list(SOURCES)),
    _r("expect_column_values_to_not_be_null", column="model"),
    _r("expect_column_values_to_be_between", column="seed", min_value=0),  # null for real photos
    _r("expect_column_values_to_not_be_null", column="prompt"),
    _r("expect_column_values_to_be_between", column="width", min_value=1, max_value=MAX_SIDE),
    _r("expect_column_values_to_be_between", column="height", min_value=1, max_value=MAX_SIDE),
    _r("expect_column_values_to_not_be_null", column="sha256"),
    _r("expect_column_values_to_match_regex", column="sha256", regex=SHA256_REGEX),
)


def _score_rules(df: pd.DataFrame) -> list[Rule]:
    rules = [_r("expect_table_attrs_to_describe_score_columns")]
    for col in (c for c in df.columns if c.startswith(SCORE_PREFIX)):
        # NaN is allowed (a metric may fail on an image; filter drops it); infinities are not.
        rules.append(_r("expect_column_values_to_be_between", column=col, min_value=-1e12, max_value=1e12))
    return rules


SPECS: dict[str, KindSpec] = {
    "generate": KindSpec(IMAGE_COLUMNS, IMAGE_RULES),
    "score": KindSpec(IMAGE_COLUMNS, IMAGE_RULES, _score_rules),
    "filter": KindSpec(IMAGE_COLUMNS, IMAGE_RULES, _score_rules),
    "rejected": KindSpec(
        ("path", "reason"),
        (
            _r("expect_column_values_to_not_be_null", column="path"),
            _r("expect_column_values_to_not_be_null", column="reason"),
        ),
    ),
    "dropped": KindSpec(
        ("id", "path", "dropped_by"),
        (
            _r("expect_column_values_to_not_be_null", column="id"),
            _r("expect_column_values_to_be_unique", column="id"),
            _r("expect_column_values_to_not_be_null", column="dropped_by"),
        ),
    ),
}


def register_kind(kind: str, spec: KindSpec) -> None:
    """Add (or replace) the suite for a manifest kind, e.g. the degrade stage's pairs."""
    SPECS[kind] = spec


# ----------------------------------------------------------------------------------------------
# Checks great_expectations does not have, in plain pandas: each returns (bad row indices, values)


def _existing_files(df: pd.DataFrame, column: str) -> tuple[list[int], list[Any]]:
    bad = [
        i for i, p in zip(df.index, df[column], strict=True) if not (isinstance(p, str) and os.path.isfile(p))
    ]
    return bad, [df.at[i, column] for i in bad[:20]]


def _attrs_describe_scores(df: pd.DataFrame) -> tuple[list[int], list[Any]]:
    metrics = df.attrs.get("metrics")
    cols = {c for c in df.columns if c.startswith(SCORE_PREFIX)}
    if not isinstance(metrics, dict) or not metrics:
        return [-1], ["attrs['metrics'] is missing"]
    named = {m.get("column") for m in metrics.values() if isinstance(m, dict)}
    problems = [f"column {c!r} not in attrs['metrics']" for c in sorted(cols - named)]
    problems += [f"attrs['metrics'] names missing column {c!r}" for c in sorted(named - cols)]
    problems += [f"{name}: lower_better missing" for name, m in metrics.items() if "lower_better" not in m]
    return ([-1] if problems else []), problems


_PANDAS_CHECKS: dict[str, Callable[..., tuple[list[int], list[Any]]]] = {
    "expect_column_values_to_be_existing_files": _existing_files,
    "expect_table_attrs_to_describe_score_columns": _attrs_describe_scores,
}
ENGINE_ENV = "FLUXIR_VALIDATION_ENGINE"


def _pandas_checks() -> dict[str, Callable[..., tuple[list[int], list[Any]]]]:
    """The rules run in pandas: GE's lacks always, GE's own unless the engine is set to GE."""
    if os.environ.get(ENGINE_ENV, "pandas") == "great_expectations":
        return _PANDAS_CHECKS
    return _PANDAS_CHECKS | PANDAS_TWINS


# ----------------------------------------------------------------------------------------------
# great_expectations, imported once


_GX: dict[str, Any] = {}


def _gx_batch_definition() -> Any:
    if "batch_definition" not in _GX:
        t0 = time.perf_counter()
        import great_expectations as gx
        from great_expectations.data_context.types.base import ProgressBarsConfig

        context = gx.get_context(mode="ephemeral")
        context.variables.progress_bars = ProgressBarsConfig(globally=False)
        asset = context.data_sources.add_pandas("fluxir").add_dataframe_asset("manifest")
        _GX["gx"] = gx
        _GX["batch_definition"] = asset.add_batch_definition_whole_dataframe("whole")
        _GX["import_seconds"] = time.perf_counter() - t0
        log.debug("great_expectations ready in %.2f s", _GX["import_seconds"])
    return _GX["batch_definition"]


def _snake_to_camel(name: str) -> str:
    return "".join(part.capitalize() for part in name.split("_"))


def _run_gx(df: pd.DataFrame, rules: list[Rule], kind: str) -> list[dict[str, Any]]:
    if not rules:
        return []
    batch_definition = _gx_batch_definition()
    gx = _GX["gx"]
    import great_expectations.expectations as gxe

    # meta carries the rule's position: GE returns results in its own order.
    expectations = [
        getattr(gxe, _snake_to_camel(rule.expectation))(**rule.kwargs, meta={"fluxir_rule": i})
        for i, rule in enumerate(rules)
    ]
    suite = gx.ExpectationSuite(name=f"fluxir-{kind}", expectations=expectations)
    batch = batch_definition.get_batch(batch_parameters={"dataframe": df})
    result = batch.validate(suite, result_format="SUMMARY")
    by_rule = {res.expectation_config.meta["fluxir_rule"]: res for res in result.results}
    outcomes = []
    for i, rule in enumerate(rules):
        res = by_rule[i]
        info = res.exception_info or {}
        raised = info.get("raised_exception") or any(
            isinstance(v, dict) and v.get("raised_exception") for v in info.values()
        )
        if raised:
            msg = info.get("exception_message") or next(
                (v.get("exception_message") for v in info.values() if isinstance(v, dict)), "error"
            )
            outcomes.append(_outcome(rule, False, [-1], [f"could not be evaluated: {msg}"]))
            continue
        r = res.result or {}
        rows = list(r.get("partial_unexpected_index_list") or [])
        values = list(r.get("partial_unexpected_list") or [])
        if not res.success and not rows:
            rows, values = [-1], [f"observed {r.get('observed_value')!r}"]
        outcome = _outcome(rule, bool(res.success), rows, values)
        outcome["unexpected_count"] = int(r.get("unexpected_count") or len(rows) * (not res.success))
        outcomes.append(outcome)
    return outcomes


def _outcome(rule: Rule, success: bool, rows: list[int], values: list[Any]) -> dict[str, Any]:
    return {
        "expectation": rule.describe(),
        "success": success,
        "unexpected_count": 0 if success else len(rows),
        "rows": [int(i) for i in rows[:20]],
        "values": [_plain(v) for v in values[:20]],
    }


def _plain(v: Any) -> Any:
    if isinstance(v, (str, int, float, bool)) or v is None:
        return v
    if hasattr(v, "item"):
        return v.item()
    return str(v)


# ----------------------------------------------------------------------------------------------
# Entry points


def validate_manifest(
    df: pd.DataFrame,
    kind: str,
    report_dir: str | os.PathLike = REPORT_DIR,
    *,
    source: str | os.PathLike | None = None,
    name: str | None = None,
) -> ValidationReport:
    """Validate ``df`` against the ``kind`` suite; write reports; raise ManifestValidationError on failure.

    ``source`` (the manifest's path) only names the table in messages; ``name`` sets the report file
    name (default: ``kind``).
    """
    if kind not in SPECS:
        raise ValueError(f"unknown manifest kind {kind!r}; known: {', '.join(SPECS)}")
    t0 = time.perf_counter()
    spec = SPECS[kind]
    df = df.reset_index(drop=True)
    label = str(source) if source is not None else f"{kind} manifest"

    outcomes: list[dict[str, Any]] = []
    missing = [c for c in spec.columns if c not in df.columns]
    for col in missing:
        outcomes.append(_outcome(_r("expect_column_to_exist", column=col), False, [-1], ["column missing"]))
    if not missing:
        rules = list(spec.rules) + (spec.dynamic(df) if spec.dynamic else [])
        pandas_checks = _pandas_checks()
        gx_rules = [r for r in rules if r.expectation not in pandas_checks]
        gx_outcomes = iter(_run_gx(df, gx_rules, kind))
        for rule in rules:
            if rule.expectation in pandas_checks:
                bad, values = pandas_checks[rule.expectation](df, **rule.kwargs)
                outcomes.append(_outcome(rule, not bad, bad, values))
            else:
                outcomes.append(next(gx_outcomes))

    failed = [o for o in outcomes if not o["success"]]
    report = ValidationReport(kind, len(df), len(outcomes), failed, time.perf_counter() - t0, [])
    report.paths = _write_reports(report, outcomes, label, Path(report_dir), name or kind)
    log.info(
        "validated %s: %d rows, %d expectations, %s in %.2f s",
        label,
        len(df),
        len(outcomes),
        "ok" if not failed else f"{len(failed)} failed",
        report.seconds,
    )
    if failed:
        raise ManifestValidationError(_failure_line(label, df, failed, report.paths[0]))
    return report


def read_validated(
    path: str | os.PathLike, kind: str, report_dir: str | os.PathLike = REPORT_DIR, name: str | None = None
) -> pd.DataFrame:
    """``read_manifest`` then ``validate_manifest``: how a stage reads its input.

    The report is named ``input-<kind>`` unless ``name`` is given, so it never overwrites the report
    the producing stage wrote for the same manifest (each file has one owner, as DVC needs).
    """
    df = read_manifest(path)
    validate_manifest(df, kind, report_dir, source=path, name=name or f"input-{kind}")
    return df


def _failure_line(label: str, df: pd.DataFrame, failed: list[dict[str, Any]], report: Path) -> str:
    first = failed[0]
    row = first["rows"][0] if first["rows"] else -1
    value = first["values"][0] if first["values"] else None
    if row >= 0:
        ident = f" (id {df.at[row, 'id']!r})" if "id" in df.columns and row in df.index else ""
        where = f"row {row}{ident} fails"
        what = f": value {value!r}"
    else:
        where, what = "fails", f": {value}" if value is not None else ""
    more = f"; {len(failed) - 1} more failed expectation(s)" if len(failed) > 1 else ""
    return f"{label}: {where} {first['expectation']}{what}{more} (report: {report})"


def _write_reports(
    report: ValidationReport, outcomes: list[dict[str, Any]], label: str, folder: Path, name: str
) -> list[Path]:
    from fluxir.io import write_bytes_atomic

    status = "PASSED" if report.success else "FAILED"
    header = f"Validation of {label} (kind '{report.kind}', {report.rows} rows): {status}"
    md = [
        f"# {header}",
        "",
        "| # | expectation | ok | unexpected | first rows | first values |",
        "|---|---|---|---|---|---|",
    ]
    for i, o in enumerate(outcomes):
        rows = ", ".join(str(r) for r in o["rows"][:5] if r >= 0)
        values = ", ".join(repr(v) for v in o["values"][:5]).replace("|", "\\|")
        md.append(
            f"| {i} | `{o['expectation']}` | {'yes' if o['success'] else '**no**'} | "
            f"{o['unexpected_count']} | {rows} | {values} |"
        )
    md += ["", "The time validation took is in the log: this report is a DVC output, so it holds no timings."]
    cells = "".join(
        "<tr{cls}><td>{i}</td><td><code>{e}</code></td><td>{ok}</td><td>{n}</td><td>{rows}</td><td>{vals}</td></tr>".format(
            cls="" if o["success"] else ' class="fail"',
            i=i,
            e=html.escape(o["expectation"]),
            ok="yes" if o["success"] else "no",
            n=o["unexpected_count"],
            rows=html.escape(", ".join(str(r) for r in o["rows"][:5] if r >= 0)),
            vals=html.escape(", ".join(repr(v) for v in o["values"][:5])),
        )
        for i, o in enumerate(outcomes)
    )
    page = (
        f"<!doctype html><meta charset='utf-8'><title>{html.escape(header)}</title>"
        "<style>body{font-family:sans-serif}td,th{border:1px solid #ccc;padding:2px 6px}"
        "table{border-collapse:collapse}.fail{background:#fdd}</style>"
        f"<h1>{html.escape(header)}</h1><table><tr><th>#</th><th>expectation</th><th>ok</th>"
        f"<th>unexpected</th><th>first rows</th><th>first values</th></tr>{cells}</table>"
    )
    payload = {
        "manifest": label,
        "kind": report.kind,
        "rows": report.rows,
        "success": report.success,
        "results": outcomes,
    }
    paths = [folder / f"{name}.md", folder / f"{name}.html", folder / f"{name}.json"]
    write_bytes_atomic(paths[0], ("\n".join(md) + "\n").encode())
    write_bytes_atomic(paths[1], page.encode())
    write_bytes_atomic(paths[2], json.dumps(payload, indent=2, default=str).encode())
    return paths
