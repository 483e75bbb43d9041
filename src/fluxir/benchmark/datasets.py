"""Test sets of Table 1, prepared into one layout: ``<out_dir>/<name>/{lq,hq}/<id>.png`` + manifest.

Three source layouts (paper section 4.1):
  synthetic  HQ photos (DIV2K-Val: DIV2K's validation HR images); ``num_crops`` random ``hq_crop``
             squares spread evenly over the photos, each degraded with the training degradation
             (``degrade.*``: Real-ESRGAN second order, LQ = HQ / scale). Crop k of photo p draws from
             ``image_rng(f"{p}#{k}", seed)``, so a set is reproducible crop by crop. The HQ written (the
             reference of PSNR, SSIM, LPIPS) is the original crop (``reference: original``, the paper's
             framing) unless ``reference: sharpened`` asks for the unsharp-masked crop that training
             targets when ``gt_usm`` is on.
  paired     RealSR / DRealSR: an HQ folder and an LQ folder whose files match by name (case and the
             tags _HR, _LR4, _x1, _x4, _GT, _LQ ignored). LQ is centre-cropped to ``lq_crop`` (0: hq_crop
             / scale) and HQ to the same box times the scale, so the two stay aligned.
  lq_only    RealLQ250: LQ images only, used whole; centre-cropped only when ``lq_crop`` asks for it.

Every prepared set says how it was framed (:attr:`BenchSet.framing`), and the reports print it.

Every loader checks the whole folder first and raises :class:`DatasetLayoutError` listing exactly
what does not match (unpaired names, unreadable files, images too small, HQ not scale x LQ).
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from fluxir.config import BenchmarkDataset, ConfigError, DegradeConfig
from fluxir.data.images import IMAGE_SUFFIXES, ImageDecodeError, list_images, load_rgb, write_image_atomic
from fluxir.data.manifest import MANIFEST_NAME, read_manifest, write_manifest
from fluxir.data.validate import KindSpec, Rule, register_kind, validate_manifest

SKIMAGE = "skimage"
# Colour photos scikit-image ships (loadable offline): 512x512, 300x451, 400x600, 427x640 (h x w).
SKIMAGE_PHOTOS = ("astronaut", "chelsea", "coffee", "rocket")
_TAG = re.compile(r"[_\-.](hr|lr\d*|gt|lq|x\d+)$", re.IGNORECASE)
MAX_LISTED = 10
"""Problems listed by name in an error message; the rest are counted."""
KIND = "benchmark-set"

register_kind(
    KIND,
    KindSpec(
        ("id", "path", "hq_path", "dataset", "source", "lq_height", "lq_width"),
        (
            Rule("expect_table_row_count_to_be_between", {"min_value": 1}),
            Rule("expect_column_values_to_not_be_null", {"column": "id"}),
            Rule("expect_column_values_to_be_unique", {"column": "id"}),
            Rule("expect_column_values_to_be_existing_files", {"column": "path"}),
            Rule("expect_column_values_to_be_between", {"column": "lq_height", "min_value": 1}),
            Rule("expect_column_values_to_be_between", {"column": "lq_width", "min_value": 1}),
        ),
        # HQ files must exist wherever the set has them (lq_only sets have none).
        lambda df: (
            [Rule("expect_column_values_to_be_existing_files", {"column": "hq_path"})]
            if df["hq_path"].notna().all()
            else [Rule("expect_column_values_to_be_null", {"column": "hq_path"})]
        ),
    ),
)


class DatasetLayoutError(ConfigError):
    """A test-set folder that does not match its declared layout; the message lists what is wrong."""


@dataclass(frozen=True)
class Sample:
    """One prepared test image: its LQ file, its HQ file (None for lq_only sets) and where it came from."""

    id: str
    lq_path: Path
    hq_path: Path | None
    source: str


@dataclass
class BenchSet:
    """A prepared test set."""

    name: str
    kind: str
    root: Path
    samples: list[Sample]
    framing: str = ""
    """How the images were cut and which HQ is the reference, for the reports (see :func:`framing`)."""

    @property
    def has_hq(self) -> bool:
        return self.kind != "lq_only"


# ----------------------------------------------------------------------------------------------
# Listing and matching


def pair_key(relative: Path) -> str:
    """Name an HQ and an LQ file share: relative path, no suffix, lower case, without an _HR/_LR4/_x4 tag."""
    stem = relative.with_suffix("").as_posix()
    return _TAG.sub("", stem).lower()


def sample_id(relative: Path) -> str:
    """A flat file-name-safe id from a relative path: ``Canon/Canon_001_HR.png`` -> ``Canon__Canon_001``."""
    return re.sub(
        r"[^A-Za-z0-9_.-]", "_", _TAG.sub("", relative.with_suffix("").as_posix()).replace("/", "__")
    )


def _listing(names: Sequence[str]) -> str:
    shown = ", ".join(names[:MAX_LISTED])
    return shown + (f" and {len(names) - MAX_LISTED} more" if len(names) > MAX_LISTED else "")


def match_pairs(hq_dir: Path, lq_dir: Path) -> tuple[list[tuple[Path, Path]], list[str]]:
    """(HQ, LQ) files matched by :func:`pair_key`, and the problems found (unpaired or ambiguous names)."""
    problems: list[str] = []
    sides: dict[str, dict[str, Path]] = {}
    for side, folder in (("HQ", hq_dir), ("LQ", lq_dir)):
        keys: dict[str, list[Path]] = {}
        for path in list_images(folder):
            keys.setdefault(pair_key(path.relative_to(folder)), []).append(path)
        clashes = [" / ".join(p.name for p in ps) for ps in keys.values() if len(ps) > 1]
        if clashes:
            problems.append(
                f"{len(clashes)} {side} names are ambiguous once tags are ignored: {_listing(clashes)}"
            )
        sides[side] = {k: ps[0] for k, ps in keys.items()}
    hq, lq = sides["HQ"], sides["LQ"]
    only_hq = sorted(str(hq[k].relative_to(hq_dir)) for k in hq.keys() - lq.keys())
    only_lq = sorted(str(lq[k].relative_to(lq_dir)) for k in lq.keys() - hq.keys())
    if only_hq:
        problems.append(f"{len(only_hq)} HQ files have no LQ partner in {lq_dir}: {_listing(only_hq)}")
    if only_lq:
        problems.append(f"{len(only_lq)} LQ files have no HQ partner in {hq_dir}: {_listing(only_lq)}")
    return [(hq[k], lq[k]) for k in sorted(hq.keys() & lq.keys())], problems


def _raise(spec: BenchmarkDataset, problems: list[str], hint: str = "") -> None:
    if problems:
        raise DatasetLayoutError(
            f"benchmark dataset '{spec.name}' ({spec.kind}): "
            + "; ".join(problems)
            + (f". {hint}" if hint else "")
        )


def _folder(spec: BenchmarkDataset, key: str) -> Path:
    folder = Path(getattr(spec, key)).expanduser()
    if not folder.is_dir():
        raise DatasetLayoutError(f"benchmark dataset '{spec.name}': {key}={str(folder)!r} is not a folder")
    if not list_images(folder):
        raise DatasetLayoutError(
            f"benchmark dataset '{spec.name}': {key}={str(folder)!r} holds no images ({', '.join(sorted(IMAGE_SUFFIXES))})"
        )
    return folder


def center_box(height: int, width: int, size: int) -> tuple[int, int]:
    """Top-left corner of the centred ``size`` x ``size`` square."""
    return (height - size) // 2, (width - size) // 2


def _limit(items: list, spec: BenchmarkDataset) -> list:
    return items[: spec.max_images] if spec.max_images else items


def paired_lq_crop(spec: BenchmarkDataset, scale: int) -> int:
    """A paired set's LQ crop side: ``lq_crop``, or ``hq_crop / scale`` when it is 0."""
    return spec.lq_crop or spec.hq_crop // scale


