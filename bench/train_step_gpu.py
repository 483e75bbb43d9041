"""One FluxIR training step at FLUX.1-dev size on one GPU: step time, peak memory and achieved TFLOP/s.

Nothing is downloaded. FLUX.1-dev's transformer (19 double + 38 single blocks, hidden 3072, 24 heads of
128, T5 width 4096, pooled 768, guidance embedding) is built from its config with random bf16 weights
directly on the GPU; the FluxIR adapter (rank 32, Table 2: 387M + 22.8M) is built from it with fp32
master weights; the VAE has FLUX.1's config (16 latent channels, [128, 256, 512, 512]) with random
weights, and only its decoder runs (the pixel loss, eq. 9). Latents, noise and the empty-prompt
embeddings are random tensors of the real shapes: 1024x768 pixels -> 16 x 96 x 128 latent -> 3072
image tokens, plus 512 text tokens. The step is ``Trainer.forward_backward_step`` + torch AdamW
(``TorchEngine``, bf16 autocast), with gradient checkpointing on the base, the control block and the
VAE decoder, exactly as ``fluxir train`` runs with ``train.engine: torch``.

FLOPs, per step (whole batch). With N = N_img + N_txt tokens, D = 3072 hidden, r = SE rank, 57 blocks:
  one block's forward   L + A,  L = 24 D^2 N (per token, multiply-adds: qkv 3D^2 + output D^2 + MLP 8D^2 =
                        12 D^2, x2 FLOPs), A = 4 D N^2 (QK^T and PV over the joint sequence); AdaLN
                        modulation acts on one vector per image: ignored
  model FLOPs (no recompute, the MFU convention):
    frozen base         57 (2 L + 3 A)   forward + backward to activations only (no weight gradients):
                                         linears 1x, attention 2x
    adapter (trained)   3 (L + A + S),   S = 57 x 4 D r N (SE squeeze + excite, both streams)
    VAE decoder         3 V              V = its forward, counted by torch: target decode (no grad),
                                         prediction decode and the backward to activations
  executed FLOPs with gradient checkpointing add one forward of each: 57 (3 L + 4 A) + 4 (L + A + S) + 4 V.
  counted: torch.utils.flop_counter.FlopCounterMode over one real step: 2 m n k for every matmul and
    convolution that ran (forward, recompute and backward, attention included); elementwise ops, norms and
    softmax are not counted. It should come out close to the executed figure above.
Achieved TFLOP/s = FLOPs / mean step time, printed for the model, executed and counted FLOPs.

    PYTHONPATH=src python bench/train_step_gpu.py [--batch 1] [--height 768 --width 1024] [--steps 3]
    PYTHONPATH=src python bench/train_step_gpu.py --tiny      # check the script on CPU (tiny model)

Needs only torch, diffusers and this repository's src/ (no DeepSpeed).
"""

from __future__ import annotations

import argparse
import sys
import time

import torch

TEXT_TOKENS = 512


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=1, help="images per step (default 1)")
    parser.add_argument("--height", type=int, default=768)
    parser.add_argument("--width", type=int, default=1024)
    parser.add_argument("--rank", type=int, default=32, help="SE rank (paper: 32)")
    parser.add_argument("--steps", type=int, default=3, help="timed steps after 2 warm-up steps")
    parser.add_argument("--no-pixel-loss", action="store_true", help="MSE only (no VAE decoder)")
    parser.add_argument("--engine", choices=("torch", "deepspeed"), default="torch",
                        help="torch AdamW (default) or DeepSpeed ZeRO-2 (needs deepspeed; one process)")  # fmt: skip
    parser.add_argument(
        "--dtype",
        choices=("auto", "bfloat16", "float32"),
        default="auto",
        help="base model dtype; auto: bfloat16 on the GPU, float32 on CPU",
    )
    parser.add_argument(
        "--cudnn-sdpa",
        action="store_true",
        help="allow cuDNN's attention kernels (off: its backward failed on an H200, torch 2.11)",
    )
    parser.add_argument(
        "--tiny", action="store_true", help="tiny FLUX shapes, 128x96, CPU allowed: checks the script"
    )
    return parser.parse_args(argv)


