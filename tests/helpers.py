"""Small helpers shared by several test modules (fixtures live in conftest.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml

REPO = Path(__file__).resolve().parents[1]

# The adapter variants of the paper's ablations (Tables 2, 5, 6), as FluxIRAdapter.from_flux keywords.
ADAPTER_VARIANTS = {
    "se16": dict(rank=16),
    "se32": dict(rank=32),
    "se_full": dict(rank=None),
    "single_mlp": dict(control="single_mlp"),
    "no_text_control": dict(text_control=False),
    "no_embeddings": dict(learnable_embeddings=False),
}


def randomise(adapter, seed: int = 0, scale: float = 0.1):
    """Random values in every adapter parameter, as a trained adapter would have: zero-initialised
    layers would hide wiring bugs and make outputs independent of the LQ input."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in adapter.parameters():
            p.copy_(torch.randn(p.shape, generator=generator) * scale)
    return adapter


def write_params(folder: Path, **sections: dict) -> Path:
    """``folder/params.yaml``: the repository's params.yaml with each given section updated."""
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    for section, values in sections.items():
        raw[section].update(values)
    path = folder / "params.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


@pytest.fixture(autouse=True)
def one_thread():
    """One intra-op thread for the module that imports this fixture: on a small shared machine a second
    thread waiting on a busy core makes tiny-model tests ~10x slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def tiny_restorer(rank: int = 8, scale: float = 0.05):
    """The tiny base (seed 0) with a randomised adapter of ``rank``: a restorer whose output depends on it."""
    from fluxir.models.adapter import FluxIRAdapter
    from fluxir.models.tiny import build_tiny_pipeline
    from fluxir.restoration.pipeline import FluxIRPipeline

    base = build_tiny_pipeline(seed=0)
    return FluxIRPipeline(base, randomise(FluxIRAdapter.from_flux(base.transformer, rank=rank), scale=scale))
