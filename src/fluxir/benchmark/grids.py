"""LQ | methods | HQ comparison grids (the paper's Fig. 3-4 and 12-15 layout), one PNG per image."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageDraw

LABEL_HEIGHT = 14
GAP = 4


def nearest_upscale(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """Pixel-replicated upscale: shows the LQ input as it is, without smoothing it like a method would."""
    return np.asarray(Image.fromarray(image).resize((width, height), Image.NEAREST))


def make_grid(panels: Sequence[tuple[str, np.ndarray]]) -> np.ndarray:
    """Panels side by side, each under its label, on white; all panels are shown at the first one's size.

    The LQ panel (any smaller size) is upscaled nearest-neighbour; other sizes are an error.
    """
    if not panels:
        raise ValueError("make_grid needs at least one panel")
    height, width = max(p.shape[0] for _, p in panels), max(p.shape[1] for _, p in panels)
    canvas = Image.new("RGB", (len(panels) * (width + GAP) - GAP, height + LABEL_HEIGHT), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    for i, (label, image) in enumerate(panels):
        if image.shape[:2] != (height, width):
            if image.shape[0] > height or image.shape[1] > width:
                raise ValueError(
                    f"panel {label!r} is {image.shape[:2]}, larger than the grid's {(height, width)}"
                )
            image = nearest_upscale(image, height, width)
        x = i * (width + GAP)
        canvas.paste(Image.fromarray(image), (x, LABEL_HEIGHT))
        draw.text((x + 2, 1), label, fill=(0, 0, 0))
    return np.asarray(canvas)
