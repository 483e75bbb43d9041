"""Empty-prompt embeddings stored with the adapter: restore without T5 and CLIP, bit-identical output."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import randomise
from PIL import Image
from skimage import data as skdata

from fluxir.models.adapter import FluxIRAdapter
from fluxir.models.adapter_files import PROMPT_FILE, StoredPrompt, load_prompt
from fluxir.models.flux import NO_TEXT_ENCODERS, load_flux
from fluxir.restoration.pipeline import FluxIRPipeline, RestoreOptions

MAX_LEN = 32
OPTIONS = RestoreOptions(steps=2, tile=128, overlap=32, seed=2)


@pytest.fixture(scope="module")
def adapters(tiny_model_dir, tmp_path_factory) -> tuple[Path, Path]:
    """The same adapter saved twice: with the empty prompt's embeddings, and (as older folders) without."""
    root = tmp_path_factory.mktemp("adapters")
    base = load_flux(tiny_model_dir)
    adapter = randomise(
        FluxIRAdapter.from_flux(base.transformer, rank=4, max_sequence_length=MAX_LEN), scale=0.05
    )
    adapter.save_pretrained(root / "old")
    embeds, pooled, ids = base.encode_prompt(prompt="", prompt_2="", max_sequence_length=MAX_LEN)
    adapter.stored_prompt = StoredPrompt(embeds, pooled, ids)
    adapter.save_pretrained(root / "new")
    return root / "old", root / "new"


def test_prompt_round_trips_and_old_folders_have_none(adapters):
    old, new = adapters
    assert not (old / PROMPT_FILE).exists() and FluxIRAdapter.from_pretrained(old).stored_prompt is None
    stored = FluxIRAdapter.from_pretrained(new).stored_prompt
    assert stored.embeds.shape == (1, MAX_LEN, 32) and stored.pooled.shape == (1, 32)
    assert stored.text_ids.shape == (MAX_LEN, 3)
    assert all(torch.equal(a, b) for a, b in zip(stored.as_tuple(), load_prompt(new).as_tuple(), strict=True))


def test_restore_never_builds_text_encoders_and_matches_encoding_on_the_fly(
    adapters, tiny_model_dir, monkeypatch
):
    old, new = adapters
    lq = np.asarray(Image.fromarray(skdata.astronaut()).resize((48, 40)))
    on_the_fly = FluxIRPipeline.from_pretrained(tiny_model_dir, old)(lq, OPTIONS)

    from transformers import CLIPTextModel, T5EncoderModel

    built: list[str] = []

    def refuse(self, *args, **kwargs):
        built.append(type(self).__name__)
        raise AssertionError(f"{type(self).__name__} instantiated")

    monkeypatch.setattr(T5EncoderModel, "__init__", refuse)
    monkeypatch.setattr(CLIPTextModel, "__init__", refuse)
    pipeline = FluxIRPipeline.from_pretrained(tiny_model_dir, new)
    assert pipeline.base.text_encoder is None and pipeline.base.text_encoder_2 is None
    np.testing.assert_array_equal(pipeline(lq, OPTIONS), on_the_fly)
    assert built == []
    # the guard does bite; diffusers loads components in no fixed order, so either encoder may be first
    with pytest.raises(AssertionError, match="(T5EncoderModel|CLIPTextModel) instantiated"):
        FluxIRPipeline.from_pretrained(tiny_model_dir, old)
    assert built in (["T5EncoderModel"], ["CLIPTextModel"])


def test_a_base_folder_without_text_encoders_loads_when_they_are_left_out(tiny_model_dir, tmp_path):
    folder = tmp_path / "no-text"
    shutil.copytree(tiny_model_dir, folder)
    for name in ("text_encoder", "text_encoder_2", "tokenizer", "tokenizer_2"):
        shutil.rmtree(folder / name)
    pipe = load_flux(folder, **NO_TEXT_ENCODERS)
    assert pipe.text_encoder is None and pipe.transformer is not None
