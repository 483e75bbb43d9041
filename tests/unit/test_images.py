"""fluxir.data.images: safe decoding, conversions, atomic writes, hashes."""

from __future__ import annotations

import hashlib
import io
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageFile
from skimage import data as skdata

from fluxir.data import images
from fluxir.data.images import (
    ImageDecodeError,
    decode_image,
    load_rgb,
    to_float01,
    to_uint8,
    write_image_atomic,
)
from fluxir.io import TMP_SUFFIX, remove_partial_writes, sha256_file


def test_rgb_png_round_trips_exactly(awkward_dir, awkward_rgb):
    out = load_rgb(awkward_dir["good.png"])
    assert out.dtype == np.uint8 and out.shape == (64, 96, 3)
    np.testing.assert_array_equal(out, awkward_rgb)


def test_grayscale_is_replicated_to_three_channels(awkward_dir, awkward_rgb):
    gray = awkward_rgb.mean(axis=2).astype(np.uint8)
    decoded = decode_image(awkward_dir["gray.png"].read_bytes())
    assert decoded.mode == "L" and decoded.note == "L -> RGB"
    for c in range(3):
        np.testing.assert_array_equal(decoded.rgb[..., c], gray)


def test_16bit_gray_is_scaled_not_clipped(awkward_dir, awkward_rgb):
    # The file holds gray * 257 (full 16-bit range); a clip to 255 would make nearly every pixel white.
    gray = awkward_rgb.mean(axis=2).astype(np.uint8)
    decoded = decode_image(awkward_dir["gray16.png"].read_bytes())
    assert decoded.mode.startswith("I") and "16-bit scaled" in decoded.note
    np.testing.assert_array_equal(decoded.rgb[..., 0], gray)


def test_48bit_rgb_keeps_the_high_byte(awkward_dir, awkward_rgb):
    # (v * 257) >> 8 == v for every 8-bit v: the 16-bit file decodes back to the 8-bit source.
    np.testing.assert_array_equal(load_rgb(awkward_dir["rgb16.png"]), awkward_rgb)


def test_rgba_is_composited_on_white(awkward_dir, awkward_rgb):
    decoded = decode_image(awkward_dir["rgba.png"].read_bytes())
    assert "alpha on white" in decoded.note
    half = awkward_rgb.shape[1] // 2
    assert (decoded.rgb[:, :half] == 255).all()  # transparent half -> white background
    np.testing.assert_array_equal(decoded.rgb[:, half:], awkward_rgb[:, half:])  # opaque half unchanged


def test_opaque_alpha_is_just_dropped(awkward_rgb):
    rgba = np.dstack([awkward_rgb, np.full(awkward_rgb.shape[:2], 255, np.uint8)])
    buf = io.BytesIO()
    Image.fromarray(rgba).save(buf, format="PNG")
    decoded = decode_image(buf.getvalue())
    assert "opaque alpha dropped" in decoded.note
    np.testing.assert_array_equal(decoded.rgb, awkward_rgb)


def test_cmyk_jpeg_converts_close_to_the_source(awkward_dir, awkward_rgb):
    decoded = decode_image(awkward_dir["cmyk.jpg"].read_bytes())
    assert decoded.mode == "CMYK" and decoded.rgb.shape == (64, 96, 3)
    # JPEG is lossy; an inverted or channel-swapped conversion would be off by ~100 on average.
    assert np.abs(decoded.rgb.astype(int) - awkward_rgb.astype(int)).mean() < 6


def test_palette_converts_to_its_colours(awkward_dir, awkward_rgb):
    decoded = decode_image(awkward_dir["palette.png"].read_bytes())
    assert decoded.mode == "P"
    assert np.abs(decoded.rgb.astype(int) - awkward_rgb.astype(int)).mean() < 10  # 64-colour quantisation


def test_exif_orientation_is_applied(awkward_rgb):
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    buf = io.BytesIO()
    Image.fromarray(awkward_rgb).save(buf, format="JPEG", quality=95, exif=exif)
    assert decode_image(buf.getvalue()).rgb.shape == (96, 64, 3)


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("empty.png", "empty file (0 bytes)"),
        ("text.png", "not an image"),
        ("truncated.jpg", "truncated or corrupt JPEG"),
        ("truncated.png", "truncated or corrupt PNG"),
        ("corrupt.png", "truncated or corrupt PNG"),
    ],
)
def test_bad_files_raise_a_short_reason(awkward_dir, name, reason):
    with pytest.raises(ImageDecodeError) as info:
        load_rgb(awkward_dir[name])
    assert str(info.value).startswith(reason)
    assert "\n" not in str(info.value)


