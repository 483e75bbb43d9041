"""The model card (README.md) written beside a saved adapter: what it is, its licence, its data and its cost.

The card is a Hugging Face model card (YAML metadata + markdown), so the adapter folder can be pushed as
it is (``huggingface_hub.upload_folder``). It is made with diffusers' ``load_or_create_model_card`` /
``populate_model_card`` and says:

- the base model and the licence the adapter falls under: the adapter's control block and embedders
  start as *copies of the base's weights* (``FluxIRAdapter.from_flux``), so an adapter of FLUX.1-dev is a
  derivative of FLUX.1 [dev] under its Non-Commercial licence, whatever the licence of the fluxir code;
  the tiny base is this project's own (Apache-2.0); the mini base learned from photos with non-commercial
  or unstated terms, so its adapters are for non-commercial research;
- the training data: FluxGen's settings and the image counts after the IQA filter (``reports/``);
- the training settings and the cost ledger (device-hours by device type);
- the benchmark table of this version when one is known (:func:`write_model_card` ``benchmark=``).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fluxir.io import sha256_bytes, write_text_atomic

if TYPE_CHECKING:
    from huggingface_hub import ModelCard

    from fluxir.config import Config

CARD_FILE = "README.md"
FLUX_DEV_ID = "black-forest-labs/FLUX.1-dev"
TAGS = ["fluxir", "image-restoration", "super-resolution", "flux", "adapter"]
# Settings of train.* the card lists (the whole resolved config is in the MLflow run).
TRAIN_KEYS = (
    "max_steps", "batch_size", "grad_accum", "lr", "schedule", "warmup_steps", "weight_decay", "rank",
    "control", "text_control", "learnable_embeddings", "timestep_sampler", "pixel_loss", "alpha", "engine",
    "seed",
)  # fmt: skip


@dataclass(frozen=True)
class Licence:
    """The licence an adapter of a given base falls under, as model-card metadata plus one sentence why."""

    license: str
    why: str
    name: str | None = None
    link: str | None = None


APACHE = "apache-2.0"
FLUX_DEV_LICENCE = Licence(
    "other",
    "its control block and embedders start as copies of FLUX.1-dev's weights, so the adapter is a "
    "derivative of FLUX.1 [dev] and falls under the FLUX.1 [dev] Non-Commercial License (not the "
    "Apache-2.0 of the fluxir code)",
    name="flux-1-dev-non-commercial-license",
    link="https://huggingface.co/black-forest-labs/FLUX.1-dev/blob/main/LICENSE.md",
)


def base_licence(base: str) -> Licence:
    """The licence of an adapter built on ``base`` (model.base: 'tiny', a hub id or a local folder)."""
    name = base.replace("\\", "/").lower()
    if base == "tiny" or Path(base).name.startswith("tiny-flux"):
        return Licence(APACHE, "its base is fluxir's own random-weight model (Apache-2.0)")
    if base == "mini" or Path(base).name.startswith("mini-flux"):
        return Licence(
            "other",
            "its base, fluxir's CPU-pretrained mini model, learned from packaged photos some of which are "
            "PolyForm-Noncommercial (pyiqa's) or of unstated terms (FLUXIR_MINI.txt in the base lists each): "
            "non-commercial research use only",
        )
    # A hub id, or a local snapshot folder (.../models--black-forest-labs--FLUX.1-dev/snapshots/<sha>).
    if "flux.1-dev" in name:
        return FLUX_DEV_LICENCE
    if "flux.1-schnell" in name:
        return Licence(APACHE, "FLUX.1 [schnell], its base, is released under Apache-2.0")
    return Licence(
        "other",
        f"it carries weights copied from its base {base}, whose licence applies; check it before sharing",
    )


def base_revision(source: str | Path) -> str:
    """What pins the base: a Hugging Face snapshot's commit, else a digest of the folder's JSON configs.

    Hashing the weights of a 24 GB base would take minutes; its configs name the architecture, and a
    snapshot's folder name is the hub commit.
    """
    path = Path(source)
    parts = path.resolve().parts if path.exists() else ()
    if "snapshots" in parts[:-1]:
        return parts[parts.index("snapshots") + 1]
    if not path.is_dir():
        return "unknown"
    configs = sorted(p for p in path.rglob("*.json") if p.is_file())
    text = "".join(f"{p.relative_to(path)}\0{p.read_text()}\n" for p in configs)
    return "configs-sha256:" + sha256_bytes(text.encode())[:16]


def parameter_count(folder: Path) -> int | None:
    """Parameters in the folder's safetensors files, read from their headers (no weights loaded)."""
    from safetensors import safe_open

    total = 0
    files = sorted(folder.glob("*.safetensors"))
    for path in files:
        with safe_open(str(path), framework="pt") as f:
            for key in f.keys():
                shape = f.get_slice(key).get_shape()
                count = 1
                for dim in shape:
                    count *= dim
                total += count
    return total if files else None


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def data_counts(reports: Path) -> dict[str, Any]:
    """Image counts of the FluxGen stages from their summaries: generated, kept by the filter, pairs."""
    generate = _read_json(reports / "generate" / "summary.json")
    filtered = _read_json(reports / "filter" / "summary.json")
    degrade = _read_json(reports / "degrade" / "summary.json")
    counts = {
        "generated": generate.get("images"),
        "rejected at generation": generate.get("rejected"),
        "scored by the IQA filter": filtered.get("images"),
        "kept after filtering": filtered.get("kept"),
        "dropped by the filter": filtered.get("dropped"),
        "training pairs (HQ crop, LQ)": degrade.get("pairs"),
    }
    return {k: v for k, v in counts.items() if v is not None}


