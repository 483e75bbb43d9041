"""Named presets (profiles) and the files generated from the schema: params.yaml and configs/profiles/.

A profile is a set of dotted params that the Prefect flow `fluxir` writes into params.yaml before a run
(like ``dvc exp run -S``). Defaults live once, in the schema: they *are* the tiny CPU profile. So

* ``paper`` is data here: the paper's settings (FLUX.1-dev, GPUs, pyiqa weights);
* ``tiny`` is derived: the schema's default of every key another profile sets, so every profile sets the
  same keys and switching profiles never leaves a value behind;
* params.yaml is :func:`render_params`: every key at its default with its help as a comment, and the
  paper's value beside it where that differs.

``fluxir config write-defaults`` writes params.yaml and ``configs/profiles/<name>.yaml`` from here; a test
checks that the committed files are what it writes.
"""

from __future__ import annotations

import dataclasses
import textwrap
from typing import Any

import yaml

from fluxir.config.base import field_docs, to_dict
from fluxir.config.schema import BenchmarkDataset, Config

TESTSETS = "data/testsets"
"""Where the paper profile expects the Table 1 test sets; they are not downloadable here, the user copies them."""


def _testset(**fields: Any) -> dict[str, Any]:
    """A benchmark.datasets entry with every field written out (what the profile check compares)."""
    return to_dict(BenchmarkDataset(**fields))


PAPER: dict[str, Any] = {
    # FluxGen (section 3.1, 4.1)
    "model.base": "black-forest-labs/FLUX.1-dev",
    "model.dtype": "bfloat16",
    "generate.source": "flux",
    "generate.num_images": 350_000,
    "generate.width": 1024,
    "generate.height": 768,
    "generate.num_inference_steps": 20,
    "generate.guidance_scale": 4.0,
    "generate.prompt": "",
    "generate.prompts_file": "",
    "generate.shard_size": 1000,
    "score.metrics": ["clipiqa+_vitL14_512", "maniqa-pipal", "musiq"],
    "filter.enabled": True,
    "filter.keep_quantile": 0.95,
    "degrade.preset": "seesr-paired",
    "degrade.scale": 4,
    "degrade.sizes": [[768, 1024], [768, 768], [768, 512]],
    "degrade.crop": "center",
    # FluxIR (section 3.2, 3.3, 4.1)
    "train.rank": 32,
    "train.control": "se",
    "train.text_control": True,
    "train.learnable_embeddings": True,
    "train.timestep_sampler": "clamped_uniform",
    "train.sampler_eps": 0.05,
    "train.pixel_loss": True,
    "train.pixel_target": "printed",
    "train.alpha": 1.0,
    "train.engine": "deepspeed",
    "train.lr": 1.0e-5,
    "train.batch_size": 64,
    "train.max_steps": 21_875,
    "train.eval_every": 500,
    "train.checkpoint_every": 500,
    "restore.scale": 4,
    "restore.steps": 20,
    # Evaluation (section 4, Table 1) and ablations (Tables 2-7)
    "benchmark.datasets": [
        _testset(
            name="DIV2K-Val",
            kind="synthetic",
            hq_dir=f"{TESTSETS}/DIV2K_valid_HR",
            num_crops=600,
            hq_crop=1024,
            reference="original",
        ),
        _testset(
            name="RealSR",
            kind="paired",
            hq_dir=f"{TESTSETS}/RealSR/test_HR",
            lq_dir=f"{TESTSETS}/RealSR/test_LR",
            hq_crop=1024,
            lq_crop=256,
        ),
        _testset(
            name="DRealSR",
            kind="paired",
            hq_dir=f"{TESTSETS}/DRealSR/test_HR",
            lq_dir=f"{TESTSETS}/DRealSR/test_LR",
            hq_crop=1024,
            lq_crop=256,
        ),
        _testset(name="RealLQ250", kind="lq_only", hq_dir="", lq_dir=f"{TESTSETS}/RealLQ250", lq_crop=0),
    ],  # fmt: skip
    "benchmark.metrics": ["clipiqa+_vitL14_512", "musiq", "maniqa-pipal", "psnr", "ssim", "lpips"],
    "ablate.dataset": "RealLQ250",
    "ablate.table7_images": 2000,
}
"""The paper profile: every setting the paper states, written out even where it equals the default (so a
default changed for the tiny profile never changes the paper's run), plus the few a run at that scale
needs; what each is: ``NOTES["paper"]`` and ``COMMENTS``."""

