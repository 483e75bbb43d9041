"""The mini base model's pretraining: packaged photos, VAE latent statistics, resumable training, the
saved FluxPipeline folder, and a prior that learns. Every model here is a few thousand parameters."""

from __future__ import annotations

import csv
import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from fluxir.config import PretrainConfig
from fluxir.pretrain import photos as P
from fluxir.pretrain.build import run_pretrain
from fluxir.pretrain.prior import PromptEmbeddings, build_transformer, held_out_loss, image_ids, train_prior
from fluxir.pretrain.vae import latent_stats, set_latent_stats, train_vae

# Small photos only (fast to write); 7 groups -> 3 held out, 4 for training.
SMALL = tuple(p for p in P.PHOTOS if p.name.startswith(("pyiqa-kodak", "skimage-chelsea", "skimage-coffee")))


def tiny_cfg(root: Path, photos_dir: Path, **overrides) -> PretrainConfig:
    """A pretraining run of a few steps of models with a few thousand weights."""
    values = dict(
        out_dir=str(root / "model"),
        photos_dir=str(photos_dir),
        work_dir=str(root / "work"),
        reports_dir=str(root / "reports"),
        threads=1,
        checkpoint_every=2,
        pyramid_levels=1,
        vae_widths=[8, 8, 8, 8],
        vae_layers_per_block=1,
        vae_crop=32,
        vae_batch=2,
        vae_steps=4,
        prior_heads=2,
        prior_head_dim=16,
        prior_double_blocks=1,
        prior_single_blocks=1,
        prior_crop=32,
        prior_batch=2,
        prior_steps=4,
        prior_bank=8,
        max_sequence_length=8,
        eval_crops_per_photo=1,
        grid_images=2,
        grid_size=64,
        grid_steps=2,
    )
    return PretrainConfig(**(values | overrides))


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Models this small gain nothing from a second thread, and on a busy machine OpenMP's spin-waits cost."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def small_photos(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("pretrain") / "photos"
    P.write_photo_set(folder, SMALL)
    return folder


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory, small_photos) -> tuple[PretrainConfig, dict]:
    cfg = tiny_cfg(tmp_path_factory.mktemp("run"), small_photos)
    return cfg, run_pretrain(cfg)


def test_every_packaged_photo_exists_and_split_is_disjoint_by_scene():
    split = P.split_of()
    assert len(split) == len({p.name for p in P.PHOTOS}) == len(P.PHOTOS) >= 20
    for photo in P.PHOTOS:
        assert P.locate(photo).is_file(), photo.name
        assert photo.licence
    held = {n for n, s in split.items() if s == P.HELD_OUT}
    assert len(held) >= P.MIN_HELD_OUT and len(held) < len(split) / 2
    # a stereo pair is one scene: both views on the same side
    groups: dict[str, set[str]] = {}
    for photo in P.PHOTOS:
        groups.setdefault(photo.split_group, set()).add(split[photo.name])
    assert all(len(sides) == 1 for sides in groups.values())
    assert split["skimage-motorcycle-left"] == split["skimage-motorcycle-right"]
    assert P.split_of(tuple(reversed(P.PHOTOS))) == split  # not order-dependent


def test_photo_set_folder_records_source_licence_and_size(small_photos):
    records = P.read_manifest(small_photos)
    assert [r.name for r in records] == [p.name for p in SMALL]
    assert sum(r.split == P.HELD_OUT for r in records) >= 3
    for rec, photo in zip(records, SMALL, strict=True):
        with Image.open(small_photos / rec.file) as im:
            assert im.size == (rec.width, rec.height) and im.mode == "RGB"
        raw = P.locate(photo).read_bytes()
        assert rec.source_sha256 == hashlib.sha256(raw).hexdigest() and rec.source_bytes == len(raw)
        assert rec.distribution == photo.distribution and rec.licence == photo.licence and rec.version
    train, held = P.load_split(small_photos, P.TRAIN), P.load_split(small_photos, P.HELD_OUT)
    assert train and held and not set(train) & set(held)
    assert set(train) | set(held) == {r.name for r in records}
    assert not list(small_photos.parent.glob(f".{small_photos.name}.*"))  # no temporary folder left


def test_missing_photo_package_is_a_clear_error():
    ghost = P.PhotoSource("ghost", "no-such-distribution-xyz", "x.png", "none")
    with pytest.raises(P.PhotoSourceError, match="pip install no-such-distribution-xyz"):
        P.locate(ghost)


