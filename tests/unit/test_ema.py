"""EMA of the adapter weights: the update rule, exact resumes, and the exported folder restore loads."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from helpers import one_thread  # noqa: F401 (a fixture)
from safetensors.torch import load_file
from train_pairs import write_pairs, write_params

from fluxir.config import load_config
from fluxir.models.adapter import FluxIRAdapter
from fluxir.models.adapter_files import EMA_FILE, PROMPT_FILE
from fluxir.train.build import build_trainer
from fluxir.train.ema import AdapterEMA


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("ema-project")
    write_pairs(root, per_photo=2)
    return root


@pytest.fixture
def make(project, tiny_model_dir, monkeypatch):
    monkeypatch.chdir(project)
    write_params(project, tiny_model_dir)

    def build(out: Path, **train):
        overrides = {
            "train.engine": "torch",
            "train.track": False,
            "train.out_dir": str(out / "train"),
            "train.report_dir": str(out / "reports"),
            "train.cache_dir": str(project / "data" / "cache"),
            "train.ema_decay": 0.9,
            "train.eval_every": 0,
            "train.grid_every": 0,
            "model.max_sequence_length": 16,
            "restore.steps": 1,
            **{f"train.{k}": v for k, v in train.items()},
        }
        return build_trainer(load_config(project / "params.yaml", overrides))

    return build


def test_update_is_the_warmed_up_moving_average():
    ema = AdapterEMA(0.99, {"w": torch.zeros(3)})
    ones = {"w": torch.ones(3)}
    expected = torch.zeros(3)
    for k in range(4):
        d = min(0.99, (1 + k) / (10 + k))  # 0.1, 0.18, 0.25, 0.31: early steps move the average a lot
        expected = d * expected + (1 - d) * 1
        ema.update(ones)
    torch.testing.assert_close(ema.shadow["w"], expected)
    assert ema.updates == 4 and ema.decay_at(10_000) == 0.99
    with pytest.raises(ValueError, match="must be in"):
        AdapterEMA(1.0, {})


def test_resume_gives_bitwise_the_ema_of_an_uninterrupted_run(make, tmp_path):
    whole = make(tmp_path / "whole", max_steps=4, checkpoint_every=2)
    whole.train()
    first = make(tmp_path / "split", max_steps=2, checkpoint_every=2)
    first.train()
    assert (tmp_path / "split" / "train" / "checkpoints" / "step_00000002" / EMA_FILE).is_file()
    second = make(tmp_path / "split", max_steps=4, checkpoint_every=2)  # resumes from step 2
    second.train()
    assert second.ema.updates == whole.ema.updates == 4
    for name, value in whole.ema.shadow.items():
        assert torch.equal(second.ema.shadow[name], value), name
    raw = {k: v for k, v in whole.model.adapter.state_dict().items()}
    assert any(not torch.equal(whole.ema.shadow[k], raw[k]) for k in whole.ema.shadow)  # it is an average

    # The exported folder: raw weights, the EMA beside them (frozen parameters as trained), the prompt.
    folder = tmp_path / "whole" / "train" / "adapter"
    exported = load_file(folder / EMA_FILE)
    assert exported.keys() == raw.keys()
    assert all(torch.equal(exported[k], whole.ema.shadow.get(k, raw[k])) for k in raw)
    loaded, plain = (
        FluxIRAdapter.from_pretrained(folder),
        FluxIRAdapter.from_pretrained(folder, use_ema=False),
    )
    assert all(torch.equal(v, exported[k]) for k, v in loaded.state_dict().items())
    assert all(torch.equal(v, raw[k]) for k, v in plain.state_dict().items())
    stored = loaded.stored_prompt
    assert (folder / PROMPT_FILE).is_file() and torch.equal(stored.embeds, whole.prompt.embeds)
    assert torch.equal(stored.pooled, whole.prompt.pooled) and torch.equal(
        stored.text_ids, whole.prompt.text_ids
    )