MINI_PHOTOS = "data/pretrain/photos"
"""Where the mini pretraining writes its photo set (train/ and held_out/); held_out/ is the benchmark's."""

MINI: dict[str, Any] = {
    # The base: trained by the pipeline's pretrain stage (pretrain.*), loaded from its folder like any
    # diffusers FLUX snapshot; its prior saw the empty prompt at 32 T5 tokens.
    "model.base": "data/models/mini-flux",
    "model.max_sequence_length": 32,
    "pretrain.out_dir": "data/models/mini-flux",
    "pretrain.photos_dir": MINI_PHOTOS,
    "pretrain.max_sequence_length": 32,
    # Two torch threads on two cores: a VAE step (4 crops of 48 px) takes 142 ms against 190 ms on one, on an
    # idle machine. With the other core busy the threads wait on each other (566 ms a step beside two other
    # trainings): pretrain on an idle machine, or set 1.
    "pretrain.threads": 2,
    # FluxGen-mini: the prior's own images (it learned 128 px crops), scored, filtered, degraded; about 4
    # images/s on one thread, so 512 take two minutes
    "generate.num_images": 512,
    "generate.width": 128,
    "generate.height": 128,
    "generate.num_inference_steps": 20,
    "generate.batch_size": 8,
    "generate.shard_size": 64,
    "degrade.sizes": [[96, 96], [64, 96], [96, 64]],
    # FluxIR-mini: a real (small) prior, so a real learning rate; 1200 steps (about 17 minutes on one thread:
    # at 300 the held-out loss was still falling)
    "train.engine": "torch",
    "train.lr": 1.0e-3,
    "train.batch_size": 8,
    "train.max_steps": 1200,
    "train.warmup_steps": 20,
    "train.val_size": 4,
    "train.eval_every": 100,
    "train.checkpoint_every": 100,
    # Table 1 on photos no training step of any model saw
    "benchmark.datasets": [
        _testset(
            name="heldout-synthetic",
            kind="synthetic",
            hq_dir=f"{MINI_PHOTOS}/held_out",
            num_crops=12,
            hq_crop=128,
        ),
        # the held-out photos as they are (no synthetic degradation): centre crops, no-reference metrics only
        _testset(name="heldout-lq", kind="lq_only", hq_dir="", lq_dir=f"{MINI_PHOTOS}/held_out", lq_crop=64),
    ],
    "benchmark.methods": [
        "bicubic",
        "lanczos",
        "realesrgan-x4plus",
        "fluxir-untrained",
        "fluxir",
        "vae-reconstruction",
    ],
    "benchmark.metrics": ["psnr", "ssim", "piqe"],
}
"""The mini profile: a FLUX-architecture base trained here on CPU (pretrain), then the whole chain on it.
It has a pipeline of its own (``mini/dvc.yaml``, ``mini/params.yaml``), so its data and reports live under
``data/mini/`` and ``reports/mini/`` beside the tiny demo's."""

PIPELINES: dict[str, dict[str, Any]] = {"mini": MINI}
"""Profiles with a pipeline of their own: ``<name>/params.yaml`` is the defaults with the profile applied
and every data/ and reports/ path moved under the profile (:func:`pipeline_config`)."""


def remap_path(value: str, profile: str) -> str:
    """``data/x`` -> ``data/<profile>/x``, ``reports/x`` -> ``reports/<profile>/x``; other values as they are."""
    for root in ("data", "reports"):
        if value == root or value.startswith(f"{root}/"):
            return f"{root}/{profile}{value[len(root) :]}"
    return value


def _remap_tree(node: Any, profile: str) -> Any:
    if isinstance(node, dict):
        return {k: _remap_tree(v, profile) for k, v in node.items()}
    if isinstance(node, list):
        return [_remap_tree(v, profile) for v in node]
    return remap_path(node, profile) if isinstance(node, str) else node


def pipeline_config(profile: str) -> Config:
    """The config of a profile's own pipeline: defaults, then the profile, then its paths under the profile."""
    from fluxir.config.loading import apply_override, config_from_dict

    raw = to_dict(Config())
    for key, value in PIPELINES[profile].items():
        apply_override(raw, key, value)
    return config_from_dict(_remap_tree(raw, profile))


