"""FluxIRAdapter: construction from the tiny FLUX, eq. 3 layers, counts, variants, save/load, shape checks."""

from __future__ import annotations

import json

import pytest
import torch
from diffusers import FluxTransformer2DModel
from helpers import ADAPTER_VARIANTS, randomise
from safetensors.torch import load_file

from fluxir.models.adapter import FluxIRAdapter, SELayer, count_parameters
from fluxir.models.controlled import ControlledFlux
from fluxir.models.tiny import TINY_TRANSFORMER, build_tiny_pipeline

HIDDEN = TINY_TRANSFORMER["num_attention_heads"] * TINY_TRANSFORMER["attention_head_dim"]  # 32
N_BLOCKS = TINY_TRANSFORMER["num_layers"] + TINY_TRANSFORMER["num_single_layers"]  # 2


@pytest.fixture
def base() -> FluxTransformer2DModel:
    return build_tiny_pipeline(seed=0).transformer


def n(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def test_se_layer_is_eq3_with_zero_excitation():
    layer = SELayer(dim=6, rank=2)
    x = torch.randn(3, 5, 6)
    assert torch.equal(layer(x), torch.zeros(3, 5, 6))  # W_e = 0, B_e = 0 at initialisation
    with torch.no_grad():
        layer.excite.weight.normal_()
        layer.excite.bias.normal_()
    w_s, b_s, w_e, b_e = layer.squeeze.weight, layer.squeeze.bias, layer.excite.weight, layer.excite.bias
    assert w_s.shape == (2, 6) and w_e.shape == (6, 2)  # W_s: r x c, W_e: c x r
    expected = (x @ w_s.T + b_s) @ w_e.T + b_e  # W_e (W_s x + B_s) + B_e, no non-linearity
    torch.testing.assert_close(layer(x), expected)

    full = SELayer(dim=6, rank=None)
    assert full.squeeze is None and full.excite.weight.shape == (6, 6)


def test_from_flux_copies_block_and_embedders_and_zeroes_injections(base):
    adapter = FluxIRAdapter.from_flux(base)
    pairs = [
        (adapter.control_block, base.transformer_blocks[0]),
        (adapter.x_embedder, base.x_embedder),
        (adapter.context_embedder, base.context_embedder),
        (adapter.time_text_embed, base.time_text_embed),
    ]
    for copy, original in pairs:
        for (name, a), (_, b) in zip(copy.state_dict().items(), original.state_dict().items(), strict=True):
            assert torch.equal(a, b), name
            assert a.data_ptr() != b.data_ptr(), f"{name} shares storage with the base"
    assert not adapter.lq_mlp.weight.any() and not adapter.lq_mlp.bias.any()  # M_i = 0 (eq. 1)
    assert (
        adapter.theta_p.shape == (512, TINY_TRANSFORMER["joint_attention_dim"]) and not adapter.theta_p.any()
    )
    assert adapter.theta_y.shape == (TINY_TRANSFORMER["pooled_projection_dim"],) and not adapter.theta_y.any()
    assert len(adapter.se_z) == len(adapter.se_p) == N_BLOCKS
    for layer in [*adapter.se_z, *adapter.se_p]:
        assert not layer.excite.weight.any() and not layer.excite.bias.any()
        assert layer.squeeze.weight.shape == (32, HIDDEN) and layer.squeeze.weight.abs().sum() > 0


def test_counts_on_tiny_match_hand_computed(base):
    embedders = n(base.x_embedder) + n(base.context_embedder) + n(base.time_text_embed)
    m_i = 64 * 64 + 64
    theta = 512 * 32 + 32
    without_se = n(base.transformer_blocks[0]) + embedders + m_i + theta
    se_pair = {16: 32 * 16 + 16 + 16 * 32 + 32, None: 32 * 32 + 32}  # one SE layer (eq. 3)
    for rank, se_layer in se_pair.items():
        counts = count_parameters(FluxIRAdapter.from_flux(base, rank=rank))
        assert counts == {
            "without_se": without_se,
            "se": 2 * N_BLOCKS * se_layer,
            "total": without_se + 4 * se_layer,
        }
    single = count_parameters(FluxIRAdapter.from_flux(base, control="single_mlp"))
    assert single["se"] == 2 * (32 * 32 + 32)  # one full-rank Linear per stream, shared by all blocks
    no_text = count_parameters(FluxIRAdapter.from_flux(base, rank=16, text_control=False))
    assert no_text["se"] == N_BLOCKS * se_pair[16]
    no_theta = count_parameters(FluxIRAdapter.from_flux(base, learnable_embeddings=False))
    assert no_theta["without_se"] == without_se - theta


def test_variants_are_recorded_in_config(base):
    single = FluxIRAdapter.from_flux(base, rank=16, control="single_mlp")
    assert single.config.rank is None  # single_mlp is always full rank (Table 5)
    assert len(single.se_z) == len(single.se_p) == 1
    assert single.residuals(0, torch.ones(1, 3, HIDDEN), torch.ones(1, 2, HIDDEN))[0].shape == (1, 3, HIDDEN)
    no_text = FluxIRAdapter.from_flux(base, text_control=False, learnable_embeddings=False)
    assert no_text.se_p is None and no_text.theta_p is None and no_text.theta_y is None
    assert no_text.residuals(1, torch.ones(1, 3, HIDDEN), torch.ones(1, 2, HIDDEN))[1] is None
    assert (no_text.config.text_control, no_text.config.learnable_embeddings) == (False, False)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(control="mlp"), "control='mlp': must be one of se, single_mlp"),
        (dict(rank=0), "rank=0: must be a positive integer"),
        (dict(rank=8, control="single_mlp"), "use rank=None"),
    ],
)
def test_invalid_settings_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        FluxIRAdapter(**kwargs)


