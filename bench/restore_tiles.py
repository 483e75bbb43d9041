"""Tiling modes on a real photo at 2048 px output (tiny base, CPU): seam scores and peak RSS.

Restores scikit-image's astronaut (512 x 512 LQ, x4) three ways: untiled, per-tile (tiles restored alone,
pixels blended) and fused (tiles' velocities averaged in latent space every step), each with an adapter
folder that stores the empty-prompt embeddings (text encoders never loaded) and one without (T5 and CLIP
loaded, the prompt encoded, then released). Every run is a fresh process loading the base and adapter
from disk as ``fluxir restore`` does; its resident memory is sampled every 2 ms from before loading to
the end of the restore (bench/restore_memory.py's PeakRSS).

Printed: one JSON line per run, a peak RSS table, and the seam score of each output
(:func:`fluxir.restoration.tiling.seam_score`: mean absolute gradient across the tiled layout's border
lines over that beside them, 1 = no seam), with the untiled restoration and the bicubic input scored at
the same lines as what content alone gives. The random-weight tiny model says nothing about quality.

    python bench/restore_tiles.py [--side 512] [--tile 1024] [--overlap 128] [--steps 4]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
MODES = ("untiled", "per_tile", "fused")


def prepare(root: Path) -> None:
    """The tiny base and one random adapter saved twice: with and without its stored empty prompt."""
    import torch

    from fluxir.models.adapter import FluxIRAdapter
    from fluxir.models.adapter_files import StoredPrompt
    from fluxir.models.flux import load_flux
    from fluxir.models.tiny import save_tiny_pipeline

    save_tiny_pipeline(root / "base", seed=0)
    base = load_flux(root / "base")
    adapter = FluxIRAdapter.from_flux(base.transformer, rank=8, max_sequence_length=64)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in adapter.parameters():
            p.copy_(torch.randn(p.shape, generator=generator) * 0.05)
    adapter.save_pretrained(root / "adapter-encode")
    adapter.stored_prompt = StoredPrompt(*base.encode_prompt(prompt="", prompt_2="", max_sequence_length=64))
    adapter.save_pretrained(root / "adapter-stored")


def lq_photo(side: int):
    import numpy as np
    from PIL import Image
    from skimage import data as skdata

    return np.asarray(Image.fromarray(skdata.astronaut()).resize((side, side), Image.BICUBIC))


def measure(root: str, mode: str, prompt: str, side: int, tile: int, overlap: int, steps: int) -> dict:
    """One restore in this process: load from disk, restore, save the output; peak RSS in MiB."""
    import time

    import psutil
    import torch

    sys.path.insert(0, str(HERE))
    from restore_memory import PeakRSS

    from fluxir.data.images import write_image_atomic
    from fluxir.restoration.pipeline import FluxIRPipeline, RestoreOptions

    torch.set_num_threads(1)
    lq = lq_photo(side)
    start_rss = psutil.Process().memory_info().rss
    with PeakRSS() as total:
        pipeline = FluxIRPipeline.from_pretrained(Path(root) / "base", Path(root) / f"adapter-{prompt}")
        with PeakRSS() as during:
            began = time.perf_counter()
            options = RestoreOptions(
                steps=steps,
                tile=tile if mode != "untiled" else 16 * side * 4,
                overlap=overlap,
                tile_mode="per_tile" if mode == "per_tile" else "fused",
                color_fix="none",
            )
            out = pipeline(lq, options)
            seconds = time.perf_counter() - began
    write_image_atomic(Path(root) / f"{mode}-{prompt}.png", out)
    return {
        "mode": mode,
        "prompt": prompt,
        "out": f"{out.shape[1]}x{out.shape[0]}",
        "peak_mib": round(total.peak / 2**20, 1),
        "load_and_restore_growth_mib": round((total.peak - start_rss) / 2**20, 1),
        "restore_growth_mib": round((during.peak - during.start) / 2**20, 1),
        "restore_s": round(seconds, 1),
    }


def run_isolated(root: Path, mode: str, prompt: str, args: argparse.Namespace) -> dict:
    code = (
        f"import json, sys; sys.path.insert(0, {str(HERE)!r}); import restore_tiles as m; "
        f"print(json.dumps(m.measure({str(root)!r}, {mode!r}, {prompt!r}, {args.side}, {args.tile}, "
        f"{args.overlap}, {args.steps})))"
    )
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env
    ).stdout
    return json.loads(out.strip().splitlines()[-1])


def seams(root: Path, args: argparse.Namespace) -> dict[str, float]:
    import numpy as np
    from PIL import Image

    from fluxir.restoration.pipeline import upscale_lq
    from fluxir.restoration.tiling import layout, seam_score

    size = args.side * 4
    tiles = layout(size, size, args.tile, args.overlap, unit=16)
    scores = {"bicubic input": seam_score(upscale_lq(lq_photo(args.side), 4), tiles)}
    for mode in MODES:
        image = np.asarray(Image.open(root / f"{mode}-stored.png"))
        scores[mode] = seam_score(image, tiles)
        same = np.array_equal(image, np.asarray(Image.open(root / f"{mode}-encode.png")))
        print(f"{mode}: output with stored prompt {'==' if same else '!='} output with encoded prompt")
    return scores


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--side", type=int, default=512, help="LQ side; the output is 4x")
    parser.add_argument("--tile", type=int, default=1024)
    parser.add_argument("--overlap", type=int, default=128)
    parser.add_argument("--steps", type=int, default=4)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="fluxir-tiles-") as tmp:
        root = Path(tmp)
        prepare(root)
        rows = []
        for mode in MODES:
            for prompt in ("stored", "encode"):
                rows.append(run_isolated(root, mode, prompt, args))
                print(json.dumps(rows[-1]), flush=True)
        scores = seams(root, args)
    out = args.side * 4
    print(
        f"\npeak RSS, restore of a {out} px output, tile {args.tile} / overlap {args.overlap}, {args.steps} steps"
    )
    print("mode      text encoders        peak MiB  load+restore MiB  restore MiB  restore s")
    for r in rows:
        label = "none (stored prompt)" if r["prompt"] == "stored" else "loaded, then freed"
        print(
            f"{r['mode']:9} {label:20} {r['peak_mib']:8.1f}  {r['load_and_restore_growth_mib']:16.1f}"
            f"  {r['restore_growth_mib']:11.1f}  {r['restore_s']:9.1f}"
        )
    print(f"\nseam score at the {args.tile}/{args.overlap} layout's borders (1 = no seam):")
    for name, score in scores.items():
        print(f"  {name:14} {score:.3f}")


if __name__ == "__main__":
    main()
