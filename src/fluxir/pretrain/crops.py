"""Square crops of photos for pretraining: random (with flips) for training, fixed for held-out evaluation.

Each photo is kept at a few scales (a pyramid: 1, 1/2, 1/4, ...) so that crops show both fine texture
and whole scenes. Randomness comes from ``step_rng(seed, stream, step)``: the draws of step ``k`` depend
only on (seed, stream, k), never on how many steps ran before, so a resumed run sees exactly the crops
an uninterrupted one would.
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image


def step_rng(seed: int, stream: int, step: int) -> np.random.Generator:
    """The random generator of one training step of one stream (VAE, prior, ...)."""
    return np.random.default_rng([seed, stream, step])


def torch_generator(rng: np.random.Generator) -> torch.Generator:
    """A torch CPU generator seeded from ``rng`` (for noise drawn by torch or diffusers)."""
    return torch.Generator().manual_seed(int(rng.integers(0, 2**62)))


def pyramid(photo: np.ndarray, levels: int, min_side: int) -> list[np.ndarray]:
    """``photo`` at scales 1, 1/2, ... (``levels`` of them), keeping only those at least ``min_side`` tall and wide."""
    out = []
    height, width = photo.shape[:2]
    image = Image.fromarray(photo)
    for level in range(levels):
        w, h = round(width / 2**level), round(height / 2**level)
        if min(w, h) < min_side:
            break
        # Lanczos is an antialiasing filter: downscaled levels look like photos taken at that size.
        out.append(photo if level == 0 else np.asarray(image.resize((w, h), Image.Resampling.LANCZOS)))
    return out


def build_pyramids(photos: dict[str, np.ndarray], levels: int, crop: int) -> list[np.ndarray]:
    """Every usable pyramid level of every photo (sorted by name), as one flat list of images."""
    images = []
    for name in sorted(photos):
        images.extend(pyramid(photos[name], levels, crop))
    if not images:
        raise ValueError(f"no photo is at least {crop} px on both sides: lower the crop size")
    return images


def to_tensor(crops: np.ndarray) -> torch.Tensor:
    """N x H x W x 3 uint8 -> N x 3 x H x W float32 in [-1, 1] (what FLUX's VAE takes)."""
    return torch.from_numpy(crops).permute(0, 3, 1, 2).float().div(127.5).sub(1.0).contiguous()


def random_crops(images: list[np.ndarray], n: int, crop: int, rng: np.random.Generator) -> torch.Tensor:
    """``n`` random ``crop`` x ``crop`` crops with random horizontal flips; images picked uniformly."""
    out = np.empty((n, crop, crop, 3), dtype=np.uint8)
    for i in range(n):
        image = images[int(rng.integers(len(images)))]
        y = int(rng.integers(image.shape[0] - crop + 1))
        x = int(rng.integers(image.shape[1] - crop + 1))
        patch = image[y : y + crop, x : x + crop]
        out[i] = patch[:, ::-1] if rng.random() < 0.5 else patch
    return to_tensor(out)


def eval_crops(
    photos: dict[str, np.ndarray], levels: int, crop: int, per_image: int, seed: int
) -> torch.Tensor:
    """A fixed set of crops: ``per_image`` random positions on every pyramid level of every photo."""
    rng = np.random.default_rng([seed, 0xE7A1])
    crops = []
    for image in build_pyramids(photos, levels, crop):
        for _ in range(per_image):
            y = int(rng.integers(image.shape[0] - crop + 1))
            x = int(rng.integers(image.shape[1] - crop + 1))
            crops.append(image[y : y + crop, x : x + crop])
    return to_tensor(np.stack(crops))
