"""FluxIRPipeline: restores a real photo x4 with the tiny model; tiled path matches per-tile restores."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import randomise
from PIL import Image
from skimage import data as skdata

from fluxir.models.adapter import FluxIRAdapter
from fluxir.models.tiny import build_tiny_pipeline
from fluxir.restoration.pipeline import FluxIRPipeline, RestoreInputError, RestoreOptions, upscale_lq
from fluxir.restoration.tiling import exclusive_mask, layout


def lq_photo(side: int) -> np.ndarray:
    """A real photo (scikit-image astronaut) downscaled to side x side: the LQ input."""
    return np.asarray(Image.fromarray(skdata.astronaut()).resize((side, side), Image.BICUBIC))


@pytest.fixture(scope="module")
def pipeline() -> FluxIRPipeline:
    base = build_tiny_pipeline(seed=0)
    return FluxIRPipeline(base, randomise(FluxIRAdapter.from_flux(base.transformer, rank=8), scale=0.05))


def test_restores_96px_photo_to_384px(pipeline):
    lq = lq_photo(96)
    options = RestoreOptions(scale=4, steps=4, tile=1024, overlap=128, seed=0)
    out = pipeline(lq, options)
    assert out.shape == (384, 384, 3) and out.dtype == np.uint8
    assert out.std() > 0
    np.testing.assert_array_equal(pipeline(lq, options), out)  # same seed, same pixels
    assert not np.array_equal(pipeline(lq, RestoreOptions(steps=4, seed=1)), out)  # noise matters
    other = pipeline(lq_photo(96)[::-1].copy(), options)
    assert not np.array_equal(other, out)  # the LQ input matters (adapter is not zero here)


def test_tiled_output_equals_each_tile_restored_alone_away_from_seams(pipeline):
    lq = lq_photo(96)
    options = RestoreOptions(
        scale=4, steps=2, tile=128, overlap=32, seed=3, tile_mode="per_tile", color_fix="none"
    )
    tiled = pipeline(lq, options)
    assert tiled.shape == (384, 384, 3)
    control = upscale_lq(lq, 4)
    noise = pipeline.noise_for(384, 384, options.seed)
    tiles = layout(384, 384, 128, 32, unit=16)
    assert len(tiles) == 16
    for tile in (tiles[0], tiles[5], tiles[-1]):  # a corner, an interior and the last tile
        rows, cols = tile.slices
        alone = pipeline.restore_array(
            np.ascontiguousarray(control[rows, cols]),
            noise[
                :,
                :,
                tile.top // 8 : (tile.top + tile.height) // 8,
                tile.left // 8 : (tile.left + tile.width) // 8,
            ],
            options.steps,
            options.guidance,
        )
        only_here = exclusive_mask(tile, tiles, 384, 384)[rows, cols]
        assert only_here.sum() > 0
        np.testing.assert_array_equal(tiled[rows, cols][only_here], alone[only_here])


@pytest.mark.parametrize("tile_mode", ["per_tile", "fused"])
def test_tiled_model_calls_do_not_grow_with_the_input(pipeline, tile_mode):
    options = RestoreOptions(scale=4, steps=1, tile=128, overlap=32, tile_mode=tile_mode)
    shapes: list[tuple[int, ...]] = []  # latent shapes the transformer sees, recorded by a forward hook
    hook = pipeline.model.register_forward_pre_hook(
        lambda _, args, kwargs: shapes.append(tuple(kwargs["hidden_states"].shape)), with_kwargs=True
    )
    seen = {}
    try:
        for side in (48, 96):
            shapes.clear()
            pipeline(lq_photo(side), options)
            seen[side] = max(shape[0] * shape[1] for shape in shapes)  # image tokens per transformer call
    finally:
        hook.remove()
    assert seen[48] == seen[96] == (128 // 16) ** 2


def test_odd_sizes_are_padded_and_cropped_back(pipeline):
    lq = lq_photo(96)[:37, :50]
    out = pipeline(lq, RestoreOptions(scale=4, steps=1, tile=128, overlap=32))
    assert out.shape == (148, 200, 3)


def test_bad_arrays_are_refused_with_a_reason(pipeline):
    with pytest.raises(RestoreInputError, match="image is 1x1 px; fluxir restore needs at least 4x4"):
        pipeline(np.zeros((1, 1, 3), np.uint8))
    with pytest.raises(RestoreInputError, match=r"expected an \(H, W, 3\) uint8 RGB image"):
        pipeline(np.zeros((8, 8), np.uint8))


@pytest.mark.slow
def test_tiled_peak_memory_stays_bounded_as_input_grows():
    """Peak RSS of a restore, each in a fresh process (bench/restore_memory.py), for LQ 64 and 192 px.

    The output grows 9x (256 -> 768 px). Tiled, only the image-sized arrays grow (768^2 px x ~24 bytes
    = 14 MiB for the control image, accumulators and output); the untiled path must grow far more,
    which shows the measurement would catch a model-sized growth.
    """
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
    from restore_memory import run_isolated

    tiled_small, tiled_large = run_isolated(64, 128, 1), run_isolated(192, 128, 1)
    untiled_large = run_isolated(192, 16 * 1024, 1)
    tiled_growth = tiled_large["restore_growth_mib"] - tiled_small["restore_growth_mib"]
    assert tiled_growth < 48, (tiled_small, tiled_large)
    assert untiled_large["restore_growth_mib"] > 3 * tiled_large["restore_growth_mib"], (
        untiled_large,
        tiled_large,
    )


def test_color_fix_none_is_the_sampled_restoration_and_the_fixes_use_the_bicubic_upscale(pipeline):
    from fluxir.restoration.color import apply_color_fix
    from fluxir.restoration.pipeline import pad_to_multiple

    lq = lq_photo(96)[:40, :45]
    options = RestoreOptions(steps=2, seed=5, color_fix="none")
    out = pipeline(lq, options)
    control = upscale_lq(lq, 4)
    padded = pad_to_multiple(control, 16)
    assert padded.shape == (160, 192, 3)
    sampled = pipeline.restore_array(padded, pipeline.noise_for(160, 192, 5), 2, options.guidance)
    np.testing.assert_array_equal(out, sampled[:160, :180])  # none: the restoration exactly as sampled
    for fix in ("wavelet", "adain"):
        fixed = pipeline(lq, RestoreOptions(steps=2, seed=5, color_fix=fix))
        np.testing.assert_array_equal(fixed, apply_color_fix(out, control, fix))
