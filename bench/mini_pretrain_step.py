"""Time one training step of the mini VAE on one and on two torch threads, and AdamW's update alone.

``pretrain.threads`` and ``pretrain.vae_steps`` are chosen from these figures: the pretrain must fit its
30 minutes on a 2-core machine. Each row is the mean of ``--steps`` steps after 10 warm-up steps, of the
real step (``fluxir.pretrain.vae.vae_loss`` on random crops of the configured size and batch, backward,
AdamW), with crops cut from random images: the cost depends on the shapes, not the pixels. Ratios are
against the one-thread step measured in the same run. Run it on an otherwise idle machine: two threads
beside a busy core wait on each other, and the ratio shows that instead.

    python bench/mini_pretrain_step.py                       # mini/params.yaml's pretrain section
    python bench/mini_pretrain_step.py --set pretrain.vae_batch=8
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from fluxir.config import PretrainConfig, load_config, parse_override
from fluxir.pretrain import crops as C
from fluxir.pretrain import vae as V

WARMUP = 10


def _vae_step_ms(cfg: PretrainConfig, threads: int, steps: int, fused: bool = True) -> float:
    torch.set_num_threads(threads)
    vae = V.build_vae(cfg)
    rng = np.random.default_rng(0)
    photos = {f"p{i}": rng.integers(0, 256, (256, 384, 3), dtype=np.uint8) for i in range(4)}
    images = C.build_pyramids(photos, cfg.pyramid_levels, cfg.vae_crop)
    optimizer = torch.optim.AdamW(vae.parameters(), lr=1e-5, fused=fused)

    def step(i: int) -> None:
        r = C.step_rng(cfg.seed, V.VAE_STREAM, i)
        x = C.random_crops(images, cfg.vae_batch, cfg.vae_crop, r)
        loss = V.vae_loss(vae, x, C.torch_generator(r), cfg.vae_kl_weight, cfg.vae_mse_weight)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    for i in range(WARMUP):
        step(i)
    start = time.perf_counter()
    for i in range(steps):
        step(WARMUP + i)
    return (time.perf_counter() - start) / steps * 1000


def _adamw_ms(cfg: PretrainConfig, threads: int, fused: bool, steps: int = 50) -> float:
    torch.set_num_threads(threads)
    vae = V.build_vae(cfg)
    optimizer = torch.optim.AdamW(vae.parameters(), lr=1e-5, fused=fused)
    for p in vae.parameters():
        p.grad = torch.randn_like(p) * 1e-3
    for _ in range(5):
        optimizer.step()
    start = time.perf_counter()
    for _ in range(steps):
        optimizer.step()
    return (time.perf_counter() - start) / steps * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", default="mini/params.yaml")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--steps", type=int, default=60)
    args = parser.parse_args()
    cfg = load_config(args.params, dict(parse_override(item) for item in args.set))
    p = cfg.pretrain
    print(f"VAE step: {p.vae_batch} crops of {p.vae_crop} px, widths {list(p.vae_widths)}")
    one = _vae_step_ms(p, 1, args.steps)
    two = _vae_step_ms(p, 2, args.steps)
    print(f"  1 thread    {one:7.1f} ms/step  1.00x (speed against one thread)")
    print(f"  2 threads   {two:7.1f} ms/step  {one / two:.2f}x")
    print(
        f"  {p.vae_steps} steps on {p.threads} thread(s): about {(one if p.threads == 1 else two) * p.vae_steps / 60e3:.1f} min"
    )
    loop, fused = _adamw_ms(p, 2, fused=False), _adamw_ms(p, 2, fused=True)
    print(
        f"AdamW update alone, 2 threads: for-loop {loop:.1f} ms, fused {fused:.1f} ms ({loop / fused:.1f}x)"
    )


if __name__ == "__main__":
    main()
