"""`fluxir restore`: files and folders, odd inputs converted or skipped with a reason, reruns resume, and
what can be refused from names and headers is refused before any model is loaded."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from skimage import data as skdata

from fluxir.cli import main
from fluxir.models.adapter import FluxIRAdapter
from fluxir.models.flux import load_flux
from fluxir.models.tiny import save_tiny_pipeline
from fluxir.restoration import restore
from fluxir.restoration.pipeline import PIXELS_PER_TOKEN, FluxIRPipeline
from fluxir.restoration.tiling import layout

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
    (folder / "notes.txt").write_text("not an image: listed as skipped")
    photo.save(folder / "anim.gif")  # Pillow reads GIFs, but they are not among the restored types
    (folder / ".DS_Store").write_bytes(b"\0\0\0\1Bud1")  # hidden: not part of the folder's content
    (folder / "._rgb.png").write_bytes(b"\0\5\26\7 AppleDouble")  # macOS resource fork beside rgb.png
    (folder / ".git").mkdir()
    photo.save(folder / ".git" / "in-a-hidden-folder.png")
    return folder


@pytest.fixture()
def no_model(monkeypatch) -> list:
    """Fail the test if the model is loaded; the list records any attempt."""
    attempts: list = []

    def refuse(*args, **kwargs):
        attempts.append(args)
        raise AssertionError("the model was loaded although the run should have been refused up front")

    monkeypatch.setattr(FluxIRPipeline, "from_pretrained", refuse)
    return attempts


def one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert err[0].startswith("fluxir restore: error: ")
    return err[0]


def run_restore(args: list[str], base: Path, adapter: Path) -> int:
    return main(["restore", *args, "--base", str(base), "--adapter", str(adapter), *FAST])


def test_folder_run_restores_what_it_can_and_reports_the_rest(model_dirs, odd_folder, tmp_path, capsys):
    base, adapter = model_dirs
    out = tmp_path / "out"
    assert run_restore([str(odd_folder), str(out)], base, adapter) == restore.SKIPPED_EXIT == 3
    written = {p.relative_to(out).as_posix(): np.asarray(Image.open(p)).shape for p in out.rglob("*.png")}
    assert written == {
        "rgb.png": (80, 96, 3),
        "gray.png": (80, 96, 3),
        "nested/rgba.png": (80, 96, 3),
        "cmyk.png": (80, 96, 3),
        "sixteen.png": (80, 96, 3),
    }
    report = capsys.readouterr().out
    lines = report.strip().splitlines()
    assert lines[0] == "restored 5, kept 0 existing, skipped 5"  # the summary comes first
    skipped = {line.split(": ")[0].removeprefix("  skipped ") for line in lines[1:]}
    assert skipped == {
        str(odd_folder / n) for n in ("one.png", "corrupt.jpg", "empty.png", "notes.txt", "anim.gif")
    }
    assert "one.png: image is 1x1 px" in report
    assert "corrupt.jpg:" in report and "empty.png: empty file" in report
    assert "notes.txt: unsupported file type '.txt'; restore reads .bmp, .jpeg" in report
    assert "anim.gif: unsupported file type '.gif'" in report
    assert ".DS_Store" not in report and "._rgb.png" not in report and ".git" not in report

    before = {p: p.stat().st_mtime_ns for p in out.rglob("*.png")}
    assert run_restore([str(odd_folder), str(out)], base, adapter) == 3  # rerun: nothing redone
    assert "restored 0, kept 5 existing, skipped 5" in capsys.readouterr().out
    assert before == {p: p.stat().st_mtime_ns for p in out.rglob("*.png")}


def test_a_folder_with_nothing_skipped_exits_0(model_dirs, odd_folder, tmp_path, capsys):
    base, adapter = model_dirs
    clean = tmp_path / "clean"
    (clean / ".thumbnails").mkdir(parents=True)
    (odd_folder / "rgb.png").rename(clean / "rgb.png")
    (clean / ".thumbnails" / "rgb.png").write_bytes(b"hidden, ignored")
    assert run_restore([str(clean), str(tmp_path / "out")], base, adapter) == 0
    assert capsys.readouterr().out.strip() == "restored 1, kept 0 existing, skipped 0"
    assert (tmp_path / "out" / "rgb.png").is_file() and not (tmp_path / "out" / ".thumbnails").exists()


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
    code = run_restore(
        [str(odd_folder / "rgb.png"), str(tmp_path / "h.png"), "--params", str(params)], base, adapter
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


# ----------------------------------------------------------------------------------------------
# Refused up front: from names and headers, before any model is loaded


@pytest.mark.parametrize("name", ["out.xyz", "out.gif", "out.txt", "out.tif"])
def test_an_output_suffix_the_writer_cannot_encode_is_refused_up_front(
    model_dirs, odd_folder, tmp_path, capsys, no_model, name
):
    base, adapter = model_dirs
    assert run_restore([str(odd_folder / "rgb.png"), str(tmp_path / name)], base, adapter) == 2
    line = one_error_line(capsys)
    suffix = Path(name).suffix
    assert f"{tmp_path / name}: '{suffix}' is not an image type restore can write" in line
    assert "end OUT with .png, .jpg, .jpeg, .webp, or give a folder" in line
    assert not (tmp_path / name).exists() and no_model == []


def test_an_existing_folder_or_an_upper_case_suffix_is_a_fine_output(model_dirs, odd_folder, tmp_path):
    base, adapter = model_dirs
    folder = tmp_path / "results.d"  # a folder whose name has a suffix: the output goes inside it
    folder.mkdir()
    assert run_restore([str(odd_folder / "rgb.png"), str(folder)], base, adapter) == 0
    assert Image.open(folder / "rgb.png").size == (96, 80)
    assert run_restore([str(odd_folder / "rgb.png"), str(tmp_path / "x.JPG")], base, adapter) == 0
    assert Image.open(tmp_path / "x.JPG").format == "JPEG"


def test_a_damaged_jpeg_is_refused_before_the_model_loads(model_dirs, tmp_path, capsys, no_model):
    base, adapter = model_dirs
    buf = io.BytesIO()
    Image.fromarray(skdata.astronaut()).save(buf, format="JPEG", quality=95)
    clean = buf.getvalue()
    middle = clean.index(b"\xff\xda") + (len(clean) - clean.index(b"\xff\xda")) // 2
    (tmp_path / "damaged.jpg").write_bytes(clean[:middle] + b"\x5a" * 64 + clean[middle + 64 :])
    assert run_restore([str(tmp_path / "damaged.jpg"), str(tmp_path / "d.png")], base, adapter) == 2
    line = one_error_line(capsys)
    assert "damaged.jpg: damaged JPEG data (libjpeg: Corrupt JPEG data:" in line
    assert not (tmp_path / "d.png").exists() and no_model == []


def test_two_inputs_with_one_output_refuse_the_run_naming_both(tmp_path, capsys, no_model, model_dirs):
    base, adapter = model_dirs
    lq = tmp_path / "lq"
    (lq / "nested").mkdir(parents=True)
    photo = Image.fromarray(skdata.astronaut()).resize((24, 20))
    for name in ("a.png", "a.jpg", "nested/b.png", "nested/b.webp", "c.png"):
        photo.save(lq / name)
    out = tmp_path / "out"
    assert run_restore([str(lq), str(out)], base, adapter) == 2
    line = one_error_line(capsys)
    assert f"{out / 'a.png'}: {lq / 'a.jpg'} and {lq / 'a.png'} would both be restored there" in line
    assert line.endswith("; rename one of them (1 more clash)")
    assert not out.exists() and no_model == []


@pytest.mark.parametrize("where", ["same folder", "same file"])
def test_an_output_that_would_replace_its_input_is_refused(tmp_path, capsys, no_model, model_dirs, where):
    base, adapter = model_dirs
    (tmp_path / "lq").mkdir()
    image = tmp_path / "lq" / "a.png"
    Image.fromarray(skdata.astronaut()).resize((24, 20)).save(image)
    before = image.read_bytes()
    source = image.parent if where == "same folder" else image
    assert run_restore([str(source), str(source), "--overwrite"], base, adapter) == 2
    assert f"{image}: restoring {image} would replace an input image; choose another OUT" in one_error_line(
        capsys
    )
    assert image.read_bytes() == before and no_model == []


def restore_with_limit(args: list[str], limit: int, base: Path, adapter: Path, tmp_path: Path) -> int:
    params = tmp_path / "limit.yaml"
    params.write_text(f"restore:\n  max_output_pixels: {limit}\n")
    return main(
        [
            "restore",
            *args,
            "--base",
            str(base),
            "--adapter",
            str(adapter),
            "--params",
            str(params),
            "--steps",
            "1",
        ]
    )


def test_an_oversized_output_is_refused_naming_size_limit_tiles_and_force(
    model_dirs, odd_folder, tmp_path, capsys, no_model
):
    base, adapter = model_dirs
    args = [str(odd_folder / "rgb.png"), str(tmp_path / "big.png"), "--tile", "32", "--overlap", "16"]
    assert restore_with_limit(args, 5000, base, adapter, tmp_path) == 2  # 24x20 at x4: 96x80 = 7680 px
    line = one_error_line(capsys)
    assert (
        f"{odd_folder / 'rgb.png'}: the x4 output would be 96x80 px (0.00768 MP, 20 tiles of 32 px)" in line
    )
    assert "more than restore.max_output_pixels=5000; pass --force to restore it anyway" in line
    assert not (tmp_path / "big.png").exists() and no_model == []


def test_a_folder_of_oversized_outputs_skips_them_without_loading_the_model(
    model_dirs, odd_folder, tmp_path, capsys, no_model
):
    base, adapter = model_dirs
    big = tmp_path / "big"
    big.mkdir()
    for name in ("rgb.png", "gray.png"):
        (odd_folder / name).rename(big / name)
    assert restore_with_limit([str(big), str(tmp_path / "out")], 5000, base, adapter, tmp_path) == 3
    report = capsys.readouterr().out.splitlines()
    assert report[0] == "restored 0, kept 0 existing, skipped 2"
    assert all("restore.max_output_pixels=5000; pass --force" in line for line in report[1:])
    assert not (tmp_path / "out").exists() and no_model == []


def test_force_restores_what_the_output_limit_skipped(model_dirs, odd_folder, tmp_path, capsys):
    base, adapter = model_dirs
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    (odd_folder / "rgb.png").rename(mixed / "big.png")  # 96x80 output: over the limit
    Image.open(mixed / "big.png").resize((12, 10)).save(mixed / "small.png")  # 48x40: under it
    out = tmp_path / "out"
    args = [str(mixed), str(out), *FAST]
    assert restore_with_limit(args, 5000, base, adapter, tmp_path) == 3
    report = capsys.readouterr().out
    assert "restored 1, kept 0 existing, skipped 1" in report and "big.png: the x4 output" in report
    assert sorted(p.name for p in out.iterdir()) == ["small.png"]
    assert restore_with_limit([*args, "--force"], 5000, base, adapter, tmp_path) == 0
    assert "restored 1, kept 1 existing, skipped 0" in capsys.readouterr().out
    assert Image.open(out / "big.png").size == (96, 80)


@pytest.mark.parametrize(
    ("height", "width"), [(80, 96), (1000, 1000), (1040, 2000), (4100, 3000), (16, 9000)]
)
@pytest.mark.parametrize(("tile", "overlap"), [(128, 32), (1024, 128), (512, 0)])
def test_the_tile_count_is_the_pipelines_layout(height, width, tile, overlap):
    assert restore.TILE_GRID == PIXELS_PER_TOKEN
    padded = [-(-side // PIXELS_PER_TOKEN) * PIXELS_PER_TOKEN for side in (height, width)]
    expected = len(layout(*padded, tile, overlap, unit=PIXELS_PER_TOKEN))
    assert restore.tile_count(height, width, tile, overlap) == expected


def test_the_default_output_limit_allows_4k_and_refuses_a_24_mp_photo_at_x4(tmp_path):
    from fluxir.config import RestoreConfig

    options = RestoreConfig()
    assert options.scale == 4 and options.max_output_pixels == 4096 * 4096
    for name, size, refused in (
        ("4k.png", (960, 540), False),
        ("1k.png", (1024, 1024), False),
        ("24mp.png", (6000, 4000), True),
    ):
        Image.new("RGB", size).save(tmp_path / name)
        problem = restore.size_problem(tmp_path / name, options)
        assert (problem is not None) == refused, problem
    assert "24000x16000 px (384 MP, 486 tiles of 1024 px)" in problem
    assert restore.size_problem(tmp_path / "24mp.png", options, force=True) is None


# ----------------------------------------------------------------------------------------------
# A full disk mid-run: stop with one line naming the output (exit 1), keep what is finished


def test_a_full_disk_stops_a_folder_run_with_one_line_keeping_finished_outputs(
    model_dirs, tmp_path, capsys, monkeypatch
):
    import errno

    import fluxir.data.images as images
    from fluxir.io import TMP_SUFFIX, atomic_path

    base, adapter = model_dirs
    folder = tmp_path / "lq"
    folder.mkdir()
    photo = Image.fromarray(skdata.astronaut()).resize((24, 20))
    for name in ("a.png", "b.png", "c.png"):
        photo.save(folder / name)
    out = tmp_path / "out"
    writes: list[Path] = []
    real_write = images.write_bytes_atomic

    def disk_full_after_one(path, data, mode=None):
        writes.append(Path(path))
        if len(writes) == 1:
            return real_write(path, data, mode)
        with atomic_path(path) as tmp:  # as a real write: half the bytes land in the temp file, then ENOSPC
            tmp.write_bytes(data[: len(data) // 2])
            raise OSError(errno.ENOSPC, "No space left on device")  # write() errors name no file

    monkeypatch.setattr(images, "write_bytes_atomic", disk_full_after_one)
    assert run_restore([str(folder), str(out)], base, adapter) == 1
    captured = capsys.readouterr()
    err = [line for line in captured.err.splitlines() if ": error: " in line]  # besides the loading bars
    assert len(err) == 1, captured.err[-2000:]
    assert err[0] == (
        f"fluxir restore: error: {writes[1]}: No space left on device; the disk is full; free space and rerun "
        "(finished files are kept); stopped after restoring 1 of 3 image(s), rerun the same command to do the rest"
    )
    assert captured.out.strip().splitlines() == ["restored 1, kept 0 existing, skipped 0"]
    assert len(writes) == 2  # stopped at the full disk, not tried for every remaining file
    assert sorted(p.name for p in out.iterdir()) == [writes[0].name]  # no partial file, no temp file
    assert not list(out.rglob(f"*{TMP_SUFFIX}"))

    monkeypatch.setattr(images, "write_bytes_atomic", real_write)  # space freed: the rerun does the rest
    assert run_restore([str(folder), str(out)], base, adapter) == 0
    assert capsys.readouterr().out.strip() == "restored 2, kept 1 existing, skipped 0"
    assert sorted(p.name for p in out.iterdir()) == ["a.png", "b.png", "c.png"]


def test_a_full_disk_on_a_single_file_is_one_line_without_a_summary(
    model_dirs, tmp_path, capsys, monkeypatch
):
    import errno

    import fluxir.data.images as images

    base, adapter = model_dirs
    Image.fromarray(skdata.astronaut()).resize((24, 20)).save(tmp_path / "a.png")

    def disk_full(path, data, mode=None):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(images, "write_bytes_atomic", disk_full)
    assert run_restore([str(tmp_path / "a.png"), str(tmp_path / "out.png")], base, adapter) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    err = [line for line in captured.err.splitlines() if ": error: " in line]
    assert len(err) == 1 and err[0].startswith(
        f"fluxir restore: error: {tmp_path / 'out.png'}: No space left"
    )
    assert not (tmp_path / "out.png").exists()


def test_a_newline_in_a_skipped_name_stays_on_one_line(model_dirs, odd_folder, tmp_path, capsys):
    base, adapter = model_dirs
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "ok.png").write_bytes((odd_folder / "rgb.png").read_bytes())
    (folder / "bad\nname.txt").write_text("not an image")
    assert run_restore([str(folder), str(tmp_path / "out")], base, adapter) == 3
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines == [
        "restored 1, kept 0 existing, skipped 1",
        f"  skipped {folder}/bad\\nname.txt: unsupported file type '.txt'; restore reads "
        + lines[1].split("restore reads ", 1)[1],
    ]
