"""Stage generate: deterministic, resumable text-to-image generation and folder ingest."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image
from skimage import data

from fluxir.cli import main as cli_main
from fluxir.config import ConfigError, config_from_dict
from fluxir.data.images import load_rgb
from fluxir.data.ingest import ingest_folder
from fluxir.data.manifest import read_manifest
from fluxir.models.text_to_image import FluxRender
from fluxir.stages.generate import generate_images, run_generate

REPO = Path(__file__).resolve().parents[2]


class FakeRender:
    """Image k is a function of its seed only; records every call."""

    def __init__(self, h: int = 8, w: int = 12) -> None:
        self.h, self.w, self.calls = h, w, []

    @staticmethod
    def image(seed: int, h: int = 8, w: int = 12) -> np.ndarray:
        return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)

    def __call__(self, prompts, seeds):
        self.calls.append((list(prompts), list(seeds)))
        return np.stack([self.image(s, self.h, self.w) for s in seeds])


def _gen(render, out, **kw):
    args = dict(num_images=8, seed=100, prompts=[""], batch_size=2, shard_size=4, progress=False)
    return generate_images(render, out, **(args | kw))


# ----------------------------------------------------------------------------------------------
# Core, with a fake renderer


def test_images_land_in_shards_with_seed_plus_index(tmp_path):
    rows, made = _gen(FakeRender(), tmp_path)
    assert made == 8 and [r["index"] for r in rows] == list(range(8))
    assert sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*.png")) == [
        f"shard_{k // 4:03d}/{k:07d}.png" for k in range(8)
    ]
    for r in rows:
        assert r["seed"] == 100 + r["index"] and r["id"] == f"{r['index']:07d}"
        np.testing.assert_array_equal(load_rgb(r["path"]), FakeRender.image(r["seed"]))


def test_rerun_renders_only_missing_images_in_their_original_batches(tmp_path):
    _gen(FakeRender(), tmp_path)
    five = tmp_path / "shard_001" / "0000005.png"
    four = tmp_path / "shard_001" / "0000004.png"
    before, four_stat = five.read_bytes(), four.stat()
    five.unlink()
    render = FakeRender()
    rows, made = _gen(render, tmp_path)
    assert made == 1
    assert render.calls == [([""] * 2, [104, 105])]  # the whole aligned batch {4, 5}, as first time
    assert five.read_bytes() == before
    assert four.stat().st_mtime_ns == four_stat.st_mtime_ns  # the existing image is not rewritten
    assert len(rows) == 8


def test_growing_num_images_adds_only_new_ones(tmp_path):
    _gen(FakeRender(), tmp_path)
    render = FakeRender()
    rows, made = _gen(render, tmp_path, num_images=11)
    assert made == 3 and [c[1] for c in render.calls] == [[108, 109], [110]]
    assert [r["index"] for r in rows] == list(range(11))


def test_index_ranges_make_the_same_files_as_one_run(tmp_path):
    _gen(FakeRender(), tmp_path / "whole")
    rows_a, _ = _gen(FakeRender(), tmp_path / "split", start=0, count=3)
    rows_b, _ = _gen(FakeRender(), tmp_path / "split", start=3, count=100)
    assert [r["index"] for r in rows_a + rows_b] == list(range(8))
    for k in range(8):
        rel = f"shard_{k // 4:03d}/{k:07d}.png"
        assert (tmp_path / "whole" / rel).read_bytes() == (tmp_path / "split" / rel).read_bytes()


def test_prompts_cycle_and_known_rows_are_reused(tmp_path):
    render = FakeRender()
    rows, _ = _gen(render, tmp_path, num_images=5, prompts=["a", "b", "c"])
    assert [r["prompt"] for r in rows] == ["a", "b", "c", "a", "b"]
    assert render.calls[0][0] == ["a", "b"] and render.calls[2][0] == ["b"]
    known = {r["path"]: dict(r, note="from the manifest") for r in rows}
    again, made = _gen(FakeRender(), tmp_path, num_images=5, prompts=["a", "b", "c"], known=known)
    assert made == 0 and all(r["note"] == "from the manifest" for r in again)


def test_checkpoints_follow_shards(tmp_path):
    seen = []
    _gen(FakeRender(), tmp_path, checkpoint=lambda rows: seen.append(len(rows)))
    assert seen == [4, 8]


def test_planning_ten_million_images_costs_memory_per_batch_not_per_image(tmp_path):
    """Asking for 10,000,000 images once allocated ~0.6 KB per image before the first render (5.9 GB)."""
    import tracemalloc

    class Planned(Exception):
        pass

    def first_batch_only(prompts, seeds):
        raise Planned(len(seeds))  # rendering stubbed: stop at the first batch, after all the planning

    _gen(FakeRender(), tmp_path, num_images=20)  # some images already on disk: counted, not listed
    tracemalloc.start()
    try:
        with pytest.raises(Planned):
            _gen(first_batch_only, tmp_path, num_images=10_000_000, progress=True)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 4 * 2**20, f"{peak / 2**20:.1f} MiB to plan 10,000,000 images"


def test_images_on_disk_are_counted_from_shard_listings(tmp_path):
    from fluxir.stages.generate import count_on_disk

    _gen(FakeRender(), tmp_path, num_images=10)  # shards of 4: shard_000, shard_001, shard_002 (8, 9)
    (tmp_path / "shard_001" / "0000005.png").unlink()
    (tmp_path / "shard_001" / "notes.txt").write_text("a user's file")
    (tmp_path / "shard_001" / "00000006.png").write_bytes(b"")  # not a name the stage writes
    (tmp_path / "shard_xyz").mkdir()
    assert count_on_disk(tmp_path, 0, 10, 4, "png") == 9
    assert count_on_disk(tmp_path, 3, 9, 4, "png") == 5  # 3 4 6 7 8
    assert count_on_disk(tmp_path, 0, 10, 4, "jpg") == 0
    assert count_on_disk(tmp_path / "absent", 0, 10, 4, "png") == 0


# ----------------------------------------------------------------------------------------------
# The tiny FLUX model


def test_flux_render_encodes_each_distinct_prompt_once_and_is_deterministic(tiny_model_dir, tmp_path):
    from fluxir.models.flux import load_flux

    pipe = load_flux(tiny_model_dir)
    pipe.set_progress_bar_config(disable=True)
    cfg = config_from_dict({"generate": {"width": 32, "height": 32, "num_inference_steps": 2}}).generate
    render = FluxRender(pipe, cfg)
    rows, _ = _gen(render, tmp_path / "a", num_images=6, prompts=["a cat", "", "a dog"])
    assert render.encode_calls == 3 and set(render.embeddings) == {"a cat", "", "a dog"}
    images = [load_rgb(r["path"]) for r in rows]
    assert images[0].shape == (32, 32, 3)
    assert not np.array_equal(images[0], images[3])  # same prompt, other seed
    again = FluxRender(pipe, cfg)
    _gen(again, tmp_path / "b", num_images=6, prompts=["a cat", "", "a dog"], start=2, count=2)
    for k in (2, 3):
        rel = f"shard_000/{k:07d}.png"
        assert (tmp_path / "a" / rel).read_bytes() == (tmp_path / "b" / rel).read_bytes()


# ----------------------------------------------------------------------------------------------
# Folder ingest


def test_ingest_converts_or_rejects_every_awkward_file(awkward_dir, tmp_path):
    folder = next(iter(awkward_dir.values())).parent
    rows, rejected = ingest_folder(
        folder, tmp_path / "out", shard_size=4, min_short_side=32, min_long_side=48, workers=2, progress=False
    )
    accepted = {r["origin_path"]: r for r in rows}
    assert set(accepted) == {
        "cmyk.jpg",
        "good.png",
        "gray.png",
        "gray16.png",
        "palette.png",
        "rgb16.png",
        "rgba.png",
    }
    reasons = {Path(r["path"]).name: r["reason"] for r in rejected}
    assert reasons["zz-copy.png"] == "duplicate of good.png"  # same bytes: the first by path is kept
    assert set(reasons) == {
        "zz-copy.png",
        "corrupt.png",
        "empty.png",
        "text.png",
        "tiny.png",
        "truncated.jpg",
        "truncated.png",
    }
    assert reasons["empty.png"] == "empty file (0 bytes)"
    assert reasons["text.png"] == "not an image (unrecognised format)"
    assert reasons["tiny.png"] == "too small: 30x20 (needs sides of at least 32 and 48)"
    for name in ("corrupt.png", "truncated.jpg", "truncated.png"):
        assert reasons[name].startswith("truncated or corrupt")
    assert accepted["cmyk.jpg"]["note"] == "CMYK -> RGB" and accepted["good.png"]["note"] == ""
    for r in rows:
        assert (r["width"], r["height"]) == (96, 64)
        assert load_rgb(r["path"]).shape == (64, 96, 3)
    assert sorted(r["index"] for r in rows) == list(range(7))


def test_ingest_rerun_reuses_known_photos_and_appends_new_ones(photo_dir, tmp_path):
    src = tmp_path / "src"
    shutil.copytree(photo_dir, src)
    out = tmp_path / "out"
    rows, _ = ingest_folder(src, out, shard_size=2, progress=False)
    assert [r["origin_path"] for r in rows] == [
        "astronaut.png",
        "nature/cats/chelsea.png",
        "nature/coffee.jpg",
        "rocket.jpg",
    ]
    known = {r["origin_sha256"]: r for r in rows}
    (src / "aaa.png").write_bytes((src / "astronaut.png").read_bytes())  # same bytes: a duplicate
    Image.fromarray(data.coffee()[:200]).save(src / "0-new.png")
    again, rejected = ingest_folder(src, out, shard_size=2, known=known, progress=False)
    new = [r for r in again if r["origin_sha256"] not in known]
    assert [(r["origin_path"], r["index"]) for r in new] == [("0-new.png", 4)]
    assert [Path(r["path"]).name for r in rejected] == ["astronaut.png"]  # now 'aaa.png' comes first


# ----------------------------------------------------------------------------------------------
# The stage


def _params(tmp_path: Path, tiny_model_dir: Path, **generate) -> Path:
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["model"]["tiny_dir"] = str(tiny_model_dir)
    params["model"]["device"] = "cpu"
    params["generate"].update(
        {"width": 32, "height": 32, "num_inference_steps": 2, "num_images": 6} | generate
    )
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(params))
    return path


def test_stage_writes_a_validated_manifest_and_reruns_without_loading_the_model(
    tiny_model_dir, tmp_path, monkeypatch, caplog
):
    monkeypatch.chdir(tmp_path)
    params = _params(tmp_path, tiny_model_dir)
    caplog.set_level("INFO", logger="fluxir")
    assert cli_main(["generate", "--params", str(params), "--no-progress"]) == 0
    df = read_manifest("data/generate/manifest.parquet")
    assert df["id"].tolist() == [f"{k:07d}" for k in range(6)]
    assert (
        df["seed"].tolist() == list(range(6))
        and set(df["source"]) == {"flux"}
        and set(df["model"]) == {"tiny"}
    )
    assert (df["width"] == 32).all() and (df["height"] == 32).all() and df["prompt"].eq("").all()
    assert read_manifest("data/generate/rejected.parquet").empty
    assert "PASSED" in Path("reports/validation/generate/manifest.md").read_text()
    summary = Path("reports/generate/summary.json").read_bytes()
    assert json.loads(summary)["images"] == 6 and "plumbing" in json.loads(summary)["note"]
    # this run's facts go to the log (and MLflow), not into the summary DVC hashes
    assert "generate run: made_now 6, seconds " in caplog.text and "images_per_second " in caplog.text
    assert not list(Path("data/generate").glob(".progress*"))
    manifest = Path("data/generate/manifest.parquet").read_bytes()

    caplog.clear()
    assert cli_main(["generate", "--params", str(params), "--no-progress"]) == 0
    assert "generate run: made_now 0, seconds " in caplog.text and "model_load_seconds 0\n" in caplog.text
    assert read_manifest("data/generate/manifest.parquet")["sha256"].tolist() == df["sha256"].tolist()
    # a rerun that made nothing writes what the first run wrote
    assert Path("reports/generate/summary.json").read_bytes() == summary
    assert Path("data/generate/manifest.parquet").read_bytes() == manifest


def test_rerun_with_other_settings_stops_with_one_line(tiny_model_dir, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    params = _params(tmp_path, tiny_model_dir, num_images=2)
    assert cli_main(["generate", "--params", str(params), "--no-progress"]) == 0
    code = cli_main(["generate", "--params", str(params), "--set", "generate.width=48", "--no-progress"])
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert code == 2
    assert err.startswith(
        "fluxir generate: error: data/generate holds images made with other settings (width: 32 -> 48)"
    )


def test_restart_on_change_starts_over_and_keeps_a_users_files(tiny_model_dir, tmp_path, monkeypatch, caplog):
    """Under dvc repro the folder persists between runs: a settings change must start clean, not mix."""
    monkeypatch.chdir(tmp_path)
    params = _params(tmp_path, tiny_model_dir, num_images=2)
    assert cli_main(["generate", "--params", str(params), "--no-progress"]) == 0
    first = read_manifest("data/generate/manifest.parquet")
    Path("data/generate/notes.txt").write_text("mine")
    argv = ["generate", "--params", str(params), "--set", "generate.width=48", "--no-progress"]
    assert cli_main([*argv, "--restart-on-change"]) == 0
    assert "settings changed (width: 32 -> 48): removed 4 files of the earlier run" in caplog.text
    again = read_manifest("data/generate/manifest.parquet")
    assert (again["width"] == 48).all() and len(again) == 2
    assert set(again["sha256"]).isdisjoint(first["sha256"])  # made anew, none kept from the 32 px run
    assert Path("data/generate/notes.txt").read_text() == "mine"  # not this stage's file: kept


def test_a_model_rebuilt_in_place_is_a_settings_change(tiny_model_dir, tmp_path, monkeypatch, capsys):
    import shutil

    monkeypatch.chdir(tmp_path)
    model = tmp_path / "model"
    shutil.copytree(tiny_model_dir, model)
    params = _params(tmp_path, model, num_images=2)
    assert cli_main(["generate", "--params", str(params), "--no-progress"]) == 0
    config = next(model.rglob("config.json"))
    config.write_text(config.read_text() + " ")  # same path, other content
    assert cli_main(["generate", "--params", str(params), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert (
        "holds images made with other settings (model_fingerprint: " in err and "--restart-on-change" in err
    )


def test_config_checks():
    with pytest.raises(ConfigError, match="generate.width=100: must be a multiple of 16"):
        config_from_dict({"generate": {"width": 100}})
    with pytest.raises(ConfigError, match="generate.input_dir='': must name a folder"):
        config_from_dict({"generate": {"source": "folder"}})
    config_from_dict({"generate": {"source": "folder", "input_dir": "x", "width": 100}})  # size unused there


def test_prompts_file(tiny_model_dir, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    Path("prompts.txt").write_text("a red house\n\n  a blue car  \n")
    params = _params(tmp_path, tiny_model_dir, num_images=3, prompts_file="prompts.txt")
    assert cli_main(["generate", "--params", str(params), "--no-progress"]) == 0
    assert read_manifest("data/generate/manifest.parquet")["prompt"].tolist() == [
        "a red house",
        "a blue car",
        "a red house",
    ]
    Path("empty.txt").write_text("\n")
    with pytest.raises(ConfigError, match="has no prompts"):
        run_generate(config_from_dict({"generate": {"prompts_file": "empty.txt", "out_dir": "other"}}))


def test_folder_source_through_the_cli(awkward_dir, tmp_path, monkeypatch, tiny_model_dir):
    monkeypatch.chdir(tmp_path)
    folder = next(iter(awkward_dir.values())).parent
    params = _params(
        tmp_path, tiny_model_dir, source="folder", input_dir=str(folder), min_short_side=32, min_long_side=48
    )
    assert cli_main(["generate", "--params", str(params), "--no-progress"]) == 0
    df = read_manifest("data/generate/manifest.parquet")
    rejected = read_manifest("data/generate/rejected.parquet")
    assert len(df) == 7 and len(rejected) == 7
    assert set(df["source"]) == {"folder"} and df["seed"].isna().all()
    summary = json.loads(Path("reports/generate/summary.json").read_text())
    assert summary["rejected_by_reason"] == {
        "duplicate": 1,
        "empty file": 1,
        "not an image": 1,
        "too small": 1,
        "truncated or corrupt PNG": 2,
        "truncated or corrupt JPEG": 1,
    }


def test_a_diffusers_folder_runs_through_the_generic_pipeline_path(tiny_model_dir, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    params = _params(tmp_path, tiny_model_dir, source=str(tiny_model_dir), num_images=2)
    assert cli_main(["generate", "--params", str(params), "--no-progress"]) == 0
    df = read_manifest("data/generate/manifest.parquet")
    assert set(df["source"]) == {"diffusers"} and set(df["model"]) == {str(tiny_model_dir)}


def test_missing_pipeline_folder_is_a_clear_error(tmp_path, monkeypatch, capsys, tiny_model_dir):
    monkeypatch.chdir(tmp_path)
    params = _params(tmp_path, tiny_model_dir, source="./no/such/pipeline")
    assert cli_main(["generate", "--params", str(params), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err == (
        "fluxir generate: error: generate.source='./no/such/pipeline': no such pipeline folder; use 'flux', "
        "'sdxl', 'folder', a diffusers hub id (owner/name) or a local diffusers pipeline folder"
    )


@pytest.mark.slow
def test_sdxl_offline_says_how_to_get_it(tmp_path, tiny_model_dir):
    params = _params(tmp_path, tiny_model_dir, source="sdxl", width=1024, height=768)
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_HOME=str(tmp_path / "hf"))
    proc = subprocess.run(
        [sys.executable, "-m", "fluxir.stages.generate", "--params", str(params), "--no-progress"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 2, proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith(
        "fluxir generate: error: generate.source: could not load the text-to-image pipeline "
        "'stabilityai/stable-diffusion-xl-base-1.0': not in the local Hugging Face cache and the hub is unreachable"
    )
    assert "huggingface-cli download stabilityai/stable-diffusion-xl-base-1.0" in last


def _save_tiny_sdxl(folder: Path) -> Path:
    """A random-weight SDXL pipeline of a few MB (sizes from diffusers' own SDXL tests)."""
    import torch
    from diffusers import (
        AutoencoderKL,
        EulerDiscreteScheduler,
        StableDiffusionXLPipeline,
        UNet2DConditionModel,
    )
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    from fluxir.models.tiny import build_clip_tokenizer

    tok = build_clip_tokenizer()
    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        block_out_channels=(2, 4), layers_per_block=2, sample_size=32, in_channels=4, out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        attention_head_dim=(2, 4), use_linear_projection=True, addition_embed_type="text_time",
        addition_time_embed_dim=8, transformer_layers_per_block=(1, 2), projection_class_embeddings_input_dim=80,
        cross_attention_dim=64, norm_num_groups=1,
    )  # fmt: skip
    vae = AutoencoderKL(
        block_out_channels=[32, 64], in_channels=3, out_channels=3, latent_channels=4,
        down_block_types=["DownEncoderBlock2D"] * 2, up_block_types=["UpDecoderBlock2D"] * 2,
    )  # fmt: skip
    text_config = CLIPTextConfig(
        bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
        vocab_size=len(tok), hidden_size=32, intermediate_size=37, num_attention_heads=4, num_hidden_layers=2,
        projection_dim=32, max_position_embeddings=77,
    )  # fmt: skip
    scheduler = EulerDiscreteScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        steps_offset=1,
        beta_schedule="scaled_linear",
        timestep_spacing="leading",
    )
    pipe = StableDiffusionXLPipeline(
        vae=vae, unet=unet, scheduler=scheduler, tokenizer=tok, tokenizer_2=tok,
        text_encoder=CLIPTextModel(text_config), text_encoder_2=CLIPTextModelWithProjection(text_config),
    )  # fmt: skip
    pipe.save_pretrained(folder)
    return folder


