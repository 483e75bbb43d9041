"""Where a restore keeps its weights: on the device, or on the CPU until a module runs (``restore.offload``).

  none        every component on the device.
  model       whole components move to the device when they run and back when the next one starts
              (accelerate's ``cpu_offload_with_hook``, as diffusers' ``enable_model_cpu_offload``): the
              device holds the largest component (the transformer with the adapter) plus the small VAE.
  sequential  weights stay on the CPU and each leaf module's weights visit the device only for its own
              forward (accelerate's ``cpu_offload``, as ``enable_sequential_cpu_offload``): the device holds
              one block at a time, at the price of moving every weight at every model call.

Why not diffusers' own ``enable_model_cpu_offload``: its hook sits on ``FluxTransformer2DModel.forward``,
and :class:`~fluxir.models.controlled.ControlledFlux` never calls that forward (it runs the blocks itself),
so the transformer would never be moved to the device. The model hook here sits on ControlledFlux itself,
whose forward every sampling step does call; the VAE's ``encode``/``decode`` trigger their hooks through
diffusers' ``apply_forward_hook``. Sequential offload hooks every module that owns weights (the blocks'
linears, the adapter's theta), all of which the explicit block loop calls through ``__call__``, so it
works unchanged (tests run the restore with the weights on the meta device to prove no weight is used
outside a hook).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import torch

if TYPE_CHECKING:
    from fluxir.restoration.pipeline import FluxIRPipeline

Offload = Literal["none", "model", "sequential"]
OFFLOADS: tuple[str, ...] = ("none", "model", "sequential")


@dataclass
class OffloadHooks:
    """The model-offload hooks of a pipeline, in the order the components run."""

    hooks: list[Any] = field(default_factory=list)

    def offload_all(self) -> None:
        """Move every hooked component back to the CPU (after each image, as diffusers does)."""
        for hook in self.hooks:
            hook.offload()


def components(pipeline: FluxIRPipeline) -> list[torch.nn.Module]:
    """The modules a restore runs, in order: text encoders (when loaded), the controlled model, the VAE."""
    base = pipeline.base
    encoders = [getattr(base, name, None) for name in ("text_encoder", "text_encoder_2")]
    return [m for m in encoders if m is not None] + [pipeline.model, base.vae]


def place(pipeline: FluxIRPipeline, device: torch.device, offload: Offload) -> OffloadHooks:
    """Put ``pipeline``'s components on ``device`` (``none``) or install the offload hooks of ``offload``."""
    if offload not in OFFLOADS:
        raise ValueError(f"offload {offload!r}: must be one of {', '.join(OFFLOADS)}")
    from accelerate.hooks import remove_hook_from_module

    modules = components(pipeline)
    for module in modules:  # placed before: detaching puts offloaded weights back where they were
        remove_hook_from_module(module, recurse=True)
    if offload == "none":
        for module in modules:
            module.to(device)
        return OffloadHooks()
    if offload == "model":
        from accelerate import cpu_offload_with_hook

        hooks, previous = [], None
        for module in modules:
            module.to("cpu")
            _, previous = cpu_offload_with_hook(module, device, prev_module_hook=previous)
            hooks.append(previous)
        return OffloadHooks(hooks)
    from accelerate import cpu_offload

    for module in modules:
        # Buffers go with the weights only for modules that own weights directly, as diffusers does.
        cpu_offload(module, device, offload_buffers=len(module._parameters) > 0)
    return OffloadHooks()