def test_truncation_fails_even_if_a_library_allows_truncated_images(awkward_dir):
    ImageFile.LOAD_TRUNCATED_IMAGES = True
    try:
        with pytest.raises(ImageDecodeError, match="truncated"):
            load_rgb(awkward_dir["truncated.jpg"])
        assert ImageFile.LOAD_TRUNCATED_IMAGES is True  # the caller's setting is restored
    finally:
        ImageFile.LOAD_TRUNCATED_IMAGES = False


def test_float_images_and_folders_are_rejected(tmp_path):
    buf = io.BytesIO()
    Image.fromarray(np.zeros((8, 8), np.float32), mode="F").save(buf, format="TIFF")
    with pytest.raises(ImageDecodeError, match="floating-point"):
        decode_image(buf.getvalue())
    with pytest.raises(ImageDecodeError, match="is a directory"):
        load_rgb(tmp_path)


def test_conversions():
    np.testing.assert_array_equal(
        to_uint8(np.array([-0.1, 0.0, 0.5, 1 / 255, 1.0, 1.2])), np.array([0, 0, 128, 1, 255, 255], np.uint8)
    )
    x = np.array([0, 51, 255], np.uint8)
    np.testing.assert_allclose(to_float01(x), [0.0, 0.2, 1.0], rtol=1e-6)
    np.testing.assert_array_equal(to_uint8(to_float01(np.arange(256, dtype=np.uint8))), np.arange(256))
    with pytest.raises(TypeError):
        to_float01(x.astype(np.float32))


@pytest.mark.parametrize("suffix", [".png", ".jpg", ".webp"])
def test_write_image_atomic_round_trip_and_hash(tmp_path, awkward_rgb, suffix):
    path = tmp_path / "sub" / f"img{suffix}"
    digest = write_image_atomic(path, awkward_rgb)
    assert digest == sha256_file(path) == hashlib.sha256(path.read_bytes()).hexdigest()
    back = load_rgb(path)
    if suffix == ".jpg":
        assert np.abs(back.astype(int) - awkward_rgb.astype(int)).mean() < 3
    else:
        np.testing.assert_array_equal(back, awkward_rgb)  # png and lossless webp
    assert sorted(p.name for p in path.parent.iterdir()) == [path.name]  # no temp files left


def test_write_image_atomic_keeps_the_old_file_when_the_write_fails(tmp_path, awkward_rgb, monkeypatch):
    path = tmp_path / "img.png"
    write_image_atomic(path, awkward_rgb)
    before = path.read_bytes()

    def crash(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(images.os, "replace", crash)
    with pytest.raises(OSError, match="disk full"):
        write_image_atomic(path, 255 - awkward_rgb)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["img.png"]


def test_write_image_rejects_bad_input(tmp_path, awkward_rgb):
    with pytest.raises(ValueError, match="unsupported image suffix"):
        write_image_atomic(tmp_path / "x.bmp", awkward_rgb)
    with pytest.raises(ValueError, match="uint8"):
        write_image_atomic(tmp_path / "x.png", awkward_rgb.astype(np.float32))


def test_remove_partial_writes_removes_only_temp_files(tmp_path):
    (tmp_path / "shard_000").mkdir()
    users_tmp = tmp_path / "shard_000" / ".notes.txt.tmp"  # a user's (or another tool's) plain .tmp file
    keep = [
        tmp_path / "shard_000" / "0000000.png",
        tmp_path / "manifest.parquet",
        tmp_path / ".hidden",
        users_tmp,
    ]
    stale = [
        tmp_path / "shard_000" / f".0000001.png.k2j3{TMP_SUFFIX}",
        tmp_path / f".manifest.parquet.x{TMP_SUFFIX}",
    ]
    for p in keep + stale:
        p.write_bytes(b"x")
    assert remove_partial_writes(tmp_path) == 2
    assert all(p.exists() for p in keep) and not any(p.exists() for p in stale)


def test_remove_partial_writes_stays_in_the_stage_folders(tmp_path):
    """An out_dir pointed at a user's folder: only the stage's own folders are cleaned."""
    own = tmp_path / "shard_000" / f".0000001.png.k2j3{TMP_SUFFIX}"
    users = tmp_path / "photos" / "2024" / f".x{TMP_SUFFIX}"
    for p in (own, users):
        p.parent.mkdir(parents=True)
        p.write_bytes(b"x")
    assert remove_partial_writes(tmp_path, subfolders=("shard_*",)) == 1
    assert users.exists() and not own.exists()


def test_sha256_file_reads_in_chunks(tmp_path):
    data = os.urandom(3000)
    path = Path(tmp_path / "blob")
    path.write_bytes(data)
    assert sha256_file(path, chunk_size=512) == hashlib.sha256(data).hexdigest()


# ----------------------------------------------------------------------------------------------
# JPEGs damaged in the middle: libjpeg only warns, Pillow decodes them without a word


def _jpeg(image: Image.Image, **options) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="JPEG", **options)
    return buf.getvalue()


