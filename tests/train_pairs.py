"""Training-data fixture for the train tests: a degrade-stage folder made from scikit-image photos.

Each pair is a crop of a real photo degraded by ``fluxir.degradation.degrade_pair`` (Real-ESRGAN chain,
LQ = HQ / 4), written as ``data/degrade/{hq,lq}/<id>.png`` with ``data/degrade/manifest.parquet`` holding
id, hq_path, lq_path (relative to the project root), hq_height, hq_width. Crop sizes cycle through
``sizes`` so every bucket gets the same number of pairs.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pandas as pd
from PIL import Image

PHOTOS = ("astronaut", "coffee", "chelsea", "rocket")
TINY_SIZES = ((96, 128), (96, 96), (96, 64))  # params.yaml degrade.sizes (tiny profile)


def write_pairs(
    project: Path,
    per_photo: int = 6,
    photos: Sequence[str] = PHOTOS,
    sizes: Sequence[tuple[int, int]] = TINY_SIZES,
    scale: int = 4,
    seed: int = 0,
) -> Path:
    """Write the pairs under ``project/data/degrade`` and return the manifest path."""
    from skimage import data

    from fluxir.config import DegradeConfig
    from fluxir.degradation import degrade_pair, image_rng, resolve_params

    out = project / "data" / "degrade"
    (out / "hq").mkdir(parents=True, exist_ok=True)
    (out / "lq").mkdir(parents=True, exist_ok=True)
    configs = [DegradeConfig(sizes=[list(s)], scale=scale, seed=seed) for s in sizes]
    params = resolve_params(configs[0])
    rows = []
    for name in photos:
        photo = getattr(data, name)()
        for j in range(per_photo):
            pair_id = f"{name}-{j:02d}"
            cfg = configs[j % len(configs)]
            hq, lq, _ = degrade_pair(photo, cfg, image_rng(pair_id, seed), params)
            Image.fromarray(hq).save(out / "hq" / f"{pair_id}.png")
            Image.fromarray(lq).save(out / "lq" / f"{pair_id}.png")
            rows.append(
                {
                    "id": pair_id,
                    "hq_path": f"data/degrade/hq/{pair_id}.png",
                    "lq_path": f"data/degrade/lq/{pair_id}.png",
                    "hq_height": hq.shape[0],
                    "hq_width": hq.shape[1],
                }
            )
    manifest = out / "manifest.parquet"
    pd.DataFrame(rows).to_parquet(manifest, index=False)
    return manifest


def write_params(
    project: Path, tiny_dir: Path, settings: dict[str, object] | None = None, **train: object
) -> Path:
    """A params.yaml for ``project``: the repo's tiny profile with ``train.*`` overrides given as keywords
    and others as dotted ``settings`` (e.g. ``{"restore.steps": 2}``)."""
    import yaml

    repo = Path(__file__).resolve().parents[1]
    raw = yaml.safe_load((repo / "params.yaml").read_text())
    raw["model"]["tiny_dir"] = str(tiny_dir)
    raw["tracking"]["uri"] = f"sqlite:///{project / 'mlruns.db'}"
    raw["train"]["deepspeed_config"] = str(repo / "configs" / "deepspeed" / "zero2.json")
    raw["train"].update(train)
    for dotted, value in (settings or {}).items():
        section, key = dotted.split(".")
        raw[section][key] = value
    path = project / "params.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def deepspeed_env() -> dict[str, str]:
    """The environment of a DeepSpeed test run: one OpenMP thread, and DeepSpeed's CPU comm op built once per
    venv (its default cache, ~/.cache/torch_extensions, is shared by every checkout and rebuilt, ~1 min, when
    another venv's torch used it)."""
    import os
    import sys

    return {
        **os.environ,
        "OMP_NUM_THREADS": "1",  # a second thread on a busy small machine makes steps ~10x slower
        "TORCH_EXTENSIONS_DIR": str(Path(sys.prefix) / "torch_extensions"),
    }


def train_stage_args(out: str, *settings: str) -> list[str]:
    """Arguments of ``python -m fluxir.stages.train`` for ``params.yaml`` with outputs in ``data/<out>`` and
    ``reports/<out>``, plus more ``--set`` settings (``key=value``)."""
    args = ["--params", "params.yaml"]
    for setting in (f"train.out_dir=data/{out}", f"train.report_dir=reports/{out}", *settings):
        args += ["--set", setting]
    return args