def test_latent_stats_are_mean_and_inverse_population_std():
    latents = torch.tensor([1.0, 2.0, 3.0, 6.0]).view(1, 1, 2, 2)
    shift, scale = latent_stats(latents)
    # mean 3; deviations -2 -1 0 3 -> variance (4 + 1 + 0 + 9) / 4 = 3.5
    assert shift == pytest.approx(3.0)
    assert scale == pytest.approx(1 / np.sqrt(3.5))
    normalised = (latents - shift) * scale  # what FluxPipeline's transformer sees
    assert float(normalised.mean()) == pytest.approx(0.0, abs=1e-6)
    assert float(normalised.pow(2).mean()) == pytest.approx(1.0)


def test_measured_stats_go_into_the_vae_config_the_pipeline_decodes_with(tmp_path, small_photos):
    from fluxir.pretrain.vae import build_vae

    vae = build_vae(tiny_cfg(tmp_path, small_photos))
    set_latent_stats(vae, 0.25, 2.5)
    vae.save_pretrained(tmp_path / "vae")
    saved = json.loads((tmp_path / "vae" / "config.json").read_text())
    assert (saved["shift_factor"], saved["scaling_factor"]) == (0.25, 2.5)


@pytest.mark.parametrize("widths", [[16, 32, 64, 128], [8, 8, 8, 8], [16, 32, 64, 64]])
def test_identity_initialised_vae_reconstructs_each_8x8_block_mean(tmp_path, small_photos, widths):
    """Before any step, decode(encode(x)) is x's 8x8 block means, nearest-upsampled (vae_init); with
    diffusers' initialisation it is not. [8, 8, 8, 8] and [..., 64, 64] have no shortcut before the final
    norms (equal widths), so their anchors come from the resampling convs."""
    import torch.nn.functional as F

    from fluxir.pretrain.vae import build_vae

    g = torch.Generator().manual_seed(0)
    # Block colours over the whole [-1, 1] range plus fine texture the block means must average away.
    blocks = torch.rand(2, 3, 6, 8, generator=g) * 1.9 - 0.95
    x = F.interpolate(blocks, scale_factor=8, mode="nearest") + 0.04 * torch.randn(2, 3, 48, 64, generator=g)
    expected = F.interpolate(F.avg_pool2d(x, 8), scale_factor=8, mode="nearest")

    latents = {}

    def reconstruct(init: str) -> torch.Tensor:
        vae = build_vae(tiny_cfg(tmp_path, small_photos, vae_widths=widths, vae_init=init)).eval()
        with torch.no_grad():
            latents[init] = vae.encode(x).latent_dist.mode()
            return vae.decode(latents[init]).sample

    assert float((reconstruct("identity") - expected).abs().max()) < 2e-3
    # The detail channels (6..15) already vary with the input: they are not the zero-in, zero-out saddle.
    assert float(latents["identity"][:, 6:].std(dim=(0, 2, 3)).min()) > 1e-3
    assert float((reconstruct("default") - expected).abs().mean()) > 0.1


def test_vae_resumed_run_equals_uninterrupted_run_bitwise(tmp_path, small_photos):
    cfg = tiny_cfg(tmp_path, small_photos)
    photos = P.load_split(small_photos, P.TRAIN)
    whole, whole_curve = train_vae(cfg, photos, tmp_path / "a" / "vae.pt")
    _, first = train_vae(cfg, photos, tmp_path / "b" / "vae.pt", stop_after=2)  # a "crash" after 2 steps
    assert [s for s, _ in first] == [0, 1]
    resumed, resumed_curve = train_vae(cfg, photos, tmp_path / "b" / "vae.pt")
    assert resumed_curve == whole_curve and len(whole_curve) == cfg.vae_steps
    for (name, a), b in zip(whole.state_dict().items(), resumed.state_dict().values(), strict=True):
        assert torch.equal(a, b), name


def _text(length: int = 8, dim: int = 32) -> PromptEmbeddings:
    g = torch.Generator().manual_seed(0)
    return PromptEmbeddings(
        torch.randn(1, length, dim, generator=g), torch.randn(1, dim, generator=g), torch.zeros(length, 3)
    )


