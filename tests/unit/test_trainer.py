"""The Trainer on the tiny FLUX with the plain torch engine (DeepSpeed runs are integration tests).

Checks the step against a hand-assembled reference, what reaches the model, gradient accumulation,
clipping, warm-up, checkpoints (atomic, resumable, config-checked), the exported adapter and the config.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from diffusers import FluxPipeline
from helpers import one_thread  # noqa: F401 (a fixture)
from train_pairs import write_pairs, write_params

from fluxir.config import Config, ConfigError, TrainConfig, load_config
from fluxir.iqa import psnr
from fluxir.models.adapter import FluxIRAdapter
from fluxir.restoration.pipeline import FluxIRPipeline
from fluxir.train import checkpoint as ckpt
from fluxir.train.build import build_trainer
from fluxir.train.engine import (
    TorchEngine,
    TrainModule,
    deepspeed_config,
    micro_batch_size,
    read_deepspeed_json,
)
from fluxir.train.losses import fluxir_loss, vae_decoder
from fluxir.train.trainer import Trainer, resume_conflicts, step_generator

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("train-project")
    write_pairs(root, per_photo=4)  # 16 pairs: 2 held out, 14 train in 3 buckets
    return root


@pytest.fixture
def make(project, tiny_model_dir, monkeypatch, tmp_path):
    """Build a Trainer (torch engine) on the project's pairs; outputs go to a fresh folder per test."""
    monkeypatch.chdir(project)
    write_params(project, tiny_model_dir)

    def build(**train) -> Trainer:
        overrides = {
            "train.engine": "torch",
            "train.track": False,
            "train.out_dir": str(tmp_path / "train"),
            "train.report_dir": str(tmp_path / "reports"),
            "train.cache_dir": str(project / "data" / "cache"),
            "model.max_sequence_length": 32,  # shorter text: faster CPU steps, same code path
            "restore.steps": 2,  # the final held-out PSNR restoration
            **{f"train.{k}": v for k, v in train.items()},
        }
        return build_trainer(load_config(project / "params.yaml", overrides))

    return build


def adapter_params(trainer: Trainer) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in trainer.model.adapter.named_parameters()}


def read_csv(path: Path) -> list[str]:
    return path.read_text().splitlines()


# ------------------------------------------------------------------------------------------ one step


