"""Latent tile fusion: the fused trajectory, its weights and batches, the tiled VAE, and seams on a real photo."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from diffusers import FluxPipeline
from helpers import one_thread, tiny_restorer  # noqa: F401 (one_thread: a fixture)
from PIL import Image
from skimage import data as skdata

from fluxir.restoration.fused import fused_sample, latent_tiles, tiled_decode, tiled_encode, weight_maps
from fluxir.restoration.pipeline import FluxIRPipeline, RestoreOptions, upscale_lq
from fluxir.restoration.tiling import exclusive_mask, layout, seam_score


@pytest.fixture(scope="module")
def pipeline() -> FluxIRPipeline:
    return tiny_restorer()


def lq_photo(side: int) -> np.ndarray:
    return np.asarray(Image.fromarray(skdata.astronaut()).resize((side, side), Image.BICUBIC))


class Pointwise(torch.nn.Module):
    """A stand-in model whose velocity at a token depends on that token only: fusing it changes nothing."""

    def forward(self, hidden_states, control_latents, timestep, **_):
        return (torch.tanh(hidden_states) - 0.5 * control_latents + timestep[:, None, None],)


def test_fused_trajectory_of_a_pointwise_model_is_the_untiled_one(pipeline, monkeypatch):
    """Every latent position gets sum_i w_i v / sum_i w_i = v: the weights and crops are exact."""
    monkeypatch.setattr(pipeline, "model", Pointwise())
    shift = FluxIRPipeline.timesteps  # one schedule for tile and whole image (it depends on the token count)
    monkeypatch.setattr(pipeline, "timesteps", lambda _, steps: shift(pipeline, 64, steps))
    generator = torch.Generator().manual_seed(0)
    z_lq, noise = torch.randn((2, 1, 16, 48, 40), generator=generator)
    tiles = latent_tiles(layout(384, 320, 128, 32, unit=16))
    assert len(tiles) == 12
    fused = fused_sample(pipeline, z_lq, noise, tiles, steps=3, guidance=3.5, batch=5)
    untiled = pipeline.sample(z_lq, noise, steps=3, guidance=3.5)
    torch.testing.assert_close(fused, untiled, rtol=0, atol=1e-6)


def test_weights_cover_every_latent_position():
    tiles = latent_tiles(layout(384, 320, 128, 32, unit=16))
    weights, total = weight_maps(tiles, torch.device("cpu"))
    assert weights.shape == (12, 1, 16, 16) and total.shape == (1, 1, 48, 40)
    torch.testing.assert_close(total, torch.ones_like(total))


def test_tile_batches_give_the_same_restoration(pipeline):
    options = RestoreOptions(steps=2, tile=128, overlap=32, seed=1, color_fix="none")
    one = pipeline(lq_photo(64), options)
    batched = pipeline(lq_photo(64), RestoreOptions(**{**options.__dict__, "tile_batch": 4}))
    assert np.abs(one.astype(int) - batched.astype(int)).max() <= 1  # batched GEMMs may round differently


def test_tiled_vae_is_each_tiles_own_coding_where_no_other_tile_reaches(pipeline):
    """Tiled encode and decode: a tile's own latent (pixels) wherever only it covers, blends in overlaps.

    (Not the whole image's coding: the VAE's group norms and mid-block attention see the whole input, so
    no tiling reproduces it; per-tile restoration encodes each tile alone in just this way.)"""
    control = np.ascontiguousarray(upscale_lq(lq_photo(96), 4))
    tiles = layout(384, 384, 224, 64, unit=16)  # 2 x 2 tiles, 64 px overlaps
    small = latent_tiles(tiles)
    latent = tiled_encode(pipeline, control, tiles)
    pixels = tiled_decode(pipeline, latent, tiles)
    assert latent.shape == (1, 16, 48, 48) and pixels.shape == (384, 384, 3)
    for tile, tile_small in zip(tiles, small, strict=True):
        rows, cols = tile.slices
        crop = torch.from_numpy(control[rows, cols]).permute(2, 0, 1)[None].float() / 255
        own = pipeline.encode(crop)
        only = torch.from_numpy(exclusive_mask(tile_small, small, 48, 48)[tile_small.slices])
        assert only.any()
        mine = latent[..., tile_small.slices[0], tile_small.slices[1]]
        assert torch.equal(mine[..., only], own[..., only])
        decoded = pipeline.decode(mine)[0].permute(1, 2, 0).numpy()
        only_px = exclusive_mask(tile, tiles, 384, 384)[tile.slices]
        np.testing.assert_array_equal(
            pixels[rows, cols][only_px], np.round(decoded[only_px] * 255).astype(np.uint8)
        )


def test_fused_restoration_has_no_seam_on_a_real_photo(pipeline):
    """Seam score (gradient across tile borders / beside them) of the fused mode: 1 within the spread
    content alone gives, measured on the untiled restoration and the bicubic input at the same lines."""
    lq = lq_photo(96)
    tiles = layout(384, 384, 128, 32, unit=16)
    fused = pipeline(lq, RestoreOptions(steps=4, tile=128, overlap=32, seed=3, color_fix="none"))
    untiled = pipeline(lq, RestoreOptions(steps=4, tile=384, overlap=32, seed=3, color_fix="none"))
    references = [seam_score(untiled, tiles), seam_score(upscale_lq(lq, 4), tiles)]
    noise = max(abs(r - 1) for r in references)
    assert seam_score(fused, tiles) <= 1 + noise + 0.02, references


def test_seam_score_sees_a_seam():
    """A step of 16 grey levels along the tile borders of a textured image is found; the texture alone is not."""
    rng = np.random.default_rng(0)
    image = rng.integers(0, 40, (256, 256, 3)).astype(np.float64)
    tiles = layout(256, 256, 128, 0, unit=16)
    assert abs(seam_score(image, tiles) - 1) < 0.05
    image[:, 128:] += 16
    image[128:, :] += 16
    assert seam_score(image, tiles) > 1.3


def test_packing_round_trip_used_by_the_fusion():
    """Tiles are cut from the unpacked latent and packed per tile: pack then unpack is the identity."""
    z = torch.randn(3, 16, 8, 6)
    packed = FluxPipeline._pack_latents(z, 3, 16, 8, 6)
    assert torch.equal(FluxPipeline._unpack_latents(packed, 64, 48, 8), z)
