"""Learning-rate multipliers: warm-up ramp, constant plateau, cosine decay, argument checks."""

from __future__ import annotations

import functools

import pytest
import torch

from fluxir.train.schedules import lr_multiplier


def test_constant_with_warmup():
    values = [lr_multiplier(s, warmup_steps=4, total_steps=10) for s in range(12)]
    assert values == [0.25, 0.5, 0.75, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0]
    assert lr_multiplier(0, warmup_steps=0, total_steps=1) == 1.0  # no warm-up: the paper's fixed lr


def test_cosine_hand_values():
    # warm-up 2 steps, then 4 decay steps: p = 0, 1/4, 1/2, 3/4, 1 -> 1, (1 + sqrt(2)/2)/2, 1/2, ..., 0
    f = functools.partial(lr_multiplier, warmup_steps=2, total_steps=6, kind="cosine")
    assert [f(0), f(1)] == [0.5, 1.0]
    assert f(2) == pytest.approx(1.0)
    assert f(3) == pytest.approx(0.8535534, abs=1e-7)
    assert f(4) == pytest.approx(0.5)
    assert f(5) == pytest.approx(0.1464466, abs=1e-7)
    assert f(6) == pytest.approx(0.0, abs=1e-12) and f(100) == pytest.approx(0.0, abs=1e-12)


def test_works_as_a_lambda_lr():
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1e-5)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, functools.partial(lr_multiplier, warmup_steps=2, total_steps=4, kind="cosine")
    )
    lrs = []
    for _ in range(4):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs == pytest.approx([0.5e-5, 1e-5, 1e-5, 0.5e-5])


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((-1, 0, 10), "step=-1: must be >= 0"),
        ((0, 0, 0), "total_steps=0: must be >= 1"),
        ((0, 11, 10), r"warmup_steps=11: must be in \[0, total_steps=10\]"),
    ],
)
def test_bad_arguments(args, message):
    with pytest.raises(ValueError, match=message):
        lr_multiplier(*args)
    with pytest.raises(ValueError, match="kind='linear': must be 'constant' or 'cosine'"):
        lr_multiplier(0, 0, 10, kind="linear")  # type: ignore[arg-type]
