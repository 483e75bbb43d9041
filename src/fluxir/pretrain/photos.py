"""Real photographs that ship inside installed packages: the training data of the ``mini`` base model.

No image data set can be downloaded here, but several installed wheels carry a few real photographs
(scikit-image's sample data, scikit-learn's sample images, matplotlib's sample data, pyiqa's test
images). This module names them, records where each comes from and under which terms its package
ships it, splits them deterministically into ``train`` and ``held_out`` by photo, and writes the set
(PNG files + ``manifest.json``) into a folder atomically.

Held-out photos are for evaluation only: no training step of any model may read them.

Left out on purpose: scikit-image's grayscale images (camera, moon, brick, ...; the base model
generates colour images), synthetic ones (colorwheel, logo, chessboard), ``cat`` (a copy of
``chelsea``), the loaders that need ``pooch`` and the network (lily, kidney, skin, ...), and pyiqa's
``ResultsCalibra/dist_dir`` (degraded copies of ``ref_dir``).
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import io
import json
import shutil
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from fluxir.io import replace_dir
from fluxir.pretrain.checkpoint import publish_dir

TRAIN, HELD_OUT = "train", "held_out"
MANIFEST = "manifest.json"
# Held-out share of the photo groups; never fewer than MIN_HELD_OUT groups.
HELD_OUT_FRACTION = 0.2
MIN_HELD_OUT = 3
# Salt of the split hash: changing it reshuffles the split (and invalidates every trained model).
_SPLIT_SALT = "fluxir-mini-photos-v1"

_PYIQA_TERMS = "PolyForm-Noncommercial-1.0.0 (pyiqa's licence; the image's own terms are not stated)"


class PhotoSourceError(ValueError):
    """A photo's package or file is missing; the message names the package to install."""


@dataclass(frozen=True)
class PhotoSource:
    """One photograph inside an installed distribution."""

    name: str
    """Unique id, also the PNG file stem: ``<short package>-<image>``."""
    distribution: str
    """pip distribution that ships the file (``importlib.metadata`` name)."""
    path: str
    """File path relative to the distribution's install root (site-packages)."""
    licence: str
    """Terms as stated by the package (docstring, README or package licence)."""
    group: str = ""
    """Split unit; photos of one scene (a stereo pair) share a group so they land on one side."""

    @property
    def split_group(self) -> str:
        return self.group or self.name


