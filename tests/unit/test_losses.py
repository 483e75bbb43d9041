"""FluxIR's loss (eq. 7-10): hand-computed values, the no-pixel-loss path, gradients, VAE scaling."""

from __future__ import annotations

import pytest
import torch

from fluxir.train.losses import LossTerms, draw_crop, fluxir_loss, vae_decoder, velocity_target


def _tiny_batch():
    # Two samples, one channel, 1x2 latents; t differs per sample to exercise broadcasting.
    z0 = torch.tensor([[[[1.0, 2.0]]], [[[0.0, 0.0]]]])
    v_gt = torch.tensor([[[[3.0, -1.0]]], [[[1.0, 1.0]]]])
    v_p = torch.tensor([[[[2.0, 1.0]]], [[[1.0, -1.0]]]])
    t = torch.tensor([0.5, 1.0])
    return v_p, v_gt, z0, t


def affine_decode(z: torch.Tensor) -> torch.Tensor:
    return 2 * z + 1


def test_loss_equals_hand_computed_value():
    v_p, v_gt, z0, t = _tiny_batch()
    terms = fluxir_loss(v_p, v_gt, z0, t, decode=affine_decode)
    # eq. 8, mean of squares: errors (2-3, 1+1, 1-1, -1-1) -> (1 + 4 + 0 + 4) / 4 = 2.25
    assert terms.mse.item() == pytest.approx(2.25)
    # eq. 9, sample 1 (t=0.5): z0 + t v_p = (2, 2.5) -> decoded (5, 6); z0 + t v_gt = (2.5, 1.5) -> (6, 4)
    #        sample 2 (t=1):   z0 + t v_p = (1, -1) -> (3, -1);   z0 + t v_gt = (1, 1) -> (3, 3)
    # mean absolute difference: (1 + 2 + 0 + 4) / 4 = 1.75
    assert terms.pixel.item() == pytest.approx(1.75)
    assert terms.total.item() == pytest.approx(2.25 + 1.75)  # eq. 10, alpha = 1
    half = fluxir_loss(v_p, v_gt, z0, t, decode=affine_decode, alpha=0.5)
    assert half.total.item() == pytest.approx(2.25 + 0.5 * 1.75)
    assert all(x.dtype == torch.float32 and x.ndim == 0 for x in (terms.total, terms.mse, terms.pixel))


def test_pixel_term_compares_against_the_noisy_latent_as_printed():
    # z0 + t v_gt = z0 + t (z1 - z0) = z_t: with v_p = v_gt both decodings equal V_d(z_t), so L_P = 0.
    z0, z1 = torch.randn(2, 16, 4, 4), torch.randn(2, 16, 4, 4)
    t = torch.tensor([0.3, 0.9])
    v_gt = velocity_target(z0, z1)
    torch.testing.assert_close(v_gt, z1 - z0)
    seen = []

    def spy(z):
        seen.append(z.clone())
        return z

    terms = fluxir_loss(v_gt.clone(), v_gt, z0, t, decode=spy)
    assert terms.pixel.item() == 0.0 and terms.mse.item() == 0.0
    z_t = (1 - t.view(-1, 1, 1, 1)) * z0 + t.view(-1, 1, 1, 1) * z1
    torch.testing.assert_close(seen[1], z_t)


@pytest.mark.parametrize(("alpha", "pixel_loss"), [(0.0, True), (1.0, False)])
def test_without_pixel_loss_it_is_the_mse_and_never_decodes(alpha, pixel_loss):
    v_p, v_gt, z0, t = _tiny_batch()

    def must_not_decode(z):
        raise AssertionError("decoder called")

    terms = fluxir_loss(v_p, v_gt, z0, t, decode=must_not_decode, alpha=alpha, pixel_loss=pixel_loss)
    assert terms.total.item() == pytest.approx(2.25) and terms.mse.item() == pytest.approx(2.25)
    assert terms.pixel.item() == 0.0
    assert fluxir_loss(v_p, v_gt, z0, t, decode=None, pixel_loss=False).total.item() == pytest.approx(2.25)


