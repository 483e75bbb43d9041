"""Peak memory of restoring one image, tiled vs untiled, for a growing input (tiny model, CPU).

Each measurement runs in a fresh process (peak RSS cannot be reset inside one), restoring an LQ photo
of SIDE x SIDE to 4*SIDE. Prints one JSON line per run and the growth between the two sizes, so the
tiled path's memory can be seen to stay bounded while the untiled path's grows with the image.

    python bench/restore_memory.py --sides 64 192 --tile 128
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading


class PeakRSS:
    """Samples this process's resident memory every 2 ms while the block runs: start and peak, in bytes.

    (The process-wide ``ru_maxrss`` would also count peaks from before the block, e.g. model loading.)
    """

    def __enter__(self) -> PeakRSS:
        import psutil

        self._process = psutil.Process()
        self.start = self.peak = self._process.memory_info().rss
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(0.002):
            self.peak = max(self.peak, self._process.memory_info().rss)

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._process.memory_info().rss)


def measure(side: int, tile: int, steps: int) -> dict:
    """Restore one image in this process; return peak RSS before/after the restore (MiB)."""
    import numpy as np
    import torch
    from PIL import Image
    from skimage import data as skdata

    from fluxir.models.adapter import FluxIRAdapter
    from fluxir.models.tiny import build_tiny_pipeline
    from fluxir.restoration.pipeline import FluxIRPipeline, RestoreOptions

    torch.set_num_threads(1)
    base = build_tiny_pipeline(seed=0)
    pipeline = FluxIRPipeline(base, FluxIRAdapter.from_flux(base.transformer, rank=8))
    lq = np.asarray(Image.fromarray(skdata.astronaut()).resize((side, side), Image.BICUBIC))
    pipeline(lq[:32, :32].copy(), RestoreOptions(steps=1, tile=128, overlap=32))  # warm-up: allocator, caches
    with PeakRSS() as peak:
        pipeline(lq, RestoreOptions(steps=steps, tile=tile, overlap=min(32, tile - 16)))
    before, after = peak.start / 2**20, peak.peak / 2**20
    return {
        "side": side,
        "out": side * 4,
        "tile": tile,
        "rss_before_mib": round(before, 1),
        "peak_mib": round(after, 1),
        "restore_growth_mib": round(after - before, 1),
    }


def run_isolated(side: int, tile: int, steps: int) -> dict:
    here = os.path.dirname(os.path.abspath(__file__))
    code = (
        f"import json, sys; sys.path.insert(0, {here!r}); import restore_memory as m; "
        f"print(json.dumps(m.measure({side}, {tile}, {steps})))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sides", type=int, nargs=2, default=[64, 192])
    parser.add_argument("--tile", type=int, default=128)
    parser.add_argument("--steps", type=int, default=1)
    args = parser.parse_args()
    for label, tile in (("tiled", args.tile), ("untiled", 16 * 1024)):
        small, large = (run_isolated(side, tile, args.steps) for side in args.sides)
        print(json.dumps({"path": label, "small": small, "large": large}))
        pixels = (large["out"] / small["out"]) ** 2
        print(
            f"{label}: output pixels x{pixels:.0f}, peak RSS {small['peak_mib']} -> {large['peak_mib']} MiB "
            f"(restore growth {small['restore_growth_mib']} -> {large['restore_growth_mib']} MiB)"
        )


if __name__ == "__main__":
    main()