def framing(spec: BenchmarkDataset, scale: int) -> str:
    """One line saying how a set's images are cut and what the full-reference metrics compare against."""
    if spec.kind == "synthetic":
        ref = "unsharp-masked HQ crop" if spec.reference == "sharpened" else "original HQ crop"
        return (
            f"{spec.num_crops} random {spec.hq_crop} px HQ crops degraded with the degrade settings "
            f"(LQ {spec.hq_crop // scale} px); reference: {ref} (reference: {spec.reference})"
        )
    if spec.kind == "paired":
        lq = paired_lq_crop(spec, scale)
        return f"centre crops, HQ {lq * scale} px / LQ {lq} px"
    return f"centre crops of {spec.lq_crop} px (lq_crop)" if spec.lq_crop else "whole images, no crop"


# ----------------------------------------------------------------------------------------------
# The three layouts: each returns [(id, lq, hq or None, source)] in memory


Prepared = list[tuple[str, np.ndarray, np.ndarray | None, str]]


def hq_photos(spec: BenchmarkDataset) -> list[tuple[str, Callable[[], np.ndarray]]]:
    """(id, loader) of each HQ photo of a synthetic set: scikit-image's samples or a folder's images."""
    if spec.hq_dir == SKIMAGE:
        from skimage import data

        return _limit([(name, getattr(data, name)) for name in SKIMAGE_PHOTOS], spec)
    folder = _folder(spec, "hq_dir")
    return _limit(
        [(sample_id(p.relative_to(folder)), lambda p=p: load_rgb(p)) for p in list_images(folder)], spec
    )