def test_gradients_reach_the_prediction_only():
    v_p, v_gt, z0, t = (x.clone().requires_grad_(True) for x in _tiny_batch())
    fluxir_loss(v_p, v_gt, z0, t, decode=affine_decode).total.backward()
    assert v_gt.grad is None and z0.grad is None and t.grad is None
    # d/dv_p of mean((v_p - v_gt)^2) = 2 (v_p - v_gt) / 4; of mean|2 t (v_p - v_gt)| = 2 t sign(.) / 4
    diff = (v_p - v_gt).detach()
    t_b = t.detach().view(-1, 1, 1, 1)
    expected = 2 * diff / 4 + 2 * t_b * torch.sign(diff) / 4
    torch.testing.assert_close(v_p.grad, expected)


def test_missing_decoder_and_bad_shapes_are_errors():
    v_p, v_gt, z0, t = _tiny_batch()
    with pytest.raises(ValueError, match="needs a decode callable"):
        fluxir_loss(v_p, v_gt, z0, t)
    with pytest.raises(ValueError, match=r"t \(1,\) must have shape \(batch,\) = \(2,\)"):
        fluxir_loss(v_p, v_gt, z0, t[:1], decode=affine_decode)
    with pytest.raises(ValueError, match="must have the same shape"):
        fluxir_loss(v_p[:1], v_gt, z0, t, decode=affine_decode)
    with pytest.raises(ValueError, match="alpha=-1.0: must be >= 0"):
        fluxir_loss(v_p, v_gt, z0, t, decode=affine_decode, alpha=-1.0)


@pytest.fixture(scope="module")
def tiny_vae():
    from fluxir.models.tiny import build_tiny_pipeline

    return build_tiny_pipeline(0).vae


def test_vae_decoder_undoes_the_latent_scaling(tiny_vae, monkeypatch):
    scale, shift = tiny_vae.config.scaling_factor, tiny_vae.config.shift_factor
    assert (scale, shift) == (0.3611, 0.1159)
    inputs = []
    real_decode = tiny_vae.decode

    def spy(z, *args, **kwargs):
        inputs.append(z.detach().clone())
        return real_decode(z, *args, **kwargs)

    monkeypatch.setattr(tiny_vae, "decode", spy)
    gen = torch.Generator().manual_seed(0)
    z0, z1 = torch.randn(1, 16, 2, 2, generator=gen), torch.randn(1, 16, 2, 2, generator=gen)
    v_gt = velocity_target(z0, z1)
    v_p = torch.randn(1, 16, 2, 2, generator=gen, requires_grad=True)
    t = torch.tensor([0.25])
    terms = fluxir_loss(v_p, v_gt, z0, t, decode=vae_decoder(tiny_vae))

    assert len(inputs) == 2
    torch.testing.assert_close(inputs[0], (z0 + 0.25 * v_p.detach()) / scale + shift)
    torch.testing.assert_close(inputs[1], (z0 + 0.25 * v_gt) / scale + shift)
    assert terms.pixel.item() > 0 and isinstance(terms, LossTerms)
    terms.total.backward()
    assert v_p.grad is not None and v_p.grad.abs().sum() > 0  # through the decoder into v_p


def _curved_decode(z: torch.Tensor) -> torch.Tensor:
    # Not linear, like a VAE decoder: equal and opposite latent errors decode to different images.
    return torch.tanh(z) + 0.5 * z**2


def test_x0_pixel_target_decodes_the_clean_estimate_against_z0():
    v_p, v_gt, z0, t = _tiny_batch()
    seen = []

    def spy(z):
        seen.append(z.clone())
        return affine_decode(z)

    terms = fluxir_loss(v_p, v_gt, z0, t, decode=spy, pixel_target="x0")
    t_b = t.view(-1, 1, 1, 1)
    z_t = z0 + t_b * v_gt
    torch.testing.assert_close(seen[0], z_t - t_b * v_p)  # x0_hat
    torch.testing.assert_close(seen[1], z0)
    # Sample 1 (t=0.5): z_t = (2.5, 1.5), x0_hat = (1.5, 1.0) -> decoded (4, 3) vs z0 (1, 2) -> (3, 5)
    # sample 2 (t=1):   z_t = (1, 1),     x0_hat = (0, 2)     -> (1, 5)   vs (0, 0) -> (1, 1)
    # mean absolute difference (1 + 2 + 0 + 4) / 4 = 1.75: through an affine decoder, as the printed form
    assert terms.pixel.item() == pytest.approx(1.75)
    printed = fluxir_loss(v_p, v_gt, z0, t, decode=affine_decode, pixel_target="printed")
    assert printed.pixel.item() == pytest.approx(terms.pixel.item())


