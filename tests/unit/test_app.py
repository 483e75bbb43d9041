"""The web page's events without a browser: upload checks, restore, adapter choices; and the app service."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from fluxir.serving.adapters import AdapterCache, AdapterChoiceError, Choice, default_choices, parse_choice
from fluxir.serving.app import AppSettings, RestoreRequest, on_input, on_restore
from fluxir.serving.inputs import UploadError, read_upload


@pytest.fixture(scope="module")
def adapter_dir(tmp_path_factory, tiny_model_dir):
    from fluxir.models.adapter import FluxIRAdapter
    from fluxir.models.flux import load_flux

    folder = tmp_path_factory.mktemp("app-adapter") / "adapter"
    base = load_flux(tiny_model_dir).transformer
    FluxIRAdapter.from_flux(base, rank=4, max_sequence_length=32).save_pretrained(folder)
    return folder


@pytest.fixture
def settings(tiny_model_dir, adapter_dir, tmp_path) -> AppSettings:
    choice = f"folder: {adapter_dir}"
    return AppSettings(
        base=str(tiny_model_dir), registered_model="", adapters=[choice], adapter=choice, steps=2,
        device="cpu", output_dir=tmp_path / "out",
    )  # fmt: skip


@pytest.fixture(scope="module")
def cache(tiny_model_dir):
    import torch

    return AdapterCache(str(tiny_model_dir), torch.float32, torch.device("cpu"), "")


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("corrupt.png", "truncated or corrupt PNG"),
        ("truncated.jpg", "truncated or corrupt JPEG"),
        ("text.png", "not an image"),
        ("empty.png", "empty file"),
    ],
)
def test_bad_uploads_get_one_sentence_naming_file_and_reason(awkward_dir, settings, name, reason):
    preview, status, current = on_input(str(awkward_dir[name]), settings)
    assert preview is None and current is None
    assert status.startswith("**Cannot restore:**") and name in status and reason in status, status
    assert "\n" not in status


def test_too_large_in_bytes_or_in_declared_pixels_is_refused_before_decoding(awkward_dir):
    good = awkward_dir["good.png"]  # 96 x 64
    with pytest.raises(UploadError, match=r"takes files up to"):
        read_upload(good, max_bytes=100, max_pixels=10**9)
    with pytest.raises(UploadError, match=r"96x64 px, more than the 1,000-pixel limit"):
        read_upload(good, max_bytes=10**9, max_pixels=1000)


def test_an_upload_whose_output_is_too_large_is_refused_on_input_and_on_restore(awkward_dir, settings, cache):
    from dataclasses import replace

    good = str(awkward_dir["good.png"])  # 96 x 64 -> x4 output 384 x 256 = 98,304 px
    at_limit = replace(settings, max_output_pixels=384 * 256)
    assert on_input(good, at_limit)[2] == good
    over = replace(settings, max_output_pixels=384 * 256 - 1)
    preview, status, current = on_input(good, over)
    assert preview is None and current is None
    assert "good.png is 96x64 px: its x4 output (384x256 px) is more than the 98,303-pixel limit" in status
    assert "restore.max_output_pixels" in status and "\n" not in status
    request = RestoreRequest(good, over.adapter, steps=2, tile=1024, color_fix="none", seed=0)
    pair, download, status = on_restore(request, over, cache)
    assert pair is None and download is None and "98,303-pixel limit" in status
    assert not over.output_dir.exists() or not any(over.output_dir.iterdir())


def test_the_output_limit_comes_from_the_restore_settings(tmp_path, monkeypatch, tiny_model_dir):
    from fluxir.config import Config, ModelConfig, RestoreConfig
    from fluxir.serving.app import settings_from_config

    monkeypatch.chdir(tmp_path)  # no project data: nothing found relative to the working folder
    cfg = Config(
        model=ModelConfig(tiny_dir=str(tiny_model_dir)), restore=RestoreConfig(max_output_pixels=12345)
    )
    assert settings_from_config(cfg).max_output_pixels == 12345


def test_too_small_is_refused(tmp_path):
    path = tmp_path / "dot.png"
    Image.fromarray(np.zeros((3, 3, 3), np.uint8)).save(path)
    with pytest.raises(UploadError, match=r"3x3 px; the restorer needs at least 4x4"):
        read_upload(path, 10**9, 10**9)


def test_converted_uploads_are_accepted(awkward_dir, settings):
    for name in ("cmyk.jpg", "rgba.png", "gray16.png", "palette.png"):
        preview, status, current = on_input(str(awkward_dir[name]), settings)
        assert preview.shape == (64, 96, 3) and "ready (output 384x256)" in status and current


@pytest.mark.parametrize("color_fix", ["none", "wavelet", "adain"])
def test_restore_fills_the_slider_and_the_download(tmp_path, settings, cache, color_fix):
    from skimage import data

    path = tmp_path / "photo.png"
    Image.fromarray(np.ascontiguousarray(data.astronaut()[100:164, 180:244])).save(path)
    calls = []
    request = RestoreRequest(str(path), settings.adapter, 2, 1024, color_fix, 0)
    pair, download, status = on_restore(request, settings, cache, lambda f, desc: calls.append(desc))
    before, after = pair
    assert before.shape == after.shape == (256, 256, 3)
    assert Image.open(download).size == (256, 256)
    assert status.startswith("Restored 64x64 -> 256x256") and f"colour fix {color_fix}" in status
    assert calls[0].startswith("loading") and "restoring" in calls and calls[-1] == "done"
    if color_fix != "none":
        assert "colour fix" in calls


def test_restore_without_input_or_with_a_bad_adapter_says_why(tmp_path, settings, cache, awkward_dir):
    nothing = RestoreRequest(None, settings.adapter, 2, 1024, "none", 0)
    assert on_restore(nothing, settings, cache)[2].startswith("**Cannot")
    request = RestoreRequest(str(awkward_dir["good.png"]), f"folder: {tmp_path}", 2, 1024, "none", 0)
    pair, download, status = on_restore(request, settings, cache)
    assert pair is None and download is None and "is not an adapter folder (no config.json)" in status


def test_adapter_choices():
    assert parse_choice("registry: champion", "fluxir-adapter") == Choice(
        "registry", "models:/fluxir-adapter@champion"
    )
    assert parse_choice("registry: 3", "fluxir-adapter") == Choice("registry", "models:/fluxir-adapter/3")
    assert parse_choice("models:/other@x", "") == Choice("registry", "models:/other@x")
    assert parse_choice("folder: data/train/adapter", "m") == Choice("folder", "data/train/adapter")
    assert parse_choice("/abs/adapter", "m") == Choice("folder", "/abs/adapter")
    with pytest.raises(AdapterChoiceError):
        parse_choice("registry: champion", "")
    with pytest.raises(AdapterChoiceError):
        parse_choice("  ", "m")
    assert default_choices("m", ["a"]) == ["registry: champion", "registry: candidate", "folder: a"]
    assert default_choices("", ["a"]) == ["folder: a"]


def test_the_app_is_an_optional_service(tmp_path, monkeypatch):
    from fluxir.orchestration import services

    monkeypatch.setattr(services, "_bin", lambda name: f"/venv/bin/{name}")
    names = [s.name for s in services.plan(tmp_path, fixed_ports=False)[0]]
    assert "app" not in names, "off by default"
    svcs, env = services.plan(tmp_path, fixed_ports=False, app=True)
    app = svcs[-1]
    assert app.name == "app" and app.cmd[:4] == ["/venv/bin/fluxir", "app", "--host", "127.0.0.1"]
    assert env["FLUXIR_APP_URL"] == app.url and app.url.startswith("http://127.0.0.1:")
    parser = __import__("argparse").ArgumentParser()
    monkeypatch.setenv("FLUXIR_APP", "1")
    services.add_arguments(parser)
    assert parser.parse_args(["start"]).app is True


def test_held_out_examples_are_the_lq_images_of_the_held_out_pairs(tmp_path, monkeypatch, awkward_dir):
    from train_pairs import write_pairs

    from fluxir.config import config_from_dict
    from fluxir.serving.app import held_out_examples
    from fluxir.train.data import read_pairs, split_heldout

    manifest = write_pairs(tmp_path, per_photo=1)
    monkeypatch.chdir(tmp_path)
    cfg = config_from_dict({"train": {"manifest": str(manifest), "val_size": 2}})
    expected = [p.lq_path.resolve() for p in split_heldout(read_pairs(manifest), 2)[1]]
    assert held_out_examples(cfg) == expected and len(expected) == 2
    extra = held_out_examples(cfg, awkward_dir["good.png"].parent)
    assert extra[:2] == expected and len(extra) == 8  # at most MAX_EXAMPLES
    missing = config_from_dict({"train": {"manifest": str(tmp_path / "none.parquet")}})
    assert held_out_examples(missing) == []


def test_the_page_defaults_are_the_restore_and_model_sections_defaults():
    from fluxir.config import ModelConfig, RestoreConfig

    page, restore, model = AppSettings("base", "", [], ""), RestoreConfig(), ModelConfig()
    assert (page.steps, page.tile, page.overlap, page.scale, page.guidance, page.seed, page.color_fix) == (
        restore.steps, restore.tile, restore.overlap, restore.scale, restore.guidance, restore.seed, "wavelet",
    )  # fmt: skip
    assert (page.max_pixels, page.max_output_pixels) == (restore.max_input_pixels, restore.max_output_pixels)
    assert (page.dtype, page.device) == (model.dtype, model.device)
