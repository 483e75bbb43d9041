"""Training data: HQ/LQ pairs from the degrade manifest, aspect-ratio buckets and the latent cache.

- :func:`read_pairs` reads ``manifest.parquet`` (columns id, hq_path, lq_path, hq_height, hq_width).
- :func:`split_heldout` holds out a few pairs for validation, chosen by hashing their ids so the choice
  does not move when the data set grows.
- :class:`BucketBatches` makes global batches in which every image has the same size (the paper's crops
  come in several aspect ratios) and buckets are mixed across the epoch. Batch ``k`` is a pure function of
  ``(seed, k)``, so the data position of a run is just its step count.
- The control image is made exactly as at inference: ``upscale_lq`` (bicubic x scale) of the LQ image,
  then ``FluxIRPipeline.encode``. Each image is encoded on its own, so a latent never depends on which
  images share its batch (1 and N processes, cached and uncached runs see bitwise-equal latents).
- :class:`LatentCache` stores those latents (and the constant empty-prompt embeddings) as safetensors,
  one file per pair, in a folder keyed by the manifest's hash, the base model's VAE and text-encoder
  files, the dtype, the scale and the prompt length; any change gives a new folder, never stale latents.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from fluxir.data.images import ImageDecodeError, load_rgb
from fluxir.data.paths import check_id, check_inside
from fluxir.errors import UserError
from fluxir.io import atomic_path, sha256_file, write_json_atomic
from fluxir.restoration.pipeline import PIXELS_PER_TOKEN, upscale_lq

REQUIRED_COLUMNS = ("id", "hq_path", "lq_path", "hq_height", "hq_width")
CACHE_FORMAT = 1  # bump when the cached content changes meaning
CACHE_INDEX = "index.json"
PROMPT_FILE = "prompt.safetensors"
# Components of a FLUX pipeline folder whose files decide the cached latents and prompt embeddings.
CACHE_COMPONENTS = ("vae", "text_encoder", "text_encoder_2", "tokenizer", "tokenizer_2")

Encode = Callable[[torch.Tensor], torch.Tensor]  # (1, 3, H, W) in [0, 1] -> (1, 16, H/8, W/8) scaled latent


class TrainDataError(UserError, ValueError):
    """Training data that cannot be used; the message is one line naming the file or pair and the fix."""


@dataclass(frozen=True)
class Pair:
    """One training pair: HQ crop and its LQ image (HQ / scale), with the HQ size in pixels."""

    id: str
    hq_path: Path
    lq_path: Path
    height: int
    width: int


# ----------------------------------------------------------------------------------------------
# Manifest


def _resolve(path: str, manifest_dir: Path, where: str) -> Path:
    """Relative paths from the manifest's folder (how the degrade stage writes them, like
    `fluxir.data.manifest`), else from the working directory (the project root); absolute ones as they
    are. Whichever it is, the file must lie inside the data root (the folder above the manifest's), links
    followed: a manifest never makes training read ``../../etc/passwd`` or any file outside the data."""
    if not isinstance(path, str) or not path:
        raise TrainDataError(f"{where}: {path!r} is not a file path")
    p = Path(path)
    if not p.is_absolute():
        beside = manifest_dir / p
        p = beside if beside.exists() or not p.exists() else p
    return check_inside(manifest_dir.parent, p, where)


def read_pairs(manifest: str | os.PathLike) -> list[Pair]:
    """The pairs of a degrade manifest, in manifest order; checks columns, ids and sizes up front."""
    path = Path(manifest)
    if not path.is_file():
        raise TrainDataError(
            f"{path}: training manifest not found; run the degrade stage first (dvc repro degrade)"
        )
    import pandas as pd  # here, not at the top: bench/train_step_gpu.py imports the trainer without pandas

    try:
        df = pd.read_parquet(path)
    except (OSError, ValueError) as exc:  # pyarrow's ArrowInvalid is a ValueError: not a parquet file
        reason = (str(exc).splitlines() or [type(exc).__name__])[0].split(". ")[0]
        raise TrainDataError(
            f"{path}: not a readable parquet manifest ({reason}); point train.manifest at the degrade "
            "stage's manifest.parquet, or rerun the degrade stage (dvc repro degrade)"
        ) from None
    missing = [c for c in REQUIRED_COLUMNS if c not in df.columns]
    if missing:
        raise TrainDataError(
            f"{path}: missing column(s) {', '.join(missing)}; need {', '.join(REQUIRED_COLUMNS)}"
        )
    if df.empty:
        raise TrainDataError(f"{path}: has no pairs")
    dup = df["id"][df["id"].duplicated()]
    if not dup.empty:
        raise TrainDataError(f"{path}: id {dup.iloc[0]!r} appears more than once")
    pairs = []
    for i, row in enumerate(df.itertuples(index=False)):
        check_id(row.id, f"{path} row {i}")
        try:
            height, width = int(row.hq_height), int(row.hq_width)
        except (TypeError, ValueError):
            raise TrainDataError(
                f"{path}: pair {row.id!r} has hq_height={row.hq_height!r}, hq_width={row.hq_width!r}; "
                "sizes must be whole numbers of pixels (rerun the degrade stage)"
            ) from None
        if height % PIXELS_PER_TOKEN or width % PIXELS_PER_TOKEN:
            raise TrainDataError(
                f"{path}: pair {row.id!r} is {height}x{width} (HxW); HQ sizes must be multiples of "
                f"{PIXELS_PER_TOKEN} (VAE x8, 2x2 latent packing)"
            )
        pairs.append(
            Pair(
                str(row.id),
                _resolve(row.hq_path, path.parent, f"{path} row {i} hq_path"),
                _resolve(row.lq_path, path.parent, f"{path} row {i} lq_path"),
                height,
                width,
            )
        )
    return pairs


def _id_hash(pair_id: str) -> str:
    return hashlib.sha256(pair_id.encode()).hexdigest()


def split_heldout(pairs: Sequence[Pair], val_size: int) -> tuple[list[Pair], list[Pair]]:
    """``(train, val)``: the ``val_size`` pairs with the smallest sha256(id) are held out.

    Hash order, not manifest order: adding pairs to the data set keeps an earlier held-out pair held out
    unless a new pair hashes lower, and never moves a held-out pair into training.
    """
    if val_size >= len(pairs):
        raise TrainDataError(
            f"train.val_size={val_size}: must be smaller than the number of pairs ({len(pairs)})"
        )
    val_ids = {p.id for p in sorted(pairs, key=lambda p: _id_hash(p.id))[:val_size]}
    val = sorted((p for p in pairs if p.id in val_ids), key=lambda p: _id_hash(p.id))
    return [p for p in pairs if p.id not in val_ids], val


# ----------------------------------------------------------------------------------------------
# Bucketed batches


class BucketBatches:
    """Global batches of ``batch_size`` same-size images, buckets mixed within each epoch.

    Epoch ``e``: each bucket's members are shuffled with seed ``(seed, e)`` and cut into full batches (an
    incomplete tail is left for that epoch; a later shuffle puts other members there), then all the
    epoch's batches are shuffled together. ``batch(k)`` is the k-th batch of the run, epochs chained.
    """

    def __init__(self, sizes: Sequence[tuple[int, int]], batch_size: int, seed: int):
        self.batch_size = batch_size
        self.seed = seed
        self.buckets: dict[tuple[int, int], list[int]] = {}
        for index, size in enumerate(sizes):
            self.buckets.setdefault(tuple(size), []).append(index)
        self.batches_per_epoch = sum(len(m) // batch_size for m in self.buckets.values())
        if self.batches_per_epoch == 0:
            counts = ", ".join(f"{h}x{w}: {len(m)}" for (h, w), m in sorted(self.buckets.items()))
            raise TrainDataError(
                f"train.batch_size={batch_size}: no size bucket holds a full batch ({counts}); "
                "lower the batch size or add pairs"
            )
        self._epoch: tuple[int, list[list[int]]] | None = None

    def epoch_batches(self, epoch: int) -> list[list[int]]:
        rng = random.Random(f"{self.seed}:{epoch}")  # str seeds hash with sha512: stable across runs
        batches = []
        for size in sorted(self.buckets):
            members = list(self.buckets[size])
            rng.shuffle(members)
            full = len(members) // self.batch_size * self.batch_size
            batches += [members[i : i + self.batch_size] for i in range(0, full, self.batch_size)]
        rng.shuffle(batches)
        return batches

    def position(self, k: int) -> tuple[int, int]:
        """``(epoch, batch within epoch)`` of the run's k-th batch."""
        return divmod(k, self.batches_per_epoch)

    def batch(self, k: int) -> list[int]:
        epoch, index = self.position(k)
        if self._epoch is None or self._epoch[0] != epoch:
            self._epoch = (epoch, self.epoch_batches(epoch))
        return self._epoch[1][index]


