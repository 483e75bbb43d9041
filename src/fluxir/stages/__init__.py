"""Pipeline stages: generate -> score -> filter -> degrade -> train -> benchmark.

Each stage is one module with a pure core (testable without files or params) and a thin entry point.
The same entry point serves three callers:

    python -m fluxir.stages.<name> [--params params.yaml] [--set key=value ...]   (dvc.yaml)
    fluxir <name> [...]                                                            (users)
    fluxir.stages.<name>.run(args)                                                 (flows, tests)

Every stage reads its inputs through a validated manifest and writes images plus a validated
``manifest.parquet`` under ``data/<stage>/``; reports go under ``reports/``.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from fluxir.config import Config, load_config, parse_override
from fluxir.errors import RedactFilter, UserError, report, report_path_error
from fluxir.stages.library_bars import disable_library_bars


def reports_root(cfg: Config) -> Path:
    """Root of the stage reports (``tracking.reports_dir``, relative to the project root under DVC)."""
    return Path(cfg.tracking.reports_dir)


def add_common_arguments(parser: argparse.ArgumentParser) -> None:
    """``--params PATH`` and repeatable ``--set key=value`` overrides (e.g. ``--set generate.num_images=16``)."""
    parser.add_argument(
        "--params", type=Path, default=Path("params.yaml"), help="params file (default: %(default)s)"
    )
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override one setting, e.g. generate.num_images=16 (repeatable; values are YAML)",
    )


def load_stage_config(args: argparse.Namespace) -> Config:
    """Load and validate the params file with the ``--set`` overrides applied."""
    overrides = dict(parse_override(text) for text in args.overrides)
    return load_config(args.params, overrides)


def setup_logging() -> None:
    """Show the project's INFO lines on stderr; libraries stay at their own (WARNING) level."""
    logger = logging.getLogger("fluxir")
    logger.setLevel(logging.INFO)
    if not logger.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S"))
        handler.addFilter(RedactFilter())  # no URL credentials in any line (they reach Prefect's logs)
        logger.addHandler(handler)
    # Our own tqdm bar shows progress; the libraries' loading bars would interleave with it. Switched off
    # when each library is imported, so a stage that needs none of them never pays for importing them.
    disable_library_bars()


def section_name(stage: str) -> str:
    """The params section of a stage: ``build-model`` -> ``build_model``."""
    return stage.replace("-", "_")


def opens_own_run(stage: str, cfg: Config) -> bool:
    """Whether ``stage`` opens an MLflow run of its own: its section's ``track`` switch (train, benchmark)."""
    return bool(getattr(getattr(cfg, section_name(stage), None), "track", False))


def without_own_run(stage: str, cfg: Config) -> Config:
    """``cfg`` with the stage's ``track`` switch off: a stage running untracked then never calls MLflow."""
    section = section_name(stage)
    return dataclasses.replace(cfg, **{section: dataclasses.replace(getattr(cfg, section), track=False)})


@contextmanager
def tracked_stage(name: str, args: argparse.Namespace) -> Iterator[Config]:
    """Logging, the validated params, and a child of the pipeline's MLflow run around one stage's core.

    The MLflow policy (fluxir.tracking.policy) runs first, before the core: a server that does not answer
    stops the stage in one line (``tracking.required``) or the stage runs untracked, and then with its own
    ``track`` switch off, so the core makes no MLflow call. Outside a pipeline run (no ``dvc repro`` or flow
    above it) only a stage's own run is tracked; see fluxir.tracking.lineage.
    """
    from fluxir.tracking.lineage import stage_run
    from fluxir.tracking.policy import ran_untracked

    setup_logging()
    cfg = load_stage_config(args)
    own_run = opens_own_run(name, cfg)
    with stage_run(name, cfg, own_run=own_run):
        yield without_own_run(name, cfg) if own_run and ran_untracked(name) else cfg


def run_stage(
    name: str,
    add_arguments: Callable[[argparse.ArgumentParser], None],
    run: Callable[[argparse.Namespace], int | None],
    argv: list[str] | None = None,
) -> int:
    """``python -m fluxir.stages.<name>``: the same arguments and one-line user errors as ``fluxir <name>``."""
    parser = argparse.ArgumentParser(prog=f"fluxir {name}")
    add_arguments(parser)
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    try:
        return int(run(args) or 0)
    except UserError as exc:
        return report(name, exc)
    except OSError as exc:  # a path the user chose that cannot be written: one line, not a traceback
        status = report_path_error(name, exc)
        if status is None:
            raise
        return status
