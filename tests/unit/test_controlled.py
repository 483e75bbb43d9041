"""ControlledFlux on the tiny FLUX: identity at initialisation, residuals where eq. 4 puts them, gradients
reach exactly the adapter, and gradient checkpointing changes nothing but memory."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from diffusers import FluxPipeline, FluxTransformer2DModel
from helpers import ADAPTER_VARIANTS, randomise

from fluxir.models.adapter import FluxIRAdapter
from fluxir.models.controlled import ControlledFlux
from fluxir.models.tiny import build_tiny_pipeline


@pytest.fixture
def base() -> FluxTransformer2DModel:
    return build_tiny_pipeline(seed=0).transformer


def make_inputs(seed: int = 0, batch: int = 2, h: int = 4, w: int = 6, text_len: int = 8) -> dict:
    """FluxTransformer2DModel.forward inputs for packed latents of h x w tokens, plus the packed LQ latent."""
    g = torch.Generator().manual_seed(seed)
    return dict(
        hidden_states=torch.randn(batch, h * w, 64, generator=g),
        encoder_hidden_states=torch.randn(batch, text_len, 32, generator=g),
        pooled_projections=torch.randn(batch, 32, generator=g),
        timestep=torch.rand(batch, generator=g),
        img_ids=FluxPipeline._prepare_latent_image_ids(batch, h, w, "cpu", torch.float32),
        txt_ids=torch.zeros(text_len, 3),
        guidance=torch.full((batch,), 3.5),
        control_latents=torch.randn(batch, h * w, 64, generator=g),
    )


def base_inputs(inputs: dict) -> dict:
    return {k: v for k, v in inputs.items() if k != "control_latents"}


@pytest.mark.parametrize("variant", ADAPTER_VARIANTS)
def test_output_equals_base_exactly_at_initialisation(base, variant):
    inputs = make_inputs()
    with torch.no_grad():
        expected = base(**base_inputs(inputs)).sample
        model = ControlledFlux(base, FluxIRAdapter.from_flux(base, **ADAPTER_VARIANTS[variant]))
        out = model(**inputs).sample
    assert torch.equal(out, expected)


def test_output_equals_base_exactly_with_bf16_base_and_fp32_adapter(base):
    base = base.to(torch.bfloat16)
    inputs = make_inputs()
    with torch.no_grad():
        expected = base(**{k: v.to(torch.bfloat16) for k, v in base_inputs(inputs).items()}).sample
        model = ControlledFlux(base, FluxIRAdapter.from_flux(base, dtype=torch.float32))
        out = model(**{k: v.to(torch.bfloat16) for k, v in inputs.items()}).sample
    assert out.dtype == torch.bfloat16 and torch.equal(out, expected)


def test_image_residuals_match_diffusers_controlnet_path(base):
    # Independent reference for the image stream: diffusers adds controlnet samples after each block.
    adapter = randomise(FluxIRAdapter.from_flux(base, text_control=False), seed=1)
    model = ControlledFlux(base, adapter)
    inputs = make_inputs()
    with torch.no_grad():
        out = model(**inputs).sample
        rope = base.pos_embed(torch.cat((inputs["txt_ids"], inputs["img_ids"])))
        f_z, f_p = adapter(
            inputs["hidden_states"],
            inputs["control_latents"],
            inputs["encoder_hidden_states"],
            inputs["pooled_projections"],
            inputs["timestep"],
            rope,
            inputs["guidance"],
        )
        z_res = [adapter.residuals(i, f_z, f_p)[0] for i in range(2)]
        expected = base(
            **base_inputs(inputs),
            controlnet_block_samples=z_res[:1],
            controlnet_single_block_samples=z_res[1:],
        ).sample
        plain = base(**base_inputs(inputs)).sample
    assert not torch.allclose(out, plain, atol=1e-3)  # the control really acts
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-6)


@pytest.mark.parametrize("variant", ["se32", "single_mlp"])
def test_image_and_text_residuals_match_hooked_base(base, variant):
    # Independent reference for both streams: forward hooks add (p_c^i, z_c^i) to block i's outputs.
    adapter = randomise(FluxIRAdapter.from_flux(base, **ADAPTER_VARIANTS[variant]), seed=1)
    model = ControlledFlux(base, adapter)
    inputs = make_inputs()
    with torch.no_grad():
        out = model(**inputs).sample
        rope = base.pos_embed(torch.cat((inputs["txt_ids"], inputs["img_ids"])))
        f_z, f_p = adapter(
            inputs["hidden_states"],
            inputs["control_latents"],
            inputs["encoder_hidden_states"],
            inputs["pooled_projections"],
            inputs["timestep"],
            rope,
            inputs["guidance"],
        )
        blocks = [*base.transformer_blocks, *base.single_transformer_blocks]

        def inject(i):
            def hook(module, args, output):
                txt, img = output
                z_res, p_res = adapter.residuals(i, f_z, f_p)
                return txt + p_res, img + z_res

            return hook

        handles = [block.register_forward_hook(inject(i)) for i, block in enumerate(blocks)]
        try:
            expected = base(**base_inputs(inputs)).sample
        finally:
            for handle in handles:
                handle.remove()
        # Without the text residual of block 0 the output must differ (the text branch reaches the output).
        with torch.no_grad():
            adapter.se_p[0].excite.weight.zero_()
            adapter.se_p[0].excite.bias.zero_()
        without_text = model(**inputs).sample
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-6)
    assert not torch.allclose(out, without_text, atol=1e-4)


def excitation_names(adapter: FluxIRAdapter) -> set[str]:
    return {name for name, p in adapter.named_parameters() if ".excite." in name and p.requires_grad}


@pytest.mark.parametrize("variant", ["se32", "se_full", "single_mlp", "no_text_control", "no_embeddings"])
def test_optimizer_steps_move_every_trainable_adapter_parameter_and_no_base_parameter(base, variant):
    adapter = FluxIRAdapter.from_flux(base, **ADAPTER_VARIANTS[variant])
    model = ControlledFlux(base, adapter)
    assert not any(p.requires_grad for p in base.parameters())
    trainable = {name for name, p in adapter.named_parameters() if p.requires_grad}
    assert {id(p) for p in model.trainable_parameters()} == {id(adapter.get_parameter(n)) for n in trainable}
    frozen = set(adapter.structurally_unused_parameters())  # documented in fluxir.models.adapter
    assert trainable == {name for name, _ in adapter.named_parameters()} - frozen

    start = {name: p.detach().clone() for name, p in adapter.named_parameters()}
    base_start = {name: p.detach().clone() for name, p in base.named_parameters()}
    optimizer = torch.optim.Adam(model.trainable_parameters(), lr=1e-3)

    def step(seed: int) -> set[str]:
        inputs = make_inputs(seed)
        target = torch.randn(
            inputs["hidden_states"].shape, generator=torch.Generator().manual_seed(seed + 100)
        )
        optimizer.zero_grad()
        F.mse_loss(model(**inputs).sample, target).backward()
        assert all(p.grad is None for p in base.parameters())
        optimizer.step()
        return {name for name, p in adapter.named_parameters() if not torch.equal(p, start[name])}

    # Step 1: W_e = B_e = 0 blocks every gradient upstream of them (squeeze layers, control block,
    # embedders, M_i, theta), so only the excitation layers move; ControlNet's zero convolutions do the same.
    assert step(0) == excitation_names(adapter)
    # Step 2: with W_e != 0 the gradient reaches every trainable parameter; frozen ones never move.
    assert step(1) == trainable
    for name, p in base.named_parameters():
        assert torch.equal(p, base_start[name]), name


def test_gradient_checkpointing_gives_same_output_and_gradients(base):
    adapter = randomise(FluxIRAdapter.from_flux(base), seed=1)
    model = ControlledFlux(base, adapter)
    inputs = make_inputs()

    def run() -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        model.zero_grad(set_to_none=True)
        out = model(**inputs).sample
        out.square().mean().backward()
        return out.detach(), {
            name: p.grad.clone() for name, p in adapter.named_parameters() if p.requires_grad
        }

    out_plain, grads_plain = run()
    calls = []
    blocks = {"double": base.transformer_blocks[0], "single": base.single_transformer_blocks[0]}
    blocks["control"] = adapter.control_block
    handles = [
        block.register_forward_pre_hook(lambda *_, k=k: calls.append(k)) for k, block in blocks.items()
    ]
    model.enable_gradient_checkpointing()
    out_ckpt, grads_ckpt = run()
    for handle in handles:
        handle.remove()
    model.disable_gradient_checkpointing()

    # Checkpointed blocks run again in backward, when their gradient is needed. The first base block's is
    # not: nothing before it requires grad (its control residual is added after it).
    assert sorted(calls) == ["control", "control", "double", "single", "single"]
    torch.testing.assert_close(out_ckpt, out_plain, rtol=0, atol=0)
    assert grads_ckpt.keys() == grads_plain.keys()
    for name, grad in grads_plain.items():
        assert grad.abs().sum() > 0, name
        torch.testing.assert_close(grads_ckpt[name], grad, rtol=1e-5, atol=1e-7, msg=name)


def test_bad_control_inputs_fail_with_clear_errors(base):
    model = ControlledFlux(base, FluxIRAdapter.from_flux(base, max_sequence_length=4))
    inputs = make_inputs(text_len=4)
    with pytest.raises(
        ValueError, match=r"control_latents \(2, 23, 64\) must have the shape of hidden_states"
    ):
        model(**{**inputs, "control_latents": inputs["control_latents"][:, 1:]})
    with pytest.raises(ValueError, match="text length 8 exceeds the adapter's max_sequence_length 4"):
        model(**make_inputs(text_len=8))


def test_return_dict_false_gives_a_tuple(base):
    model = ControlledFlux(base, FluxIRAdapter.from_flux(base))
    inputs = make_inputs()
    with torch.no_grad():
        (out,) = model(**inputs, return_dict=False)
    assert out.shape == inputs["hidden_states"].shape