def test_prior_resumed_run_equals_uninterrupted_run_bitwise(tmp_path, small_photos):
    cfg = tiny_cfg(tmp_path, small_photos)
    bank = torch.randn(8, 4, 64, generator=torch.Generator().manual_seed(1))
    text = _text()
    whole, whole_curve = train_prior(cfg, bank, text, tmp_path / "a.pt", "data")
    train_prior(cfg, bank, text, tmp_path / "b.pt", "data", stop_after=3)
    resumed, resumed_curve = train_prior(cfg, bank, text, tmp_path / "b.pt", "data")
    assert resumed_curve == whole_curve
    for (name, a), b in zip(whole.state_dict().items(), resumed.state_dict().values(), strict=True):
        assert torch.equal(a, b), name
    # a checkpoint made on other latents is not resumed: training starts over
    _, fresh = train_prior(cfg, bank, text, tmp_path / "b.pt", "other data", stop_after=1)
    assert [s for s, _ in fresh] == [0]


def test_prior_learns_a_trivial_distribution(tmp_path, small_photos):
    # Every latent is the same fixed pattern: the velocity (x_t - x0) / t is learnable in a few steps.
    cfg = tiny_cfg(tmp_path, small_photos, prior_steps=40, prior_lr=3e-3, prior_batch=8)
    x0 = torch.linspace(-1.5, 1.5, 4 * 64).view(1, 4, 64)
    text = _text()
    ids = image_ids(4, 4)
    before = held_out_loss(build_transformer(cfg, text), x0.expand(16, -1, -1), ids, text, cfg)
    model, _ = train_prior(cfg, x0.expand(32, -1, -1).clone(), text, tmp_path / "toy.pt", "toy")
    after = held_out_loss(model, x0.expand(16, -1, -1), ids, text, cfg)
    assert after < 0.6 * before, (before, after)


def test_saved_folder_loads_like_flux_dev_and_generates_from_empty_prompt(pretrained):
    from fluxir.models.flux import load_flux

    cfg, metrics = pretrained
    pipe = load_flux(cfg.out_dir)
    assert type(pipe).__name__ == "FluxPipeline"
    assert pipe.vae.config.latent_channels == 16 and not pipe.vae.config.use_quant_conv
    assert pipe.vae.config.shift_factor == pytest.approx(metrics["vae"]["shift_factor"], abs=1e-6)
    assert pipe.vae.config.scaling_factor == pytest.approx(metrics["vae"]["scaling_factor"], abs=1e-6)
    assert pipe.transformer.config.in_channels == 64 and pipe.transformer.config.guidance_embeds
    generator = torch.Generator().manual_seed(0)
    image = pipe(
        prompt="",
        height=64,
        width=64,
        num_inference_steps=2,
        guidance_scale=4.0,
        generator=generator,
        max_sequence_length=cfg.max_sequence_length,
        output_type="np",
    ).images
    assert image.shape == (1, 64, 64, 3) and np.isfinite(image).all() and image.std() > 0


def test_reports_are_curves_metrics_and_grids_without_timings(pretrained):
    cfg, metrics = pretrained
    reports = Path(cfg.reports_dir)
    for name, steps in (("vae_loss.csv", cfg.vae_steps), ("prior_loss.csv", cfg.prior_steps)):
        rows = list(csv.DictReader((reports / name).open()))
        assert [int(r["step"]) for r in rows] == list(range(steps))
        assert all(np.isfinite(float(r["loss"])) for r in rows)
    saved = json.loads((reports / "metrics.json").read_text())
    assert saved == metrics
    assert set(saved["vae"]) >= {"held_out_psnr_db", "shift_factor", "scaling_factor"}
    assert set(saved["prior"]) >= {"held_out_loss_init", "held_out_loss_end"}
    text = json.dumps(saved).lower()
    assert "time" not in text and "second" not in text and "date" not in text
    with Image.open(reports / "samples.png") as grid:
        assert grid.size == (cfg.grid_images * cfg.grid_size, cfg.grid_size)
    assert (reports / "vae_heldout.png").is_file()


def test_rerun_resumes_finished_training_and_writes_the_same_files(pretrained):
    cfg, metrics = pretrained
    model_files = sorted(p for p in Path(cfg.out_dir).rglob("*") if p.is_file())
    before = {p: p.read_bytes() for p in model_files + sorted(Path(cfg.reports_dir).glob("*"))}
    assert run_pretrain(cfg) == metrics  # both checkpoints are complete: no training step runs
    after = {p: p.read_bytes() for p in before}
    assert after == before
