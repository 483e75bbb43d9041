"""Throughput of fluxir's degradation core against Real-ESRGAN built from basicsr's own functions.

Runs, in one process, on the same 512x512 crops of real photos and with the same settings
(seesr-paired == Real-ESRGAN x4plus, USM on, x4) and the same thread counts:
  ours   fluxir.degradation.degrade_pair (uint8 RGB in, uint8 HQ + LQ out)
  numpy  the reference's `numpy_degrade` (basicsr's cv2/numpy helpers; float32 in and out)
  torch  the reference's `TorchDegrader` (Real-ESRGAN's batched feed_data path)
and prints images/s of each and the ratio of ours to the faster reference. Ours and numpy alternate
in rounds so that load from other processes hits both alike. The reference is the fixed file
realesrgan_reference.py, found in $FLUXIR_BENCH_REFERENCE (default: ../shared/bench-reference from
the repository root); it needs basicsr (`pip install -e .[bench]`).

    python bench/degrade.py                      # 2 threads each, 48 images x 3 rounds, 16 for torch
    python bench/degrade.py --threads 1 --workers 2   # one thread each, 2 processes each over images
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import random
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import cv2
import numpy as np

REPO = Path(__file__).resolve().parent.parent
SIZE = 512


def load_reference():
    """Import realesrgan_reference from $FLUXIR_BENCH_REFERENCE, or exit with what is missing."""
    folder = Path(os.environ.get("FLUXIR_BENCH_REFERENCE", REPO.parent / "shared" / "bench-reference"))
    if not (folder / "realesrgan_reference.py").is_file():
        sys.exit(f"bench/degrade.py: {folder}/realesrgan_reference.py not found; set FLUXIR_BENCH_REFERENCE")
    sys.path.insert(0, str(folder))
    try:
        return importlib.import_module("realesrgan_reference")
    except ModuleNotFoundError as exc:
        sys.exit(
            f"bench/degrade.py: the reference needs {exc.name!r}; install the bench extra: "
            "pip install --no-build-isolation basicsr==1.4.2 (it is pinned in pyproject's bench extra)"
        )


def check_same_settings(ref, params) -> None:
    """Stop if our resolved preset differs from the reference's SEESR values in any shared key."""
    from fluxir.degradation.kernels import KERNEL_TYPES

    mine = {k: list(v) if isinstance(v, tuple) else v for k, v in vars(params).items()}
    diff = [k for k, v in ref.SEESR.items() if k in mine and not np.allclose(mine[k], v)]
    if list(ref.KLIST) != list(KERNEL_TYPES) or list(ref.KERNEL_RANGE) != list(range(7, 22, 2)):
        diff.append("kernel_list/kernel_range")
    if diff or not params.gt_usm:
        sys.exit(f"bench/degrade.py: seesr-paired differs from the reference in {diff or ['gt_usm']}")


def _setup_threads(threads: int) -> None:
    import torch

    cv2.setNumThreads(threads)
    torch.set_num_threads(threads)


# ----- the two per-image workloads (module level so worker processes can run them)
_STATE: dict = {}


def _init_worker(threads: int) -> None:
    from fluxir.config import DegradeConfig
    from fluxir.degradation import resolve_params

    _setup_threads(threads)
    cfg = DegradeConfig(sizes=[[SIZE, SIZE]], hflip_prob=0.0)
    _STATE.update(ref=load_reference(), cfg=cfg, params=resolve_params(cfg))


def run_ours(crops: list[np.ndarray], start: int) -> list[np.ndarray]:
    from fluxir.degradation import degrade_pair, image_rng

    cfg, params = _STATE["cfg"], _STATE["params"]
    return [degrade_pair(c, cfg, image_rng(f"bench-{start + i}", 0), params).lq for i, c in enumerate(crops)]


def run_numpy(crops: list[np.ndarray], start: int) -> list[np.ndarray]:
    ref = _STATE["ref"]
    random.seed(start)
    np.random.seed(start)
    out = []
    for crop in crops:  # basicsr reads images as float32 BGR in [0, 1]; the kernels are drawn per image
        img = cv2.cvtColor(crop, cv2.COLOR_RGB2BGR).astype(np.float32) / 255.0
        out.append(ref.numpy_degrade(img, *ref.gen_kernels())[1])  # LQ, float BGR on the 1/255 grid
    return out


def timed(fn, crops: list[np.ndarray], start: int, pool: ProcessPoolExecutor | None) -> tuple[float, list]:
    t0 = time.perf_counter()
    if pool is None:
        out = fn(crops, start)
    else:
        parts = np.array_split(np.arange(len(crops)), pool._max_workers)  # noqa: SLF001
        chunks = pool.map(fn, [[crops[j] for j in p] for p in parts], [start + int(p[0]) for p in parts])
        out = [lq for chunk in chunks for lq in chunk]
    return time.perf_counter() - t0, out


