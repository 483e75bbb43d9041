"""Image files in and out: safe decoding to RGB uint8, conversions, atomic writes, content hashes.

Every image the project reads goes through :func:`load_rgb` (or :func:`decode_image`), which either
returns an ``H x W x 3`` uint8 array or raises :class:`ImageDecodeError` with a short reason. Files a
photo folder really contains are converted when that is sensible:

  grayscale (L, 1, I;16)      replicated to three channels
  16-bit (I;16, 48-bit RGB)   scaled to 8 bits
  CMYK, YCbCr, palette        converted by Pillow
  RGBA, LA, palette + alpha   alpha-composited over white (fully opaque alpha is simply dropped)
  EXIF orientation            applied, so the array is the image as a viewer shows it

and rejected otherwise (0-byte, not an image, truncated, corrupt, floating-point, too large). A JPEG
whose entropy-coded data is damaged in the middle is rejected too, though Pillow decodes it without a word
(see :func:`_jpeg_damage`).

Writes are atomic: the encoded bytes go to a temp file in the destination folder, then ``os.replace``
moves it into place, so a killed process leaves either the old file, the new file, or a stray temp
file (removed by :func:`remove_partial_writes`), never a half-written image.
"""

from __future__ import annotations

import contextlib
import io
import os
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

import numpy as np
import simplejpeg
from PIL import Image, ImageFile, ImageOps

from fluxir.io import sha256_bytes, write_bytes_atomic

_FORMATS = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".webp": "WEBP"}
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff"}
"""File suffixes (lower case) taken as images when a folder is listed."""
OUTPUT_SUFFIXES = tuple(_FORMATS)
"""File suffixes (lower case) :func:`write_image_atomic` can encode."""
JPEG_QUALITY = 95
"""Quality for JPEG outputs (4:4:4 chroma, so colour edges survive)."""


class ImageDecodeError(ValueError):
    """A file that cannot be read as an image; ``str(exc)`` is a short reason, e.g. 'empty file'."""


class Decoded(NamedTuple):
    """A decoded image and what it was before conversion."""

    rgb: np.ndarray
    """H x W x 3 uint8 array."""
    mode: str
    """Pillow mode of the file ('RGB', 'CMYK', 'I;16', ...)."""
    format: str
    """Container format Pillow recognised ('PNG', 'JPEG', ...)."""
    note: str
    """What conversion was applied ('' when none), e.g. 'CMYK -> RGB'."""


@contextlib.contextmanager
def _strict_pillow() -> Iterator[None]:
    # Some libraries set LOAD_TRUNCATED_IMAGES globally, which makes Pillow fill a truncated image with
    # grey instead of failing; decoding here must always fail on truncation.
    previous = ImageFile.LOAD_TRUNCATED_IMAGES
    ImageFile.LOAD_TRUNCATED_IMAGES = False
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            yield
    finally:
        ImageFile.LOAD_TRUNCATED_IMAGES = previous


def _composite_on_white(im: Image.Image) -> tuple[Image.Image, str]:
    rgba = im.convert("RGBA")
    alpha = np.asarray(rgba)[..., 3]
    if alpha.min() == 255:
        return rgba.convert("RGB"), f"{im.mode} -> RGB (opaque alpha dropped)"
    background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    return Image.alpha_composite(background, rgba).convert("RGB"), f"{im.mode} -> RGB (alpha on white)"


def _to_rgb(im: Image.Image) -> tuple[np.ndarray, str]:
    mode = im.mode
    if mode == "RGB":
        return np.asarray(im), ""
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        # 16-bit grayscale (PNG/TIFF). Pillow's own convert('L') clips instead of scaling.
        wide = np.asarray(im).astype(np.float64)
        if wide.max(initial=0) > 65535 or wide.min(initial=0) < 0:
            raise ImageDecodeError(f"unsupported {mode} image with values outside 0..65535")
        gray = np.round(wide / 257.0).astype(np.uint8)
        return np.repeat(gray[..., None], 3, axis=2), f"{mode} -> RGB (16-bit scaled to 8)"
    if mode == "F":
        raise ImageDecodeError("unsupported floating-point (mode F) image")
    if mode in ("RGBA", "LA", "La", "RGBa", "PA") or (mode == "P" and "transparency" in im.info):
        rgb, note = _composite_on_white(im)
        return np.asarray(rgb), note
    try:
        return np.asarray(im.convert("RGB")), f"{mode} -> RGB"
    except (ValueError, OSError) as exc:
        raise ImageDecodeError(f"cannot convert mode {mode} to RGB ({exc})") from exc


def _jpeg_damage(data: bytes) -> str | None:
    """libjpeg's warning about damaged JPEG data, or None when the stream decodes cleanly.

    Bytes overwritten in the middle of the scan do not stop libjpeg: it warns ("Corrupt JPEG data: 318
    extraneous bytes before marker 0xd9", "bad Huffman code", "premature end of data segment"), fills in
    what it lost and carries on, so a third of the picture can come out garbled. Pillow drops those
    warnings (OpenCV and torchvision only print them on stderr), so the stream is decoded a second time by
    libjpeg-turbo through simplejpeg, whose strict mode raises them. The check decodes at 1/8 scale: the warnings come from reading the entropy-coded data,
    which every scale reads whole, at a fraction of the cost of the pixels.
    """
    try:
        space = simplejpeg.decode_jpeg_header(data, strict=False)[2]
    except ValueError:  # a JPEG variant TurboJPEG does not read: Pillow's decode stands
        return None
    options = {
        "colorspace": "CMYK" if space in ("CMYK", "YCCK") else "RGB",
        "min_height": 1,  # the smallest scale TurboJPEG offers (1/8)
        "min_width": 1,
    }
    try:
        simplejpeg.decode_jpeg(data, strict=True, **options)
        return None
    except ValueError as exc:
        warning = str(exc)
    try:  # failing even when lenient: a variant TurboJPEG does not decode, not damage; Pillow's stands
        simplejpeg.decode_jpeg(data, strict=False, **options)
    except ValueError:
        return None
    return warning


