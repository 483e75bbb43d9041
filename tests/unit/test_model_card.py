"""The model card written beside an adapter: base, licence, training data, settings, cost, benchmark."""

from __future__ import annotations

import json

import pytest
import torch
from huggingface_hub import ModelCard
from safetensors.torch import save_file

from fluxir.config import config_from_dict
from fluxir.models.card import FLUX_DEV_LICENCE, add_benchmark, base_licence, write_model_card

FLUX_DEV = "black-forest-labs/FLUX.1-dev"


@pytest.fixture
def adapter(tmp_path):
    """An adapter-shaped folder: config.json and one safetensors file of 1,000 + 24 parameters."""
    folder = tmp_path / "adapter"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"_class_name": "FluxIRAdapter", "rank": 32}))
    save_file(
        {"a": torch.zeros(10, 100), "b": torch.zeros(2, 3, 4)}, folder / "diffusion_pytorch_model.safetensors"
    )
    return folder


@pytest.fixture
def reports(tmp_path):
    """Stage summaries as the FluxGen stages write them."""
    root = tmp_path / "reports"
    for stage, summary in {
        "generate": {"images": 48, "rejected": 0},
        "filter": {"images": 48, "kept": 45, "dropped": 3},
        "degrade": {"pairs": 45},
    }.items():
        (root / stage).mkdir(parents=True)
        (root / stage / "summary.json").write_text(json.dumps(summary))
    return root


@pytest.mark.parametrize(
    ("base", "licence"),
    [
        ("tiny", "apache-2.0"),
        ("data/models/mini-flux", "other"),
        ("black-forest-labs/FLUX.1-schnell", "apache-2.0"),
        (FLUX_DEV, "other"),
        ("/cache/hub/models--black-forest-labs--FLUX.1-dev/snapshots/0ef5fff", "other"),
        ("someone/some-flux", "other"),
    ],
)
def test_licence_follows_the_base_whose_weights_the_adapter_copies(base, licence):
    assert base_licence(base).license == licence
    if "FLUX.1-dev" in base:
        assert base_licence(base) is FLUX_DEV_LICENCE
    if base == "someone/some-flux":
        assert "check it" in base_licence(base).why
    if "mini" in base:
        assert "PolyForm-Noncommercial" in base_licence(base).why


def test_card_of_a_flux_dev_adapter_names_its_non_commercial_licence(adapter, reports):
    cfg = config_from_dict({"model": {"base": FLUX_DEV, "dtype": "bfloat16"}})
    path = write_model_card(adapter, cfg, {"NVIDIA H200": 7200.0}, reports)
    card = ModelCard.load(path)
    assert card.data.license == "other"
    assert card.data.license_name == "flux-1-dev-non-commercial-license"
    assert card.data.license_link.endswith("FLUX.1-dev/blob/main/LICENSE.md")
    assert card.data.base_model == FLUX_DEV and card.data.library_name == "diffusers"
    assert {"fluxir", "image-restoration"} <= set(card.data.tags)
    text = card.text
    assert "FLUX.1 [dev] Non-Commercial License (not the Apache-2.0 of the fluxir code)" in text
    assert "0.001M parameters" in text  # 1,024 from the safetensors header
    assert "| kept after filtering | 45 |" in text and "| training pairs (HQ crop, LQ) | 45 |" in text
    assert "| train.lr |" in text and "| train.rank | 32 |" in text
    assert "| NVIDIA H200 | 2.0000 |" in text and "| total | 2.0000 |" in text
    assert "Not benchmarked yet" in text
    assert "tiny random-weight" not in text


def test_card_of_a_tiny_adapter_is_apache_and_says_it_is_plumbing(adapter, tmp_path):
    cfg = config_from_dict({"model": {"tiny_dir": str(tmp_path / "missing")}})
    card = ModelCard.load(write_model_card(adapter, cfg, None, tmp_path / "no-reports"))
    assert card.data.license == "apache-2.0" and card.data.base_model is None
    assert "Made with the tiny random-weight FLUX model" in card.text
    assert "No cost ledger in this folder" in card.text and "MLflow" in card.text


def test_rewriting_keeps_added_metadata_and_benchmark_fills_evaluation(adapter, reports):
    cfg = config_from_dict({})
    path = write_model_card(adapter, cfg, {"cpu": 36.0}, reports)
    card = ModelCard.load(path)
    card.data.tags.append("my-tag")
    card.save(path)
    write_model_card(adapter, cfg, {"cpu": 72.0}, reports)  # e.g. a resumed run saving again
    card = ModelCard.load(path)
    assert card.data.tags.count("my-tag") == 1 and card.data.tags.count("fluxir") == 1
    assert "| cpu | 0.0200 |" in card.text

    table = "| metric | bicubic | fluxir |\n|---|---|---|\n| PSNR | 24.1 | 22.3 |"
    add_benchmark(adapter, table, version="4")
    card = ModelCard.load(path)
    assert card.text.startswith("# FluxIR adapter (version 4)")
    assert card.text.rstrip().endswith("| PSNR | 24.1 | 22.3 |")
    assert "Not benchmarked yet" not in card.text and "## Training settings" in card.text
    assert card.data.tags.count("my-tag") == 1