COMMENTS: dict[str, dict[str, str]] = {
    "paper": {
        "degrade.crop": 'The paper "randomly center-crop[s]" to the three sizes: centred crops, the size drawn per image.',
        "train.batch_size": "Global batch 64 (paper). Set train.grad_accum so each process's micro-batch fits its "
        "memory: one 1024x768 image at a time took 33.9 GiB on an H200 (README), so 4 GPUs need grad_accum 16.",
        "train.max_steps": "Derived, not stated: the paper gives no step count, only 350,000 images, batch 64 and "
        "about 3.5 days on 4 H800 (14 GPU-days). bench/train_step_gpu.py measured 0.84 s per 1024x768 image "
        "(ZeRO-2, bf16, pixel loss, gradient checkpointing) on an H200, whose bf16 peak an H800 shares: 4 GPUs x "
        "302,400 s / 0.84 s = 1.44M images, 4.1 passes over 350,000. We take 4 epochs: 4 x 350,000 / 64 = 21,875 steps.",
        "train.eval_every": "Not from the paper: validation and checkpoints every 500 steps (about 2 hours at the "
        "rate above) instead of the tiny profile's 20.",
        "benchmark.datasets": "The four test sets of Table 1 in the paper's framing, in folders you provide "
        f"(nothing downloads them): {TESTSETS}/DIV2K_valid_HR/ (DIV2K's 100 validation HR images: 600 random "
        "1024 px crops, degraded like training, scored against the original crop); "
        f"{TESTSETS}/RealSR/test_HR/ and test_LR/ (RealSR V3 x4 test pairs, *_HR and *_LR4 files in two folders) "
        f"and {TESTSETS}/DRealSR/test_HR/ and test_LR/ (DRealSR x4 test pairs): HQ centre crops 1024, LQ 256; "
        f"{TESTSETS}/RealLQ250/ (250 LQ images of 256x256, used whole, no HQ).",
        "ablate.dataset": "Tables 2-6 are scored on RealLQ250 (paper); Table 7 on 2,000 images per generator.",
    },
}
"""Comment lines written above a key of a profile file (the derivations and where files go)."""

NOTES: dict[str, str] = {
    "tiny": "the CPU plumbing profile: the schema's defaults, the values params.yaml ships with. "
    "The random-weight model proves the plumbing, not quality.",
    "paper": "the paper's settings (FLUX.1-dev, GPUs, pyiqa weights). FluxGen: 350k images at 1024x768, "
    "empty prompt, guidance 4, 20 steps; IQA filter with CLIP-IQA+, MANIQA and MUSIQ keeping the top 95% "
    "of each; centre crops 1024x768, 768x768, 512x768 (w x h). FluxIR: SE rank 32, clamped-uniform t "
    "(eps 0.05), L = L_MSE + 1 x L_P (eq. 9 as printed), AdamW lr 1e-5, batch 64; 20 sampling steps. "
    "Table 1 on DIV2K-Val, RealSR, DRealSR and RealLQ250; ablations on RealLQ250. Needs the FLUX.1-dev "
    "snapshot, the pyiqa weight files and the test sets on the workers.",
}

EXAMPLES: dict[str, list[str]] = {
    "benchmark.datasets": [
        "- {name: RealSR, kind: paired, hq_dir: RealSR/test_HR, lq_dir: RealSR/test_LR, hq_crop: 1024, lq_crop: 256}",
        "- {name: RealLQ250, kind: lq_only, lq_dir: RealLQ250}  (used whole: lq_only sets are not cropped)",
    ],
    "benchmark.sr_models": ["[{name: Real-ESRGAN, path: weights/RealESRGAN_x4plus.pth}]  (spandrel)"],
}
"""Commented examples written under a key of params.yaml."""

_WIDTH = 110


def default_value(dotted: str) -> Any:
    """The schema's default for a dotted key (``"generate.num_images"`` -> 48)."""
    node: Any = to_dict(Config())
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            raise KeyError(f"{dotted}: not a key of params.yaml")
        node = node[part]
    return node


def profiles() -> dict[str, dict[str, Any]]:
    """Every profile by name: tiny (the defaults of the keys the others set) and paper."""
    named = {"paper": PAPER}
    keys = dict.fromkeys(key for values in named.values() for key in values)
    return {"tiny": {key: default_value(key) for key in keys}} | named


