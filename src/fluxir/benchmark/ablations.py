"""The paper's ablations (Tables 2-7) as data: each row a params override of the same params.yaml.

Every variant of Tables 2-6 retrains the adapter with its overrides and benchmarks it; Table 4 also
rebuilds the training data (generate -> score -> filter -> degrade) first. Table 7 scores images made
by several generators. The paper's numbers (all on RealLQ250, pyiqa CLIPIQA / MUSIQ / MANIQA) sit
beside ours in every report; on the tiny profile ours come from a random-weight model and other
metrics, so the two columns are not comparable, and the reports say so.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from fluxir.benchmark.tables import ranks

PAPER_METRICS = ("CLIPIQA", "MUSIQ", "MANIQA")  # all higher is better
TRAIN_STAGES = ("train", "benchmark")
DATA_STAGES = ("generate", "score", "filter", "degrade", "train", "benchmark")


@dataclass(frozen=True)
class Variant:
    label: str
    """Row name as the paper prints it."""
    overrides: dict[str, Any]
    """Dotted params keys -> values (the same as `--set` / `dvc exp run -S`)."""
    paper: tuple[float | None, float | None, float | None]
    """The paper's CLIPIQA, MUSIQ, MANIQA for this row (None: a row the paper does not have)."""
    paper_params: str = ""
    """Table 2's '# Params' cell."""


@dataclass(frozen=True)
class AblationTable:
    key: str
    title: str
    row_header: str
    variants: tuple[Variant, ...]
    stages: tuple[str, ...] = TRAIN_STAGES
    note: str = ""
    params_column: bool = field(default=False)


_FULL = (0.5639, 70.78, 0.6314)  # FluxIR r=32, the paper's reference row in Tables 2, 3, 5, 6
# Table 4 ("Effectiveness of FluxGen"): each source generates 10,000 images, before any selection.
_TABLE4_BUDGET = {"generate.num_images": 10_000}
TABLES: dict[str, AblationTable] = {
    "table2": AblationTable(
        "table2",
        "Table 2: SE layer rank",
        "Rank",
        (
            Variant("16", {"train.rank": 16}, (0.5389, 69.72, 0.6222), "387M + 11.6M"),
            Variant("32", {"train.rank": 32}, _FULL, "387M + 22.8M"),
            Variant("64", {"train.rank": 64}, (0.5529, 70.37, 0.6306), "387M + 45.2M"),
            Variant("128", {"train.rank": 128}, (0.5606, 70.54, 0.6292), "387M + 90.0M"),
            Variant("Full", {"train.rank": None}, (0.5720, 70.79, 0.6324), "387M + 1076.2M"),
        ),
        params_column=True,
    ),  # fmt: skip
    "table3": AblationTable(
        "table3",
        "Table 3: training strategy (timestep sampler f(u), pixel loss L_P)",
        "Strategy",
        (
            Variant(
                "w/o L_P and w/o f(u)",
                {"train.timestep_sampler": "logit_normal", "train.pixel_loss": False},
                (0.4416, 62.18, 0.5720),
            ),
            Variant("w/o L_P", {"train.pixel_loss": False}, (0.5082, 68.53, 0.6128)),
            Variant("Full Setting", {}, _FULL),
            # Not in the paper: eq. 9 on the clean estimate (z_t - t v_p vs z0) instead of as printed.
            Variant("Full Setting, L_P on x0", {"train.pixel_target": "x0"}, (None, None, None)),
            # Not in the paper: L_P on a random 64x64 latent window (512 px), for the decoder's cost.
            Variant("Full Setting, L_P on a 64x64 latent crop", {"train.pixel_crop": 64}, (None, None, None)),
        ),
        note="'Full Setting, L_P on x0' is ours, not the paper's: L_P decodes the clean estimate z_t - t v_p "
        "against z0 (train.pixel_target: x0) instead of eq. 9 as printed (z0 + t v_p against z_t). "
        "'L_P on a 64x64 latent crop' is ours too: both decodes of L_P on one random 64x64 window of the "
        "latent (train.pixel_crop: 64), a cheaper decoder pass; latents no larger than that are decoded whole.",
    ),  # fmt: skip
    "table4": AblationTable(
        "table4",
        "Table 4: FluxGen source and IQA selection",
        "FluxGen",
        (
            Variant("SDXL w/ IQA", {"generate.source": "sdxl", **_TABLE4_BUDGET}, (0.5787, 69.28, 0.5630)),
            Variant("Flux w/o IQA", {"filter.enabled": False, **_TABLE4_BUDGET}, (0.5254, 68.66, 0.6265)),
            Variant("Flux w/ IQA", dict(_TABLE4_BUDGET), (0.5487, 70.16, 0.6267)),
        ),
        stages=DATA_STAGES,
        note="Each row rebuilds its training data (generate -> score -> filter -> degrade) before training, "
        "from the paper's budget of 10,000 generated images per row.",
    ),  # fmt: skip
    "table5": AblationTable(
        "table5",
        "Table 5: control layers",
        "Control Layer",
        (
            Variant("FluxIR", {}, _FULL),
            Variant(
                "Single MLP", {"train.control": "single_mlp", "train.rank": None}, (0.5111, 64.46, 0.5547)
            ),
        ),
        params_column=True,
    ),  # fmt: skip
    "table6": AblationTable(
        "table6",
        "Table 6: multi-modality",
        "Multi-Modality",
        (
            Variant("Baseline", {}, _FULL),
            Variant("w/o theta_p, theta_y", {"train.learnable_embeddings": False}, (0.5626, 70.53, 0.6308)),
            Variant("w/o SE_p", {"train.text_control": False}, (0.5259, 67.63, 0.6266)),
        ),
        params_column=True,
    ),  # fmt: skip
}

