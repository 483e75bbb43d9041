"""Tile layout and seam blending for restoring images larger than one tile.

Tiles overlap by ``overlap`` pixels; inside an overlap each tile's weight ramps linearly from its edge,
so seams blend smoothly, while outside any overlap a tile's weight is exactly 1 (its pixels are copied
unchanged). Borders of the image are not ramped: nothing else covers them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Tile:
    top: int
    left: int
    height: int
    width: int

    @property
    def slices(self) -> tuple[slice, slice]:
        return slice(self.top, self.top + self.height), slice(self.left, self.left + self.width)


def tile_starts(length: int, tile: int, overlap: int) -> list[int]:
    """Start offsets covering ``[0, length)`` with tiles of ``tile`` overlapping by at least ``overlap``."""
    if not 0 <= overlap < tile:
        raise ValueError(f"overlap={overlap} must be in [0, tile={tile})")
    if length <= tile:
        return [0]
    stride = tile - overlap
    count = -(-(length - tile) // stride) + 1  # ceil division: enough tiles to reach the end
    # Spread the tiles evenly so every overlap is >= the requested one; the last tile ends at `length`.
    return [round(i * (length - tile) / (count - 1)) for i in range(count)]


def layout(height: int, width: int, tile: int, overlap: int, unit: int = 1) -> list[Tile]:
    """All tiles of an image, row-major, with every offset and size a multiple of ``unit``.

    ``unit`` is 16 for FLUX (8x VAE downsampling x 2x2 latent packing): tiles on that grid cut the
    latent exactly, so a tile's noise is the matching crop of the whole image's noise.
    """
    for name, value in (("height", height), ("width", width), ("tile", tile), ("overlap", overlap)):
        if value % unit:
            raise ValueError(f"{name}={value} must be a multiple of {unit}")
    h, w, t, o = height // unit, width // unit, tile // unit, overlap // unit
    rows, cols = tile_starts(h, t, o), tile_starts(w, t, o)
    return [Tile(r * unit, c * unit, min(t, h) * unit, min(t, w) * unit) for r in rows for c in cols]


def _ramp(size: int, before: int, after: int) -> np.ndarray:
    """1-D weight: rises over ``before`` px, 1 in the middle, falls over ``after`` px (all > 0)."""
    w = np.ones(size, dtype=np.float32)
    if before:
        w[:before] = (np.arange(before, dtype=np.float32) + 1) / (before + 1)
    if after:
        w[size - after :] = np.minimum(
            w[size - after :], (np.arange(after, 0, -1, dtype=np.float32)) / (after + 1)
        )
    return w


def blend_weights(tile: Tile, tiles: list[Tile]) -> np.ndarray:
    """(h, w) weights for ``tile``: ramps only where a neighbour actually overlaps it."""
    top_ov = max(
        (t.top + t.height - tile.top for t in tiles if t.top < tile.top and _cols_meet(t, tile)), default=0
    )
    bottom_ov = max(
        (tile.top + tile.height - t.top for t in tiles if t.top > tile.top and _cols_meet(t, tile)), default=0
    )
    left_ov = max(
        (t.left + t.width - tile.left for t in tiles if t.left < tile.left and _rows_meet(t, tile)), default=0
    )
    right_ov = max(
        (tile.left + tile.width - t.left for t in tiles if t.left > tile.left and _rows_meet(t, tile)),
        default=0,
    )
    wy = _ramp(tile.height, max(top_ov, 0), max(bottom_ov, 0))
    wx = _ramp(tile.width, max(left_ov, 0), max(right_ov, 0))
    return wy[:, None] * wx[None, :]


def _cols_meet(a: Tile, b: Tile) -> bool:
    return a.left < b.left + b.width and b.left < a.left + a.width


def _rows_meet(a: Tile, b: Tile) -> bool:
    return a.top < b.top + b.height and b.top < a.top + a.height


def exclusive_mask(tile: Tile, tiles: list[Tile], height: int, width: int) -> np.ndarray:
    """Boolean (H, W) mask of the pixels covered by ``tile`` and by no other tile."""
    cover = np.zeros((height, width), dtype=np.int32)
    for t in tiles:
        cover[t.slices] += 1
    mask = np.zeros((height, width), dtype=bool)
    mask[tile.slices] = cover[tile.slices] == 1
    return mask


def seam_score(image: np.ndarray, tiles: list[Tile], band: int = 4) -> float:
    """How much larger the gradient is across tile borders than beside them: 1 means no seam.

    For every border line of the layout inside the image (each tile's first and one-past-last row and
    column), the mean absolute step between the two pixels on either side of the line is compared with
    the same step across the lines up to ``band`` px away on both sides, over the same span. The
    neighbouring lines see the same content, so content alone gives a score near 1 and a seam (tiles
    that disagree where they meet) raises it.
    """
    img = image.astype(np.float64)
    img = img.mean(axis=2) if img.ndim == 3 else img
    height, width = img.shape
    steps_x = np.abs(np.diff(img, axis=1)).mean(axis=0)  # [x - 1]: the step from column x - 1 to x
    steps_y = np.abs(np.diff(img, axis=0)).mean(axis=1)
    at, beside = [], []
    for steps, lines in (
        (steps_x, {e for t in tiles for e in (t.left, t.left + t.width) if 0 < e < width}),
        (steps_y, {e for t in tiles for e in (t.top, t.top + t.height) if 0 < e < height}),
    ):
        for line in sorted(lines):
            near = [line - 1 + d for d in range(-band, band + 1) if d and 0 <= line - 1 + d < len(steps)]
            at.append(steps[line - 1])
            beside.append(steps[near].mean())
    if not at:
        return 1.0
    return float(np.mean(at) / np.mean(beside))