def analytic_step_flops(
    n_img: int, n_txt: int, dim: int, blocks: int, rank: int, batch: int, decoder_fwd: float
) -> dict[str, float]:
    """Model and executed FLOPs of one step (formula in the module docstring); ``decoder_fwd`` is per batch."""
    n = n_img + n_txt
    linear, attention, se = 24 * dim**2 * n, 4 * dim * n**2, blocks * 4 * dim * rank * n
    model = {
        "base": batch * blocks * (2 * linear + 3 * attention),
        "adapter": batch * 3 * (linear + attention + se),
        "decoder": 3 * decoder_fwd,
    }
    recompute = batch * (blocks * (linear + attention) + linear + attention + se) + decoder_fwd
    return {**model, "model": sum(model.values()), "executed": sum(model.values()) + recompute}


def build(args: argparse.Namespace, device: torch.device):
    from diffusers import AutoencoderKL, FluxTransformer2DModel

    from fluxir.benchmark.param_count import FLUX_DEV_TRANSFORMER
    from fluxir.config import Config, TrainConfig
    from fluxir.models.adapter import FluxIRAdapter
    from fluxir.models.controlled import ControlledFlux
    from fluxir.models.tiny import TINY_TRANSFORMER, TINY_VAE
    from fluxir.train.engine import build_engine, init_world
    from fluxir.train.losses import vae_decoder
    from fluxir.train.trainer import Prompt, Trainer

    auto = torch.bfloat16 if device.type == "cuda" else torch.float32
    dtype = auto if args.dtype == "auto" else getattr(torch, args.dtype)
    # FLUX.1-dev's VAE: the tiny VAE's layout (4 blocks, 16 latent channels, scaling and shift) at full width.
    flux_dev_vae = {
        **TINY_VAE,
        "block_out_channels": (128, 256, 512, 512),
        "layers_per_block": 2,
        "norm_num_groups": 32,
        "sample_size": 1024,
    }
    transformer_cfg, vae_cfg = (
        (TINY_TRANSFORMER, TINY_VAE) if args.tiny else (FLUX_DEV_TRANSFORMER, flux_dev_vae)
    )
    torch.manual_seed(0)
    default = torch.get_default_dtype()
    torch.set_default_dtype(dtype)  # random init straight in bf16 on the GPU: no fp32 copy of 12B weights
    try:
        with torch.device(device):
            transformer = FluxTransformer2DModel(**transformer_cfg).eval().requires_grad_(False)
            vae = AutoencoderKL(**vae_cfg).eval().requires_grad_(False)
    finally:
        torch.set_default_dtype(default)
    adapter = FluxIRAdapter.from_flux(
        transformer, rank=args.rank, max_sequence_length=TEXT_TOKENS, dtype=torch.float32
    )
    model = ControlledFlux(transformer, adapter)
    model.enable_gradient_checkpointing()
    vae.enable_gradient_checkpointing()

    config = Config(
        train=TrainConfig(
            engine=args.engine, lr=1e-5, batch_size=args.batch, pixel_loss=not args.no_pixel_loss
        )
    )
    world = init_world(args.engine, str(device))
    engine = build_engine(model, config.train, world, dtype)
    joint, pooled = transformer_cfg["joint_attention_dim"], transformer_cfg["pooled_projection_dim"]
    prompt = Prompt(
        embeds=torch.randn(1, TEXT_TOKENS, joint, device=device, dtype=dtype),
        pooled=torch.randn(1, pooled, device=device, dtype=dtype),
        text_ids=torch.zeros(TEXT_TOKENS, 3, device=device, dtype=dtype),
    )
    decode = None if args.no_pixel_loss else vae_decoder(vae)
    trainer = Trainer(config, model, engine, world, prompt, decode, compute_dtype=dtype, latent_channels=16)
    return trainer, transformer, adapter, vae, dtype


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if not torch.cuda.is_available() and not args.tiny:
        print(
            "train_step_gpu: no CUDA device found; this benchmark needs a GPU (use --tiny to check the script on CPU)"
        )
        return 2
    if args.height % 16 or args.width % 16:
        print(f"train_step_gpu: --height {args.height} and --width {args.width} must be multiples of 16")
        return 2
    if args.tiny:
        args.height, args.width = min(args.height, 96), min(args.width, 128)
    from torch.utils.flop_counter import FlopCounterMode

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.type == "cuda" and not args.cudnn_sdpa:
        # torch 2.11 on an H200 picked cuDNN attention, whose backward stopped with "mha_graph.execute(...)
        # .is_good()" (an illegal memory access without CUDA_LAUNCH_BLOCKING); flash attention works.
        torch.backends.cuda.enable_cudnn_sdp(False)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    trainer, transformer, adapter, vae, dtype = build(args, device)
    b, h, w = args.batch, args.height // 8, args.width // 8
    generator = torch.Generator().manual_seed(0)

    def step() -> float:
        z0, z_lq, noise = (torch.randn(b, 16, h, w, generator=generator).to(device) for _ in range(3))
        t = trainer.sampler(b, generator).to(device)
        terms = trainer.forward_backward_step(z0, z_lq, t, noise)
        trainer.engine.step()
        return terms.total.item()

    for _ in range(2):  # warm-up: kernels, allocator, optimizer state
        step()
    decoder_fwd = 0.0
    if trainer.decode is not None:
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            trainer.decode(torch.randn(b, 16, h, w, device=device))
        decoder_fwd = counter.get_total_flops()
    with FlopCounterMode(display=False) as counter:
        step()
    counted = counter.get_total_flops()

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    times, losses = [], []
    for _ in range(args.steps):
        sync()
        start = time.perf_counter()
        losses.append(step())
        sync()
        times.append(time.perf_counter() - start)
    mean = sum(times) / len(times)
    peak = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else float("nan")

    cfg = transformer.config
    dim = cfg.num_attention_heads * cfg.attention_head_dim
    blocks = cfg.num_layers + cfg.num_single_layers
    flops = analytic_step_flops(h * w // 4, TEXT_TOKENS, dim, blocks, args.rank, b, decoder_fwd)
    params = sum(p.numel() for p in transformer.parameters())
    trained = sum(p.numel() for p in adapter.parameters() if p.requires_grad)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    print(f"device             {name}; torch {torch.__version__}; {dtype}; engine {args.engine}")
    print(
        f"model              base {params / 1e9:.2f}B frozen, adapter {trained / 1e6:.1f}M trained (rank {args.rank})"
    )
    print(
        f"batch              {b} x {args.width}x{args.height} px = {h * w // 4} image + {TEXT_TOKENS} text tokens; "
        f"pixel loss {'on' if trainer.decode is not None else 'off'}; gradient checkpointing on"
    )
    print(
        f"step time          {mean * 1000:.1f} ms mean, {min(times) * 1000:.1f} ms min over {len(times)} steps"
    )
    print(f"peak memory        {peak:.2f} GiB allocated")
    print(f"throughput         {b / mean:.3f} images/s")
    tera = 1e12
    print(
        f"FLOPs model        {flops['model'] / tera:.2f} TFLOP/step (base {flops['base'] / tera:.2f}, adapter "
        f"{flops['adapter'] / tera:.2f}, VAE decoder {flops['decoder'] / tera:.2f}) -> "
        f"{flops['model'] / mean / tera:.1f} TFLOP/s"
    )
    print(
        f"FLOPs executed     {flops['executed'] / tera:.2f} TFLOP/step with recompute -> "
        f"{flops['executed'] / mean / tera:.1f} TFLOP/s"
    )
    print(
        f"FLOPs counted      {counted / tera:.2f} TFLOP/step by torch -> {counted / mean / tera:.1f} TFLOP/s"
    )
    print(f"loss               {losses[0]:.4f} .. {losses[-1]:.4f} (random weights and data: not meaningful)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