def lq_psnr(lqs: list[np.ndarray], crops: list[np.ndarray]) -> tuple[float, float]:
    """Mean and standard error of PSNR(LQ, area-downscaled HQ): a summary of degradation strength.

    Two implementations of the same random degradation must agree within sampling error.
    """
    values = []
    for lq, crop in zip(lqs, crops, strict=True):
        if lq.dtype != np.uint8:  # the reference's float BGR output
            lq = cv2.cvtColor(np.rint(lq * 255).astype(np.uint8), cv2.COLOR_BGR2RGB)
        small = cv2.resize(crop, (lq.shape[1], lq.shape[0]), interpolation=cv2.INTER_AREA)
        mse = np.mean((lq.astype(np.float64) - small) ** 2)
        values.append(10 * np.log10(255.0**2 / max(mse, 1e-10)))
    return float(np.mean(values)), float(np.std(values, ddof=1) / np.sqrt(len(values)))


def run_torch(ref, crops: list[np.ndarray], batch: int) -> float:
    """Seconds for TorchDegrader over ``crops`` in batches, kernels drawn per sample as basicsr does."""
    import torch

    degrader = ref.TorchDegrader()
    t0 = time.perf_counter()
    for b in range(0, len(crops), batch):
        chunk = crops[b : b + batch]
        gt = torch.from_numpy(np.stack(chunk)).permute(0, 3, 1, 2).contiguous().float() / 255.0
        kernels = [ref.gen_kernels() for _ in chunk]
        k1, k2, sinc = (torch.from_numpy(np.stack([k[i] for k in kernels])) for i in range(3))
        degrader(gt, k1, k2, sinc)
    return time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=48, help="crops per round (ours and numpy)")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds of ours and numpy")
    parser.add_argument("--torch-images", type=int, default=16, help="crops for the torch path; 0 skips it")
    parser.add_argument("--batch", type=int, default=8, help="torch batch size")
    parser.add_argument(
        "--threads", type=int, default=os.cpu_count() or 1, help="cv2 and torch threads, both"
    )
    parser.add_argument("--workers", type=int, default=1, help="processes over images, the same for both")
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    args = parser.parse_args()

    _init_worker(args.threads)
    ref = _STATE["ref"]
    check_same_settings(ref, _STATE["params"])
    random.seed(0)
    np.random.seed(0)
    pool_imgs = ref.hq_pool(SIZE)
    crops = ref.random_crops(pool_imgs, args.images, SIZE)

    pool = None
    if args.workers > 1:
        per = max(1, args.threads // args.workers)
        pool = ProcessPoolExecutor(args.workers, initializer=_init_worker, initargs=(per,))
    # warm-up: imports, caches (Poisson tables, cv2 buffers), worker start
    warm = crops[: max(2, args.workers * 2)]
    for fn in (run_ours, run_numpy):
        timed(fn, warm, 10_000, pool)

    seconds = {"ours": 0.0, "numpy": 0.0}
    psnr: dict[str, list] = {"ours": [], "numpy": []}
    for r in range(args.rounds):
        for name, fn in (("ours", run_ours), ("numpy", run_numpy)):
            dt, lqs = timed(fn, crops, r * len(crops), pool)
            seconds[name] += dt
            psnr[name] += lqs
    if pool is not None:
        pool.shutdown()
    n = args.rounds * len(crops)
    rate = {k: n / v for k, v in seconds.items()}
    if args.torch_images:
        tcrops = crops[: args.torch_images]
        run_torch(ref, tcrops[: min(2, len(tcrops))], args.batch)  # warm-up
        rate["torch"] = len(tcrops) / run_torch(ref, tcrops, args.batch)
    fastest = max(v for k, v in rate.items() if k != "ours")
    result = {
        "size": SIZE,
        "threads": args.threads,
        "workers": args.workers,
        "images": n,
        "img_per_s": {k: round(v, 2) for k, v in rate.items()},
        "ratio_vs_faster_reference": round(rate["ours"] / fastest, 2),
        "lq_psnr_db": {k: [round(x, 2) for x in lq_psnr(v, crops * args.rounds)] for k, v in psnr.items()},
    }
    print(f"degrade {SIZE}x{SIZE}, seesr-paired, threads={args.threads} workers={args.workers} images={n}")
    for name, value in rate.items():
        print(f"  {name:6s} {value:7.2f} img/s")
    print(f"  ratio ours / faster reference: {result['ratio_vs_faster_reference']:.2f}x")
    (m1, e1), (m2, e2) = result["lq_psnr_db"]["ours"], result["lq_psnr_db"]["numpy"]
    print(
        f"  LQ PSNR vs area-downscaled HQ (mean +- s.e.): ours {m1:.2f} +- {e1:.2f} dB, numpy {m2:.2f} +- {e2:.2f} dB"
    )
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
