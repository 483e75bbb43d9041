"""`fluxir restore`: files and folders, odd inputs converted or skipped with a reason, reruns resume."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from skimage import data as skdata

from fluxir.cli import main
from fluxir.models.adapter import FluxIRAdapter
from fluxir.models.flux import load_flux
from fluxir.models.tiny import save_tiny_pipeline

FAST = ["--steps", "1", "--tile", "128", "--overlap", "32"]


@pytest.fixture(scope="module")
def model_dirs(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("restore-models")
    base = save_tiny_pipeline(root / "tiny", seed=0)
    FluxIRAdapter.from_flux(load_flux(base).transformer, rank=4).save_pretrained(root / "adapter")
    return base, root / "adapter"


@pytest.fixture()
def odd_folder(tmp_path) -> Path:
    """Real photo in every awkward encoding a user might have, plus broken files."""
    folder = tmp_path / "lq"
    (folder / "nested").mkdir(parents=True)
    photo = Image.fromarray(skdata.astronaut()).resize((24, 20))
    photo.save(folder / "rgb.png")
    photo.convert("L").save(folder / "gray.png")
    photo.convert("RGBA").save(folder / "nested" / "rgba.png")
    photo.convert("CMYK").save(folder / "cmyk.jpg")
    Image.fromarray(np.asarray(photo.convert("L"), dtype=np.uint16) * 257).save(folder / "sixteen.png")
    Image.new("RGB", (1, 1)).save(folder / "one.png")
    (folder / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    (folder / "empty.png").write_bytes(b"")
    (folder / "notes.txt").write_text("not an image, not picked up")
    return folder


def run_restore(args: list[str], base: Path, adapter: Path) -> int:
    return main(["restore", *args, "--base", str(base), "--adapter", str(adapter), *FAST])


def test_folder_run_restores_what_it_can_and_reports_the_rest(model_dirs, odd_folder, tmp_path, capsys):
    base, adapter = model_dirs
    out = tmp_path / "out"
    assert run_restore([str(odd_folder), str(out)], base, adapter) == 0
    written = {p.relative_to(out).as_posix(): np.asarray(Image.open(p)).shape for p in out.rglob("*.png")}
    assert written == {
        "rgb.png": (80, 96, 3),
        "gray.png": (80, 96, 3),
        "nested/rgba.png": (80, 96, 3),
        "cmyk.png": (80, 96, 3),
        "sixteen.png": (80, 96, 3),
    }
    report = capsys.readouterr().out
    assert "restored 5, kept 0 existing, skipped 3" in report
    assert "one.png: image is 1x1 px" in report
    assert "corrupt.jpg:" in report and "empty.png: empty file" in report

    before = {p: p.stat().st_mtime_ns for p in out.rglob("*.png")}
    assert run_restore([str(odd_folder), str(out)], base, adapter) == 0  # rerun: nothing redone
    assert "restored 0, kept 5 existing, skipped 3" in capsys.readouterr().out
    assert before == {p: p.stat().st_mtime_ns for p in out.rglob("*.png")}


def test_single_file_and_its_errors(model_dirs, odd_folder, tmp_path, capsys):
    base, adapter = model_dirs
    assert run_restore([str(odd_folder / "rgb.png"), str(tmp_path / "x.png")], base, adapter) == 0
    assert np.asarray(Image.open(tmp_path / "x.png")).shape == (80, 96, 3)
    capsys.readouterr()
    assert run_restore([str(odd_folder / "corrupt.jpg"), str(tmp_path / "y.png")], base, adapter) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1  # refused before any model is loaded, in one line
    assert err[0].startswith("fluxir restore: error:") and "corrupt.jpg" in err[0]
    assert not (tmp_path / "y.png").exists()
    assert run_restore([str(tmp_path / "missing.png"), str(tmp_path / "z.png")], base, adapter) == 2
    assert "does not exist" in capsys.readouterr().err


def test_huge_input_is_refused_before_decoding(model_dirs, odd_folder, tmp_path, capsys):
    base, adapter = model_dirs
    params = tmp_path / "params.yaml"
    params.write_text("restore:\n  max_input_pixels: 400\n")
    code = main(
        [
            "restore",
            str(odd_folder / "rgb.png"),
            str(tmp_path / "h.png"),
            "--base",
            str(base),
            "--adapter",
            str(adapter),
            "--params",
            str(params),
            *FAST,
        ]
    )
    assert code == 2
    assert "24x20 px is more than restore.max_input_pixels=400" in capsys.readouterr().err


def test_missing_adapter_names_the_fix(model_dirs, odd_folder, tmp_path, capsys):
    base, _ = model_dirs
    assert run_restore([str(odd_folder), str(tmp_path / "o")], base, tmp_path / "no-adapter") == 2
    assert "is not an adapter folder" in capsys.readouterr().err


def test_adapter_for_another_base_shape_is_one_line_error(model_dirs, odd_folder, tmp_path, capsys):
    from diffusers import FluxTransformer2DModel

    from fluxir.models.tiny import TINY_TRANSFORMER

    base, _ = model_dirs
    other = FluxTransformer2DModel(**{**TINY_TRANSFORMER, "num_single_layers": 2})
    FluxIRAdapter.from_flux(other, rank=4).save_pretrained(tmp_path / "other-adapter")
    assert (
        run_restore([str(odd_folder / "rgb.png"), str(tmp_path / "o.png")], base, tmp_path / "other-adapter")
        == 2
    )
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("fluxir restore: error: adapter was built for") and "num_single_layers" in err


def test_memory_tiling_and_colour_flags_reach_the_restore(model_dirs, odd_folder, tmp_path, capsys):
    base, adapter = model_dirs
    image = str(odd_folder / "rgb.png")
    plain = ["--color-fix", "none", "--tile-mode", "per_tile"]
    outputs = {}
    for name, flags in (
        ("plain", plain),
        ("sequential", [*plain, "--offload", "sequential", "--dtype", "fp32"]),
        ("wavelet", ["--color-fix", "wavelet", "--tile-mode", "per_tile"]),
        ("bf16", [*plain, "--dtype", "bf16", "--offload", "model"]),
    ):
        assert run_restore([image, str(tmp_path / f"{name}.png"), *flags], base, adapter) == 0
        outputs[name] = np.asarray(Image.open(tmp_path / f"{name}.png"))
    np.testing.assert_array_equal(outputs["sequential"], outputs["plain"])  # offloading changes no pixel
    assert not np.array_equal(outputs["wavelet"], outputs["plain"])
    assert not np.array_equal(outputs["bf16"], outputs["plain"])  # bf16 weights: other rounding
    capsys.readouterr()
    assert run_restore([image, str(tmp_path / "x.png"), "--tile-batch", "-1"], base, adapter) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "restore.tile_batch=-1" in err[0]
