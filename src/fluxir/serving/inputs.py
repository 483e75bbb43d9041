"""Uploads the web page accepts: a readable image of sensible size, or one clear sentence why not.

Every check runs before a pixel reaches the model, and none raises anything but :class:`UploadError`, so
the page can show the message and keep serving: a file too large in bytes, an image whose header
declares more pixels than allowed (a decompression bomb is a small file), one whose upscaled output would
be larger than allowed (hours of tiles that would hold the page for every other user), not an image,
corrupt or truncated, or smaller than the restorer takes.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from fluxir.errors import UserError

MIN_SIDE = 4  # FluxIRPipeline's MIN_INPUT_SIDE; not imported, so this module loads without torch


class UploadError(UserError, ValueError):
    """An upload the page cannot restore; ``str(exc)`` is the message shown on the page."""


def _mb(size: int) -> str:
    return f"{size / 2**20:.1f} MB"


def read_upload(
    path: str | Path, max_bytes: int, max_pixels: int, scale: int = 1, max_output_pixels: int | None = None
) -> np.ndarray:
    """Decode an uploaded file to (H, W, 3) uint8, or raise UploadError naming the file and the reason.

    ``max_pixels`` bounds the upload itself; ``max_output_pixels`` (None: no bound) its ``scale`` x output.
    """
    from PIL import Image

    from fluxir.data.images import ImageDecodeError, decode_image

    path = Path(path)
    name = path.name
    size = path.stat().st_size
    if size > max_bytes:
        raise UploadError(f"{name} is {_mb(size)}; this page takes files up to {_mb(max_bytes)}")
    try:
        with Image.open(path) as im:  # the header only: the declared size, before decoding pixels
            width, height = im.size
    except Exception:  # noqa: BLE001 - unreadable headers get the decoder's precise reason below
        width = height = 0
    if width * height > max_pixels:
        raise UploadError(
            f"{name} is {width}x{height} px, more than the {max_pixels:,}-pixel limit of this page "
            "(restore.max_input_pixels)"
        )
    out_w, out_h = width * scale, height * scale
    if max_output_pixels is not None and out_w * out_h > max_output_pixels:
        raise UploadError(
            f"{name} is {width}x{height} px: its x{scale} output ({out_w}x{out_h} px) is more than the "
            f"{max_output_pixels:,}-pixel limit of this page (restore.max_output_pixels); upload a smaller image"
        )
    try:
        rgb = decode_image(path.read_bytes()).rgb
    except ImageDecodeError as exc:
        raise UploadError(f"{name}: {exc}") from exc
    if min(rgb.shape[:2]) < MIN_SIDE:
        raise UploadError(
            f"{name} is {rgb.shape[1]}x{rgb.shape[0]} px; the restorer needs at least {MIN_SIDE}x{MIN_SIDE}"
        )
    return rgb
