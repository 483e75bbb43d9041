"""Tiny FLUX factory: builds a complete diffusers folder, loads through from_pretrained, generates."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
import torch

from fluxir.models.flux import (
    NO_TEXT_ENCODERS,
    DamagedModelError,
    ModelNotFoundError,
    load_flux,
    resolve_base,
)
from fluxir.models.tiny import save_tiny_pipeline


def digest_tree(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory) -> Path:
    return save_tiny_pipeline(tmp_path_factory.mktemp("models") / "tiny-flux", seed=0)


def test_folder_has_every_flux_component(tiny_dir):
    files = set(digest_tree(tiny_dir))
    for expected in [
        "model_index.json",
        "transformer/config.json",
        "transformer/diffusion_pytorch_model.safetensors",
        "vae/diffusion_pytorch_model.safetensors",
        "text_encoder/model.safetensors",
        "text_encoder_2/model.safetensors",
        "tokenizer/tokenizer.json",
        "tokenizer_2/tokenizer.json",
        "scheduler/scheduler_config.json",
    ]:
        assert expected in files


def test_loaded_model_has_flux_architecture(tiny_dir):
    pipe = load_flux(tiny_dir)
    assert type(pipe).__name__ == "FluxPipeline"
    assert pipe.vae.config.latent_channels == 16
    assert pipe.transformer.config.in_channels == 64  # 16 channels x 2x2 packing
    assert (
        len(pipe.transformer.transformer_blocks) == 1 and len(pipe.transformer.single_transformer_blocks) == 1
    )
    assert pipe.transformer.config.joint_attention_dim == pipe.text_encoder_2.config.d_model
    assert pipe.transformer.config.pooled_projection_dim == pipe.text_encoder.config.hidden_size
    assert not any(p.requires_grad for p in pipe.transformer.parameters())  # base is frozen
    assert not pipe.text_encoder_2.training


def test_generates_64x64_image_from_empty_prompt(tiny_dir):
    pipe = load_flux(tiny_dir)

    def run():
        generator = torch.Generator().manual_seed(0)
        return pipe(prompt="", height=64, width=64, num_inference_steps=2, guidance_scale=4.0,
                    generator=generator, output_type="np").images  # fmt: skip

    image = run()
    assert image.shape == (1, 64, 64, 3)
    assert np.isfinite(image).all() and image.min() >= 0 and image.max() <= 1
    assert image.std() > 0  # random weights still give a non-constant image
    np.testing.assert_array_equal(run(), image)  # same seed, same pixels


def test_same_seed_is_bitwise_identical_and_other_seed_differs(tiny_dir, tmp_path):
    again = digest_tree(save_tiny_pipeline(tmp_path / "again", seed=0))
    assert again == digest_tree(tiny_dir)
    other = digest_tree(save_tiny_pipeline(tmp_path / "other", seed=1))
    assert (
        other["transformer/diffusion_pytorch_model.safetensors"]
        != again["transformer/diffusion_pytorch_model.safetensors"]
    )
    assert other["tokenizer/tokenizer.json"] == again["tokenizer/tokenizer.json"]  # tokenizers are not random


def test_incomplete_folder_names_what_is_missing(tiny_dir, tmp_path):
    import shutil

    broken = tmp_path / "broken"
    shutil.copytree(tiny_dir, broken)
    (broken / "vae" / "diffusion_pytorch_model.safetensors").unlink()
    shutil.rmtree(broken / "tokenizer_2")
    with pytest.raises(ModelNotFoundError) as info:
        load_flux(broken)
    message = str(info.value)
    assert "vae/diffusion_pytorch_model*.safetensors" in message and "tokenizer_2/tokenizer.json" in message


def test_missing_folder_and_unbuilt_tiny_give_the_fix(tmp_path):
    with pytest.raises(ModelNotFoundError, match="fluxir models build-tiny"):
        load_flux(tmp_path / "absent")
    with pytest.raises(
        ModelNotFoundError, match=r"tiny model not built at .*: run `fluxir models build-tiny"
    ):
        resolve_base("tiny", tmp_path / "absent")
    assert resolve_base("black-forest-labs/FLUX.1-dev") == "black-forest-labs/FLUX.1-dev"


def test_unreachable_hub_id_gives_one_line_error(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelNotFoundError) as info:
        load_flux("fluxir-tests/not-a-real-model")
    assert "huggingface-cli download fluxir-tests/not-a-real-model" in str(info.value)
    assert "\n" not in str(info.value)


# ----------------------------------------------------------------------------------------------
# A damaged model folder (a truncated copy): one line naming the file, never "not in the cache"


def _cut_in_half(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


@pytest.mark.parametrize(
    "rel",
    [
        "transformer/config.json",
        "tokenizer_2/tokenizer.json",
        "tokenizer/tokenizer_config.json",
        "model_index.json",
        "scheduler/scheduler_config.json",
        "vae/diffusion_pytorch_model.safetensors",
    ],
)
def test_a_truncated_file_of_a_model_folder_is_named_as_damaged(tiny_dir, tmp_path, rel):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(tiny_dir, copy)
    _cut_in_half(copy / rel)
    with pytest.raises(DamagedModelError) as info:
        load_flux(copy)
    message = str(info.value)
    assert message.startswith(f"{copy / rel}: damaged model file (")
    assert "re-download the snapshot" in message and "fluxir models build-tiny" in message
    assert "Hugging Face cache" not in message and "\n" not in message


def test_a_truncated_file_of_a_skipped_component_does_not_stop_the_load(tiny_dir, tmp_path):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(tiny_dir, copy)
    _cut_in_half(copy / "tokenizer_2" / "tokenizer.json")  # not loaded: restore with stored embeddings
    pipe = load_flux(copy, **NO_TEXT_ENCODERS)
    assert pipe.tokenizer_2 is None and pipe.transformer is not None