def _damaged(clean: bytes, run: int = 64) -> bytes:
    """``clean`` with ``run`` bytes in the middle of its entropy-coded scan overwritten (same length)."""
    scan = clean.index(b"\xff\xda")  # start-of-scan marker: the coded pixels follow it to the end
    middle = scan + (len(clean) - scan) // 2
    return clean[:middle] + b"\x5a" * run + clean[middle + run :]


PHOTO = Image.fromarray(skdata.astronaut())  # 512 x 512: a real photo, not a flat test pattern
JPEG_KINDS = {
    "baseline": (PHOTO, {"quality": 95}),
    "progressive": (PHOTO, {"progressive": True}),
    "restart markers": (PHOTO, {"restart_marker_rows": 1}),
    "4:4:4 q50": (PHOTO, {"quality": 50, "subsampling": 0}),
    "grayscale": (PHOTO.convert("L"), {}),
    "cmyk": (PHOTO.convert("CMYK"), {}),
}


def test_pillow_alone_decodes_a_damaged_jpeg_into_garbage():
    # The failure this guards against: no error, no warning, a large part of the picture wrong.
    clean = _jpeg(PHOTO, quality=95)
    reference = np.asarray(Image.open(io.BytesIO(clean))).astype(int)
    garbled = np.asarray(Image.open(io.BytesIO(_damaged(clean)))).astype(int)
    assert (np.abs(garbled - reference).max(axis=2) > 40).mean() > 0.2


@pytest.mark.parametrize("kind", sorted(JPEG_KINDS))
def test_a_jpeg_damaged_mid_scan_is_rejected(tmp_path, kind):
    image, options = JPEG_KINDS[kind]
    path = tmp_path / "damaged.jpg"
    path.write_bytes(_damaged(_jpeg(image, **options)))
    with pytest.raises(ImageDecodeError) as info:
        load_rgb(path)
    reason = str(info.value)
    assert reason.startswith("damaged JPEG data (libjpeg: Corrupt JPEG data: "), reason
    assert "re-export or re-download" in reason and "\n" not in reason


@pytest.mark.parametrize("kind", sorted(JPEG_KINDS))
def test_a_clean_jpeg_still_loads_exactly_as_pillow_decodes_it(tmp_path, kind):
    image, options = JPEG_KINDS[kind]
    path = tmp_path / "clean.jpg"
    path.write_bytes(_jpeg(image, **options))
    np.testing.assert_array_equal(load_rgb(path), np.asarray(Image.open(path).convert("RGB")))


def test_a_jpeg_variant_the_strict_check_cannot_read_keeps_pillows_decode(monkeypatch):
    # A stream TurboJPEG refuses even when lenient is a format limit, not damage: Pillow's pixels stand.
    def unsupported(*args, **kwargs):
        raise ValueError("Unsupported JPEG process: SOF type 0xc3")

    clean = _jpeg(PHOTO, quality=95)
    monkeypatch.setattr(images.simplejpeg, "decode_jpeg", unsupported)
    np.testing.assert_array_equal(decode_image(clean).rgb, np.asarray(Image.open(io.BytesIO(clean))))
    with pytest.raises(ImageDecodeError, match="truncated or corrupt JPEG"):  # Pillow's own checks remain
        decode_image(clean[: len(clean) // 2])
