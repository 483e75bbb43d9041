"""Which colour fix to restore with by default: none, wavelet and adain measured against the HQ photo.

Real photos shipped with scikit-image (never seen in training: the tiny profile trains on generated
images) are centre-cropped to HQ, degraded with the project's Real-ESRGAN chain (degrade.* defaults,
x4) and restored once; each fix is then applied to that same restoration against its bicubic upscale.
Two sources of restorations are measured:
  model   the tiny base with an adapter (``--adapter``; default: a random one, as a trained adapter's
          weights would be): says little about quality, checks the wiring on a real model output;
  drift   the HQ photo with a known colour drift (per-channel gain and offset, the failure SeeSR#54 and
          S3Diff#2 report): what a fix is for, a restoration whose detail is right and colours are off.
Per fix: PSNR (Y, and RGB) against HQ, the colour error (mean absolute difference of the per-channel
means against HQ, in grey levels) and, for drift, how much of the restoration's detail survives (PSNR
of its high frequencies against HQ's).

    python bench/color_fix.py [--adapter DIR --base DIR] [--side 256] [--steps 4]
"""

from __future__ import annotations

import argparse
import json

import numpy as np

PHOTOS = ("astronaut", "coffee", "chelsea", "rocket")
DRIFT_GAIN = np.array([1.08, 0.97, 0.9])  # R, G, B
DRIFT_OFFSET = np.array([10.0, -4.0, -12.0])


def hq_lq_pairs(side: int, scale: int = 4) -> list[tuple[str, np.ndarray, np.ndarray]]:
    from skimage import data as skdata

    from fluxir.config import DegradeConfig
    from fluxir.degradation.pipeline import degrade_pair, image_rng

    cfg = DegradeConfig(sizes=[[side, side]], crop="center", hflip_prob=0.0, scale=scale)
    pairs = []
    for name in PHOTOS:
        pair = degrade_pair(getattr(skdata, name)(), cfg, image_rng(name, 0))
        pairs.append((name, pair.hq, pair.lq))
    return pairs


def colour_error(image: np.ndarray, hq: np.ndarray) -> float:
    return float(np.abs(image.reshape(-1, 3).mean(0) - hq.reshape(-1, 3).mean(0)).mean())


def detail_psnr(image: np.ndarray, hq: np.ndarray) -> float:
    """PSNR of the high frequencies (image minus its a-trous lowpass): is the detail still there?"""
    from fluxir.restoration.color import _lowpass

    def high(x: np.ndarray) -> np.ndarray:
        x = x.astype(np.float64)
        return x - _lowpass(x)

    mse = float(np.mean((high(image) - high(hq)) ** 2))
    return 10 * np.log10(255**2 / mse)


def drifted(hq: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(hq * DRIFT_GAIN + DRIFT_OFFSET), 0, 255).astype(np.uint8)


def model_restorer(adapter: str | None, base: str | None, steps: int):
    import torch

    from fluxir.models.adapter import FluxIRAdapter
    from fluxir.models.tiny import build_tiny_pipeline
    from fluxir.restoration.pipeline import FluxIRPipeline, RestoreOptions

    torch.set_num_threads(1)
    if adapter:
        pipeline = FluxIRPipeline.from_pretrained(base or "data/models/tiny-flux", adapter)
    else:
        pipe = build_tiny_pipeline(seed=0)
        fluxir = FluxIRAdapter.from_flux(pipe.transformer, rank=8)
        generator = torch.Generator().manual_seed(0)
        with torch.no_grad():
            for p in fluxir.parameters():
                p.copy_(torch.randn(p.shape, generator=generator) * 0.05)
        pipeline = FluxIRPipeline(pipe, fluxir)
    options = RestoreOptions(steps=steps, color_fix="none", seed=0)
    return lambda lq: pipeline(lq, options)


def main() -> None:
    from fluxir.iqa import psnr
    from fluxir.restoration.color import COLOR_FIXES, apply_color_fix
    from fluxir.restoration.pipeline import upscale_lq

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--adapter", help="trained adapter folder (default: a random adapter on the tiny base)"
    )
    parser.add_argument("--base", help="base folder for --adapter (default: data/models/tiny-flux)")
    parser.add_argument("--side", type=int, default=256, help="HQ crop side (LQ is side / 4)")
    parser.add_argument("--steps", type=int, default=4)
    args = parser.parse_args()
    restore = model_restorer(args.adapter, args.base, args.steps)
    totals: dict[tuple[str, str], list[list[float]]] = {}
    for name, hq, lq in hq_lq_pairs(args.side):
        reference = upscale_lq(lq, 4)
        for source, restored in (("model", restore(lq)), ("drift", drifted(hq))):
            for fix in COLOR_FIXES:
                out = apply_color_fix(restored, reference, fix)
                row = [psnr(out, hq, "y"), psnr(out, hq, "rgb"), colour_error(out, hq), detail_psnr(out, hq)]
                totals.setdefault((source, fix), []).append(row)
                print(
                    json.dumps(
                        {
                            "photo": name,
                            "source": source,
                            "fix": fix,
                            "psnr_y": round(row[0], 2),
                            "psnr_rgb": round(row[1], 2),
                            "colour_error": round(row[2], 2),
                            "detail_psnr": round(row[3], 2),
                        }
                    )
                )
    print(f"\nmean over {len(PHOTOS)} photos ({args.side} px HQ, x4):")
    print("source  fix      PSNR-Y  PSNR-RGB  colour error  detail PSNR")
    for (source, fix), rows in totals.items():
        y, rgb, err, det = np.mean(rows, axis=0)
        print(f"{source:6}  {fix:7}  {y:6.2f}  {rgb:8.2f}  {err:12.2f}  {det:11.2f}")


if __name__ == "__main__":
    main()