# ----------------------------------------------------------------------------------------------
# Images and latents


def _load_pair_image(pair: Pair, path: Path, which: str) -> np.ndarray:
    """An image of a pair; a missing or damaged file stops training with one line naming pair and file:
    a pair left out silently would make the run differ from its manifest (and its DVC lock)."""
    try:
        return load_rgb(path)
    except FileNotFoundError:
        reason = "file not found"
    except ImageDecodeError as exc:
        reason = f"cannot be read as an image: {exc}"
    raise TrainDataError(
        f"pair {pair.id!r}: {which} image {path}: {reason}; rerun the degrade stage to rewrite it "
        "(dvc repro degrade), or remove the pair from the manifest"
    )


def pair_images(pair: Pair, scale: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(hq, lq, control)`` uint8 RGB; control = ``upscale_lq(lq, scale)``, the image inference encodes."""
    hq, lq = _load_pair_image(pair, pair.hq_path, "HQ"), _load_pair_image(pair, pair.lq_path, "LQ")
    if hq.shape[:2] != (pair.height, pair.width):
        raise TrainDataError(
            f"pair {pair.id!r}: {pair.hq_path} is {hq.shape[0]}x{hq.shape[1]}, the manifest says "
            f"{pair.height}x{pair.width}"
        )
    if (lq.shape[0] * scale, lq.shape[1] * scale) != hq.shape[:2]:
        raise TrainDataError(
            f"pair {pair.id!r}: LQ {lq.shape[0]}x{lq.shape[1]} x degrade.scale={scale} is not the HQ size "
            f"{hq.shape[0]}x{hq.shape[1]}"
        )
    return hq, lq, upscale_lq(lq, scale)


def to_tensor(image: np.ndarray) -> torch.Tensor:
    """(H, W, 3) uint8 -> (1, 3, H, W) float32 in [0, 1]."""
    # np.array copies: arrays from PIL are read-only, which torch warns about.
    return torch.from_numpy(np.array(image)).permute(2, 0, 1)[None].float() / 255


def encode_pair(pair: Pair, scale: int, encode: Encode) -> tuple[torch.Tensor, torch.Tensor]:
    """``(z0, z_lq)``: scaled latents (16, H/8, W/8) of the HQ crop and of the upscaled LQ image."""
    hq, _, control = pair_images(pair, scale)
    return encode(to_tensor(hq))[0], encode(to_tensor(control))[0]


def files_digest(folder: str | os.PathLike, components: Iterable[str] = CACHE_COMPONENTS) -> str:
    """sha256 over every file (relative path and content) of the named subfolders of a pipeline folder.

    Reads the files, not the loaded models, so a cache hit needs no text encoder in memory. At FLUX.1-dev
    size this reads about 10 GB (T5 mostly), seconds next to a training run.
    """
    root = Path(folder)
    h = hashlib.sha256()
    for name in components:
        sub = root / name
        files = sorted(p for p in sub.rglob("*") if p.is_file()) if sub.is_dir() else []
        for f in files:
            h.update(f"{f.relative_to(root).as_posix()}\0{sha256_file(f)}\n".encode())
    return h.hexdigest()


def cache_key(
    manifest_sha: str, model_digest: str, dtype: torch.dtype, scale: int, max_sequence_length: int
) -> str:
    """The latent cache's folder key: any input that changes a cached tensor changes it."""
    text = json.dumps(
        {
            "format": CACHE_FORMAT,
            "manifest": manifest_sha,
            "model": model_digest,
            "dtype": str(dtype),
            "scale": scale,
            "max_sequence_length": max_sequence_length,
            "encode": "FluxIRPipeline.encode: posterior mode, scaled; control = upscale_lq bicubic",
        },
        sort_keys=True,
    )
    return hashlib.sha256(text.encode()).hexdigest()


def _save_atomic(tensors: dict[str, torch.Tensor], path: Path) -> None:
    with atomic_path(path) as tmp:
        save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, tmp)