def test_structurally_unused_parameters_are_frozen(base):
    # The last block's SE_p feeds a text stream FLUX discards; without SE_p, f_p (the block's text output)
    # is unused, and with it everything that only computes text-token outputs.
    adapter = FluxIRAdapter.from_flux(base, rank=16)
    frozen = {name for name, p in adapter.named_parameters() if not p.requires_grad}
    assert frozen == {
        "se_p.1.squeeze.weight",
        "se_p.1.squeeze.bias",
        "se_p.1.excite.weight",
        "se_p.1.excite.bias",
    }
    no_text = FluxIRAdapter.from_flux(base, text_control=False)
    frozen = {name for name, p in no_text.named_parameters() if not p.requires_grad}
    assert frozen == {
        f"control_block.{name}"
        for name in (
            "attn.add_q_proj.weight",  # text queries only produce text-token outputs
            "attn.add_q_proj.bias",
            "attn.norm_added_q.weight",
            "attn.to_add_out.weight",
            "attn.to_add_out.bias",
            "ff_context.net.0.proj.weight",
            "ff_context.net.0.proj.bias",
            "ff_context.net.2.weight",
            "ff_context.net.2.bias",
        )
    }
    single = FluxIRAdapter.from_flux(base, control="single_mlp")  # shared SE_p also serves block 0
    assert all(p.requires_grad for p in single.parameters())


@pytest.mark.parametrize("variant", ["se32", "single_mlp", "no_text_control", "no_embeddings"])
def test_save_load_round_trip_is_bitwise(base, tmp_path, variant):
    adapter = randomise(FluxIRAdapter.from_flux(base, **ADAPTER_VARIANTS[variant]))
    adapter.save_pretrained(tmp_path)

    config = json.loads((tmp_path / "config.json").read_text())
    assert config["_class_name"] == "FluxIRAdapter"
    on_disk = load_file(tmp_path / "diffusion_pytorch_model.safetensors")
    assert on_disk.keys() == adapter.state_dict().keys()

    loaded = FluxIRAdapter.from_pretrained(tmp_path)
    settings = {k: v for k, v in adapter.config.items() if not k.startswith("_")}
    assert {k: loaded.config[k] for k in settings} == settings  # same base shape and variant
    for (name, a), (_, b) in zip(adapter.state_dict().items(), loaded.state_dict().items(), strict=True):
        assert a.dtype == b.dtype and torch.equal(a, b), name
    assert [p.requires_grad for p in loaded.parameters()] == [p.requires_grad for p in adapter.parameters()]


def test_loading_into_a_base_of_another_shape_fails_clearly(base, tmp_path):
    FluxIRAdapter.from_flux(base).save_pretrained(tmp_path)
    loaded = FluxIRAdapter.from_pretrained(tmp_path)
    ControlledFlux(base, loaded)  # same shape: accepted

    deeper = FluxTransformer2DModel(**{**TINY_TRANSFORMER, "num_single_layers": 2})
    with pytest.raises(ValueError) as err:
        ControlledFlux(deeper, loaded)
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith("adapter was built for hidden size 32 x 2 blocks (1 double + 1 single")
    assert "this base has 32 x 3 blocks (1 double + 2 single" in message
    assert message.endswith("(differs in num_single_layers)")

    wider = FluxTransformer2DModel(**{**TINY_TRANSFORMER, "num_attention_heads": 4})
    with pytest.raises(ValueError, match="this base has 64 x 2 blocks .*differs in num_attention_heads"):
        loaded.check_compatible(wider)


def test_meta_base_gives_weightless_adapter_of_right_shape(base):
    with torch.device("meta"):
        meta_base = FluxTransformer2DModel(**TINY_TRANSFORMER)
    adapter = FluxIRAdapter.from_flux(meta_base)
    assert all(p.is_meta for p in adapter.parameters())
    assert count_parameters(adapter) == count_parameters(FluxIRAdapter.from_flux(base))


def test_adapter_follows_requested_dtype(base):
    adapter = FluxIRAdapter.from_flux(base.to(torch.bfloat16), dtype=torch.float32)
    assert {p.dtype for p in adapter.parameters()} == {torch.float32}
    block = base.transformer_blocks[0].state_dict()
    for name, value in adapter.control_block.state_dict().items():
        assert torch.equal(value, block[name].float()), name  # bf16 -> fp32 copy is exact
    assert {p.dtype for p in FluxIRAdapter.from_flux(base).parameters()} == {torch.bfloat16}
