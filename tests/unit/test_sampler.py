"""Timestep samplers (eq. 5-6 and SD3's logit-normal): distributions, determinism, dtype, devices."""

from __future__ import annotations

import math

import pytest
import torch
from scipy import stats

from fluxir.train.sampler import ClampedUniform, LogitNormal, make_sampler

N = 200_000


def test_clamped_uniform_endpoint_masses_and_uniform_interior():
    eps = 0.05
    t = make_sampler("clamped_uniform", eps=eps)(N, torch.Generator().manual_seed(0), "cpu")
    assert t.shape == (N,) and t.dtype == torch.float32
    assert t.min().item() == 0.0 and t.max().item() == 1.0

    p = eps / (1 + 2 * eps)  # eq. 6: P(u <= 0) = P(u >= 1) = eps / (1 + 2 eps) = 0.04545...
    assert p == pytest.approx(0.0454545, abs=1e-6)
    sigma = math.sqrt(N * p * (1 - p))  # binomial standard deviation of the count, ~93
    for endpoint in (0.0, 1.0):
        count = (t == endpoint).sum().item()
        assert abs(count - N * p) < 3 * sigma, (endpoint, count, N * p)

    interior = t[(t > 0) & (t < 1)].double().numpy()
    assert abs(len(interior) - N * (1 - 2 * p)) < 3 * math.sqrt(N * 2 * p * (1 - 2 * p))
    assert stats.kstest(interior, "uniform").pvalue > 0.01


def test_clamped_uniform_without_eps_never_hits_endpoints_with_mass():
    t = ClampedUniform(eps=0.0)(N, torch.Generator().manual_seed(1))
    # U(0, 1) in float32 hits 0 with probability ~2^-24 per draw and never reaches 1.
    assert (t == 0).sum().item() <= 1 and (t == 1).sum().item() == 0


def test_logit_normal_matches_its_parameters():
    mean, std = 0.5, 1.5
    t = make_sampler("logit_normal", mean=mean, std=std)(N, torch.Generator().manual_seed(2), "cpu")
    assert t.dtype == torch.float32 and ((t > 0) & (t < 1)).all()
    logit = torch.logit(t.double())
    # Standard errors over 200k draws: mean std/sqrt(N) = 0.0034, std ~ std/sqrt(2N) = 0.0024.
    assert logit.mean().item() == pytest.approx(mean, abs=5 * std / math.sqrt(N))
    assert logit.std().item() == pytest.approx(std, abs=5 * std / math.sqrt(2 * N))
    # The default (SD3: mean 0, std 1) is symmetric around t = 0.5.
    assert LogitNormal()(N, torch.Generator().manual_seed(3)).median().item() == pytest.approx(0.5, abs=0.01)


@pytest.mark.parametrize("kind", ["clamped_uniform", "logit_normal"])
def test_seeded_generator_is_deterministic(kind):
    sampler = make_sampler(kind)
    a = sampler(64, torch.Generator().manual_seed(7), "cpu")
    b = sampler(64, torch.Generator().manual_seed(7), "cpu")
    c = sampler(64, torch.Generator().manual_seed(8), "cpu")
    assert torch.equal(a, b) and not torch.equal(a, c)
    gen = torch.Generator().manual_seed(7)
    first, second = sampler(32, gen, "cpu"), sampler(32, gen, "cpu")
    assert torch.equal(torch.cat([first, second]), a)  # a generator's stream continues across calls


def test_cpu_generator_with_other_output_device_moves_the_draws():
    t = make_sampler("clamped_uniform")(8, torch.Generator().manual_seed(0), torch.device("meta"))
    assert t.device.type == "meta" and t.shape == (8,)


def test_bad_arguments_name_the_value():
    with pytest.raises(ValueError, match="kind='uniform': must be one of"):
        make_sampler("uniform")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="eps=-0.1: must be >= 0"):
        make_sampler("clamped_uniform", eps=-0.1)
    with pytest.raises(ValueError, match="std=0.0: must be > 0"):
        make_sampler("logit_normal", std=0.0)
