"""Generate's resume bookkeeping at 10k and 100k images: it must grow linearly with the image count.

Runs the stage's own loop (fluxir.stages.generate.generate_images) with its own checkpoint writer
(fluxir.data.progress.ProgressLog, one part per shard_size new images), then what a resume and the end
of a run do: read every part back, and merge the rows into the manifest once. Rendering, encoding and
image writes are stubbed out (they cost the same per image whatever the count, and would drown the
figure): what is left is the bookkeeping. Linear bookkeeping gives a 100k/10k ratio of 10; the old
rewrite-everything checkpoint gave ~100.

    python bench/bookkeeping.py                  # 10k and 100k at the default shard size (16)
    python bench/bookkeeping.py --small 2000 --shard-size 16
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from unittest import mock

import numpy as np

from fluxir.data.manifest import write_manifest
from fluxir.data.progress import ProgressLog, read_progress
from fluxir.stages import generate


def _stub_render(prompts: list[str], seeds: list[int]) -> np.ndarray:
    return np.zeros((len(seeds), 1, 1, 3), dtype=np.uint8)


def bookkeeping_seconds(n: int, shard_size: int, batch_size: int) -> dict[str, float]:
    """Seconds of the loop with checkpoints, of reading the parts back, and of the final merge."""
    with tempfile.TemporaryDirectory() as tmp, \
            mock.patch.object(generate, "encode_image", lambda image, fmt: b"x"), \
            mock.patch.object(generate, "write_bytes_atomic", lambda path, data: path):  # fmt: skip
        out = Path(tmp)
        log = ProgressLog(out, "all", "generate-progress", generate.rows_to_frame)
        costs: list[float] = []

        def checkpoint(rows: list[dict]) -> None:
            t = time.perf_counter()
            log.append(rows)
            costs.append(time.perf_counter() - t)

        meta = {"source": "flux", "model": "stub", "width": 1, "height": 1}
        t0 = time.perf_counter()
        rows, _ = generate.generate_images(
            _stub_render, out, num_images=n, seed=0, prompts=[""], batch_size=batch_size,
            shard_size=shard_size, meta=meta, checkpoint=checkpoint, progress=False,
        )  # fmt: skip
        log.append(rows)
        t1 = time.perf_counter()
        parts = read_progress(out)
        t2 = time.perf_counter()
        write_manifest(generate.rows_to_frame(rows), out / "manifest.parquet", kind="generate")
        t3 = time.perf_counter()
    assert sum(len(p) for p in parts) == n
    tenth = max(1, len(costs) // 10)  # a linear bookkeeping's checkpoint costs the same at the end
    first, last = sum(costs[:tenth]) / tenth, sum(costs[-tenth:]) / tenth
    return {"checkpoints": t1 - t0, "resume_read": t2 - t1, "merge": t3 - t2, "total": t3 - t0,
            "first_ms": 1000 * first, "last_ms": 1000 * last}  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--small", type=int, default=10_000)
    ap.add_argument("--factor", type=int, default=10)
    ap.add_argument("--shard-size", type=int, default=16)
    ap.add_argument("--batch-size", type=int, default=2)
    args = ap.parse_args()
    totals = {}
    for n in (args.small, args.small * args.factor):
        t = bookkeeping_seconds(n, args.shard_size, args.batch_size)
        totals[n] = t["total"]
        print(
            f"{n} images, shard_size {args.shard_size}: total {t['total']:.2f} s "
            f"(checkpoints {t['checkpoints']:.2f}, resume read {t['resume_read']:.2f}, merge {t['merge']:.2f}; "
            f"one checkpoint {t['first_ms']:.1f} ms in the first tenth, {t['last_ms']:.1f} ms in the last)"
        )
    small, big = totals.values()
    print(f"growth ratio: {big / small:.2f}")


if __name__ == "__main__":
    main()