@pytest.mark.slow
def test_sdxl_pipelines_reuse_text_embeddings_and_match_the_prompt_path(tmp_path):
    import torch

    from fluxir.data.images import to_uint8
    from fluxir.models.text_to_image import DiffusersRender, load_text_to_image

    pipe = load_text_to_image(str(_save_tiny_sdxl(tmp_path / "sdxl")), torch.float32, "cpu")
    assert type(pipe).__name__ == "StableDiffusionXLPipeline"
    cfg = config_from_dict({"generate": {"width": 64, "height": 64, "num_inference_steps": 2}}).generate
    render = DiffusersRender(pipe, cfg)
    rows, made = _gen(render, tmp_path / "out", num_images=4, prompts=["a house", "a car"])
    assert made == 4 and render.is_sdxl and set(render.embeddings) == {"a house", "a car"}
    # Cached embeddings give the very images that passing the prompts as text gives.
    generators = [torch.Generator("cpu").manual_seed(s) for s in (100, 101)]
    by_text = pipe(
        prompt=["a house", "a car"], height=64, width=64, num_inference_steps=2, guidance_scale=4.0,
        generator=generators, output_type="np",
    ).images  # fmt: skip
    np.testing.assert_array_equal(np.stack([load_rgb(r["path"]) for r in rows[:2]]), to_uint8(by_text))