# Table 7: mean IQA of generated images per generator (paper: 2,000 images each).
TABLE7_PAPER: dict[str, tuple[float, float, float]] = {
    "PixArt-Σ": (0.4981, 64.93, 0.5519),
    "Sana": (0.5135, 66.75, 0.5944),
    "SDXL": (0.5821, 70.49, 0.5831),
    "Playground": (0.5822, 70.35, 0.6666),
    "Flux.1-dev": (0.6763, 75.02, 0.6590),
    "FluxGen (ours)": (0.7295, 75.37, 0.6962),
}
SOURCE_LABELS = {
    "PixArt-alpha/PixArt-Sigma-XL-2-1024-MS": "PixArt-Σ",
    "Efficient-Large-Model/Sana_1600M_1024px_diffusers": "Sana",
    "sdxl": "SDXL",
    "playgroundai/playground-v2.5-1024px-aesthetic": "Playground",
    "flux": "Flux.1-dev",
}
FLUXGEN = "FluxGen (ours)"
TABLES_ALL = (*TABLES, "table7")


def slug(label: str) -> str:
    """A folder name for a row label: 'w/o L_P' -> 'w_o_L_P'."""
    return "".join(c if c.isalnum() or c in "-." else "_" for c in label).strip("_") or "row"


def count_text(n: int | None) -> str:
    """Parameter counts the way Table 2 prints them: 22.8M, or 1.23k / 512 for the tiny model."""
    if n is None:
        return "-"
    if n >= 1e6:
        return f"{n / 1e6:.1f}M"
    if n >= 1e3:
        return f"{n / 1e3:.2f}k"
    return str(n)


def _fmt(v: Any) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    if isinstance(v, str):
        return v
    return f"{v:.2f}" if abs(v) >= 10 else f"{v:.4f}"


def markdown(
    title: str,
    row_header: str,
    rows: Sequence[Mapping[str, Any]],
    ours: Sequence[tuple[str, str, bool]],
    header: Sequence[str],
    notes: Sequence[str],
    params_column: bool = False,
) -> str:
    """An ablation table: our metrics (best bold, second underlined), our parameter counts, the paper's
    numbers, and each row's status. ``ours`` is ``[(key, column title, lower_better)]``."""
    cols = [f"{t} (ours)" for _, t, _ in ours]
    if params_column:
        cols.append("# Params (ours)")
    cols += [f"{m} ↑ (paper)" for m in PAPER_METRICS]
    if params_column:
        cols.append("# Params (paper)")
    cols.append("status")
    marks = {key: ranks([_num(r.get("ours", {}).get(key)) for r in rows], lower) for key, _, lower in ours}
    lines = [
        f"# {title}",
        "",
        *header,
        "",
        f"| {row_header} | " + " | ".join(cols) + " |",
        "|---" * (len(cols) + 1) + "|",
    ]
    for i, r in enumerate(rows):
        cells = []
        for key, _, _ in ours:
            text = _fmt(r.get("ours", {}).get(key))
            if r.get("spread", {}).get(key) is not None:
                text += f" ± {_fmt(r['spread'][key])}"
            mark = marks[key][i]
            cells.append(f"**{text}**" if mark == "best" else f"<u>{text}</u>" if mark == "second" else text)
        if params_column:
            p = r.get("params")
            cells.append(f"{count_text(p['without_se'])} + {count_text(p['se'])}" if p else "-")
        cells += [_fmt(v) for v in r["paper"]]
        if params_column:
            cells.append(r.get("paper_params") or "-")
        cells.append(r["status"])
        lines.append(f"| {r['label']} | " + " | ".join(cells) + " |")
    lines += ["", *[f"- {n}" for n in notes]]
    return "\n".join(lines) + "\n"


def _num(v: Any) -> float:
    return float(v) if isinstance(v, (int, float)) else float("nan")
