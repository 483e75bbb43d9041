"""The ablation reports: ``<ablate.report_dir>/tableN.md``, ``.csv`` and ``.json``, the paper's numbers beside ours."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from fluxir.benchmark import ablations as ab
from fluxir.benchmark.datasets import framing
from fluxir.benchmark.report import profile_notes
from fluxir.benchmark.runner import fidelity_setting
from fluxir.config import BenchmarkDataset, Config
from fluxir.experiments.rows import VELOCITY_AT_T1
from fluxir.io import write_text_atomic
from fluxir.tracking.lineage import profile_of


def flags(overrides: Mapping[str, Any], option: str) -> str:
    """``overrides`` as command-line options, e.g. ``--set train.rank=16`` or ``-S train.rank=16``."""
    return " ".join(f"{option} {k}={json.dumps(v)}" for k, v in overrides.items())


def header(
    cfg: Config, scored_on: str, shared: Mapping[str, Any], paper_on: str = "RealLQ250 restorations"
) -> list[str]:
    """The lines above every ablation table: what model made ours, the command's ``--set`` values that every
    row ran with (a table is not reproducible without them), and what the paper's columns are."""
    lines = profile_notes(cfg)
    if shared:
        lines.append(f"Every row ran with `{flags(shared, '--set')}`.")
    lines.append(
        f"Ours: {scored_on}. The paper's columns are its published numbers on {paper_on} "
        "(pyiqa clipiqa+_vitL14_512, musiq, maniqa-pipal)"
        + ("; with the tiny model the two are not comparable." if cfg.model.base == "tiny" else ".")
    )
    return lines


def write_table(
    cfg: Config,
    table: ab.AblationTable,
    rows: list[dict[str, Any]],
    dataset: Mapping[str, Any],
    shared: Mapping[str, Any],
) -> dict[str, Any]:
    """Tables 2-6: our benchmark means per row (FluxIR on ``dataset``), parameter counts, the paper's row;
    ``shared`` are the command's ``--set`` overrides, applied to every row."""
    info: dict[str, dict[str, Any]] = next((r["metrics"] for r in rows if r.get("metrics")), {})
    absent = next((r["absent"] for r in rows if r.get("absent")), {})
    ours = [(k, f"{m['label']} {'↓' if m['lower_better'] else '↑'}", bool(m["lower_better"])) for k, m in info.items()
            if k not in absent and (dataset["kind"] != "lq_only" or not m["full_reference"])]  # fmt: skip
    if any(VELOCITY_AT_T1 in r.get("train", {}) for r in rows):
        ours.append((VELOCITY_AT_T1, "v-MSE t=1 ↓", True))
        for r in rows:  # shown beside the benchmark means, so it is ranked and spread like them
            if VELOCITY_AT_T1 in r.get("train", {}):
                r["ours"][VELOCITY_AT_T1] = r["train"][VELOCITY_AT_T1]
                if "train_spread" in r:
                    r["spread"][VELOCITY_AT_T1] = r["train_spread"][VELOCITY_AT_T1]
    images = next((r.get("images") for r in rows if r.get("images")), "?")
    framed = framing(BenchmarkDataset(**dataset), cfg.restore.scale)
    scored_on = f"FluxIR on {dataset['name']} ({dataset['kind']}, {images} images; {framed})"
    notes = [f"{r['label']}: " + (f"overrides {json.dumps(r['overrides'])} (`dvc exp run {flags(r['overrides'], '-S')}`)" if r["overrides"] else "params as they are")
        for r in rows]  # fmt: skip
    notes += [f"{name} absent: {reason}" for name, reason in absent.items()]
    if table.note:
        notes.append(table.note)
    if any(VELOCITY_AT_T1 in r["ours"] for r in rows):
        notes.append(
            "v-MSE t=1 (ours): the trained model's velocity MSE at t = 1 (pure noise in) on the held-out "
            "training pairs, fixed noise: how well the LQ alone steers the first sampling step."
        )
    if any(r.get("seeds") for r in rows):
        seeds = ", ".join(str(s["seed"]) for s in next(r["seeds"] for r in rows if r.get("seeds")))
        notes.append(f"Ours: mean ± half the range over train.seed {seeds} (each seed its own run).")
    if table.params_column:
        notes.append(
            "# Params (ours): adapter without SE layers + SE layers, counted on the adapter each row ran."
        )
    lines = header(cfg, scored_on, shared)
    if any(info[k]["full_reference"] for k, _, _ in ours):
        lines.append(f"PSNR and SSIM: {fidelity_setting(cfg)}.")
    md = ab.markdown(table.title, table.row_header, rows, ours, lines, notes, table.params_column)
    flat = []
    for r in rows:
        entry = {
            "row": r["label"],
            "status": r["status"],
            **{f"ours.{k}": r["ours"].get(k) for k, _, _ in ours},
            **{f"spread.{k}": r["spread"].get(k) for k, _, _ in ours if "spread" in r},
        }
        if table.params_column:
            p = r.get("params") or {}
            entry.update({"params.without_se": p.get("without_se"), "params.se": p.get("se"),
                          "paper.params": r["paper_params"]})  # fmt: skip
        entry.update({f"paper.{m}": v for m, v in zip(ab.PAPER_METRICS, r["paper"], strict=True)})
        flat.append(entry)
    return write_reports(cfg, table.key, md, flat, rows, shared)


def write_table7(
    cfg: Config, rows: list[dict[str, Any]], suite: Any, shared: Mapping[str, Any]
) -> dict[str, Any]:
    """Table 7: the mean score of each generator's images (and of FluxGen's kept ones), the paper's row."""
    ours = [(m, f"{i.label} {i.arrow}", i.lower_better) for m, i in suite.info.items() if m in suite.built]
    lines = header(
        cfg,
        f"mean score of {cfg.ablate.table7_images} images per generator (score.metrics)",
        shared,
        "2,000 generated images",
    )
    notes = [f"{name} absent: {reason}" for name, reason in suite.absent.items()]
    notes.append(
        "FluxGen (ours): the Flux.1-dev images that pass the IQA filter (filter.keep_quantile, every metric)."
    )
    md = ab.markdown("Table 7: generated image quality per generator", "Generator", rows, ours, lines, notes)
    flat = [{"row": r["label"], "source": r["source"], "images": r["images"], "status": r.get("status", ""),
             **{f"ours.{m}": r["ours"].get(m) for m, _, _ in ours},
             **{f"paper.{m}": v for m, v in zip(ab.PAPER_METRICS, r["paper"], strict=True)}} for r in rows]  # fmt: skip
    return write_reports(cfg, "table7", md, flat, rows, shared)


def write_reports(
    cfg: Config,
    key: str,
    md: str,
    flat: list[dict[str, Any]],
    rows: list[dict[str, Any]],
    shared: Mapping[str, Any],
) -> dict[str, Any]:
    """``<key>.md``, ``.csv`` (one flat line per row) and ``.json`` (every row in full, and the command's
    ``--set`` overrides as ``shared_overrides``) in ``ablate.report_dir``."""
    out = Path(cfg.ablate.report_dir)
    files = {
        f"{key}.md": md,
        f"{key}.csv": pd.DataFrame(flat).to_csv(index=False),
        f"{key}.json": json.dumps(
            {"profile": profile_of(cfg), "shared_overrides": dict(shared), "rows": rows},
            indent=2,
            default=str,
        )
        + "\n",
    }
    for name, text in files.items():
        write_text_atomic(out / name, text)
    return {"rows": flat, "details": rows, "files": [str(out / n) for n in files], "markdown": md}
