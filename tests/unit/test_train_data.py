"""Training data: manifest reading, held-out split, size buckets, control images and the latent cache."""

from __future__ import annotations

import hashlib
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from train_pairs import TINY_SIZES, write_pairs

from fluxir.io import TMP_SUFFIX
from fluxir.restoration.pipeline import upscale_lq
from fluxir.train.data import (
    BucketBatches,
    LatentCache,
    Pair,
    PairLatents,
    TrainDataError,
    cache_key,
    encode_pair,
    files_digest,
    pair_images,
    read_pairs,
    sha256_file,
    split_heldout,
)


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("project")
    write_pairs(root, per_photo=3)  # 12 pairs, 4 per size
    return root


@pytest.fixture
def pairs(project, monkeypatch) -> list[Pair]:
    monkeypatch.chdir(project)  # manifest paths are relative to the project root
    return read_pairs("data/degrade/manifest.parquet")


def fake_encode(calls: list[np.ndarray] | None = None):
    """A cheap stand-in for FluxIRPipeline.encode with its shapes: 8x8 average pool, 16 channels."""

    def encode(image: torch.Tensor) -> torch.Tensor:
        if calls is not None:
            calls.append((image[0].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8))
        pooled = torch.nn.functional.avg_pool2d(image, 8)  # (1, 3, H/8, W/8)
        return torch.cat([pooled * (k + 1) for k in range(6)], dim=1)[:, :16]

    return encode


# ------------------------------------------------------------------------------------------ manifest


def test_read_pairs_resolves_paths_and_sizes(pairs, project):
    assert len(pairs) == 12
    assert all(p.hq_path.is_file() and p.lq_path.is_file() for p in pairs)
    assert Counter((p.height, p.width) for p in pairs) == {size: 4 for size in TINY_SIZES}
    assert pairs[0].id == "astronaut-00"


def test_paths_relative_to_the_manifest_folder_also_resolve(project, tmp_path, monkeypatch):
    df = pd.read_parquet(project / "data/degrade/manifest.parquet")
    df["hq_path"] = df["hq_path"].str.replace("data/degrade/", "", regex=False)
    df["lq_path"] = df["lq_path"].str.replace("data/degrade/", "", regex=False)
    df.to_parquet(project / "data/degrade/relative.parquet")
    monkeypatch.chdir(tmp_path)  # nowhere near the data
    pairs = read_pairs(project / "data/degrade/relative.parquet")
    assert pairs[0].hq_path == project / "data/degrade/hq/astronaut-00.png"
    assert all(p.lq_path.is_file() for p in pairs)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda df: df.drop(columns=["lq_path"]), "missing column(s) lq_path"),
        (lambda df: pd.concat([df, df.iloc[:1]]), "id 'astronaut-00' appears more than once"),
        (lambda df: df.assign(hq_width=100), "must be multiples of 16"),
        (lambda df: df.iloc[:0], "has no pairs"),
    ],
)
def test_bad_manifests_fail_with_one_line(project, tmp_path, change, message):
    df = change(pd.read_parquet(project / "data/degrade/manifest.parquet"))
    df.to_parquet(tmp_path / "m.parquet")
    with pytest.raises(TrainDataError, match=message.replace("(", r"\(").replace(")", r"\)")):
        read_pairs(tmp_path / "m.parquet")


def test_missing_manifest_says_which_stage_writes_it(tmp_path):
    with pytest.raises(TrainDataError, match="run the degrade stage first"):
        read_pairs(tmp_path / "nope.parquet")


# ------------------------------------------------------------------------------------------ held-out split


def _pair(i: int) -> Pair:
    return Pair(f"img-{i}", Path("hq.png"), Path("lq.png"), 96, 128)


def test_heldout_split_takes_the_lowest_id_hashes_and_is_stable_as_data_grows():
    small = [_pair(i) for i in range(20)]
    train, val = split_heldout(small, 3)
    by_hash = sorted(small, key=lambda p: hashlib.sha256(p.id.encode()).hexdigest())
    assert val == by_hash[:3] and len(train) == 17
    assert not {p.id for p in train} & {p.id for p in val}
    grown = small + [_pair(i) for i in range(20, 40)]
    train2, val2 = split_heldout(grown, 3)
    added = {p.id for p in grown[20:]}
    for p in val:  # an old held-out pair leaves the held-out set only when a new pair displaces it
        assert p in val2 or any(q.id in added for q in val2)
    assert {p.id for p in train2} | {p.id for p in val2} == {p.id for p in grown}
    assert split_heldout(small, 0) == (small, [])
    with pytest.raises(TrainDataError, match="val_size=20"):
        split_heldout(small, 20)


