"""Fixed cost of the small stages: wall time of each with nothing to do, against a bare interpreter.

Prepares a scratch project (six 128x160 photos ingested by generate's folder source, a score manifest
already holding every score, filter and degrade run once), then times, in interleaved rounds so that
load from other processes hits every arm alike:
  python     ``python -c pass``
  <stage>    ``python -m fluxir.stages.<stage> --params params.yaml`` (nothing left to do)
and prints each stage's median wall time and its overhead over the bare interpreter; the last line is
the worst overhead.

    python bench/stage_overhead.py               # 5 rounds
    python bench/stage_overhead.py --rounds 3 --stages filter degrade
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import yaml

from fluxir.config import load_config
from fluxir.data.images import write_image_atomic
from fluxir.data.manifest import read_manifest, write_manifest

REPO = Path(__file__).resolve().parents[1]
STAGES = ("generate", "score", "filter", "degrade")


def _prepare(root: Path) -> Path:
    """A project where every stage's work is already done; returns its params file."""
    rng = np.random.default_rng(0)
    for k in range(6):
        write_image_atomic(root / "photos" / f"{k}.png", rng.integers(0, 256, (128, 160, 3), dtype=np.uint8))
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    raw["generate"].update(source="folder", input_dir="photos", min_short_side=64, min_long_side=64)
    params = root / "params.yaml"
    params.write_text(yaml.safe_dump(raw))
    _stage("generate", params, root)
    # score's finished output, written directly: scoring for real needs the metrics' weights
    metrics = load_config(params).score.metrics
    df = read_manifest(root / "data" / "generate" / "manifest.parquet")
    for i, m in enumerate(metrics):
        df[f"score_{m}"] = np.arange(len(df), dtype=float) + i
    df.attrs["metrics"] = {m: {"column": f"score_{m}", "lower_better": False} for m in metrics}
    write_manifest(df, root / "data" / "score" / "manifest.parquet", kind="score")
    for stage in ("filter", "degrade"):
        _stage(stage, params, root)
    return params


def _stage(stage: str, params: Path, cwd: Path) -> float:
    t0 = time.perf_counter()
    cmd = [sys.executable, "-m", f"fluxir.stages.{stage}", "--params", str(params)]
    subprocess.run(cmd, cwd=cwd, check=True, capture_output=True)
    return time.perf_counter() - t0


def _bare() -> float:
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-c", "pass"], check=True)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--stages", nargs="+", default=list(STAGES), choices=STAGES)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        params = _prepare(root)
        times: dict[str, list[float]] = {"python": [], **{s: [] for s in args.stages}}
        for _ in range(args.rounds):
            times["python"].append(_bare())
            for stage in args.stages:
                times[stage].append(_stage(stage, params, root))
    bare = statistics.median(times["python"])
    print(f"python -c pass: {bare:.2f} s (median of {args.rounds})")
    worst = 0.0
    for stage in args.stages:
        wall = statistics.median(times[stage])
        worst = max(worst, wall - bare)
        print(f"{stage}: {wall:.2f} s wall, overhead {wall - bare:.2f} s (runs: "
              + ", ".join(f"{t:.2f}" for t in times[stage]) + ")")  # fmt: skip
    print(f"worst stage overhead: {worst:.2f} s")


if __name__ == "__main__":
    main()
