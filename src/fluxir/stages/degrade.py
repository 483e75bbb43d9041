"""Stage degrade: FluxGen step 3, turn each selected HQ image into a training pair (HQ crop, LQ).

Paper section 3.1/4.1: Real-ESRGAN second-order degradation with SeeSR's settings (preset in params),
random crops of several aspect ratios, LQ = HQ / scale. Each image's draws come from its own RNG seeded
by (image id, seed), so a rerun, in any order or in shards, gives bitwise-equal pairs.

Outputs under ``degrade.out_dir``: ``hq/<id>.png`` and ``lq/<id>.png``, ``manifest.parquet`` (one row per
pair with the degradation record), and ``rejected.parquet`` (images that could not be used, with the
reason). A rerun after a crash keeps the pairs already written (writes are atomic), removes the temp
files of the writes the crash cut short, and does the rest. Pairs of images no longer in the input (a
smaller filter output, a seed that moved the crops of a rejected image) are deleted once the new manifest
is written: the folder holds exactly the manifest's pairs, as a run from scratch would.

Nothing written depends on where the project lives or on the run's history: paths inside ``records/``
are relative to ``out_dir``, and how many pairs a resumed run reused goes to the log and MLflow
(:func:`~fluxir.tracking.lineage.log_run_facts`), not into the degrade summary.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path
from typing import Any

import pandas as pd
from tqdm.auto import tqdm

from fluxir.config import Config, DegradeConfig, to_dict
from fluxir.data.images import ImageDecodeError, load_rgb, write_image_atomic
from fluxir.data.manifest import MANIFEST_NAME, write_manifest
from fluxir.data.paths import check_id, resolve_inside
from fluxir.data.validate import KindSpec, Rule, read_validated, register_kind, validate_manifest
from fluxir.degradation import crop_skip_reason, degrade_pair, image_rng, resolve_params
from fluxir.io import remove_partial_writes, sha256_bytes, write_bytes_atomic
from fluxir.stages import add_common_arguments, reports_root, run_stage, tracked_stage
from fluxir.tracking.lineage import log_run_facts

log = logging.getLogger(__spec__.name if __spec__ else __name__)  # "fluxir.stages.*" under python -m too

REJECTED_NAME = "rejected.parquet"
RUN_RECORD = ".degrade-run.json"

PAIR_COLUMNS = ("id", "hq_path", "lq_path", "hq_height", "hq_width", "lq_height", "lq_width", "scale")
register_kind(
    "degrade",
    KindSpec(
        PAIR_COLUMNS,
        (
            Rule("expect_table_row_count_to_be_between", {"min_value": 1}),
            Rule("expect_column_values_to_not_be_null", {"column": "id"}),
            Rule("expect_column_values_to_be_unique", {"column": "id"}),
            Rule("expect_column_values_to_be_existing_files", {"column": "hq_path"}),
            Rule("expect_column_values_to_be_existing_files", {"column": "lq_path"}),
            Rule("expect_column_values_to_be_between", {"column": "hq_height", "min_value": 16}),
            Rule("expect_column_values_to_be_between", {"column": "hq_width", "min_value": 16}),
            Rule("expect_column_values_to_be_between", {"column": "lq_height", "min_value": 1}),
            Rule("expect_column_values_to_be_between", {"column": "lq_width", "min_value": 1}),
        ),
    ),
)


def degrade_image(image_id: str, hq, cfg: DegradeConfig, params) -> tuple[Any, Any, dict[str, Any]]:
    """Pure core for one image: (HQ crop, LQ, record of every random draw)."""
    return degrade_pair(hq, cfg, image_rng(image_id, cfg.seed), params)


def _run_key(cfg: DegradeConfig) -> str:
    """Identity of the settings: pairs written under other settings are not reused."""
    settings = {k: v for k, v in to_dict(cfg).items() if k not in ("in_manifest", "out_dir")}
    return sha256_bytes(json.dumps(settings, sort_keys=True).encode())


def _previous_rows(out_dir: Path, key: str) -> dict[str, dict[str, Any]]:
    """Pairs a previous run with the same settings finished (their sidecar records), by image id."""
    record = out_dir / RUN_RECORD
    if not record.is_file() or json.loads(record.read_text()).get("key") != key:
        return {}
    rows = {}
    for sidecar in (out_dir / "records").glob("*.json"):
        row = json.loads(sidecar.read_text())
        check_id(row.get("id"), str(sidecar))
        # stored relative to out_dir; a record is data too, so its paths must stay inside out_dir
        row.update(
            {k: str(resolve_inside(out_dir, str(row[k]), f"{sidecar} {k}")) for k in ("hq_path", "lq_path")}
        )
        if Path(row["hq_path"]).is_file() and Path(row["lq_path"]).is_file():
            rows[row["id"]] = row
    return rows


def _remove_pairs_not_in(out_dir: Path, keep: set[str]) -> int:
    """Delete the hq/lq images and records of ids not in ``keep``; returns how many files went."""
    removed = 0
    for folder, pattern in (("hq", "*.png"), ("lq", "*.png"), ("records", "*.json")):
        for path in (out_dir / folder).glob(pattern) if (out_dir / folder).is_dir() else []:
            if path.stem not in keep:
                path.unlink()
                removed += 1
    return removed


def run_degrade(cfg: Config, progress: bool = True) -> dict[str, Any]:
    """Degrade every image of the filtered manifest; write pairs, manifests and a summary."""
    d = cfg.degrade
    # The manifest as configured (relative): the validation reports must not name this machine's folders.
    label = Path(d.out_dir) / MANIFEST_NAME
    out_dir = Path(d.out_dir).absolute()
    # A killed run can leave temp files of the writes it was in (hq/, lq/, records/, the manifests): they
    # are not part of the output DVC stores. Only this project's temp files, only in the stage's folders.
    stale = remove_partial_writes(out_dir, subfolders=("hq", "lq", "records"))
    if stale:
        log.info("removed %d partial writes left by an interrupted run", stale)
    reports = reports_root(cfg) / "validation" / "degrade"
    source = read_validated(d.in_manifest, "filter", reports, name="input")
    params = resolve_params(d)
    key = _run_key(d)
    done = _previous_rows(out_dir, key)
    if not done:  # new settings: nothing earlier is reusable
        for stale in (out_dir / "records").glob("*.json") if (out_dir / "records").is_dir() else []:
            stale.unlink()
    write_bytes_atomic(out_dir / RUN_RECORD, json.dumps({"key": key}).encode())

    rows, rejected = [], []
    for image in tqdm(source.itertuples(index=False), total=len(source), desc="degrade", unit="img",
                      disable=not progress):  # fmt: skip
        if image.id in done:
            rows.append(done[image.id])
            continue
        try:
            hq = load_rgb(image.path)
        except ImageDecodeError as exc:
            rejected.append({"path": image.path, "reason": str(exc)})
            continue
        if (reason := crop_skip_reason(hq.shape, d.sizes)) is not None:
            rejected.append({"path": image.path, "reason": reason})
            continue
        hq_crop, lq, record = degrade_image(image.id, hq, d, params)
        hq_path, lq_path = out_dir / "hq" / f"{image.id}.png", out_dir / "lq" / f"{image.id}.png"
        hq_sha, lq_sha = write_image_atomic(hq_path, hq_crop), write_image_atomic(lq_path, lq)
        row = {
            "id": image.id,
            "hq_path": str(hq_path),
            "lq_path": str(lq_path),
            "hq_height": hq_crop.shape[0],
            "hq_width": hq_crop.shape[1],
            "lq_height": lq.shape[0],
            "lq_width": lq.shape[1],
            "scale": d.scale,
            "preset": d.preset,
            "hq_sha256": hq_sha,
            "lq_sha256": lq_sha,
            "record": json.dumps(record, sort_keys=True),
        }
        # The sidecar is written last: its presence means this pair is complete. Paths in it are relative to
        # out_dir, so the folder's bytes (a DVC output) are the same wherever the project is checked out.
        stored = row | {key: str(Path(row[key]).relative_to(out_dir)) for key in ("hq_path", "lq_path")}
        write_bytes_atomic(out_dir / "records" / f"{image.id}.json", json.dumps(stored).encode())
        rows.append(row)

    pairs = pd.DataFrame(rows, columns=list(rows[0]) if rows else list(PAIR_COLUMNS))
    pairs.attrs = {"degrade": {"preset": d.preset, "scale": d.scale, "sizes": d.sizes, "seed": d.seed}}
    validate_manifest(pairs, "degrade", reports, source=label, name="manifest")
    write_manifest(pairs, out_dir / MANIFEST_NAME, kind="degrade")
    rejected_df = pd.DataFrame(rejected, columns=["path", "reason"])
    write_manifest(rejected_df, out_dir / REJECTED_NAME, kind="rejected")
    removed = _remove_pairs_not_in(out_dir, {row["id"] for row in rows})
    if removed:
        log.info("removed %d files of pairs no longer in the input", removed)
    sizes = pairs.groupby(["hq_height", "hq_width"]).size() if len(pairs) else pd.Series(dtype=int)
    summary = {
        "pairs": len(pairs),
        "rejected": len(rejected_df),
        "preset": d.preset,
        "crop_sizes": {f"{h}x{w}": int(n) for (h, w), n in sizes.items()},
    }
    write_bytes_atomic(
        reports_root(cfg) / "degrade" / "summary.json", (json.dumps(summary, indent=2) + "\n").encode()
    )
    summary["reused"] = len(set(done) & set(source["id"]))  # this run's history: the log and MLflow only
    log_run_facts("degrade", {"reused": summary["reused"]})
    log.info("degrade: %d pairs (%d reused), %d rejected, preset %s", summary["pairs"], summary["reused"],
             summary["rejected"], d.preset)  # fmt: skip
    for item in rejected:
        log.info("  rejected %s: %s", item["path"], item["reason"])
    return summary


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_common_arguments(parser)
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")


def run(args: argparse.Namespace) -> int:
    with tracked_stage("degrade", args) as cfg:
        run_degrade(cfg, progress=not args.no_progress)
    return 0


def main(argv: list[str] | None = None) -> int:
    return run_stage("degrade", add_arguments, run, argv)


if __name__ == "__main__":
    raise SystemExit(main())