# ------------------------------------------------------------------------------------------ buckets


def test_buckets_give_same_size_batches_that_mix_sizes_across_the_epoch():
    sizes = [(96, 128)] * 9 + [(96, 96)] * 8 + [(96, 64)] * 5
    batches = BucketBatches(sizes, batch_size=4, seed=0)
    assert batches.batches_per_epoch == 2 + 2 + 1
    for epoch in range(3):
        epoch_batches = batches.epoch_batches(epoch)
        assert len(epoch_batches) == 5
        seen = [i for b in epoch_batches for i in b]
        assert len(seen) == len(set(seen)) == 20  # no image twice in an epoch; 2 tails left out
        for b in epoch_batches:
            assert len(b) == 4 and len({sizes[i] for i in b}) == 1
        assert {sizes[b[0]] for b in epoch_batches} == set(sizes)
    orders = {tuple(sizes[b[0]] for b in batches.epoch_batches(e)) for e in range(8)}
    assert len(orders) > 1  # bucket order is shuffled per epoch, not fixed


def test_batch_k_is_a_pure_function_of_seed_and_k():
    sizes = [(96, 128)] * 8 + [(96, 64)] * 8
    a, b = BucketBatches(sizes, 4, seed=3), BucketBatches(sizes, 4, seed=3)
    run = [a.batch(k) for k in range(12)]
    assert [b.batch(k) for k in reversed(range(12))][::-1] == run  # any access order
    assert run[5] == a.epoch_batches(1)[1] and a.position(5) == (1, 1)
    assert a.epoch_batches(0) != a.epoch_batches(1)
    assert BucketBatches(sizes, 4, seed=4).epoch_batches(0) != a.epoch_batches(0)


def test_no_full_batch_names_the_buckets():
    with pytest.raises(
        TrainDataError, match=r"batch_size=8: no size bucket holds a full batch \(96x64: 3, 96x128: 5\)"
    ):
        BucketBatches([(96, 128)] * 5 + [(96, 64)] * 3, 8, seed=0)


# ------------------------------------------------------------------------------------------ images and cache


def test_control_image_is_the_bicubic_upscale_inference_uses(pairs):
    calls: list[np.ndarray] = []
    encode_pair(pairs[0], 4, fake_encode(calls))
    hq, lq, control = pair_images(pairs[0], 4)
    assert np.array_equal(calls[0], hq)
    assert np.array_equal(calls[1], upscale_lq(lq, 4)) and np.array_equal(control, upscale_lq(lq, 4))
    assert control.shape == hq.shape == (pairs[0].height, pairs[0].width, 3)


def test_wrong_scale_is_refused(pairs):
    with pytest.raises(TrainDataError, match=r"x degrade.scale=2 is not the HQ size"):
        pair_images(pairs[0], 2)


def test_cache_round_trip_equals_encoding_on_the_fly(pairs, tmp_path):
    encode = fake_encode()
    cache = LatentCache(tmp_path, "k" * 64)
    assert cache.build(pairs, 4, encode) == 12
    cache.save_prompt(torch.ones(1, 8, 32), torch.zeros(1, 32), torch.zeros(8, 3))
    assert not cache.complete
    cache.finish(pairs, {"note": "test"})
    assert cache.complete
    cached = PairLatents(pairs, 4, cache, None).load([0, 3, 6])
    fresh = PairLatents(pairs, 4, None, encode).load([0, 3, 6])
    for a, b in zip(cached, fresh, strict=True):
        assert a.shape == (3, 16, 12, 16) and torch.equal(a, b)
    embeds, pooled, ids = cache.load_prompt()
    assert torch.equal(embeds, torch.ones(1, 8, 32)) and pooled.shape == (1, 32) and ids.shape == (8, 3)


def test_interrupted_and_sharded_builds_encode_only_what_is_missing(pairs, tmp_path):
    cache = LatentCache(tmp_path, "s" * 64)
    assert cache.build(pairs, 4, fake_encode(), rank=1, world_size=2) == 6  # rank 1's share
    cache.path(pairs[0]).unlink(missing_ok=True)
    assert cache.build(pairs, 4, fake_encode(), rank=0, world_size=2) == 6  # rank 0's share
    assert cache.build(pairs, 4, fake_encode()) == 0  # nothing left
    cache.path(pairs[5]).unlink()
    with pytest.raises(TrainDataError, match="missing"):
        cache.finish(pairs, {})  # and no prompt file either
    assert not list(cache.folder.glob(f".*{TMP_SUFFIX}"))  # atomic writes leave no temp files behind


