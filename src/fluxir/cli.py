"""The ``fluxir`` command line.

Each command lives in the module that owns the work and exposes two functions:
``add_arguments(parser)`` and ``run(args) -> int``. Modules are imported only when their command is
used, so ``fluxir --help`` answers instantly without importing torch.
Errors meant for users (bad params, missing weights, bad input) print as one line and exit 2.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from fluxir.errors import UserError, report, report_path_error

# name -> (module, one-line help). Add a line here when a command is built; never list a stub.
COMMANDS: dict[str, tuple[str, str]] = {
    "models": (
        "fluxir.models.commands",
        "Build the tiny FLUX model, inspect a base, or promote / list / export registered adapter versions.",
    ),
    "config": ("fluxir.config.commands", "Validate params.yaml and show every setting with its help."),
    "generate": (
        "fluxir.stages.generate",
        "Generate images with FLUX (or SDXL), or ingest a folder of real photos.",
    ),
    "score": ("fluxir.stages.score", "Score every generated image with no-reference IQA metrics (pyiqa)."),
    "filter": ("fluxir.stages.filter", "Keep images in the top keep_quantile of every IQA metric."),
    "degrade": ("fluxir.stages.degrade", "Make (HQ crop, LQ) training pairs with Real-ESRGAN degradation."),
    "restore": (
        "fluxir.restoration.restore",
        "Restore an image or a folder of images with a trained FluxIR adapter.",
    ),
    "params": (
        "fluxir.benchmark.param_count",
        "Count FluxIR adapter parameters at a base's shape vs Table 2.",
    ),
    "benchmark": (
        "fluxir.stages.benchmark",
        "Table 1: FluxIR and baselines on the test sets, scored with pyiqa.",
    ),
    "ablate": (
        "fluxir.experiments.ablate",
        "Tables 2-7: run the paper's ablations as MLflow child runs of one parent.",
    ),
    "pretrain": (
        "fluxir.stages.pretrain",
        "Train the mini base model (FLUX-layout VAE and prior) here on CPU from packaged photos.",
    ),
    "train": ("fluxir.stages.train", "Train the FluxIR adapter on degraded pairs (DeepSpeed ZeRO; resumes)."),
    "app": (
        "fluxir.serving.app",
        "Serve a web page on 127.0.0.1 to restore images with a trained adapter (Gradio).",
    ),
    "push": (
        "fluxir.orchestration.sync",
        "dvc push that stops with one line when the S3 server stops answering (DVC alone retries for hours).",
    ),
    "pull": (
        "fluxir.orchestration.sync",
        "dvc pull that stops with one line when the S3 server stops answering.",
    ),
    "services": (
        "fluxir.orchestration.services",
        "Start, stop or list local services: Prefect, MLflow, SeaweedFS (S3).",
    ),
}


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fluxir",
        description="FluxGen + FluxIR: acquire training data from FLUX.1 and adapt it into an image restorer.",
    )
    sub = parser.add_subparsers(dest="command", metavar="<command>", required=True)
    for name, (module_name, help_text) in COMMANDS.items():
        cmd_parser = sub.add_parser(name, help=help_text, description=help_text)
        if name == command:  # only the chosen command's module is imported
            importlib.import_module(module_name).add_arguments(cmd_parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    command = next((a for a in argv if not a.startswith("-")), None)
    parser = build_parser(command if command in COMMANDS else None)
    args = parser.parse_args(argv)
    module = importlib.import_module(COMMANDS[args.command][0])
    try:
        return int(module.run(args) or 0)
    except UserError as exc:
        return report(args.command, exc)
    except OSError as exc:  # a path the user chose that cannot be written: one line, not a traceback
        status = report_path_error(args.command, exc)
        if status is None:
            raise
        return status


if __name__ == "__main__":
    sys.exit(main())