def test_the_two_pixel_targets_differ_and_agree_at_the_true_velocity():
    torch.manual_seed(0)
    z0, z1 = torch.randn(2, 4, 3, 3), torch.randn(2, 4, 3, 3)
    t = torch.tensor([0.3, 0.8])
    v_gt = velocity_target(z0, z1)
    v_p = v_gt + 0.5 * torch.randn_like(v_gt)
    printed = fluxir_loss(v_p, v_gt, z0, t, decode=_curved_decode, pixel_target="printed")
    x0 = fluxir_loss(v_p, v_gt, z0, t, decode=_curved_decode, pixel_target="x0")
    assert printed.mse.item() == x0.mse.item()  # only L_P depends on the form
    assert abs(printed.pixel.item() - x0.pixel.item()) > 1e-3
    for form in ("printed", "x0"):  # at v_p = v_gt both decode the same latent on each side: L_P = 0
        exact = fluxir_loss(v_gt.clone(), v_gt, z0, t, decode=_curved_decode, pixel_target=form)
        assert exact.pixel.item() == pytest.approx(0.0, abs=1e-6)
    with pytest.raises(ValueError, match="pixel_target='z1'"):
        fluxir_loss(v_p, v_gt, z0, t, decode=_curved_decode, pixel_target="z1")


@pytest.mark.parametrize("pixel_target", ["printed", "x0"])
def test_the_inference_mode_target_leaves_loss_and_gradient_unchanged(pixel_target):
    # Reference: both decodes with autograd on, the target detached afterwards (the loss before the change).
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(4, 3, 3, padding=1)
    z0, v_gt, v_p0 = torch.randn(2, 4, 6, 8), torch.randn(2, 4, 6, 8), torch.randn(2, 4, 6, 8)
    t = torch.tensor([0.25, 0.75])
    t_b = t.view(-1, 1, 1, 1)
    v_p = v_p0.clone().requires_grad_(True)
    if pixel_target == "printed":
        z_pred, z_target = z0 + t_b * v_p, z0 + t_b * v_gt
    else:
        z_pred, z_target = z0 + t_b * v_gt - t_b * v_p, z0
    want = (v_p - v_gt).square().mean() + (conv(z_pred) - conv(z_target).detach()).abs().mean()
    want.backward()
    want_grad, v_p.grad = v_p.grad.clone(), None
    got = fluxir_loss(v_p, v_gt, z0, t, decode=conv, pixel_target=pixel_target)
    got.total.backward()
    assert got.total.item() == pytest.approx(want.item(), rel=1e-6)
    torch.testing.assert_close(v_p.grad, want_grad)
    assert conv.weight.grad is not None  # the prediction's decode is still backpropagated


def test_pixel_crop_decodes_one_window_of_both_latents():
    shapes, calls = [], []

    def spy(z):
        shapes.append(tuple(z.shape))
        calls.append(z.clone())
        return z

    z0, v_gt = torch.randn(2, 16, 12, 16), torch.randn(2, 16, 12, 16)
    t = torch.tensor([0.5, 0.5])
    crop = draw_crop(12, 16, 8, torch.Generator().manual_seed(3))
    assert crop is not None and (crop.height, crop.width) == (8, 8)
    assert 0 <= crop.top <= 4 and 0 <= crop.left <= 8
    assert crop == draw_crop(12, 16, 8, torch.Generator().manual_seed(3))  # a function of the generator
    fluxir_loss(v_gt + 1, v_gt, z0, t, decode=spy, crop=crop)
    assert shapes == [(2, 16, 8, 8), (2, 16, 8, 8)]
    z_t = z0 + 0.5 * v_gt
    torch.testing.assert_close(calls[1], z_t[..., crop.top : crop.top + 8, crop.left : crop.left + 8])
    assert draw_crop(12, 16, 0) is None and draw_crop(12, 16, 16) is None  # off, or the whole latent
    tall = draw_crop(12, 16, 14, torch.Generator().manual_seed(0))
    assert tall is not None and (tall.top, tall.height, tall.width) == (0, 12, 14)  # clipped to the latent
