"""`fluxir config ...`: validate params.yaml and show every setting with its one-line help."""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="config_command", metavar="<subcommand>", required=True)
    check = sub.add_parser(
        "check", help="Validate a params file; exit 2 with the offending key if it is bad."
    )
    check.add_argument("--params", type=Path, default=Path("params.yaml"))
    show = sub.add_parser("show", help="Print the resolved settings, each with its one-line help.")
    show.add_argument("--params", type=Path, default=Path("params.yaml"))


def run(args: argparse.Namespace) -> int:
    from fluxir.config import field_docs, load_config

    cfg = load_config(args.params)
    if args.config_command == "check":
        print(f"{args.params}: ok")
        return 0
    for section in dataclasses.fields(cfg):
        value = getattr(cfg, section.name)
        print(f"{section.name}:")
        docs = field_docs(type(value))
        for f in dataclasses.fields(value):
            print(f"  {f.name}: {getattr(value, f.name)!r}  # {docs.get(f.name, '')}")
    return 0