def decode_image(data: bytes) -> Decoded:
    """Decode encoded image bytes to RGB uint8; raise ImageDecodeError with a short reason."""
    if not data:
        raise ImageDecodeError("empty file (0 bytes)")
    with _strict_pillow():
        try:
            im = Image.open(io.BytesIO(data))
        except Image.UnidentifiedImageError as exc:
            raise ImageDecodeError("not an image (unrecognised format)") from exc
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
            raise ImageDecodeError(f"too large ({exc})") from exc
        except (OSError, SyntaxError, ValueError) as exc:
            raise ImageDecodeError(f"unreadable header ({exc})") from exc
        fmt, mode = im.format or "?", im.mode
        try:
            im.load()
            im = ImageOps.exif_transpose(im)
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
            raise ImageDecodeError(f"too large ({exc})") from exc
        except (OSError, SyntaxError, ValueError, EOFError) as exc:
            raise ImageDecodeError(f"truncated or corrupt {fmt} ({exc})") from exc
    if fmt in ("JPEG", "MPO") and (damage := _jpeg_damage(data)) is not None:
        raise ImageDecodeError(
            f"damaged JPEG data (libjpeg: {damage}), part of the picture would be garbled; "
            "re-export or re-download the file"
        )
    rgb, note = _to_rgb(im)
    rgb = np.ascontiguousarray(rgb, dtype=np.uint8)
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.shape[0] == 0 or rgb.shape[1] == 0:
        raise ImageDecodeError(f"decoded to an unexpected shape {rgb.shape}")
    return Decoded(rgb, mode, fmt, note)


def load_rgb(path: str | os.PathLike) -> np.ndarray:
    """Read an image file as an H x W x 3 uint8 RGB array; raise ImageDecodeError with a short reason."""
    try:
        data = Path(path).read_bytes()
    except IsADirectoryError as exc:
        raise ImageDecodeError("is a directory") from exc
    return decode_image(data).rgb


def list_images(folder: str | os.PathLike) -> list[Path]:
    """Image files under ``folder`` (recursive, by :data:`IMAGE_SUFFIXES`), sorted by path."""
    return sorted(p for p in Path(folder).rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


# ----------------------------------------------------------------------------------------------
# Conversions


def to_float01(rgb: np.ndarray) -> np.ndarray:
    """uint8 [0, 255] -> float32 [0, 1]."""
    if rgb.dtype != np.uint8:
        raise TypeError(f"expected uint8, got {rgb.dtype}")
    return rgb.astype(np.float32) / 255.0


def to_uint8(x: np.ndarray) -> np.ndarray:
    """float [0, 1] -> uint8 of the same shape: clipped, then rounded to nearest, ties to even.

    The rounding of diffusers' numpy_to_pil (``np.round``) and of basicsr (cv2's saturate_cast), computed
    in float32 in one OpenCV pass (~3x faster than the NumPy expression; the degradation chain calls it
    per image).
    """
    import cv2

    a = np.asarray(x, dtype=np.float32)
    if a.size == 0:
        return np.zeros(a.shape, np.uint8)
    # convertScaleAbs saturates above 255; negative values are clipped first (it takes |x|)
    return cv2.convertScaleAbs(np.maximum(a, 0).reshape(-1, 1), alpha=255).reshape(a.shape)


# ----------------------------------------------------------------------------------------------
# Writing and hashing


def encode_image(rgb: np.ndarray, fmt: str = "PNG") -> bytes:
    """Encode an H x W x 3 uint8 array (or H x W gray) to PNG/JPEG/WEBP bytes."""
    arr = np.asarray(rgb)
    if arr.dtype != np.uint8 or arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[2] != 3):
        raise ValueError(f"expected an H x W x 3 uint8 array, got {arr.dtype} {arr.shape}")
    buf = io.BytesIO()
    im = Image.fromarray(arr)
    if fmt == "JPEG":
        im.save(buf, format=fmt, quality=JPEG_QUALITY, subsampling=0)
    elif fmt == "WEBP":
        im.save(buf, format=fmt, lossless=True)
    else:
        im.save(buf, format=fmt)
    return buf.getvalue()


def write_image_atomic(path: str | os.PathLike, rgb: np.ndarray) -> str:
    """Encode ``rgb`` by the file suffix (.png, .jpg, .webp), write it atomically, return its sha256 hex."""
    path = Path(path)
    fmt = _FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise ValueError(f"{path}: unsupported image suffix; use one of {', '.join(OUTPUT_SUFFIXES)}")
    data = encode_image(rgb, fmt)
    write_bytes_atomic(path, data)
    return sha256_bytes(data)