PHOTOS: tuple[PhotoSource, ...] = (
    PhotoSource(
        "skimage-astronaut",
        "scikit-image",
        "skimage/data/astronaut.png",
        "public domain (NASA; skimage.data.astronaut docstring)",
    ),
    PhotoSource(
        "skimage-chelsea",
        "scikit-image",
        "skimage/data/chelsea.png",
        "CC0 (photographer Stefan van der Walt; skimage.data.chelsea docstring)",
    ),
    PhotoSource(
        "skimage-coffee",
        "scikit-image",
        "skimage/data/coffee.png",
        "CC0 (photographer Rachel Michetti; skimage.data.coffee docstring)",
    ),
    PhotoSource(
        "skimage-rocket",
        "scikit-image",
        "skimage/data/rocket.jpg",
        "public domain (SpaceX; skimage.data.rocket docstring)",
    ),
    PhotoSource(
        "skimage-hubble-deep-field",
        "scikit-image",
        "skimage/data/hubble_deep_field.jpg",
        "public domain (NASA; skimage.data.hubble_deep_field docstring)",
    ),
    PhotoSource(
        "skimage-retina",
        "scikit-image",
        "skimage/data/retina.jpg",
        "CC0 1.0 (Mikael Häggström, Wikimedia Commons; skimage.data.retina docstring)",
    ),
    PhotoSource(
        "skimage-immunohistochemistry",
        "scikit-image",
        "skimage/data/ihc.png",
        "no known copyright restrictions (CMMI; skimage.data.immunohistochemistry docstring)",
    ),
    PhotoSource(
        "skimage-motorcycle-left",
        "scikit-image",
        "skimage/data/motorcycle_left.png",
        "not stated (Middlebury 2014 stereo benchmark; scikit-image itself is BSD-3-Clause)",
        group="skimage-motorcycle",
    ),
    PhotoSource(
        "skimage-motorcycle-right",
        "scikit-image",
        "skimage/data/motorcycle_right.png",
        "not stated (Middlebury 2014 stereo benchmark; scikit-image itself is BSD-3-Clause)",
        group="skimage-motorcycle",
    ),
    PhotoSource(
        "sklearn-china",
        "scikit-learn",
        "sklearn/datasets/images/china.jpg",
        "CC BY 2.0 (danielbuechele on Flickr; sklearn/datasets/images/README.txt)",
    ),
    PhotoSource(
        "sklearn-flower",
        "scikit-learn",
        "sklearn/datasets/images/flower.jpg",
        "CC BY 2.0 (vultilion on Flickr; sklearn/datasets/images/README.txt)",
    ),
    PhotoSource(
        "matplotlib-grace-hopper",
        "matplotlib",
        "matplotlib/mpl-data/sample_data/grace_hopper.jpg",
        "not stated (US Navy photograph shipped as matplotlib sample data)",
    ),
    PhotoSource("pyiqa-spaq-10241", "pyiqa", "tests/test_efficiency_img_dir/SPAQ_10241.jpg", _PYIQA_TERMS),
    PhotoSource(
        "pyiqa-frame-4wrwr48cdk6rbcjl",
        "pyiqa",
        "tests/test_efficiency_img_dir/frame_4wrwr48cdk6rbcjl.jpg",
        _PYIQA_TERMS,
    ),
    PhotoSource(
        "pyiqa-frame-7gzdcz9sif0ekg31",
        "pyiqa",
        "tests/test_efficiency_img_dir/frame_7gzdcz9sif0ekg31.jpg",
        _PYIQA_TERMS,
    ),
    PhotoSource(
        "pyiqa-frame-9ogwhvvy7gfj6jzh",
        "pyiqa",
        "tests/test_efficiency_img_dir/frame_9ogwhvvy7gfj6jzh.jpg",
        _PYIQA_TERMS,
    ),
    PhotoSource("pyiqa-kodak-i03", "pyiqa", "ResultsCalibra/ref_dir/I03.bmp", _PYIQA_TERMS),
    PhotoSource("pyiqa-kodak-i04", "pyiqa", "ResultsCalibra/ref_dir/I04.bmp", _PYIQA_TERMS),
    PhotoSource("pyiqa-kodak-i06", "pyiqa", "ResultsCalibra/ref_dir/I06.bmp", _PYIQA_TERMS),
    PhotoSource("pyiqa-kodak-i08", "pyiqa", "ResultsCalibra/ref_dir/I08.bmp", _PYIQA_TERMS),
    PhotoSource("pyiqa-kodak-i19", "pyiqa", "ResultsCalibra/ref_dir/I19.bmp", _PYIQA_TERMS),
)


@dataclass(frozen=True)
class PhotoRecord:
    """One manifest row: a photo as written into the photo folder."""

    name: str
    split: str
    file: str
    """PNG file name inside the photo folder."""
    distribution: str
    version: str
    """Version of the distribution the photo was read from."""
    source_path: str
    licence: str
    width: int
    height: int
    source_bytes: int
    source_sha256: str


def _split_key(group: str) -> str:
    return hashlib.sha256(f"{_SPLIT_SALT}:{group}".encode()).hexdigest()


def split_of(photos: tuple[PhotoSource, ...] = PHOTOS) -> dict[str, str]:
    """Photo name -> ``train`` | ``held_out``, by photo group.

    Groups are ranked by a salted SHA-256 of their name and the first ``max(MIN_HELD_OUT,
    round(HELD_OUT_FRACTION * groups))`` are held out: deterministic, independent of list order, and not
    hand-picked.
    """
    groups = sorted({p.split_group for p in photos}, key=_split_key)
    n_held = max(MIN_HELD_OUT, round(HELD_OUT_FRACTION * len(groups)))
    held = set(groups[:n_held])
    return {p.name: HELD_OUT if p.split_group in held else TRAIN for p in photos}


