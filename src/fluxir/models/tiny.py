"""A tiny FLUX-architecture pipeline with seeded random weights, built from config.

No FLUX.1 weights can be fetched on an offline machine, so the project builds its own stand-in: every
component FLUX.1-dev has (MM-DiT transformer with double and single blocks, a 16-channel VAE, CLIP and
T5 text encoders with their tokenizers, the flow-matching scheduler), each a few thousand parameters,
saved in diffusers format. It is then loaded with the very ``from_pretrained`` call used for a real
FLUX.1-dev snapshot (``fluxir.models.flux.load_flux``), so every code path is exercised for real.

A random-weight model proves plumbing, not quality: nothing generated or scored with it means anything.
The same seed gives bitwise-identical weight files.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import torch
from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, FluxPipeline, FluxTransformer2DModel
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer, T5Config, T5EncoderModel, T5Tokenizer

# Sizes from diffusers' own Flux tests (tests/models/transformers/test_models_transformer_flux.py):
# one block of each type, head_dim 16, 2 heads; rope axes must sum to head_dim.
TINY_TRANSFORMER = dict(
    patch_size=1,
    in_channels=64,  # 16 latent channels x 2x2 packing, as in FLUX.1-dev
    num_layers=1,
    num_single_layers=1,
    attention_head_dim=16,
    num_attention_heads=2,
    joint_attention_dim=32,
    pooled_projection_dim=32,
    guidance_embeds=True,  # FLUX.1-dev is guidance-distilled
    axes_dims_rope=(4, 4, 8),
)
# FLUX.1-dev's VAE is 4 blocks (x8 downsampling) with 16 latent channels and no quant convs.
TINY_VAE = dict(
    in_channels=3,
    out_channels=3,
    down_block_types=("DownEncoderBlock2D",) * 4,
    up_block_types=("UpDecoderBlock2D",) * 4,
    block_out_channels=(8, 16, 16, 16),
    layers_per_block=1,
    norm_num_groups=8,
    latent_channels=16,
    shift_factor=0.1159,
    scaling_factor=0.3611,
    use_quant_conv=False,
    use_post_quant_conv=False,
)
# FLUX.1-dev's scheduler_config.json.
FLUX_SCHEDULER = dict(
    num_train_timesteps=1000,
    shift=3.0,
    use_dynamic_shifting=True,
    base_shift=0.5,
    max_shift=1.15,
    base_image_seq_len=256,
    max_image_seq_len=4096,
)

_CHARS = "abcdefghijklmnopqrstuvwxyz0123456789 .,!?'-"


def _byte_level_alphabet() -> list[str]:
    """GPT-2/CLIP byte-to-unicode table: the 256 printable stand-ins for raw bytes."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
    printable += list(range(ord("®"), ord("ÿ") + 1))
    chars, extra = [], 0
    for b in range(256):
        if b in printable:
            chars.append(chr(b))
        else:
            chars.append(chr(256 + extra))
            extra += 1
    return chars


def build_clip_tokenizer() -> CLIPTokenizer:
    """A byte-level BPE tokenizer in CLIP's format with no merges: every byte is a token.

    It tokenises any text (so prompts never fail), like CLIP's own, just without learned merges.
    """
    alphabet = _byte_level_alphabet()
    tokens = alphabet + [c + "</w>" for c in alphabet] + ["<|startoftext|>", "<|endoftext|>"]
    vocab = {tok: i for i, tok in enumerate(tokens)}
    return CLIPTokenizer(vocab=vocab, merges=[], model_max_length=77)


def build_t5_tokenizer() -> T5Tokenizer:
    """A unigram tokenizer in T5's format over single characters (no training data needed)."""
    pieces = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("▁", -2.0)]
    pieces += [(c, -3.0) for c in _CHARS if c != " "]
    pieces += [("▁" + c, -2.5) for c in _CHARS if c != " "]
    return T5Tokenizer(vocab=pieces, extra_ids=0, model_max_length=512)


def build_tiny_pipeline(seed: int = 0) -> FluxPipeline:
    """Construct the tiny FLUX pipeline in memory; each component is seeded so the result is exact."""
    clip_tok, t5_tok = build_clip_tokenizer(), build_t5_tokenizer()

    torch.manual_seed(seed)
    transformer = FluxTransformer2DModel(**TINY_TRANSFORMER)
    torch.manual_seed(seed + 1)
    vae = AutoencoderKL(**TINY_VAE)
    torch.manual_seed(seed + 2)
    clip = CLIPTextModel(
        CLIPTextConfig(
            vocab_size=len(clip_tok),
            hidden_size=32,  # = transformer.pooled_projection_dim (FLUX takes CLIP's pooled output)
            intermediate_size=37,
            num_hidden_layers=2,
            num_attention_heads=4,
            max_position_embeddings=77,
            bos_token_id=clip_tok.bos_token_id,
            eos_token_id=clip_tok.eos_token_id,
            pad_token_id=clip_tok.pad_token_id,
            projection_dim=32,
        )
    )
    torch.manual_seed(seed + 3)
    t5 = T5EncoderModel(
        T5Config(
            vocab_size=len(t5_tok),
            d_model=32,  # = transformer.joint_attention_dim
            d_ff=37,
            d_kv=8,
            num_layers=2,
            num_heads=4,
            relative_attention_num_buckets=8,
            dropout_rate=0.0,
            feed_forward_proj="gated-gelu",  # FLUX.1 uses T5 v1.1 (gated GELU)
            pad_token_id=t5_tok.pad_token_id,
            eos_token_id=t5_tok.eos_token_id,
        )
    )
    pipe = FluxPipeline(
        scheduler=FlowMatchEulerDiscreteScheduler(**FLUX_SCHEDULER),
        vae=vae,
        text_encoder=clip,
        tokenizer=clip_tok,
        text_encoder_2=t5,
        tokenizer_2=t5_tok,
        transformer=transformer,
    )
    for module in (transformer, vae, clip, t5):
        module.eval()  # T5 dropout would make outputs random
    return pipe


def save_tiny_pipeline(out_dir: str | Path, seed: int = 0) -> Path:
    """Build the tiny pipeline and write it to ``out_dir`` atomically (temp folder, then rename)."""
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    pipe = build_tiny_pipeline(seed)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        pipe.save_pretrained(tmp, safe_serialization=True)
        (tmp / "FLUXIR_TINY.txt").write_text(
            f"Tiny random-weight FLUX-architecture pipeline, seed {seed}.\n"
            "Built by `fluxir models build-tiny`; for plumbing checks only, not a quality model.\n"
        )
        if out_dir.exists():
            shutil.rmtree(out_dir)
        os.replace(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out_dir
