"""FluxIR adapter: one MM-DiT block plus squeeze-and-excitation layers that steer a frozen FLUX (eq. 1-4).

    z_c       = z_t + M_i(z_lq)                     eq. 1   (packed latents, 64 channels at FLUX.1 size)
    p_c, y_c  = p + theta_p, y + theta_y                    (T5 and pooled-CLIP embeddings)
    f_z, f_p  = D(z_c, p_c, y_c, t)                 eq. 2   (D: copy of FLUX's first double block)
    SE(x)     = W_e (W_s x + B_s) + B_e             eq. 3   (W_e, B_e zero: no effect at initialisation)
    z_c^i, p_c^i = SE_z^i(f_z), SE_p^i(f_p)         eq. 4   (added to base block i's image / text output)

This module only computes features and residuals; ``fluxir.models.controlled`` adds them to the base.
The FLUX blocks and embedders are diffusers' own classes, copied with their weights (never forked).

Choice of ``M_i`` (the paper says only "an MLP initialised to zero"): one zero-initialised
``Linear(in_channels, in_channels)`` on the packed LQ latent, so ``z_c`` stays in the packed latent space
and passes through the adapter's own copy of ``x_embedder`` exactly as ``z_t`` does in FLUX. At FLUX.1-dev
size it adds 4,160 parameters, keeping the adapter without SE layers at 387.0M as in Table 2 (a
64->3072->3072 MLP would add 9.6M and miss it).

Variants (ablations): ``control="single_mlp"`` replaces the per-block SE layers with one full-rank MLP per
stream shared by every block (Table 5); ``text_control=False`` drops SE_p (Table 6); ``learnable_embeddings
=False`` drops theta_p and theta_y (Table 6).

Parameters that structurally never receive a gradient are frozen (``requires_grad=False``) at
construction, so optimisers and DDP see only parameters that train; they are kept so the parameter count
matches the paper, and they are saved and loaded like the rest:
- SE_p of the base's last block: FLUX discards the text stream after its last block, so that residual
  never reaches the output.
- with ``text_control=False``, the control block's text-only path: f_p is unused, so are the text
  queries (``attn.add_q_proj``, ``attn.norm_added_q``: they only produce text-token outputs), the text
  output projection ``attn.to_add_out`` and ``ff_context``. Text keys and values still shape f_z through
  joint attention, so the rest of the block trains.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.embeddings import (
    CombinedTimestepGuidanceTextProjEmbeddings,
    CombinedTimestepTextProjEmbeddings,
)
from diffusers.models.modeling_utils import ModelMixin
from diffusers.models.transformers.transformer_flux import FluxTransformerBlock
from torch import nn

from fluxir.errors import UserError
from fluxir.models.adapter_files import StoredPrompt, load_ema, load_prompt, save_prompt

Control = Literal["se", "single_mlp"]
CONTROLS = ("se", "single_mlp")

# The base-model shape an adapter is tied to: adapter config key -> FluxTransformer2DModel config key.
_BASE_KEYS = (
    "in_channels",
    "num_layers",
    "num_single_layers",
    "attention_head_dim",
    "num_attention_heads",
    "joint_attention_dim",
    "pooled_projection_dim",
    "guidance_embeds",
)


class SELayer(nn.Module):
    """``SE(x) = W_e (W_s x + B_s) + B_e`` (eq. 3), no non-linearity; ``rank=None`` is one full-rank Linear.

    The excitation (``W_e``, ``B_e``) starts at zero, so the layer outputs zeros until it has trained.
    """

    def __init__(self, dim: int, rank: int | None):
        super().__init__()
        self.squeeze = nn.Linear(dim, rank) if rank is not None else None  # W_s: r x c, B_s: r
        self.excite = nn.Linear(rank if rank is not None else dim, dim)  # W_e: c x r, B_e: c
        nn.init.zeros_(self.excite.weight)
        nn.init.zeros_(self.excite.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.excite(self.squeeze(x) if self.squeeze is not None else x)


class AdapterMismatchError(UserError, ValueError):
    """An adapter loaded into a base FLUX of another shape (e.g. trained on the tiny model, used on FLUX.1-dev)."""


class FluxIRAdapter(ModelMixin, ConfigMixin):
    """Trainable FluxIR adapter for a FLUX transformer of the shape given in its config.

    Build it from a base with :meth:`from_flux`; ``save_pretrained`` / ``from_pretrained`` store the base
    shape and the variant in ``config.json`` beside the safetensors weights, so loading rebuilds the same
    variant, and :meth:`check_compatible` refuses a base of another shape.
    """

    _supports_gradient_checkpointing = True
    stored_prompt: StoredPrompt | None = None
    """The empty-prompt conditioning saved with the adapter (``prompt.safetensors``), if any."""

    @register_to_config
    def __init__(
        self,
        in_channels: int = 64,
        num_layers: int = 19,
        num_single_layers: int = 38,
        attention_head_dim: int = 128,
        num_attention_heads: int = 24,
        joint_attention_dim: int = 4096,
        pooled_projection_dim: int = 768,
        guidance_embeds: bool = True,
        max_sequence_length: int = 512,
        rank: int | None = 32,
        control: Control = "se",
        text_control: bool = True,
        learnable_embeddings: bool = True,
    ):
        super().__init__()
        if control not in CONTROLS:
            raise ValueError(f"control={control!r}: must be one of {', '.join(CONTROLS)}")
        if rank is not None and (isinstance(rank, bool) or not isinstance(rank, int) or rank < 1):
            raise ValueError(f"rank={rank!r}: must be a positive integer, or None for full rank")
        if control == "single_mlp" and rank is not None:
            raise ValueError(
                f"rank={rank}: control 'single_mlp' is one full-rank MLP (Table 5); use rank=None"
            )
        dim = num_attention_heads * attention_head_dim
        self.num_blocks = num_layers + num_single_layers

        # Input side (eq. 1-2): copies of FLUX's embedders and first double block, plus M_i and theta.
        self.x_embedder = nn.Linear(in_channels, dim)
        self.context_embedder = nn.Linear(joint_attention_dim, dim)
        time_text_cls = (
            CombinedTimestepGuidanceTextProjEmbeddings
            if guidance_embeds
            else CombinedTimestepTextProjEmbeddings
        )
        self.time_text_embed = time_text_cls(embedding_dim=dim, pooled_projection_dim=pooled_projection_dim)
        self.control_block = FluxTransformerBlock(dim, num_attention_heads, attention_head_dim)
        self.lq_mlp = nn.Linear(in_channels, in_channels)  # M_i, zero: z_c = z_t at initialisation
        nn.init.zeros_(self.lq_mlp.weight)
        nn.init.zeros_(self.lq_mlp.bias)
        if learnable_embeddings:
            self.theta_p = nn.Parameter(torch.zeros(max_sequence_length, joint_attention_dim))
            self.theta_y = nn.Parameter(torch.zeros(pooled_projection_dim))
        else:
            self.theta_p = self.theta_y = None

        # Output side (eq. 3-4): one SE pair per base block, or one MLP per stream shared by all blocks.
        n_layers = self.num_blocks if control == "se" else 1
        self.se_z = nn.ModuleList(SELayer(dim, rank) for _ in range(n_layers))
        self.se_p = nn.ModuleList(SELayer(dim, rank) for _ in range(n_layers)) if text_control else None

        self.gradient_checkpointing = False
        for name in self.structurally_unused_parameters():
            self.get_parameter(name).requires_grad_(False)

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_flux(
        cls,
        transformer,
        rank: int | None = 32,
        control: Control = "se",
        text_control: bool = True,
        learnable_embeddings: bool = True,
        max_sequence_length: int = 512,
        dtype: torch.dtype | None = None,
    ) -> FluxIRAdapter:
        """Build an adapter for ``transformer`` (a diffusers ``FluxTransformer2DModel``).

        The control block and the three embedders start as copies of the base's (``transformer_blocks[0]``,
        ``x_embedder``, ``context_embedder``, ``time_text_embed``). The adapter is created on the base's
        device and in ``dtype`` (default: the base's). A base on the meta device gives a weightless adapter
        of the right shape, for counting parameters. ``rank`` applies to ``control="se"``; ``single_mlp``
        is always full rank (Table 5), so ``rank`` is ignored there.
        """
        base = transformer.config
        adapter_config = {key: base[key] for key in _BASE_KEYS}
        with torch.device(transformer.device):
            adapter = cls(
                **adapter_config,
                max_sequence_length=max_sequence_length,
                rank=rank if control == "se" else None,
                control=control,
                text_control=text_control,
                learnable_embeddings=learnable_embeddings,
            )
        if transformer.device.type != "meta":
            adapter.control_block.load_state_dict(transformer.transformer_blocks[0].state_dict())
            adapter.x_embedder.load_state_dict(transformer.x_embedder.state_dict())
            adapter.context_embedder.load_state_dict(transformer.context_embedder.state_dict())
            adapter.time_text_embed.load_state_dict(transformer.time_text_embed.state_dict())
        dtype = dtype or transformer.dtype
        if adapter.dtype != dtype:
            # nn.Module.to: ModelMixin.to warns about fp32 modules on any dtype cast, and this model has none.
            nn.Module.to(adapter, dtype)
        return adapter

    # ------------------------------------------------------------------ files
    def save_pretrained(self, save_directory, *args, **kwargs) -> None:
        """diffusers' ``save_pretrained``, plus ``prompt.safetensors`` when :attr:`stored_prompt` is set."""
        super().save_pretrained(save_directory, *args, **kwargs)
        if self.stored_prompt is not None:
            save_prompt(save_directory, self.stored_prompt)

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *args, use_ema: bool = True, **kwargs):
        """diffusers' ``from_pretrained``; from a local folder also the stored prompt and, unless
        ``use_ema=False``, the EMA weights in place of the raw ones (see ``fluxir.models.adapter_files``)."""
        adapter = super().from_pretrained(pretrained_model_name_or_path, *args, **kwargs)
        folder = Path(pretrained_model_name_or_path) / (kwargs.get("subfolder") or "")
        if folder.is_dir():
            adapter.stored_prompt = load_prompt(folder)
            ema = load_ema(folder) if use_ema else None
            if ema is not None:
                with torch.no_grad():
                    adapter.load_state_dict(ema)  # copies into the loaded dtype and device
        return adapter

    def structurally_unused_parameters(self) -> list[str]:
        """Names of parameters no loss can reach (see the module docstring); they are kept frozen."""
        names = []
        if self.se_p is not None and self.config.control == "se":
            names += [f"se_p.{self.num_blocks - 1}.{n}" for n, _ in self.se_p[-1].named_parameters()]
        if self.se_p is None:
            for sub in ("attn.add_q_proj", "attn.norm_added_q", "attn.to_add_out", "ff_context"):
                module = self.control_block.get_submodule(sub)
                names += [f"control_block.{sub}.{n}" for n, _ in module.named_parameters()]
        return names

    def check_compatible(self, transformer) -> None:
        """Raise AdapterMismatchError (one line) unless ``transformer`` has the shape this adapter was built for."""
        base = transformer.config
        mismatched = [k for k in _BASE_KEYS if self.config[k] != base[k]]
        if mismatched:
            raise AdapterMismatchError(
                f"adapter was built for hidden size {_describe(self.config)}; this base has {_describe(base)} "
                f"(differs in {', '.join(mismatched)})"
            )

    # ------------------------------------------------------------------ forward
    def forward(
        self,
        hidden_states: torch.Tensor,
        control_latents: torch.Tensor,
        encoder_hidden_states: torch.Tensor,
        pooled_projections: torch.Tensor,
        timestep: torch.Tensor,
        image_rotary_emb: tuple[torch.Tensor, torch.Tensor],
        guidance: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Control features ``(f_z, f_p)`` (eq. 1-2) from the same inputs the base gets, plus z_lq.

        hidden_states: packed z_t (B, N, C); control_latents: packed z_lq (B, N, C); encoder_hidden_states:
        T5 p (B, L, joint_dim) with L <= max_sequence_length; pooled_projections: CLIP y (B, pooled);
        timestep and guidance as FLUX takes them (t in [0, 1]); image_rotary_emb: the base's RoPE for
        ``cat(txt_ids, img_ids)``. Returns f_z (B, N, c) and f_p (B, L, c), c the hidden size.
        """
        dtype = self.x_embedder.weight.dtype
        z_t, z_lq = hidden_states.to(dtype), control_latents.to(dtype)
        p, y = encoder_hidden_states.to(dtype), pooled_projections.to(dtype)
        if z_lq.shape != z_t.shape:
            raise ValueError(
                f"control_latents {tuple(z_lq.shape)} must have the shape of hidden_states {tuple(z_t.shape)}"
            )
        text_len = p.shape[1]
        if text_len > self.config.max_sequence_length:
            raise ValueError(
                f"text length {text_len} exceeds the adapter's max_sequence_length {self.config.max_sequence_length}"
            )

        z_c = z_t + self.lq_mlp(z_lq)  # (B, N, C)                     eq. 1
        if self.theta_p is not None:
            p = p + self.theta_p[:text_len]  # (B, L, joint_dim)        p_c
            y = y + self.theta_y  # (B, pooled)                        y_c
        img = self.x_embedder(z_c)  # (B, N, c)
        txt = self.context_embedder(p)  # (B, L, c)
        t = timestep.to(dtype) * 1000  # FLUX's timestep scale
        temb = (
            self.time_text_embed(t, y)
            if guidance is None
            else self.time_text_embed(t, guidance.to(dtype) * 1000, y)
        )  # (B, c)
        if torch.is_grad_enabled() and self.gradient_checkpointing:
            f_p, f_z = self._gradient_checkpointing_func(self.control_block, img, txt, temb, image_rotary_emb)
        else:
            f_p, f_z = self.control_block(
                hidden_states=img, encoder_hidden_states=txt, temb=temb, image_rotary_emb=image_rotary_emb
            )  # eq. 2
        return f_z, f_p

    def residuals(
        self, index: int, f_z: torch.Tensor, f_p: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``(z_c^i, p_c^i)`` for base block ``index`` (eq. 4); ``p_c^i`` is None without text control.

        Blocks are numbered as FLUX runs them: double blocks first, then single blocks.
        """
        layer = index if self.config.control == "se" else 0  # single_mlp: one layer shared by all
        z_res = self.se_z[layer](f_z)  # (B, N, c)
        p_res = self.se_p[layer](f_p) if self.se_p is not None else None  # (B, L, c)
        return z_res, p_res


def _describe(config) -> str:
    hidden = config["num_attention_heads"] * config["attention_head_dim"]
    return (
        f"{hidden} x {config['num_layers'] + config['num_single_layers']} blocks "
        f"({config['num_layers']} double + {config['num_single_layers']} single, in_channels {config['in_channels']}, "
        f"joint_attention_dim {config['joint_attention_dim']}, pooled {config['pooled_projection_dim']}, "
        f"guidance_embeds {config['guidance_embeds']})"
    )


def count_parameters(adapter: FluxIRAdapter) -> dict[str, int]:
    """Parameter counts as in Table 2: ``without_se`` (block, embedders, M_i, theta), ``se``, ``total``.

    ``se`` counts the SE layers of both streams, or the shared MLPs of ``control="single_mlp"``. Frozen,
    structurally unused parameters are counted: they are part of the architecture the paper counts.
    """
    se = sum(p.numel() for name, p in adapter.named_parameters() if name.startswith(("se_z.", "se_p.")))
    total = sum(p.numel() for p in adapter.parameters())
    return {"without_se": total - se, "se": se, "total": total}
