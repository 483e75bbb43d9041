"""Kill -9 and resume: a DeepSpeed ZeRO-2 run killed after a checkpoint and resumed reproduces the
uninterrupted run's loss curve, validation curve and adapter bit for bit (CPU, one process, gloo)."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

import pytest
from safetensors.torch import load_file
from train_pairs import deepspeed_env, train_stage_args, write_pairs, write_params

pytestmark = pytest.mark.slow

STEPS = 8
KILL_AFTER = 4  # checkpoint step the killed run must have written, plus one more logged step


ENV = deepspeed_env()


def train_args(out: str) -> list[str]:
    return [sys.executable, "-m", "fluxir.stages.train", *train_stage_args(out, "train.engine=deepspeed")]


def test_sigkill_then_resume_reproduces_the_uninterrupted_run(tmp_path, tiny_model_dir):
    write_pairs(tmp_path, per_photo=4)
    fast = {"model.max_sequence_length": 32, "restore.steps": 2}  # shorter prompt and final PSNR pass
    write_params(
        tmp_path, tiny_model_dir, fast, max_steps=STEPS, checkpoint_every=2, eval_every=4, track=False
    )

    full = subprocess.run(
        train_args("full"), cwd=tmp_path, capture_output=True, text=True, timeout=300, env=ENV
    )
    assert full.returncode == 0, full.stderr[-2000:]

    # The same run, killed with SIGKILL once checkpoint KILL_AFTER is complete and a later step is logged.
    killed = subprocess.Popen(
        train_args("run"), cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=ENV
    )
    state = tmp_path / "data/run/checkpoints" / f"step_{KILL_AFTER:08d}" / "trainer_state.json"
    loss_csv = tmp_path / "reports/run/loss.csv"
    deadline = time.monotonic() + 240
    while not (state.is_file() and f"\n{KILL_AFTER + 1}," in loss_csv.read_text()):
        if killed.poll() is not None:
            pytest.fail(f"the run ended before it could be killed (rc {killed.returncode}); make it longer")
        assert time.monotonic() < deadline, "no checkpoint within 240 s"
        time.sleep(0.01)
    killed.send_signal(signal.SIGKILL)
    killed.communicate(timeout=60)
    assert killed.returncode == -signal.SIGKILL
    assert not (tmp_path / "data/run/adapter").exists()

    resumed = subprocess.run(
        train_args("run"), cwd=tmp_path, capture_output=True, text=True, timeout=300, env=ENV
    )
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "resumed from data/run/checkpoints/step_" in resumed.stderr

    for name in ("loss.csv", "val.csv"):
        expected = (tmp_path / "reports/full" / name).read_text()
        assert (tmp_path / "reports/run" / name).read_text() == expected, name
    assert len((tmp_path / "reports/run/loss.csv").read_text().splitlines()) == STEPS + 1
    weights = "adapter/diffusion_pytorch_model.safetensors"
    a, b = load_file(tmp_path / "data/full" / weights), load_file(tmp_path / "data/run" / weights)
    assert a.keys() == b.keys() and all(a[k].equal(b[k]) for k in a)
    assert not list((tmp_path / "data/run/checkpoints").glob(".partial-*"))
    # Checkpoints are a DVC output: the saved Python/NumPy/torch generator states must not depend on the
    # process (unseeded global generators once made every run's checkpoints differ).
    final = f"checkpoints/step_{STEPS:08d}/rng_rank0.pt"
    assert (tmp_path / "data/run" / final).read_bytes() == (tmp_path / "data/full" / final).read_bytes()
