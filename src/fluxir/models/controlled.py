"""The frozen base FLUX transformer driven by a FluxIR adapter (paper Fig. 2, eq. 1-4).

``ControlledFlux`` takes exactly the inputs of ``FluxTransformer2DModel.forward`` plus the packed LQ
latent ``control_latents`` and returns the same output. The adapter computes ``f_z, f_p`` once per call;
after base block i the image stream gets ``z_c^i = SE_z^i(f_z)`` and the text stream ``p_c^i = SE_p^i(f_p)``.

Why an explicit block loop and not diffusers' forward: its ``controlnet_block_samples`` add image residuals
only, and forward hooks on the blocks would run inside gradient checkpointing, whose recomputation happens
during backward, after the forward call that set the residuals has returned. The loop below calls
diffusers' own modules in the order ``FluxTransformer2DModel.forward`` (diffusers 0.42.1) does, and adds
the residuals outside the checkpointed blocks. With a zero-initialised adapter it reproduces the base
output bitwise (tested), which also guards against drift from diffusers' forward.
Not supported here: LoRA scaling via ``joint_attention_kwargs["scale"]``, IP-Adapter image embeds, and
diffusers ControlNet residuals.
"""

from __future__ import annotations

from typing import Any

import torch
from diffusers.models.modeling_outputs import Transformer2DModelOutput
from torch import nn

from fluxir.models.adapter import FluxIRAdapter


class ControlledFlux(nn.Module):
    """Base FLUX (frozen) + FluxIR adapter (trainable). Save and load the adapter alone.

    ``trainable_parameters()`` is what an optimiser should get; the base never receives gradients.
    """

    def __init__(self, transformer, adapter: FluxIRAdapter):
        super().__init__()
        adapter.check_compatible(transformer)
        self.transformer = transformer.requires_grad_(False)
        self.adapter = adapter

    def trainable_parameters(self) -> list[nn.Parameter]:
        """Adapter parameters that train (structurally unused ones are frozen; see the adapter module)."""
        return [p for p in self.adapter.parameters() if p.requires_grad]

    def enable_gradient_checkpointing(self) -> None:
        """Recompute each base block and the control block in backward instead of storing activations."""
        self.transformer.enable_gradient_checkpointing()
        self.adapter.enable_gradient_checkpointing()

    def disable_gradient_checkpointing(self) -> None:
        self.transformer.disable_gradient_checkpointing()
        self.adapter.disable_gradient_checkpointing()

    def forward(
        self,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor,
        pooled_projections: torch.Tensor,
        timestep: torch.Tensor,
        img_ids: torch.Tensor,
        txt_ids: torch.Tensor,
        guidance: torch.Tensor | None = None,
        *,
        control_latents: torch.Tensor,
        joint_attention_kwargs: dict[str, Any] | None = None,
        return_dict: bool = True,
    ) -> Transformer2DModelOutput | tuple[torch.Tensor]:
        """Velocity prediction of the controlled model; arguments as ``FluxTransformer2DModel.forward``.

        hidden_states: packed z_t (B, N, C); control_latents: packed z_lq, same shape; encoder_hidden_states:
        T5 p (B, L, joint_dim); pooled_projections: CLIP y (B, pooled); timestep, guidance: (B,).
        """
        base = self.transformer
        if txt_ids.ndim == 3:  # deprecated batched ids, accepted like diffusers does
            txt_ids = txt_ids[0]
        if img_ids.ndim == 3:
            img_ids = img_ids[0]

        # Base embeddings, as in FluxTransformer2DModel.forward.
        img = base.x_embedder(hidden_states)  # (B, N, c)
        t = timestep.to(img.dtype) * 1000
        g = guidance.to(img.dtype) * 1000 if guidance is not None else None
        temb = (
            base.time_text_embed(t, pooled_projections)
            if g is None
            else base.time_text_embed(t, g, pooled_projections)
        )
        txt = base.context_embedder(encoder_hidden_states)  # (B, L, c)
        rope = base.pos_embed(torch.cat((txt_ids, img_ids), dim=0))  # (L + N, head_dim) cos, sin

        # Control features from the adapter (eq. 1-2).
        f_z, f_p = self.adapter(
            hidden_states,
            control_latents,
            encoder_hidden_states,
            pooled_projections,
            timestep,
            rope,
            guidance,
        )  # (B, N, c), (B, L, c)

        # 19 double then 38 single blocks; each followed by its control residuals (eq. 4).
        blocks = [*base.transformer_blocks, *base.single_transformer_blocks]
        for i, block in enumerate(blocks):
            if torch.is_grad_enabled() and base.gradient_checkpointing:
                txt, img = base._gradient_checkpointing_func(
                    block, img, txt, temb, rope, joint_attention_kwargs
                )
            else:
                txt, img = block(
                    hidden_states=img,
                    encoder_hidden_states=txt,
                    temb=temb,
                    image_rotary_emb=rope,
                    joint_attention_kwargs=joint_attention_kwargs,
                )
            z_res, p_res = self.adapter.residuals(i, f_z, f_p)
            img = img + z_res.to(img.dtype)  # (B, N, c)
            if p_res is not None:  # after the last block FLUX drops txt, so that p_res has no effect
                txt = txt + p_res.to(txt.dtype)  # (B, L, c)

        img = base.norm_out(img, temb)
        output = base.proj_out(img)  # (B, N, C)
        return Transformer2DModelOutput(sample=output) if return_dict else (output,)