def _table(rows: list[tuple[str, Any]], head: tuple[str, str] = ("setting", "value")) -> str:
    lines = [f"| {head[0]} | {head[1]} |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in rows]
    return "\n".join(lines)


def card_body(
    config: Config,
    folder: Path,
    device_seconds: Mapping[str, float] | None = None,
    reports: Path = Path("reports"),
    benchmark: str | None = None,
    version: str | None = None,
) -> str:
    """The markdown of the card (everything below the YAML metadata)."""
    from fluxir.tracking.lineage import profile_of

    m, g, s, f, d, t = (
        config.model,
        config.generate,
        config.score,
        config.filter,
        config.degrade,
        config.train,
    )
    licence = base_licence(m.base)
    params = parameter_count(folder)
    title = f"# FluxIR adapter{f' (version {version})' if version else ''}"
    lines = [title, ""]
    lines.append(
        f"A FluxIR adapter ({params / 1e6:.3f}M parameters: one control MM-DiT block, learnable text embeddings, "
        f"low-rank SE pairs) that turns the frozen base **{profile_of(config)}** into a x{d.scale} "
        "real-world image restorer (Deng et al., *Acquire and then Adapt*)."
        if params is not None
        else f"A FluxIR adapter for the frozen base **{profile_of(config)}**."
    )
    if m.base == "tiny":
        lines += [
            "",
            "> **Made with the tiny random-weight FLUX model**: this card and these weights exercise the code "
            "path (plumbing); they say nothing about restoration quality.",
        ]
    lines += ["", "## Base model and licence", ""]
    lines.append(f"- Base: `{m.base}` (revision `{base_revision(_base_source(config))}`), dtype {m.dtype}.")
    licence_text = licence.license if not licence.name else f"{licence.name} ({licence.link})"
    lines.append(f"- Licence: **{licence_text}**, because {licence.why}.")
    lines += ["", "## How to use", "", "```bash"]
    lines.append(f"fluxir restore photo.png restored.png --adapter <this folder> --base {m.base}")
    lines += ["fluxir app   # a web page: upload, restore, compare, download", "```"]
    lines += ["", "## Training data (FluxGen)", ""]
    data_rows: list[tuple[str, Any]] = [
        ("generator", f"{g.source} ({m.base}), {g.width}x{g.height}, {g.num_inference_steps} steps, "
                      f"guidance {g.guidance_scale}, prompt {g.prompt!r}"),
        ("images asked for", g.num_images),
        ("IQA filter", f"{', '.join(s.metrics)}; keep the top {f.keep_quantile:g} of each"
                       + ("" if f.enabled else " (disabled)")),
        ("degradation", f"{d.preset}, x{d.scale}, crops {d.sizes}"),
    ]  # fmt: skip
    data_rows += list(data_counts(reports).items())
    data_rows.append(("held out for validation", t.val_size))
    lines.append(_table(data_rows))
    lines += ["", "## Training settings", ""]
    lines.append(_table([(f"train.{k}", getattr(t, k)) for k in TRAIN_KEYS if hasattr(t, k)]))
    lines += ["", "## Cost", ""]
    if device_seconds:
        ledger = [(device, f"{seconds / 3600:.4f}") for device, seconds in sorted(device_seconds.items())]
        total = sum(device_seconds.values()) / 3600
        lines.append(_table([*ledger, ("total", f"{total:.4f}")], head=("device type", "device-hours")))
    else:
        lines.append(
            "No cost ledger in this folder: device-hours are wall-clock facts of one run, recorded with the "
            "training run in MLflow (`cost_ledger` table), so this folder stays a pure function of code, "
            "settings and data."
        )
    lines += ["", "## Evaluation", ""]
    lines.append(
        benchmark.strip()
        if benchmark
        else "Not benchmarked yet. After `fluxir benchmark`, `fluxir models export VERSION DIR` writes this "
        "card with the benchmark table of that version."
    )
    return "\n".join(lines) + "\n"


def hub_base(base: str) -> str | None:
    """The hub id the card names as ``base_model``: the base's own id, FLUX.1-dev for its local snapshots."""
    from fluxir.models.flux import is_hub_id

    if base != "tiny" and is_hub_id(base):
        return base
    return FLUX_DEV_ID if base_licence(base) is FLUX_DEV_LICENCE else None


def _base_source(config: Config) -> str:
    return config.model.tiny_dir if config.model.base == "tiny" else config.model.base


def build_card(folder: Path, config: Config, body: str) -> ModelCard:
    """The model card: diffusers' card (loaded from an existing README.md, else created) with our metadata."""
    from diffusers.utils.hub_utils import load_or_create_model_card, populate_model_card
    from huggingface_hub import ModelCard, ModelCardData

    licence = base_licence(config.model.base)
    readme = folder / CARD_FILE
    if readme.is_file():  # keep what a person added to the metadata (extra tags, a widget)
        card = load_or_create_model_card(str(readme))
        data = card.data
    else:
        # load_or_create_model_card takes a missing local path for a hub repo id (it would go to the
        # network): a new card is the one it creates, ModelCardData rendered above the body.
        data = ModelCardData()
    data.license = licence.license
    data.license_name = licence.name
    data.license_link = licence.link
    data.base_model = hub_base(config.model.base)
    data.pipeline_tag = "image-to-image"
    card = ModelCard(f"---\n{data.to_yaml()}\n---\n\n{body}")
    existing = set(card.data.tags or [])
    card = populate_model_card(card, tags=[tag for tag in TAGS if tag not in existing])
    return card


def write_model_card(
    folder: str | Path,
    config: Config,
    device_seconds: Mapping[str, float] | None = None,
    reports: str | Path = "reports",
    benchmark: str | None = None,
    version: str | None = None,
) -> Path:
    """Write ``folder/README.md`` (atomically) for the adapter saved there; returns its path."""
    folder = Path(folder)
    body = card_body(config, folder, device_seconds, Path(reports), benchmark, version)
    card = build_card(folder, config, body)
    path = folder / CARD_FILE
    write_text_atomic(path, str(card))
    return path


EVALUATION = "## Evaluation"


def add_benchmark(folder: str | Path, benchmark: str, version: str | None = None) -> Path:
    """Put a benchmark table in the Evaluation section of ``folder``'s card (and the version in its
    title), keeping everything else; the card is read back with diffusers' ``load_or_create_model_card``."""
    from diffusers.utils.hub_utils import load_or_create_model_card

    path = Path(folder) / CARD_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no model card to add the benchmark to")
    card = load_or_create_model_card(str(path))
    head = card.text.partition(EVALUATION)[0].lstrip()
    if version:
        title, _, rest = head.partition("\n")
        if title.startswith("# FluxIR adapter"):
            head = f"# FluxIR adapter (version {version})\n{rest}"
    card.text = f"{head.rstrip()}\n\n{EVALUATION}\n\n{benchmark.strip()}\n"
    write_text_atomic(path, str(card))
    return path