def synthetic(spec: BenchmarkDataset, degrade: DegradeConfig) -> Prepared:
    """``num_crops`` random ``hq_crop`` squares over the photos, degraded like the training pairs."""
    from fluxir.degradation import crop_skip_reason, degrade_pair, image_rng, resolve_params

    if spec.hq_crop % degrade.scale:
        raise DatasetLayoutError(
            f"benchmark dataset '{spec.name}': hq_crop={spec.hq_crop} must be a multiple of degrade.scale={degrade.scale}"
        )
    # Square test crops, no flip: the degradation is the training one, the framing is the paper's.
    cfg = dataclasses.replace(degrade, sizes=[[spec.hq_crop, spec.hq_crop]], crop="random", hflip_prob=0.0)
    side = spec.hq_crop
    params = resolve_params(cfg)
    photos = hq_photos(spec)
    images, problems = [], []
    for pid, load in photos:
        try:
            image = np.ascontiguousarray(load()[..., :3])
        except (ImageDecodeError, OSError) as exc:
            problems.append(f"{pid}: unreadable ({exc})")
            continue
        if (reason := crop_skip_reason(image.shape, cfg.sizes)) is not None:
            problems.append(f"{pid}: {reason}")
        images.append((pid, image))
    _raise(spec, problems, "Lower hq_crop or drop those photos.")
    out: Prepared = []
    for k in range(spec.num_crops):
        pid, image = images[k % len(images)]
        j = k // len(images)
        rng = image_rng(f"{pid}#{j}", spec.seed)
        hq, lq, record = degrade_pair(image, cfg, rng, params)
        crop = record["crop"]
        if spec.reference == "original":
            # The crop before gt_usm sharpened it: the photo is the ground truth, not its sharpened copy.
            top, left = crop["top"], crop["left"]
            hq = np.ascontiguousarray(image[top : top + side, left : left + side])
        out.append((f"{pid}_{j:03d}", lq, hq, f"{pid} crop top={crop['top']} left={crop['left']}"))
    return out


def paired(spec: BenchmarkDataset, scale: int) -> Prepared:
    """Matched HQ/LQ files, centre-cropped into aligned ``lq_crop`` / ``lq_crop * scale`` squares."""
    lq_crop = paired_lq_crop(spec, scale)
    if lq_crop < 1 or lq_crop * scale != spec.hq_crop:
        raise DatasetLayoutError(
            f"benchmark dataset '{spec.name}': lq_crop={lq_crop} x restore.scale={scale} must equal "
            f"hq_crop={spec.hq_crop} (paper: 256 x 4 = 1024)"
        )
    hq_dir, lq_dir = _folder(spec, "hq_dir"), _folder(spec, "lq_dir")
    if hq_dir.resolve() == lq_dir.resolve():
        raise DatasetLayoutError(
            f"benchmark dataset '{spec.name}': hq_dir and lq_dir are the same folder; put HQ (e.g. *_HR.png) and "
            "LQ (*_LR4.png) files in two folders"
        )
    pairs, problems = match_pairs(hq_dir, lq_dir)
    _raise(spec, problems, "Files match by name, ignoring case and the tags _HR, _LR<n>, _x<n>, _GT, _LQ.")
    out: Prepared = []
    for hq_path, lq_path in _limit(pairs, spec):
        name = str(lq_path.relative_to(lq_dir))
        try:
            hq, lq = load_rgb(hq_path), load_rgb(lq_path)
        except ImageDecodeError as exc:
            problems.append(f"{name}: unreadable ({exc})")
            continue
        (hh, hw), (lh, lw) = hq.shape[:2], lq.shape[:2]
        if abs(hh - scale * lh) >= scale or abs(hw - scale * lw) >= scale:
            problems.append(f"{name}: HQ {hw}x{hh} is not {scale} x LQ {lw}x{lh} (restore.scale={scale})")
            continue
        if min(lh, lw) < lq_crop:
            problems.append(f"{name}: LQ {lw}x{lh} is smaller than lq_crop {lq_crop}")
            continue
        top, left = center_box(lh, lw, lq_crop)
        c, s = lq_crop, scale
        hq_crop = hq[top * s : (top + c) * s, left * s : (left + c) * s]
        if hq_crop.shape[:2] != (c * s, c * s):
            problems.append(f"{name}: HQ {hw}x{hh} is too small for the {c * s} px box under the LQ crop")
            continue
        out.append(
            (sample_id(lq_path.relative_to(lq_dir)), lq[top : top + c, left : left + c], hq_crop, name)
        )
    _raise(spec, problems)
    return out


