"""Benchmark methods: interpolation baselines, spandrel-loaded SR checkpoints, FluxIR, column order."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fluxir.benchmark.methods import (
    BUILDERS,
    FluxIRMethod,
    Interpolation,
    MethodError,
    SpandrelMethod,
    column_order,
)
from fluxir.config import BUILTIN_METHODS, BenchmarkConfig, ConfigError
from fluxir.restoration.pipeline import RestoreOptions, upscale_lq


def _lq(h: int = 12, w: int = 10) -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (h, w, 3), dtype=np.uint8)


def tiny_esrgan(scale: int = 4):
    """Real-ESRGAN's RRDBNet (spandrel's ESRGAN class) with 8 filters and one block, random weights."""
    from spandrel.architectures.ESRGAN import ESRGAN

    torch.manual_seed(0)
    return ESRGAN(in_nc=3, out_nc=3, num_filters=8, num_blocks=1, scale=scale).eval()


def test_bicubic_is_the_control_upscale_and_lanczos_differs():
    lq = _lq()
    bicubic, lanczos = Interpolation("bicubic", 4)(lq), Interpolation("lanczos", 4)(lq)
    assert bicubic.shape == lanczos.shape == (48, 40, 3) and bicubic.dtype == np.uint8
    assert np.array_equal(bicubic, upscale_lq(lq, 4))
    assert not np.array_equal(bicubic, lanczos)


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_an_esrgan_checkpoint_round_trips_through_spandrel(tmp_path, suffix):
    model = tiny_esrgan()
    path = tmp_path / f"RealESRGAN_tiny{suffix}"
    if suffix == ".pth":
        torch.save(model.state_dict(), path)
    else:
        from safetensors.torch import save_file

        save_file(model.state_dict(), path)
    method = SpandrelMethod.load("Real-ESRGAN", path, 4, "cpu")
    assert method.description == f"ESRGAN x4 from {path.name} (spandrel)"
    lq = _lq(9, 11)
    out = method(lq)
    with torch.no_grad():
        ref = model(torch.from_numpy(lq).permute(2, 0, 1)[None].float() / 255).clamp(0, 1)
    expected = (ref[0].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    assert out.shape == (36, 44, 3) and out.dtype == np.uint8
    assert np.abs(out.astype(int) - expected.astype(int)).max() <= 1


def test_bad_checkpoints_fail_with_the_file_named(tmp_path):
    with pytest.raises(MethodError, match=r"sr_models\[X\].path=.*nope.pth.*no such file"):
        SpandrelMethod.load("X", tmp_path / "nope.pth", 4, "cpu")
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(MethodError, match="junk.pth.*not a readable checkpoint"):
        SpandrelMethod.load("X", junk, 4, "cpu")
    unknown = tmp_path / "unknown.pth"
    torch.save({"some.weight": torch.zeros(3, 3)}, unknown)
    with pytest.raises(MethodError, match="unknown.pth.*spandrel does not recognise"):
        SpandrelMethod.load("X", unknown, 4, "cpu")
    x2 = tmp_path / "x2.pth"
    torch.save(tiny_esrgan(scale=2).state_dict(), x2)
    with pytest.raises(MethodError, match="ESRGAN model is x2, the benchmark is x4"):
        SpandrelMethod.load("X", x2, 4, "cpu")


def test_unlisted_sr_models_go_just_before_fluxir():
    assert column_order(["bicubic", "fluxir"], ["A", "B"]) == ["bicubic", "A", "B", "fluxir"]
    assert column_order(["B", "bicubic", "fluxir"], ["A", "B"]) == ["B", "bicubic", "A", "fluxir"]
    assert column_order(["bicubic"], ["A"]) == ["bicubic", "A"]


def test_fluxir_method_restores_with_the_adapter(tmp_path, tiny_model_dir):
    from fluxir.models.adapter import FluxIRAdapter
    from fluxir.models.flux import load_flux

    with pytest.raises(MethodError, match="benchmark.adapter=.*no adapter there"):
        FluxIRMethod.load(str(tiny_model_dir), tmp_path / "none", RestoreOptions(), torch.float32, "cpu")
    torch.manual_seed(0)
    FluxIRAdapter.from_flux(load_flux(tiny_model_dir).transformer, rank=4).save_pretrained(
        tmp_path / "adapter"
    )
    options = RestoreOptions(scale=4, steps=2, tile=64, overlap=16)
    method = FluxIRMethod.load(str(tiny_model_dir), tmp_path / "adapter", options, torch.float32, "cpu")
    lq = _lq(8, 8)
    out = method(lq)
    assert out.shape == (32, 32, 3) and out.dtype == np.uint8
    assert np.array_equal(out, method.pipeline(lq, options))  # seeded: the same restoration again
    assert "2 Euler steps" in method.description


def test_vae_reconstruction_is_the_hq_through_the_base_vae(tiny_model_dir):
    from diffusers import AutoencoderKL

    from fluxir.benchmark.methods import VaeReconstruction, sees_hq

    method = VaeReconstruction.load(str(tiny_model_dir), torch.float32, "cpu")
    assert (
        sees_hq(method) and not sees_hq(Interpolation("bicubic", 4)) and "sees the HQ" in method.description
    )
    hq = _lq(32, 48)
    out = method(hq)
    assert out.shape == hq.shape and out.dtype == np.uint8
    vae = AutoencoderKL.from_pretrained(tiny_model_dir, subfolder="vae").eval()
    with torch.no_grad():
        x = torch.from_numpy(hq).permute(2, 0, 1)[None].float() / 127.5 - 1
        y = vae.decode(vae.encode(x).latent_dist.mode()).sample.clamp(-1, 1)
    expected = ((y[0].permute(1, 2, 0).numpy() + 1) * 127.5).round().astype(np.uint8)
    assert np.abs(out.astype(int) - expected.astype(int)).max() <= 1


def test_the_untrained_method_is_the_adapter_at_initialisation(tmp_path, tiny_model_dir):
    from helpers import randomise

    from fluxir.models.adapter import FluxIRAdapter
    from fluxir.models.flux import load_flux

    base = load_flux(tiny_model_dir).transformer
    torch.manual_seed(0)
    fresh = FluxIRAdapter.from_flux(base, rank=4, max_sequence_length=16)
    randomise(FluxIRAdapter.from_flux(base, rank=4, max_sequence_length=16), seed=3).save_pretrained(
        tmp_path / "trained"
    )
    fresh.save_pretrained(tmp_path / "fresh")
    options = RestoreOptions(scale=4, steps=2, tile=64, overlap=16, seed=0)
    load = lambda folder, **kw: FluxIRMethod.load(  # noqa: E731
        str(tiny_model_dir), tmp_path / folder, options, torch.float32, "cpu", **kw
    )
    trained, untrained, reference = load("trained"), load("trained", untrained=True), load("fresh")
    assert (trained.name, untrained.name) == ("fluxir", "fluxir-untrained")
    assert "at initialisation" in untrained.description
    state, expected = untrained.pipeline.model.adapter.state_dict(), fresh.state_dict()
    assert state.keys() == expected.keys()
    for key in expected:  # every weight back to from_flux's: copies of the base, zeros where it zero-inits
        torch.testing.assert_close(state[key], expected[key], rtol=0, atol=0, msg=key)
    lq = _lq(8, 8)
    np.testing.assert_array_equal(untrained(lq), reference(lq))
    assert not np.array_equal(trained(lq), untrained(lq))


def test_every_name_the_config_accepts_has_a_builder_and_no_other():
    assert set(BUILDERS) == set(BUILTIN_METHODS)
    with pytest.raises(ConfigError, match="'bilinear' is neither fluxir, fluxir-untrained, bicubic"):
        BenchmarkConfig(methods=["bicubic", "bilinear"])


def test_interpolation_methods_are_built_from_the_config(tmp_path):
    from fluxir.benchmark.methods import build_methods
    from fluxir.config import Config, RestoreConfig

    cfg = Config(benchmark=BenchmarkConfig(methods=["lanczos", "bicubic"]), restore=RestoreConfig(scale=2))
    built = build_methods(cfg)
    assert [m.name for m in built] == ["lanczos", "bicubic"]
    assert built[1](_lq(6, 5)).shape == (12, 10, 3)


def test_the_benchmark_restores_with_the_whole_restore_section(tmp_path, tiny_model_dir):
    from fluxir.benchmark.methods import build_methods
    from fluxir.config import Config, ModelConfig, RestoreConfig
    from fluxir.models.adapter import FluxIRAdapter
    from fluxir.models.flux import load_flux

    FluxIRAdapter.from_flux(load_flux(tiny_model_dir).transformer, rank=4).save_pretrained(tmp_path / "a")
    restore = RestoreConfig(steps=2, color_fix="none", tile_mode="per_tile", seed=3)
    cfg = Config(
        model=ModelConfig(base=str(tiny_model_dir), device="cpu"),
        benchmark=BenchmarkConfig(methods=["fluxir"], adapter=str(tmp_path / "a")),
        restore=restore,
    )
    (method,) = build_methods(cfg)
    assert method.options == restore  # not only scale, steps, guidance, tile, overlap and seed
