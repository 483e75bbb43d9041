"""`fluxir app`: a Gradio page on 127.0.0.1 to restore an image with a trained adapter.

    fluxir app [--port 7860] [--adapter 'registry: champion' | DIR] [--examples DIR] [--params params.yaml]

Upload an image (or pick a held-out example), choose the adapter (a registry alias or a folder), the
sampling steps, tile size, colour fix and seed, press Restore: a progress bar follows the work, a slider
compares the bicubic upscale with the restoration, and the result (PNG) can be downloaded. A bad upload
(too large, not an image, corrupt, too small) gets one sentence on the page, in the status box and a
toast, and the server keeps serving. ``make services`` starts it too with ``FLUXIR_APP=1``.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
import time
from dataclasses import astuple, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fluxir.config import ModelConfig, RestoreConfig
from fluxir.errors import UserError
from fluxir.stages import add_common_arguments

if TYPE_CHECKING:
    import gradio as gr

    from fluxir.config import Config
    from fluxir.serving.adapters import AdapterCache

log = logging.getLogger(__name__)

HOST = "127.0.0.1"
PORT = 7860
MAX_UPLOAD_MB = 25
MAX_EXAMPLES = 8
NO_EXAMPLE = "(none)"
# The page loads no web font: it must look the same with no internet (and the tests run offline).
FONTS = ["ui-sans-serif", "system-ui", "sans-serif"]
MONO = ["ui-monospace", "monospace"]


# The page's defaults are the restore and model sections' defaults (one source: fluxir.config), used when
# AppSettings is built without params.yaml (tests, embedding); settings_from_config passes the run's values.
_RESTORE = RestoreConfig()
_MODEL = ModelConfig()


@dataclass
class AppSettings:
    """What the page offers and how it restores; built from params.yaml by :func:`settings_from_config`."""

    base: str
    registered_model: str
    adapters: list[str]
    adapter: str
    steps: int = _RESTORE.steps
    tile: int = _RESTORE.tile
    overlap: int = _RESTORE.overlap
    scale: int = _RESTORE.scale
    guidance: float = _RESTORE.guidance
    seed: int = _RESTORE.seed
    color_fix: str = _RESTORE.color_fix
    max_upload_bytes: int = MAX_UPLOAD_MB * 2**20
    max_pixels: int = _RESTORE.max_input_pixels
    # The page has no --force: an upload whose output is larger is refused (see serving.inputs).
    max_output_pixels: int = _RESTORE.max_output_pixels
    dtype: str = _MODEL.dtype
    device: str = _MODEL.device
    examples: list[Path] = field(default_factory=list)
    output_dir: Path = field(default_factory=lambda: Path(tempfile.gettempdir()) / "fluxir-app")


def held_out_examples(cfg: Config, extra: Path | None = None) -> list[Path]:
    """LQ images of the training run's held-out pairs (never trained on), then those of ``extra``."""
    from fluxir.data.images import list_images

    found: list[Path] = []
    try:
        from fluxir.train.data import read_pairs, split_heldout

        _, held_out = split_heldout(read_pairs(cfg.train.manifest), cfg.train.val_size)
        found += [p.lq_path for p in held_out if Path(p.lq_path).is_file()]
    except Exception as exc:  # noqa: BLE001 - no degrade output yet: the page works without examples
        log.info("no held-out examples from %s (%s)", cfg.train.manifest, exc)
    if extra is not None and extra.is_dir():
        found += list_images(extra)
    return [Path(p).resolve() for p in found[:MAX_EXAMPLES]]


def settings_from_config(
    cfg: Config, adapter: str | None = None, examples: Path | None = None
) -> AppSettings:
    from fluxir.models.flux import resolve_base

    r = cfg.restore
    folder = cfg.benchmark.adapter
    name = cfg.tracking.registered_model
    from fluxir.serving.adapters import FOLDER, default_choices

    choices = default_choices(name, [folder])
    chosen = adapter or (f"{FOLDER} {folder}" if Path(folder).is_dir() or not name else choices[0])
    if chosen not in choices:
        choices.insert(0, chosen)
    return AppSettings(
        base=resolve_base(cfg.model.base, cfg.model.tiny_dir),
        registered_model=name,
        adapters=choices,
        adapter=chosen,
        steps=r.steps,
        tile=r.tile,
        overlap=r.overlap,
        scale=r.scale,
        guidance=r.guidance,
        seed=r.seed,
        color_fix=r.color_fix,
        max_pixels=r.max_input_pixels,
        max_output_pixels=r.max_output_pixels,
        dtype=cfg.model.dtype,
        device=cfg.model.device,
        examples=held_out_examples(cfg, examples),
    )


# ----------------------------------------------------------------------------------------------
# What the page's events do (plain functions: the unit tests call them without a browser)


def message(text: str) -> str:
    """Status-box markdown for a problem, shown as a toast too when a page is serving."""
    gr = sys.modules.get("gradio")  # not imported: no page, no toast (and no 20 s import in plain calls)
    if gr is not None:
        gr.Warning(text)
    return f"**Cannot restore:** {text}"