def lq_only(spec: BenchmarkDataset) -> Prepared:
    """LQ images as they are (RealLQ250 is used whole); centre-cropped only when ``lq_crop`` is set."""
    folder = _folder(spec, "lq_dir")
    out: Prepared = []
    problems = []
    for path in _limit(list_images(folder), spec):
        name = str(path.relative_to(folder))
        try:
            lq = load_rgb(path)
        except ImageDecodeError as exc:
            problems.append(f"{name}: unreadable ({exc})")
            continue
        if spec.lq_crop:
            h, w = lq.shape[:2]
            if min(h, w) < spec.lq_crop:
                problems.append(f"{name}: {w}x{h} is smaller than lq_crop {spec.lq_crop}")
                continue
            top, left = center_box(h, w, spec.lq_crop)
            lq = lq[top : top + spec.lq_crop, left : left + spec.lq_crop]
        out.append((sample_id(path.relative_to(folder)), lq, None, name))
    _raise(spec, problems)
    return out


# ----------------------------------------------------------------------------------------------
# Writing the prepared set


def prepare(
    spec: BenchmarkDataset, scale: int, degrade: DegradeConfig, out_dir: str | Path, report_dir: str | Path
) -> BenchSet:
    """Check and prepare one test set; write its LQ/HQ PNGs and a validated manifest under ``out_dir/name``."""
    if spec.kind == "synthetic":
        if degrade.scale != scale:
            raise ConfigError(
                f"degrade.scale={degrade.scale}: must equal restore.scale={scale} for the synthetic set '{spec.name}'"
            )
        items = synthetic(spec, degrade)
    elif spec.kind == "paired":
        items = paired(spec, scale)
    else:
        items = lq_only(spec)
    ids = [item[0] for item in items]
    if len(set(ids)) != len(ids):
        dupes = sorted({i for i in ids if ids.count(i) > 1})
        raise DatasetLayoutError(
            f"benchmark dataset '{spec.name}': names collide once flattened: {_listing(dupes)}"
        )
    root = Path(out_dir) / spec.name
    rows, samples = [], []
    for sid, lq, hq, source in items:
        lq_path = root / "lq" / f"{sid}.png"
        write_image_atomic(lq_path, lq)
        hq_path = None
        if hq is not None:
            hq_path = root / "hq" / f"{sid}.png"
            write_image_atomic(hq_path, hq)
        samples.append(Sample(sid, lq_path, hq_path, source))
        rows.append(
            {
                "id": sid,
                "path": str(lq_path),
                "hq_path": None if hq_path is None else str(hq_path.absolute()),
                "dataset": spec.name,
                "source": source,
                "lq_height": lq.shape[0],
                "lq_width": lq.shape[1],
            }
        )
    df = pd.DataFrame(rows)
    df.attrs["benchmark_dataset"] = dataclasses.asdict(spec)
    validate_manifest(df, KIND, report_dir, source=root / MANIFEST_NAME, name=spec.name)
    write_manifest(df, root / MANIFEST_NAME, kind=KIND)  # path and hq_path stored relative to root
    return BenchSet(spec.name, spec.kind, root, samples, framing(spec, scale))


def read_set(root: str | Path) -> pd.DataFrame:
    """A prepared set's manifest (``path`` = LQ and ``hq_path`` come back absolute)."""
    return read_manifest(Path(root) / MANIFEST_NAME)
