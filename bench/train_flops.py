"""FLOPs of one FluxIR training step against one FLUX ControlNet training step, counted on the meta device.

Nothing runs for real and nothing is downloaded: FLUX.1-dev's transformer and VAE are built from their
configs on torch's meta device (shapes only), as bench/train_step_gpu.py builds them, and
torch.utils.flop_counter.FlopCounterMode counts every matmul and convolution of one step (forward,
gradient-checkpointing recompute and backward; 2 m n k each, attention included; elementwise ops,
norms and softmax not counted) at 1024x768, batch 1, 512 text tokens:
  fluxir       Trainer.compute_loss and engine.backward (the stage's step), gradient checkpointing on the base, the
               control block and the VAE decoder (train.gradient_checkpointing), with and without L_P
  controlnet   diffusers' FluxControlNetModel with 4 double + 10 single blocks (the default of diffusers'
               train_controlnet_flux.py), trained with the same velocity MSE: its forward and backward
               with weight gradients, and the frozen base's forward with its residuals and backward to
               activations; gradient checkpointing on both
It prints each step's TFLOPs, the pixel loss's share of the FluxIR step, and last
``flops ratio fluxir/controlnet: X`` (FluxIR without the pixel loss, as the ControlNet has none).

    PYTHONPATH=src python bench/train_flops.py                     # FLUX.1-dev shapes
    PYTHONPATH=src python bench/train_flops.py --tiny              # the tiny model: checks the script
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parent))
import train_step_gpu  # noqa: E402  (bench/ is not a package)

TEXT_TOKENS = train_step_gpu.TEXT_TOKENS
META = torch.device("meta")


def fluxir_step_flops(height: int, width: int, batch: int, pixel_loss: bool, tiny: bool) -> float:
    argv = [
        "--height",
        str(height),
        "--width",
        str(width),
        "--batch",
        str(batch),
        "--dtype",
        "float32",
    ]  # no autocast on meta; FLOPs do not depend on dtype
    args = train_step_gpu.parse_args(
        argv + (["--tiny"] if tiny else []) + ([] if pixel_loss else ["--no-pixel-loss"])
    )
    trainer, *_ = train_step_gpu.build(args, META)
    b, h, w = batch, height // 8, width // 8
    z0, z_lq, noise = (torch.randn(b, 16, h, w, device=META) for _ in range(3))
    t = torch.full((b,), 0.5, device=META)
    with FlopCounterMode(display=False) as counter:
        # forward_backward_step without its finite-loss check (a bool of a meta tensor has no value)
        trainer.engine.backward(trainer.compute_loss(z0, z_lq, t, noise).total)
    return float(counter.get_total_flops())


def controlnet_step_flops(height: int, width: int, batch: int, tiny: bool) -> float:
    from diffusers import FluxControlNetModel, FluxPipeline, FluxTransformer2DModel

    from fluxir.benchmark.param_count import FLUX_DEV_TRANSFORMER
    from fluxir.models.tiny import TINY_TRANSFORMER

    cfg = dict(TINY_TRANSFORMER if tiny else FLUX_DEV_TRANSFORMER)
    dtype = torch.float32  # as the FluxIR step: FLOPs do not depend on dtype
    default = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with META:
            base = FluxTransformer2DModel(**cfg).requires_grad_(False)
            control = FluxControlNetModel(**{**cfg, "num_layers": 4, "num_single_layers": 10})
    finally:
        torch.set_default_dtype(default)
    base.enable_gradient_checkpointing()
    control.enable_gradient_checkpointing()
    b, c, h, w = batch, 16, height // 8, width // 8
    pack = FluxPipeline._pack_latents
    z_t, cond, target = (
        pack(torch.randn(b, c, h, w, device=META, dtype=dtype), b, c, h, w) for _ in range(3)
    )
    common = dict(
        encoder_hidden_states=torch.randn(
            b, TEXT_TOKENS, cfg["joint_attention_dim"], device=META, dtype=dtype
        ),
        pooled_projections=torch.randn(b, cfg["pooled_projection_dim"], device=META, dtype=dtype),
        timestep=torch.full((b,), 0.5, device=META, dtype=dtype),
        img_ids=FluxPipeline._prepare_latent_image_ids(b, h // 2, w // 2, META, dtype),
        txt_ids=torch.zeros(TEXT_TOKENS, 3, device=META, dtype=dtype),
        guidance=torch.full((b,), 3.5, device=META, dtype=torch.float32),
    )
    with FlopCounterMode(display=False) as counter:
        block, single = control(hidden_states=z_t, controlnet_cond=cond, return_dict=False, **common)
        v_pred = base(
            hidden_states=z_t,
            controlnet_block_samples=block,
            controlnet_single_block_samples=single,
            return_dict=False,
            **common,
        )[0]
        (v_pred.float() - target.float()).square().mean().backward()
    return float(counter.get_total_flops())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--height", type=int, default=768)
    ap.add_argument("--width", type=int, default=1024)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--tiny", action="store_true", help="tiny FLUX shapes at 96x128 (checks the script)")
    args = ap.parse_args()
    if args.tiny:
        args.height, args.width = min(args.height, 96), min(args.width, 128)
    shape = f"{args.width}x{args.height}, batch {args.batch}, {TEXT_TOKENS} text tokens"
    with_pixel = fluxir_step_flops(args.height, args.width, args.batch, True, args.tiny)
    without = fluxir_step_flops(args.height, args.width, args.batch, False, args.tiny)
    control = controlnet_step_flops(args.height, args.width, args.batch, args.tiny)
    tera = 1e12
    print(f"shapes: {'tiny FLUX' if args.tiny else 'FLUX.1-dev'}, {shape}; counted on the meta device")
    print(f"fluxir step with L_P:    {with_pixel / tera:.2f} TFLOP")
    print(f"fluxir step without L_P: {without / tera:.2f} TFLOP")
    print(f"controlnet step (4 double + 10 single blocks): {control / tera:.2f} TFLOP")
    print(f"pixel loss share of the fluxir step: {(with_pixel - without) / with_pixel:.1%}")
    print(f"flops ratio fluxir/controlnet: {without / control:.2f}")


if __name__ == "__main__":
    main()
