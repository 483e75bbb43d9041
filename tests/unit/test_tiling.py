"""Tile layout and blend weights: full coverage, weights summing to 1, exact copy outside overlaps."""

from __future__ import annotations

import numpy as np
import pytest

from fluxir.restoration.tiling import blend_weights, exclusive_mask, layout, tile_starts


def test_starts_cover_the_length_with_at_least_the_overlap():
    assert tile_starts(100, 128, 32) == [0]
    assert tile_starts(128, 128, 32) == [0]
    starts = tile_starts(384, 128, 32)
    assert starts[0] == 0 and starts[-1] == 384 - 128
    assert all(128 - (b - a) >= 32 for a, b in zip(starts, starts[1:], strict=False))
    with pytest.raises(ValueError, match="overlap=128 must be in"):
        tile_starts(384, 128, 128)


@pytest.mark.parametrize(
    ("height", "width", "tile", "overlap"), [(384, 384, 128, 32), (400, 272, 128, 48), (96, 512, 96, 16)]
)
def test_weights_partition_unity_and_are_one_outside_overlaps(height, width, tile, overlap):
    tiles = layout(height, width, tile, overlap, unit=16)
    total = np.zeros((height, width), dtype=np.float64)
    for t in tiles:
        assert t.top % 16 == 0 and t.left % 16 == 0 and t.height % 16 == 0 and t.width % 16 == 0
        total[t.slices] += blend_weights(t, tiles)
    np.testing.assert_allclose(total, 1.0, atol=1e-6)  # every pixel covered, weights normalised
    for t in tiles:
        only_here = exclusive_mask(t, tiles, height, width)[t.slices]
        if 2 * overlap + 32 < tile:  # rounding to the 16-px grid can widen overlaps by up to 16 px
            assert only_here.any()
        np.testing.assert_array_equal(blend_weights(t, tiles)[only_here], 1.0)


def test_layout_rejects_sizes_off_the_grid():
    with pytest.raises(ValueError, match="tile=100 must be a multiple of 16"):
        layout(384, 384, 100, 32, unit=16)