def locate(photo: PhotoSource) -> Path:
    """Absolute path of a photo's file; PhotoSourceError if its package or file is missing."""
    try:
        dist = importlib.metadata.distribution(photo.distribution)
    except importlib.metadata.PackageNotFoundError:
        raise PhotoSourceError(
            f"photo {photo.name} needs the package {photo.distribution}: `pip install {photo.distribution}`"
        ) from None
    path = Path(dist.locate_file(photo.path))
    if not path.is_file():
        raise PhotoSourceError(
            f"photo {photo.name}: {path} is missing from {photo.distribution} {dist.version}; reinstall it"
        )
    return path


def load_photo(photo: PhotoSource) -> np.ndarray:
    """The photo as an H x W x 3 uint8 RGB array."""
    with Image.open(locate(photo)) as im:
        return np.asarray(im.convert("RGB"))


def _png_bytes(rgb: np.ndarray) -> bytes:
    buf = io.BytesIO()
    # No metadata and fixed compression: the same pixels give the same bytes (stable DVC hashes).
    Image.fromarray(rgb).save(buf, format="PNG", compress_level=6)
    return buf.getvalue()


def write_photo_set(out_dir: str | Path, photos: tuple[PhotoSource, ...] = PHOTOS) -> list[PhotoRecord]:
    """Write every photo as ``<split>/<name>.png`` plus ``manifest.json`` into ``out_dir``, atomically.

    The folder is built under a temporary name beside ``out_dir`` and renamed into place, so a crash
    never leaves a half-written photo set.
    """
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    splits = split_of(photos)
    records = []
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        for photo in photos:
            source = locate(photo)
            raw = source.read_bytes()
            rgb = load_photo(photo)
            # one folder per split, so a benchmark set can point at held_out/ alone
            relpath = f"{splits[photo.name]}/{photo.name}.png"
            (tmp / relpath).parent.mkdir(exist_ok=True)
            (tmp / relpath).write_bytes(_png_bytes(rgb))
            records.append(
                PhotoRecord(
                    name=photo.name,
                    split=splits[photo.name],
                    file=relpath,
                    distribution=photo.distribution,
                    version=importlib.metadata.version(photo.distribution),
                    source_path=photo.path,
                    licence=photo.licence,
                    width=int(rgb.shape[1]),
                    height=int(rgb.shape[0]),
                    source_bytes=len(raw),
                    source_sha256=hashlib.sha256(raw).hexdigest(),
                )
            )
        manifest = {"photos": [asdict(r) for r in records]}
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
        publish_dir(tmp)
        replace_dir(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return records


def read_manifest(photo_dir: str | Path) -> list[PhotoRecord]:
    """The manifest rows of a photo folder written by ``write_photo_set``."""
    path = Path(photo_dir) / MANIFEST
    if not path.is_file():
        raise PhotoSourceError(f"{path} not found: write the photo set first (fluxir.pretrain.photos)")
    return [PhotoRecord(**row) for row in json.loads(path.read_text())["photos"]]


def load_split(photo_dir: str | Path, split: str) -> dict[str, np.ndarray]:
    """Photo name -> H x W x 3 uint8 array, for one split of a photo folder."""
    if split not in (TRAIN, HELD_OUT):
        raise ValueError(f"split must be {TRAIN!r} or {HELD_OUT!r}, not {split!r}")
    photo_dir = Path(photo_dir)
    out = {}
    for rec in read_manifest(photo_dir):
        if rec.split == split:
            with Image.open(photo_dir / rec.file) as im:
                out[rec.name] = np.asarray(im.convert("RGB"))
    return out