def test_cache_key_changes_with_every_input(project, tmp_path):
    model = tmp_path / "model"
    (model / "vae").mkdir(parents=True)
    (model / "vae" / "config.json").write_text("{}")
    (model / "transformer").mkdir()
    (model / "transformer" / "w.bin").write_bytes(b"1")
    digest = files_digest(model)
    (model / "transformer" / "w.bin").write_bytes(b"2")
    assert files_digest(model) == digest  # the transformer does not decide latents
    (model / "vae" / "config.json").write_text('{"scaling_factor": 1}')
    assert files_digest(model) != digest

    manifest = sha256_file(project / "data/degrade/manifest.parquet")
    key = cache_key(manifest, digest, torch.float32, 4, 512)
    assert key == cache_key(manifest, digest, torch.float32, 4, 512)
    others = [
        cache_key("0" * 64, digest, torch.float32, 4, 512),
        cache_key(manifest, "0" * 64, torch.float32, 4, 512),
        cache_key(manifest, digest, torch.bfloat16, 4, 512),
        cache_key(manifest, digest, torch.float32, 2, 512),
        cache_key(manifest, digest, torch.float32, 4, 64),
    ]
    assert len({key, *others}) == 6
    assert LatentCache(tmp_path, key).folder != LatentCache(tmp_path, others[0]).folder


def test_cache_clear_removes_the_folder(pairs, tmp_path):
    cache = LatentCache(tmp_path, "c" * 64)
    cache.build(pairs[:2], 4, fake_encode())
    cache.clear()
    assert not cache.folder.exists()


# ------------------------------------------------------------------------------------------ damaged files


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (b"not a parquet file at all\n", "not a readable parquet manifest"),
        (b"", "not a readable parquet manifest"),
        (b"PAR1" + b"\0" * 64, "not a readable parquet manifest"),
    ],
)
def test_a_manifest_that_is_not_parquet_fails_with_one_line(tmp_path, content, reason):
    path = tmp_path / "manifest.parquet"
    path.write_bytes(content)
    with pytest.raises(TrainDataError) as info:
        read_pairs(path)
    message = str(info.value)
    assert message.startswith(f"{path}: {reason} (") and "rerun the degrade stage" in message
    assert "\n" not in message


def test_sizes_that_are_not_numbers_fail_with_one_line(project, tmp_path):
    df = pd.read_parquet(project / "data/degrade/manifest.parquet")
    df["hq_height"] = df["hq_height"].astype(str)
    df.loc[1, "hq_height"] = "tall"
    df.to_parquet(tmp_path / "m.parquet")
    with pytest.raises(TrainDataError, match=r"pair 'astronaut-01' has hq_height='tall'.*whole numbers"):
        read_pairs(tmp_path / "m.parquet")


def _damage(path: Path, how: str) -> None:
    if how == "garbage":
        path.write_bytes(b"\x89PNG garbage, not an image" * 8)
    elif how == "truncated":
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 2])
    else:
        path.unlink()


@pytest.mark.parametrize("which", ["HQ", "LQ"])
@pytest.mark.parametrize("how", ["garbage", "truncated", "missing"])
def test_a_damaged_pair_image_stops_training_naming_pair_and_file(pairs, tmp_path, which, how):
    import shutil

    first = pairs[0]
    hq, lq = tmp_path / "hq.png", tmp_path / "lq.png"
    shutil.copy(first.hq_path, hq)
    shutil.copy(first.lq_path, lq)
    damaged = hq if which == "HQ" else lq
    _damage(damaged, how)
    pair = Pair(first.id, hq, lq, first.height, first.width)
    cache = LatentCache(tmp_path / "cache", "d" * 64)
    with pytest.raises(TrainDataError) as info:
        cache.build([pairs[1], pair, pairs[2]], 4, fake_encode())
    message = str(info.value)
    assert message.startswith(f"pair '{first.id}': {which} image {damaged}: ")
    assert ("file not found" if how == "missing" else "cannot be read as an image") in message
    assert "rerun the degrade stage" in message and "\n" not in message
    assert cache.path(pairs[1]).is_file() and not cache.path(pair).exists()  # stopped at the bad pair
    assert not list(cache.folder.glob(f".*{TMP_SUFFIX}"))