def test_step_matches_a_hand_assembled_reference_and_trains_only_the_adapter(make):
    trainer = make()
    data = trainer.data
    indices = data.batches.batch(0)
    z0, z_lq = data.train.load(indices)
    g = step_generator(0, 0)
    t = trainer.sampler(len(indices), g)
    noise = torch.randn(z0.shape, generator=g)

    # Reference: eq. 1 and 7-10 written out with diffusers' packing and the pipeline's conditioning.
    b, c, h, w = z0.shape
    z_t = (1 - t.view(-1, 1, 1, 1)) * z0 + t.view(-1, 1, 1, 1) * noise
    embeds, pooled, text_ids = trainer.pipe.empty_prompt()
    out = trainer.model(
        hidden_states=FluxPipeline._pack_latents(z_t, b, c, h, w),
        control_latents=FluxPipeline._pack_latents(z_lq, b, c, h, w),
        encoder_hidden_states=embeds.expand(b, -1, -1),
        pooled_projections=pooled.expand(b, -1),
        timestep=t,
        img_ids=FluxPipeline._prepare_latent_image_ids(b, h // 2, w // 2, "cpu", torch.float32),
        txt_ids=text_ids,
        guidance=torch.full((b,), 3.5),
        return_dict=False,
    )[0]
    v = FluxPipeline._unpack_latents(out, h * 8, w * 8, 8)
    expected = fluxir_loss(v, noise - z0, z0, t, decode=vae_decoder(trainer.pipe.base.vae))

    terms = trainer.forward_backward_step(z0, z_lq, t, noise)
    assert torch.allclose(terms.total, expected.total, rtol=1e-6)
    assert terms.pixel > 0 and torch.allclose(terms.mse, expected.mse, rtol=1e-6)
    base = trainer.model.transformer
    assert all(p.grad is None for p in base.parameters())
    assert all(p.grad is None for p in trainer.pipe.base.vae.parameters())
    grads = [p.grad for p in trainer.model.trainable_parameters()]
    assert all(g is not None for g in grads) and any(g.abs().sum() > 0 for g in grads)


def test_model_gets_t_and_guidance_exactly_as_the_pipeline_passes_them(make, monkeypatch):
    trainer = make()
    seen = {}
    forward = trainer.model.forward

    def spy(**kwargs):
        seen.update(kwargs)
        return forward(**kwargs)

    monkeypatch.setattr(trainer.model, "forward", spy)
    z = torch.randn(2, 16, 12, 16)
    trainer.predict(z, z * 0.5, torch.tensor([0.25, 1.0]))
    assert torch.equal(seen["timestep"], torch.tensor([0.25, 1.0]))  # t in [0, 1], as sample()'s t/1000
    assert seen["guidance"].dtype == torch.float32 and torch.equal(seen["guidance"], torch.full((2,), 3.5))
    assert torch.equal(seen["control_latents"], FluxPipeline._pack_latents(z * 0.5, 2, 16, 12, 16))
    assert seen["encoder_hidden_states"].shape == (2, 32, 32) and seen["txt_ids"].shape == (32, 3)


def test_pixel_crop_decodes_one_window_of_the_step_latents(make):
    trainer = make(pixel_crop=4)
    decode, shapes = trainer.decode, []

    def spy(z):
        shapes.append(tuple(z.shape[-2:]))
        return decode(z)

    trainer.decode = spy
    result = trainer.train_step(0)
    assert shapes == [(4, 4), (4, 4)] and result.pixel > 0  # prediction and target, the same window


def test_draws_of_a_step_depend_on_seed_and_step_only():
    a, b = step_generator(0, 5), step_generator(0, 5)
    assert torch.equal(torch.rand(4, generator=a), torch.rand(4, generator=b))
    assert not torch.equal(
        torch.rand(4, generator=step_generator(0, 6)), torch.rand(4, generator=step_generator(0, 5))
    )
    assert not torch.equal(
        torch.rand(4, generator=step_generator(1, 5)), torch.rand(4, generator=step_generator(0, 5))
    )


def test_gradient_accumulation_matches_one_big_micro_batch(make):
    whole, accumulated = make(batch_size=4, grad_accum=1), make(batch_size=4, grad_accum=2)
    r1, r2 = whole.train_step(0), accumulated.train_step(0)
    assert math.isclose(r1.loss, r2.loss, rel_tol=1e-6) and math.isclose(
        r1.grad_norm, r2.grad_norm, rel_tol=1e-5
    )
    p1, p2 = adapter_params(whole), adapter_params(accumulated)
    # Adam's first update is about lr * sign(g), so float summation order shows up ~1e-4 x lr at most.
    assert max((p1[k] - p2[k]).abs().max().item() for k in p1) < 1e-3 * whole.cfg.lr
    assert accumulated.engine.micro_steps == 2


def test_clipping_bounds_the_gradient_the_optimizer_sees():
    module = torch.nn.Module()
    module.adapter = torch.nn.Linear(4, 4)
    params = list(module.adapter.parameters())
    engine = TorchEngine(module, params, TrainConfig(grad_clip=0.5, lr=0.1), _cpu_world())
    seen = []
    engine.optimizer.register_step_pre_hook(
        lambda *_: seen.append(torch.norm(torch.stack([p.grad.norm() for p in params])))
    )
    (module.adapter(torch.full((2, 4), 10.0)).square().sum()).backward()
    engine.step()
    assert engine.grad_norm > 0.5 and math.isclose(seen[0].item(), 0.5, rel_tol=1e-5)
    assert all(p.grad is None for p in params)  # zeroed for the next step


def _cpu_world():
    from fluxir.train.engine import World

    return World(0, 1, 0, torch.device("cpu"))


def test_warmup_and_loss_csv(make, tmp_path):
    trainer = make(max_steps=4, warmup_steps=3, lr=0.003, eval_every=0, checkpoint_every=10)
    state = trainer.train()
    rows = read_csv(tmp_path / "reports" / "loss.csv")
    assert rows[0] == "step,loss,mse,pixel,lr"
    lrs = [float(r.split(",")[4]) for r in rows[1:]]
    assert np.allclose(lrs, [0.001, 0.002, 0.003, 0.003])
    first = rows[1].split(",")
    assert int(first[0]) == 1 and math.isclose(
        float(first[1]), float(first[2]) + float(first[3]), rel_tol=1e-6
    )
    assert float(first[1]) == state.history[0]["loss"]  # written with full precision
    val = read_csv(tmp_path / "reports" / "val.csv")
    assert [int(r.split(",")[0]) for r in val[1:]] == [0, 4]  # start and last step only (eval_every 0)
    metrics = json.loads((tmp_path / "reports" / "metrics.json").read_text())
    assert metrics["steps"] == 4 and metrics["psnr_steps"] == 2 and metrics["psnr_bicubic"] > 15


# ------------------------------------------------------------------------------------------ checkpoints


def test_resume_continues_exactly_and_config_changes_are_checked(make, tmp_path):
    make(max_steps=4, checkpoint_every=2, eval_every=2).train()
    reference = read_csv(tmp_path / "reports" / "loss.csv")
    reference_val = read_csv(tmp_path / "reports" / "val.csv")
    root = tmp_path / "train" / "checkpoints"
    assert [s for s, _ in ckpt.list_checkpoints(root)] == [2, 4]

    # As if killed while saving step 4: its folder is still partial and a torn row ends the CSV.
    (root / "step_00000004").rename(root / ".partial-step_00000004")
    (root / "step_00000009").mkdir()  # no trainer_state.json: not a checkpoint
    (tmp_path / "reports" / "loss.csv").write_text("\n".join(reference) + "\n5,0.1,0.")
    assert ckpt.latest_checkpoint(root)[0] == 2

    with pytest.raises(
        ConfigError, match=r"step_00000002 was made with other settings or inputs \(train.lr: 0.01 -> 0.02\)"
    ):
        make(max_steps=4, checkpoint_every=2, eval_every=2, lr=0.02).train()
    trainer = make(max_steps=4, checkpoint_every=2, eval_every=2)
    state = trainer.train()
    assert state.step == 4 and (state.epoch, state.batch_in_epoch) == trainer.data.batches.position(4)
    assert read_csv(tmp_path / "reports" / "loss.csv") == reference
    assert read_csv(tmp_path / "reports" / "val.csv") == reference_val
    assert not list(root.glob(".partial-*"))
    assert (root / "step_00000004" / ckpt.STATE_FILE).is_file()


def test_restart_on_change_starts_over_from_step_zero(make, tmp_path):
    """dvc repro keeps the checkpoints between runs: changed settings must not resume from them."""
    make(max_steps=2, checkpoint_every=2, eval_every=2).train()
    root = tmp_path / "train" / "checkpoints"
    first = ckpt.read_state(root / "step_00000002")
    trainer = make(max_steps=2, checkpoint_every=2, eval_every=2, lr=0.02)
    trainer.restart_on_change = True
    state = trainer.train()
    assert state.step == 2
    saved = ckpt.read_state(root / "step_00000002")
    assert saved.config["train"]["lr"] == 0.02 and first.config["train"]["lr"] == 0.01
    assert len(saved.history) == 2  # steps 1 and 2 of this run only, every one at the new rate
    assert all(new["lr"] > old["lr"] for new, old in zip(saved.history, first.history, strict=True))
    assert set(saved.config["inputs"]) == {"pairs", "model"}  # the pairs and base by content
    # Only what the resume check compares is kept: a changed generate or score default must not
    # change the checkpoint's bytes (DVC hashes them).
    assert set(saved.config) == {"train", "model", "restore", "degrade", "inputs"}
    assert saved.config["restore"] == {"guidance": 3.5} and set(saved.config["degrade"]) == {"scale"}


def test_wall_clock_cost_stays_beside_the_checkpoints_and_out_of_metrics(make, tmp_path):
    # Checkpoints and metrics.json are DVC outputs: the same run must give the same bytes, so the cost
    # ledger (device-seconds) lives in cost_ledger.json beside the checkpoints and in MLflow.
    state = make(max_steps=2, checkpoint_every=2, eval_every=0).train()
    root = tmp_path / "train" / "checkpoints"
    assert "device_seconds" not in json.loads((root / "step_00000002" / ckpt.STATE_FILE).read_text())
    assert state.device_seconds and ckpt.cost_path(root) == tmp_path / "train" / "cost_ledger.json"
    assert ckpt.read_state(root / "step_00000002").device_seconds == state.device_seconds
    metrics = json.loads((tmp_path / "reports" / "metrics.json").read_text())
    assert metrics["steps"] == 2 and not [k for k in metrics if "hour" in k or "second" in k]


def test_checkpoint_commit_is_all_or_nothing(tmp_path):
    root = tmp_path / "checkpoints"
    committed: list[int] = []
    for step in (3, 10, 7):
        partial = ckpt.partial_dir(root, step)
        partial.mkdir(parents=True)
        (partial / "payload").write_text(str(step))
        latest = ckpt.latest_checkpoint(root)  # a partial folder is never a checkpoint
        assert (latest[0] if latest else None) == (max(committed) if committed else None)
        ckpt.commit(partial, ckpt.TrainerState(step=step))
        committed.append(step)
        assert not partial.exists()
    assert [s for s, _ in ckpt.list_checkpoints(root)] == [3, 7, 10]
    assert ckpt.read_state(root / "step_00000010").step == 10
    ckpt.partial_dir(root, 11).mkdir()
    assert ckpt.latest_checkpoint(root)[0] == 10
    assert ckpt.remove_partials(root) == 1
    assert [p.name for p in ckpt.prune(root, keep=2)] == ["step_00000003"]
    assert (root / "step_00000007" / "payload").read_text() == "7"


def test_resume_conflicts_name_the_key_and_ignore_run_length():
    a = {
        "train": {"lr": 0.01, "max_steps": 10, "eval_every": 5},
        "model": {"base": "tiny"},
        "generate": {"seed": 0},
    }
    b = {
        "train": {"lr": 0.01, "max_steps": 99, "eval_every": 7},
        "model": {"base": "tiny"},
        "generate": {"seed": 9},
    }
    assert resume_conflicts(a, b) == []
    b["model"]["base"] = "black-forest-labs/FLUX.1-dev"
    assert resume_conflicts(a, b) == ["model.base: 'tiny' -> 'black-forest-labs/FLUX.1-dev'"]


def test_exported_adapter_loads_into_the_restore_pipeline(make, tmp_path, tiny_model_dir):
    trainer = make(max_steps=1, eval_every=0)
    trainer.train()
    folder = tmp_path / "train" / "adapter"
    loaded = FluxIRAdapter.from_pretrained(folder)
    trained = trainer.model.adapter.state_dict()
    assert loaded.config.rank == 32 and loaded.config.max_sequence_length == 32
    assert all(torch.equal(v, trained[k]) for k, v in loaded.state_dict().items())
    assert any(
        v.abs().sum() > 0 for k, v in loaded.state_dict().items() if k.startswith("se_z") and "excite" in k
    )
    pipe = FluxIRPipeline.from_pretrained(tiny_model_dir, folder)
    lq = np.zeros((8, 8, 3), np.uint8)
    from fluxir.restoration.pipeline import RestoreOptions

    assert pipe(lq, RestoreOptions(steps=2)).shape == (32, 32, 3)


def test_uncached_training_sees_the_same_latents_as_cached(make, tmp_path):
    cached, uncached = make(cache_latents=True), make(cache_latents=False)
    assert uncached.data.train.cache is None and cached.data.train.cache.complete
    assert cached.train_step(0).loss == uncached.train_step(0).loss


def test_validation_loss_is_deterministic(make):
    trainer = make()
    assert trainer.evaluate() == trainer.evaluate()


def test_psnr_against_a_hand_computed_value():
    a = np.zeros((4, 4, 3), np.uint8)
    b = a.copy()
    b[0, 0, 0] = 10  # mse = 100 / 48
    assert math.isclose(psnr(a, b, "rgb"), 10 * math.log10(255**2 * 48 / 100))
    assert psnr(a, a) == float("inf")


# ------------------------------------------------------------------------------------------ config


def test_deepspeed_config_takes_sizes_and_optimizer_from_params():
    base = read_deepspeed_json(REPO / "configs" / "deepspeed" / "zero2.json")
    cfg = TrainConfig(batch_size=8, grad_accum=2, lr=1e-5, grad_clip=0.5)
    ds = deepspeed_config(base, cfg, world_size=2, bf16=True)
    assert ds["zero_optimization"]["stage"] == 2
    assert (
        ds["train_batch_size"],
        ds["train_micro_batch_size_per_gpu"],
        ds["gradient_accumulation_steps"],
    ) == (8, 2, 2)
    assert ds["optimizer"]["params"]["lr"] == 1e-5 and ds["optimizer"]["params"]["torch_adam"] is True
    assert ds["gradient_clipping"] == 0.5 and ds["bf16"] == {"enabled": True}
    assert (
        read_deepspeed_json(REPO / "configs" / "deepspeed" / "zero3.json")["zero_optimization"]["stage"] == 3
    )
    with pytest.raises(
        ConfigError, match=r"batch_size=8: must be a multiple of train.grad_accum x processes = 2 x 3"
    ):
        micro_batch_size(cfg, 3)


def test_deepspeed_json_may_not_repeat_params(tmp_path):
    path = tmp_path / "ds.json"
    path.write_text(json.dumps({"zero_optimization": {"stage": 2}, "train_batch_size": 64}))
    with pytest.raises(ConfigError, match="sets 'train_batch_size', which params.yaml decides"):
        read_deepspeed_json(path)
    with pytest.raises(ConfigError, match="file not found"):
        read_deepspeed_json(tmp_path / "missing.json")


@pytest.mark.parametrize(
    ("section", "message"),
    [
        (
            "train:\n  batch_size: 6\n  grad_accum: 4\n",
            "train.batch_size=6: must be a multiple of train.grad_accum=4",
        ),
        ("train:\n  warmup_steps: 70\n", "train.warmup_steps=70: must not exceed train.max_steps=60"),
        ("train:\n  adam_betas: [0.9]\n", "train.adam_betas=[0.9]: must be [beta1, beta2]"),
        ("train:\n  lr: 0\n", "train.lr=0.0: must be in (0, 1]"),
        ("train:\n  engine: ddp\n", "train.engine='ddp': must be one of 'deepspeed', 'torch'"),
        ("train:\n  rank: 0\n", "train.rank=0: must be in [1, inf)"),
    ],
)
def test_train_config_errors_are_one_line(tmp_path, section, message):
    path = tmp_path / "params.yaml"
    path.write_text(section)
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_config(path)


def test_params_yaml_train_section_is_the_tiny_profile():
    cfg = load_config(REPO / "params.yaml").train
    assert cfg == Config().train  # the dataclass defaults are the tiny profile too
    assert cfg.engine == "torch" and cfg.rank == 32 and cfg.alpha == 1.0 and cfg.sampler_eps == 0.05
    assert TrainConfig(rank=None).rank is None  # null: full rank


def test_train_module_hides_the_frozen_base(make):
    trainer = make()
    module = TrainModule(trainer.model)
    names = [n for n, _ in module.named_parameters()]
    assert names and all(n.startswith("adapter.") for n in names)
    assert set(module.state_dict()) == {f"adapter.{k}" for k in trainer.model.adapter.state_dict()}


def test_cli_reports_a_missing_manifest_in_one_line(tmp_path, capsys, monkeypatch):
    from fluxir.cli import main

    monkeypatch.chdir(tmp_path)
    (tmp_path / "params.yaml").write_text("train:\n  engine: torch\n  manifest: nowhere/manifest.parquet\n")
    assert main(["train", "--params", "params.yaml"]) == 2
    err = capsys.readouterr().err.strip()
    assert (
        err.startswith("fluxir train: error: nowhere/manifest.parquet: training manifest not found")
        and "\n" not in err
    )


# ------------------------------------------------------------------------------------------ GPU benchmark script


def _bench():
    import importlib.util

    spec = importlib.util.spec_from_file_location("train_step_gpu", REPO / "bench" / "train_step_gpu.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_gpu_bench_runs_on_the_tiny_shapes_and_reports(capsys):
    assert _bench().main(["--tiny", "--steps", "1"]) == 0
    out = capsys.readouterr().out
    for line in (
        "step time",
        "peak memory",
        "FLOPs model",
        "FLOPs executed",
        "FLOPs counted",
        "batch              1 x 128x96 px",
    ):
        assert line in out


def test_gpu_bench_flop_formula_at_flux_dev_size():
    flops = _bench().analytic_step_flops(3072, 512, 3072, 57, 32, batch=2, decoder_fwd=10.0)
    n, d = 3584, 3072
    linear, attention, se = 24 * d * d * n, 4 * d * n * n, 57 * 4 * d * 32 * n  # one block: ~0.97 TFLOP
    assert flops["base"] == 2 * 57 * (2 * linear + 3 * attention)
    assert flops["adapter"] == 2 * 3 * (linear + attention + se)
    assert flops["model"] == flops["base"] + flops["adapter"] + 30.0
    assert flops["executed"] == 2 * (57 * (3 * linear + 4 * attention) + 4 * (linear + attention + se)) + 40.0
    assert 2 * 119e12 < flops["base"] < 2 * 120e12  # ~120 TFLOP per 1024x768 image through the frozen base


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message shown without a GPU")
def test_gpu_bench_without_cuda_says_so(capsys):
    assert _bench().main([]) == 2
    assert "no CUDA device found" in capsys.readouterr().out


def test_a_non_finite_loss_stops_training_before_backward(make, monkeypatch):
    from fluxir.train.trainer import NonFiniteLossError

    trainer = make()
    real = trainer.compute_loss

    def nan_loss(*args, **kwargs):
        terms = real(*args, **kwargs)
        return type(terms)(total=terms.total * float("nan"), mse=terms.mse, pixel=terms.pixel)

    monkeypatch.setattr(trainer, "compute_loss", nan_loss)
    monkeypatch.setattr(trainer.engine, "backward", lambda loss: pytest.fail("backward ran on a NaN loss"))
    with pytest.raises(NonFiniteLossError, match="loss is nan"):
        trainer.train_step(0)