def upload_limits(settings: AppSettings) -> tuple[int, int, int, int]:
    """read_upload's limits for this page: bytes, input pixels, the scale and output pixels."""
    return settings.max_upload_bytes, settings.max_pixels, settings.scale, settings.max_output_pixels


def on_input(path: str | None, settings: AppSettings) -> tuple[Any, str, str | None]:
    """An uploaded or picked file: (preview, status, the path restore will read) or the reason it is refused."""
    from fluxir.serving.inputs import UploadError, read_upload

    if not path:
        return None, "Upload an image or pick an example.", None
    try:
        rgb = read_upload(path, *upload_limits(settings))
    except UploadError as exc:
        return None, message(str(exc)), None
    h, w = rgb.shape[:2]
    return (
        rgb,
        f"{Path(path).name}: {w}x{h} px, ready (output {w * settings.scale}x{h * settings.scale}).",
        path,
    )


@dataclass(frozen=True)
class RestoreRequest:
    """What the page sends for one restoration: the input file and the values of its controls."""

    path: str | None
    adapter: str
    steps: float
    tile: float
    color_fix: str
    seed: float


def on_restore(
    request: RestoreRequest, settings: AppSettings, cache: AdapterCache, progress: Any = None
) -> tuple[Any, str | None, str]:
    """Restore the current input: ((bicubic, restored) for the slider, the PNG to download, status)."""
    path, adapter, steps, tile, color_fix, seed = astuple(request)
    from fluxir.data.images import write_image_atomic
    from fluxir.restoration.pipeline import RestoreInputError, RestoreOptions, upscale_lq
    from fluxir.restoration.single import restore_image
    from fluxir.serving.inputs import UploadError, read_upload

    def report(fraction: float, desc: str) -> None:
        if progress is not None:
            progress(fraction, desc=desc)

    if not path:
        return None, None, message("no image yet: upload one or pick an example")
    started = time.perf_counter()
    try:
        lq = read_upload(path, *upload_limits(settings))
        tile_px = max(16, int(tile) // 16 * 16)
        options = RestoreOptions(
            scale=settings.scale,
            steps=int(steps),
            guidance=settings.guidance,
            tile=tile_px,
            overlap=min(settings.overlap, tile_px // 2 // 16 * 16),
            seed=int(seed),
        )
        report(0.05, f"loading {adapter}")
        pipeline = cache.get(adapter)
        report(0.2, "restoring")
        restored = restore_image(
            pipeline, lq, options, color_fix, progress=True, on_stage=lambda stage: report(0.9, stage)
        )
    except (UploadError, RestoreInputError, UserError, ValueError) as exc:
        return None, None, message(str(exc))
    out = settings.output_dir / f"{Path(path).stem}_fluxir_x{settings.scale}_{int(time.time() * 1000)}.png"
    write_image_atomic(out, restored)
    before = upscale_lq(lq, settings.scale)
    h, w = restored.shape[:2]
    status = (
        f"Restored {lq.shape[1]}x{lq.shape[0]} -> {w}x{h} px in {time.perf_counter() - started:.1f} s "
        f"({adapter}; {options.steps} steps, tile {options.tile}, colour fix {color_fix}, seed {options.seed})."
    )
    report(1.0, "done")
    return (before, restored), str(out), status


# ----------------------------------------------------------------------------------------------
# The page


def build_app(settings: AppSettings) -> gr.Blocks:
    """The Gradio Blocks of the page (not launched)."""
    import gradio as gr

    from fluxir.models.flux import DTYPES, pick_device
    from fluxir.restoration.color import COLOR_FIXES
    from fluxir.serving.adapters import AdapterCache

    cache = AdapterCache(
        settings.base, DTYPES[settings.dtype], pick_device(settings.device), settings.registered_model
    )
    examples = {p.name: str(p) for p in settings.examples}

    # A new input clears the last result, so a refused upload never sits beside an earlier restoration.
    def upload_event(path: str | None) -> tuple[Any, ...]:
        return (*on_input(path, settings), None, None)

    def example_event(name: str) -> tuple[Any, ...]:
        return (*on_input(examples.get(name), settings), None, None)

    def restore_event(
        path: str | None,
        adapter: str,
        steps: float,
        tile: float,
        color_fix: str,
        seed: float,
        progress: gr.Progress = gr.Progress(track_tqdm=True),  # noqa: B008 - Gradio's injection idiom
    ) -> tuple[Any, str | None, str]:
        request = RestoreRequest(path, adapter, steps, tile, color_fix, seed)
        return on_restore(request, settings, cache, progress)

    with gr.Blocks(title="FluxIR: restore an image", analytics_enabled=False) as demo:
        gr.Markdown("# FluxIR: restore an image\nA FluxIR adapter on a frozen FLUX base; output is x"
                    f"{settings.scale}. Base: `{settings.base}`.")  # fmt: skip
        current = gr.State(None)
        with gr.Row():
            with gr.Column():
                upload = gr.File(
                    label="Image to restore", file_count="single", type="filepath", elem_id="upload"
                )
                example = gr.Dropdown(
                    [NO_EXAMPLE, *examples],
                    value=NO_EXAMPLE,
                    label="or a held-out example",
                    elem_id="example",
                )
                preview = gr.Image(
                    label="Input", interactive=False, elem_id="preview", format="png", buttons=["fullscreen"]
                )
            with gr.Column():
                adapter = gr.Dropdown(
                    settings.adapters,
                    value=settings.adapter,
                    allow_custom_value=True,
                    label="Adapter (registry alias, models:/ URI or folder)",
                    elem_id="adapter",
                )
                steps = gr.Slider(1, 50, value=settings.steps, step=1, label="Steps", elem_id="steps")
                tile = gr.Slider(
                    64, 2048, value=settings.tile, step=16, label="Tile size (px)", elem_id="tile"
                )
                color_fix = gr.Radio(
                    list(COLOR_FIXES), value=settings.color_fix, label="Colour fix", elem_id="color-fix"
                )
                seed = gr.Number(value=settings.seed, precision=0, minimum=0, label="Seed", elem_id="seed")
                button = gr.Button("Restore", variant="primary", elem_id="restore-button")
        status = gr.Markdown("Upload an image or pick an example.", elem_id="status")
        result = gr.ImageSlider(
            label="Before (bicubic) / after (FluxIR)", format="png", interactive=False, elem_id="result"
        )
        download = gr.File(label="Download the result", interactive=False, elem_id="download")

        new_input = [preview, status, current, result, download]
        upload.upload(upload_event, inputs=upload, outputs=new_input)
        upload.clear(lambda: upload_event(None), outputs=new_input)
        example.change(example_event, inputs=example, outputs=new_input)
        button.click(
            restore_event,
            inputs=[current, adapter, steps, tile, color_fix, seed],
            outputs=[result, download, status],
        )
    return demo


def launch(settings: AppSettings, host: str = HOST, port: int = PORT, block: bool = True) -> gr.Blocks:
    """Serve the page; ``block=False`` returns once it answers (tests)."""
    import gradio as gr

    settings.output_dir.mkdir(parents=True, exist_ok=True)
    demo = build_app(settings)
    demo.queue(default_concurrency_limit=1)  # one restoration at a time: the model holds the memory
    demo.launch(
        server_name=host,
        server_port=port,
        max_file_size=settings.max_upload_bytes,
        show_error=True,
        allowed_paths=sorted({str(p.parent) for p in settings.examples} | {str(settings.output_dir)}),
        prevent_thread_lock=not block,
        quiet=True,
        footer_links=[],
        theme=gr.themes.Default(font=FONTS, font_mono=MONO),
    )
    return demo


# ----------------------------------------------------------------------------------------------
# Entry point


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--host", default=HOST, help="address to bind (default: %(default)s, this machine only)"
    )
    parser.add_argument("--port", type=int, default=PORT, help="port (default: %(default)s)")
    parser.add_argument(
        "--adapter",
        help="adapter selected at start: 'registry: champion', a models:/ URI or a folder "
        "(default: benchmark.adapter if it exists, else the registry's champion)",
    )
    parser.add_argument("--examples", type=Path, help="a folder of images offered as examples too")
    parser.add_argument("--max-upload-mb", type=float, default=MAX_UPLOAD_MB, help="largest upload accepted")
    add_common_arguments(parser)  # --params (the page's defaults) and --set key=value, as the stages take


def run(args: argparse.Namespace) -> int:
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # nothing leaves this machine
    from fluxir.config import apply_override, config_from_dict, load_config, parse_override

    overrides = dict(parse_override(text) for text in args.overrides)
    if args.params.is_file():
        cfg = load_config(args.params, overrides)
    else:  # outside a project folder: built-in defaults plus the overrides
        raw: dict = {}
        for dotted, value in overrides.items():
            apply_override(raw, dotted, value)
        cfg = config_from_dict(raw)
    settings = settings_from_config(cfg, args.adapter, args.examples)
    settings.max_upload_bytes = int(args.max_upload_mb * 2**20)
    print(f"fluxir app: http://{args.host}:{args.port}  (adapter {settings.adapter}, base {settings.base})")
    try:
        launch(settings, args.host, args.port)
    except OSError as exc:  # Gradio's "Cannot find empty port": the port is taken
        raise UserError(f"cannot serve on {args.host}:{args.port} ({exc}); pass another --port") from exc
    return 0


def main(argv: list[str] | None = None) -> int:
    from fluxir.errors import report

    parser = argparse.ArgumentParser(prog="fluxir app", description=__doc__.splitlines()[0])
    add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        return run(args)
    except UserError as exc:
        return report("app", exc)


if __name__ == "__main__":
    raise SystemExit(main())
