"""The paper profile sets every setting the paper states (``/work/shared/paper/DIGEST.md``, the paper's text).

Each row below is one statement of the paper, the key that carries it and the value. The profile is
resolved the way a run resolves it (the schema's defaults, then the profile's values), so a setting the
profile leaves to a default is checked too, and a test fails if a tiny-profile default ever leaks in.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from fluxir.config import Config, apply_override, config_from_dict, to_dict
from fluxir.config.presets import COMMENTS, PAPER, profiles

REPO = Path(__file__).resolve().parents[2]

# (what the paper says, dotted key, value)
STATED: list[tuple[str, str, Any]] = [
    # FluxGen: generation (section 3.1, 4.1 "Implementation Details")
    ("FluxGen generates with FLUX.1-dev", "model.base", "black-forest-labs/FLUX.1-dev"),
    ("from FLUX itself, not another text-to-image model", "generate.source", "flux"),
    ("with the empty prompt", "generate.prompt", ""),
    ("and no prompt list", "generate.prompts_file", ""),
    ("at 1024x768 (width)", "generate.width", 1024),
    ("at 1024x768 (height)", "generate.height", 768),
    ("guidance scale 4", "generate.guidance_scale", 4.0),
    ("20 timesteps", "generate.num_inference_steps", 20),
    ("350,000 images", "generate.num_images", 350_000),
    # FluxGen: selection
    ("IQA selection with CLIP-IQA+, MANIQA and MUSIQ (pyiqa)", "score.metrics",
     ["clipiqa+_vitL14_512", "maniqa-pipal", "musiq"]),
    ("the selection is on", "filter.enabled", True),
    ("keep the top 95% of every metric", "filter.keep_quantile", 0.95),
    # FluxGen: degradation and crops
    ("Real-ESRGAN second-order degradation with SeeSR's settings", "degrade.preset", "seesr-paired"),
    ("x4 super-resolution", "degrade.scale", 4),
    ("crops of 1024x768, 768x768 and 512x768 (w x h; sizes are [h, w])", "degrade.sizes",
     [[768, 1024], [768, 768], [768, 512]]),
    ('"randomly center-crop": centred crops', "degrade.crop", "center"),
    # FluxIR: the adapter (section 3.2, Table 2)
    ("SE rank r = 32", "train.rank", 32),
    ("one SE pair per FLUX block", "train.control", "se"),
    ("SE layers on the text stream too (SE_p)", "train.text_control", True),
    ("learnable embeddings theta_p, theta_y", "train.learnable_embeddings", True),
    # FluxIR: training (section 3.3, 4.1)
    ("t = clamp(u, 0, 1), u ~ U(-eps, 1 + eps) (eq. 5-6)", "train.timestep_sampler", "clamped_uniform"),
    ("eps = 0.05", "train.sampler_eps", 0.05),
    ("L = L_MSE + alpha L_P with the pixel loss on (eq. 10)", "train.pixel_loss", True),
    ("eq. 9 as printed", "train.pixel_target", "printed"),
    ("alpha = 1", "train.alpha", 1.0),
    ("AdamW with learning rate 1e-5", "train.lr", 1e-5),
    ("batch size 64", "train.batch_size", 64),
    # Inference and evaluation (section 4)
    ("x4 restoration", "restore.scale", 4),
    ("20 sampling steps", "restore.steps", 20),
    ("metrics CLIPIQA, MUSIQ, MANIQA, PSNR, SSIM, LPIPS (pyiqa)", "benchmark.metrics",
     ["clipiqa+_vitL14_512", "musiq", "maniqa-pipal", "psnr", "ssim", "lpips"]),
    ("ablations (Tables 2-6) on RealLQ250", "ablate.dataset", "RealLQ250"),
    ("Table 7: 2,000 images per generator", "ablate.table7_images", 2000),
]  # fmt: skip


def paper_config() -> Config:
    """The schema's defaults with the paper profile's values over them, as a run resolves it."""
    raw = to_dict(Config())
    for dotted, value in PAPER.items():
        apply_override(raw, dotted, value)
    return config_from_dict(raw)


def _value(cfg: Config, dotted: str) -> Any:
    node: Any = to_dict(cfg)
    for part in dotted.split("."):
        node = node[part]
    return node


@pytest.mark.parametrize(("statement", "key", "value"), STATED, ids=[row[1] for row in STATED])
def test_the_paper_profile_sets_what_the_paper_states(statement, key, value):
    assert _value(paper_config(), key) == value, f"paper profile: {key} should be {value!r} ({statement})"


def test_every_stated_key_is_written_in_the_profile_file():
    # Written out, not left to a default: a default changed for the tiny profile must not move the paper's run.
    profile = yaml.safe_load((REPO / "configs" / "profiles" / "paper.yaml").read_text(encoding="utf-8"))
    missing = [key for _, key, _ in STATED if key not in profile]
    assert not missing, f"configs/profiles/paper.yaml leaves these to defaults: {missing}"
    assert profile == profiles()["paper"]


def test_the_four_test_sets_are_framed_as_in_the_paper():
    sets = {d.name: d for d in paper_config().benchmark.datasets}
    assert list(sets) == ["DIV2K-Val", "RealSR", "DRealSR", "RealLQ250"]  # Table 1's order
    div2k = sets[
        "DIV2K-Val"
    ]  # 600 random 1024 x 1024 crops of DIV2K's validation set, degraded like training
    assert (div2k.kind, div2k.num_crops, div2k.hq_crop, div2k.reference) == (
        "synthetic",
        600,
        1024,
        "original",
    )
    assert div2k.hq_dir.startswith("data/testsets/")
    for name in ("RealSR", "DRealSR"):  # HQ centre crops 1024, LQ 256
        s = sets[name]
        assert (s.kind, s.hq_crop, s.lq_crop) == ("paired", 1024, 256)
        assert s.hq_dir.startswith("data/testsets/") and s.lq_dir.startswith("data/testsets/")
    lq = sets["RealLQ250"]  # 250 LQ images of 256 x 256, no HQ, used as they are
    assert (lq.kind, lq.lq_crop) == ("lq_only", 0) and lq.lq_dir.startswith("data/testsets/")


def test_the_training_length_is_derived_from_the_papers_budget_and_says_so():
    cfg = paper_config()
    images, batch, epochs = 350_000, 64, 4
    assert cfg.train.max_steps == epochs * images // batch == 21_875
    # The derivation's arithmetic: 4 GPUs x 3.5 days at 0.84 s per image is about 4 passes over 350k.
    passes = 4 * 3.5 * 86_400 / 0.84 / images
    assert round(passes) == epochs
    note = COMMENTS["paper"]["train.max_steps"]
    assert "Derived, not stated" in note and "21,875" in note
    assert "Derived, not stated" in (REPO / "configs" / "profiles" / "paper.yaml").read_text(encoding="utf-8")