class LatentCache:
    """Per-pair latents ``<sha256(id)[:24]>.safetensors`` {z0, z_lq} plus ``prompt.safetensors``.

    ``index.json`` is written last: its presence means every file is there. An interrupted build leaves
    whole files only (each written to a temp name, then renamed) and the next build encodes the rest.
    """

    def __init__(self, root: str | os.PathLike, key: str):
        self.key = key
        self.folder = Path(root) / f"latents-{key[:16]}"

    @property
    def complete(self) -> bool:
        return (self.folder / CACHE_INDEX).is_file()

    def path(self, pair: Pair) -> Path:
        return self.folder / f"{_id_hash(pair.id)[:24]}.safetensors"

    def build(
        self, pairs: Sequence[Pair], scale: int, encode: Encode, rank: int = 0, world_size: int = 1
    ) -> int:
        """Encode this rank's share (every world_size-th pair) of the missing files; return how many."""
        self.folder.mkdir(parents=True, exist_ok=True)
        made = 0
        for pair in pairs[rank::world_size]:
            target = self.path(pair)
            if target.is_file():
                continue
            z0, z_lq = encode_pair(pair, scale, encode)
            _save_atomic({"z0": z0, "z_lq": z_lq}, target)
            made += 1
        return made

    def save_prompt(self, prompt_embeds: torch.Tensor, pooled: torch.Tensor, text_ids: torch.Tensor) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        _save_atomic(
            {"prompt_embeds": prompt_embeds, "pooled": pooled, "text_ids": text_ids},
            self.folder / PROMPT_FILE,
        )

    def load_prompt(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        t = load_file(self.folder / PROMPT_FILE)
        return t["prompt_embeds"], t["pooled"], t["text_ids"]

    def finish(self, pairs: Sequence[Pair], meta: dict) -> None:
        """Check every file is present and write ``index.json`` (rank 0, after all ranks built)."""
        missing = [p.id for p in pairs if not self.path(p).is_file()]
        if missing or not (self.folder / PROMPT_FILE).is_file():
            raise TrainDataError(
                f"latent cache {self.folder}: missing {missing[:3] or PROMPT_FILE} after building"
            )
        index = {"key": self.key, "pairs": len(pairs), **meta}
        write_json_atomic(self.folder / CACHE_INDEX, index)

    def load(self, pairs: Sequence[Pair]) -> tuple[torch.Tensor, torch.Tensor]:
        """Stacked ``(z0, z_lq)`` of ``pairs``, each (B, 16, H/8, W/8)."""
        files = [load_file(self.path(p)) for p in pairs]
        return torch.stack([f["z0"] for f in files]), torch.stack([f["z_lq"] for f in files])

    def clear(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)


class PairLatents:
    """Latents of the training pairs from the cache, or encoded on the fly (``cache=None``)."""

    def __init__(self, pairs: Sequence[Pair], scale: int, cache: LatentCache | None, encode: Encode | None):
        if cache is None and encode is None:
            raise ValueError("PairLatents needs a cache or an encode function")
        self.pairs = list(pairs)
        self.scale = scale
        self.cache = cache
        self.encode = encode

    def sizes(self) -> list[tuple[int, int]]:
        return [(p.height, p.width) for p in self.pairs]

    def load(self, indices: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
        chosen = [self.pairs[i] for i in indices]
        if self.cache is not None:
            return self.cache.load(chosen)
        encoded = [encode_pair(p, self.scale, self.encode) for p in chosen]
        return torch.stack([z0 for z0, _ in encoded]), torch.stack([zl for _, zl in encoded])
