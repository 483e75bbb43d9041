"""`fluxir config ...`: validate a params file, show every setting with its help, write the defaults.

``check`` and ``show`` import only this package (pydantic and yaml), never torch: a bad file is
answered at once with one line.
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path
from typing import Any

PROFILES_DIR = Path("configs") / "profiles"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="config_command", metavar="<subcommand>", required=True)
    check = sub.add_parser(
        "check", help="Validate a params file; exit 2 with the offending key if it is bad."
    )
    check.add_argument("--params", type=Path, default=Path("params.yaml"))
    show = sub.add_parser("show", help="Print the resolved settings, each with its one-line help.")
    show.add_argument("--params", type=Path, default=Path("params.yaml"))
    write = sub.add_parser(
        "write-defaults",
        help="Write params.yaml and configs/profiles/*.yaml from the schema's defaults and the presets.",
    )
    write.add_argument("--params", type=Path, default=Path("params.yaml"))
    write.add_argument("--profiles", type=Path, default=PROFILES_DIR, help="folder of <profile>.yaml")
    write.add_argument(
        "--check",
        action="store_true",
        help="write nothing; exit 1 if a file differs from what would be written",
    )


def run(args: argparse.Namespace) -> int:
    if args.config_command == "write-defaults":
        return write_defaults(args.params, args.profiles, check=args.check)
    from fluxir.config import load_config

    cfg = load_config(args.params)
    if args.config_command == "check":
        print(f"{args.params}: ok")
        return 0
    for line in show_lines(cfg):
        print(line)
    return 0


def show_lines(cfg: Any, indent: str = "") -> list[str]:
    """``key: value  # help`` for every field of ``cfg``, nested sections indented under their key."""
    from fluxir.config import field_docs

    lines = []
    docs = field_docs(type(cfg))
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        if dataclasses.is_dataclass(value):
            lines.append(f"{indent}{f.name}:  # {docs[f.name]}")
            lines += show_lines(value, indent + "  ")
        else:
            if value and isinstance(value, list) and dataclasses.is_dataclass(value[0]):
                value = [dataclasses.asdict(item) for item in value]  # benchmark.datasets, sr_models
            lines.append(f"{indent}{f.name}: {value!r}  # {docs[f.name]}")
    return lines


def generated_files(params: Path, profiles_dir: Path) -> dict[Path, str]:
    """Every file ``write-defaults`` writes, with its text."""
    from fluxir.config.presets import PIPELINES, pipeline_config, profiles, render_params, render_profile

    files = {params: render_params()}
    files |= {profiles_dir / f"{name}.yaml": render_profile(name) for name in profiles()}
    # profiles with a pipeline of their own: <name>/params.yaml beside <name>/dvc.yaml
    files |= {
        params.parent / name / "params.yaml": render_params(pipeline_config(name), pipeline=name)
        for name in PIPELINES
    }
    return files


def write_defaults(params: Path, profiles_dir: Path, check: bool = False) -> int:
    from fluxir.io import write_text_atomic

    stale = []
    for path, text in generated_files(params, profiles_dir).items():
        current = path.read_text(encoding="utf-8") if path.is_file() else None
        if current == text:
            continue
        stale.append(path)
        if not check:
            path.parent.mkdir(parents=True, exist_ok=True)
            write_text_atomic(path, text)
            print(f"{path}: written")
    if check and stale:
        for path in stale:
            print(f"{path}: differs from the schema's defaults; run `fluxir config write-defaults`")
        return 1
    return 0