def render_profile(name: str) -> str:
    """``configs/profiles/<name>.yaml``: a comment, then one ``dotted.key: value`` line per setting."""
    values = profiles()[name]
    head = (
        f"Profile `{name}` (flow parameter `profile`): {NOTES[name]} A profile is a set of dotted params the "
        "Prefect flow `fluxir` writes into params.yaml before a run (like `dvc exp run -S`); every profile "
        "sets the same keys. Generated by `fluxir config write-defaults` from src/fluxir/config/presets.py."
    )
    lines = _comment(head, "")
    comments = COMMENTS.get(name, {})
    for key, value in values.items():
        if key in comments:
            lines += _comment(comments[key], "")
        if value and isinstance(value, list) and isinstance(value[0], dict):  # benchmark.datasets: a block
            lines.append(f"{key}:")
            lines += [f"  - {_flow(entry, sort_keys=False)}" for entry in value]  # in the schema's order
        else:
            lines.append(f"{key}: {_flow(value)}")
    return "\n".join(lines) + "\n"


def render_params(cfg: Config | None = None, pipeline: str | None = None) -> str:
    """params.yaml (or ``<pipeline>/params.yaml``): every section and key of ``cfg``, each under its help."""
    cfg = cfg or Config()
    paper = profiles()["paper"]
    what = (
        f"the `{pipeline}` profile's pipeline ({pipeline}/dvc.yaml): the schema's defaults with the profile "
        f"(src/fluxir/config/presets.py) applied and its data and reports under data/{pipeline}/ and "
        f"reports/{pipeline}/"
        if pipeline
        else "the schema's defaults (src/fluxir/config/), the tiny CPU profile: a random-weight "
        "FLUX-architecture model (plumbing, not quality)"
    )
    lines = _comment(
        "fluxir parameters: one section per stage (plus model and tracking). `fluxir config check` validates "
        f"this file; `fluxir config show` prints every key with its help. The values are {what}; "
        "`# paper:` gives the paper profile's value. Generated by `fluxir config write-defaults`: change a "
        "default in the schema, a value for a run here (or with --set key=value, or a profile).",
        "",
    )
    docs = field_docs(Config)
    for section in dataclasses.fields(cfg):
        lines += ["", *_comment(docs[section.name], ""), f"{section.name}:"]
        lines += _render_section(getattr(cfg, section.name), section.name, paper, "  ")
    return "\n".join(lines) + "\n"


def _render_section(value: Any, prefix: str, paper: dict[str, Any], indent: str) -> list[str]:
    lines: list[str] = []
    docs = field_docs(type(value))
    for f in dataclasses.fields(value):
        key, item = f"{prefix}.{f.name}", getattr(value, f.name)
        lines += _comment(docs[f.name], indent)
        if dataclasses.is_dataclass(item):  # a nested section: only the keys it sets (overrides: {})
            set_keys = {k: v for k, v in to_dict(item).items() if v is not None}
            lines.append(f"{indent}{f.name}: {_flow(set_keys)}")
        elif item and isinstance(item, list) and dataclasses.is_dataclass(item[0]):
            lines.append(f"{indent}{f.name}:")
            for entry in item:
                block = yaml.safe_dump(
                    [to_dict(entry)], sort_keys=False, default_flow_style=False, width=10**6
                )
                lines += [f"{indent}  {line}" for line in block.splitlines()]
        else:
            line = f"{indent}{f.name}: {_flow(item)}"
            if key in paper and paper[key] != item:
                line = f"{line:<40} # paper: {_flow(paper[key])}"
            lines.append(line)
        lines += [f"{indent}# e.g. {example}" for example in EXAMPLES.get(key, [])]
    return lines


def _flow(value: Any, sort_keys: bool = True) -> str:
    """``value`` as one line of YAML (flow style), e.g. ``[[96, 128], [96, 96]]``, ``''``, ``1.0e-05``."""
    text = yaml.safe_dump(
        [value], default_flow_style=True, width=10**6, allow_unicode=True, sort_keys=sort_keys
    ).strip()
    return text[1:-1]


def _comment(text: str, indent: str) -> list[str]:
    prefix = f"{indent}# "
    return textwrap.wrap(
        text,
        _WIDTH,
        initial_indent=prefix,
        subsequent_indent=prefix,
        break_on_hyphens=False,
        break_long_words=False,
    )