# ----------------------------------------------------------------------------------------------
# Crash and resume


@pytest.mark.slow
def test_sigkill_then_rerun_equals_an_uninterrupted_run(tiny_model_dir, tmp_path, monkeypatch):
    n = 16
    settings = dict(num_images=n, width=32, height=32, num_inference_steps=2, batch_size=2, shard_size=5)
    crashed, clean = tmp_path / "crashed", tmp_path / "clean"
    crashed.mkdir()
    clean.mkdir()
    params = _params(crashed, tiny_model_dir, **settings)
    cmd = [sys.executable, "-m", "fluxir.stages.generate", "--params", str(params), "--no-progress"]
    proc = subprocess.Popen(cmd, cwd=crashed, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    out = crashed / "data" / "generate"
    deadline = time.monotonic() + 240
    while len(list(out.rglob("*.png"))) < 4 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    made_before_kill = len(list(out.rglob("*.png")))
    assert proc.returncode == -signal.SIGKILL
    assert 4 <= made_before_kill < n, "the run was not interrupted mid-way"
    assert not (out / "manifest.parquet").exists()

    rerun = subprocess.run(cmd, cwd=crashed, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    assert f"({n - made_before_kill} made now" in rerun.stderr

    monkeypatch.chdir(clean)
    assert (
        cli_main(["generate", "--params", str(_params(clean, tiny_model_dir, **settings)), "--no-progress"])
        == 0
    )

    def files(root: Path) -> dict[str, bytes]:
        return {
            p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
        }

    got, want = files(out / ".."), files(clean / "data")
    images = {k: v for k, v in got.items() if k.endswith(".png")}
    assert len(images) == n and images == {k: v for k, v in want.items() if k.endswith(".png")}
    assert not [k for k in got if k.endswith(".tmp") or "/.progress" in k]
    a = read_manifest(out / "manifest.parquet")
    b = read_manifest(clean / "data" / "generate" / "manifest.parquet")
    assert a["id"].is_unique and len(a) == n
    assert a[["id", "seed", "sha256"]].equals(b[["id", "seed", "sha256"]])


def test_ingest_survives_any_decoder_error_and_skips_its_own_output(awkward_dir, tmp_path, monkeypatch):
    import fluxir.data.ingest as ingest

    src = tmp_path / "photos"
    src.mkdir()
    shutil.copy(awkward_dir["good.png"], src / "good.png")
    shutil.copy(awkward_dir["gray.png"], src / "weird.png")
    real = ingest.decode_image

    def flaky(data):
        if data == (src / "weird.png").read_bytes():
            raise IndexError("decoder bug")
        return real(data)

    monkeypatch.setattr(ingest, "decode_image", flaky)
    out = src / "ingested"  # inside the input folder: must not be read back as input
    rows, rejected = ingest_folder(src, out, shard_size=4, progress=False)
    again, rejected_again = ingest_folder(src, out, shard_size=4, progress=False)
    assert [r["origin_path"] for r in rows] == [r["origin_path"] for r in again] == ["good.png"]
    assert [Path(r["path"]).name for r in rejected_again] == ["weird.png"]  # no ingested/... files
    assert [(Path(r["path"]).name, r["reason"]) for r in rejected] == [
        ("weird.png", "undecodable (IndexError: decoder bug)")
    ]


# ----------------------------------------------------------------------------------------------
# A smaller num_images after a killed (or finished) larger run


def test_a_smaller_num_images_after_a_killed_run_leaves_exactly_those_images(
    tiny_model_dir, tmp_path, monkeypatch, caplog
):
    """A killed run leaves images and progress parts, no manifest (a range run leaves the same). The rerun
    with fewer images must not keep the others in the folder (a DVC output), and must equal a fresh run:
    the last batch, once rendered larger, is rendered again at its new size."""
    settings = dict(width=32, height=32, num_inference_steps=2, batch_size=2, shard_size=2)
    shrunk, clean = tmp_path / "shrunk", tmp_path / "clean"
    shrunk.mkdir()
    clean.mkdir()
    monkeypatch.chdir(shrunk)
    params = _params(shrunk, tiny_model_dir, num_images=6, **settings)
    assert (
        cli_main(["generate", "--params", str(params), "--start", "0", "--count", "6", "--no-progress"]) == 0
    )
    out = shrunk / "data" / "generate"
    assert len(list(out.rglob("*.png"))) == 6 and list(out.glob(".progress*"))
    assert not (out / "manifest.parquet").exists()

    with caplog.at_level("WARNING", logger="fluxir"):
        assert (
            cli_main(["generate", "--params", str(params), "--set", "generate.num_images=3", "--no-progress"])
            == 0
        )
    assert "generate.num_images=3 is smaller than an earlier run's: removed 4 of its image(s)" in caplog.text
    df = read_manifest(out / "manifest.parquet")
    assert df["id"].tolist() == ["0000000", "0000001", "0000002"]
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*.png")) == [
        "shard_000/0000000.png",
        "shard_000/0000001.png",
        "shard_001/0000002.png",
    ]
    assert not list(out.glob(".progress*"))

    monkeypatch.chdir(clean)
    assert cli_main(["generate", "--params", str(_params(clean, tiny_model_dir, num_images=3, **settings)),
                     "--no-progress"]) == 0  # fmt: skip
    fresh = clean / "data" / "generate"
    assert read_manifest(fresh / "manifest.parquet")[["id", "seed", "sha256"]].equals(
        df[["id", "seed", "sha256"]]
    )

    # Growing again is unaffected: only the new images are made.
    monkeypatch.chdir(shrunk)
    caplog.clear()
    with caplog.at_level("INFO", logger="fluxir"):
        assert (
            cli_main(["generate", "--params", str(params), "--set", "generate.num_images=4", "--no-progress"])
            == 0
        )
    assert "smaller than an earlier run" not in caplog.text and "(1 made now" in caplog.text
    assert len(read_manifest(out / "manifest.parquet")) == 4
