"""`fluxir ablate tableN`: the paper's ablations (Tables 2-7) as variants of the same params.

Each row of a table is a dict of params overrides (see :mod:`fluxir.benchmark.ablations`) applied to
params.yaml plus the command's ``--set`` values, exactly what ``dvc exp run -S key=value`` would run.
Rows run one after another in this process, each an MLflow child run of one parent run per table:

  Tables 2, 3, 5, 6   train the adapter with the row's overrides, then benchmark it (fluxir only) on
                      ``ablate.dataset``; parameter counts are read from the adapter that ran.
  Table 4             rebuild the training data first (generate -> score -> filter -> degrade).
  Table 7             generate ``ablate.table7_images`` images per generator and score them with the
                      score stage's metrics; FluxGen is the flux images the IQA filter keeps.

Each row works in its own folder ``<ablate.out_dir>/<table>/<row>/`` (train/, benchmark/, data/), so
rows never overwrite each other or the main pipeline's outputs. A row that cannot run (a stage missing,
weights absent, a generator not in the cache) is reported with the reason; the other rows still run.
Reports: ``<ablate.report_dir>/tableN.md``, ``.csv``, ``.json``, with the paper's numbers beside ours.

Modules: :mod:`~fluxir.experiments.variants` (Tables 2-6), :mod:`~fluxir.experiments.table7`,
:mod:`~fluxir.experiments.reports` (the files), :mod:`~fluxir.experiments.rows` (what they share).
"""

from __future__ import annotations

import argparse

from fluxir.benchmark.ablations import TABLES_ALL
from fluxir.config import ConfigError, parse_override
from fluxir.experiments.table7 import run_table7
from fluxir.experiments.variants import run_ablation
from fluxir.stages import add_common_arguments, run_stage, setup_logging


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("table", choices=TABLES_ALL, help="which table to reproduce")
    parser.add_argument(
        "--row", action="append", default=None, help="run only this row (repeatable), e.g. 32"
    )
    parser.add_argument(
        "--seeds",
        type=int,
        nargs="+",
        default=None,
        metavar="SEED",
        help="run every row once per train.seed and report mean ± half-range (Tables 2-6), e.g. --seeds 0 1",
    )
    parser.add_argument(
        "--restart-on-change",
        action="store_true",
        help="a row whose folder holds checkpoints or images made with other settings, pairs or base: remove "
        "them and start that row over (without it, such a row is reported as not run, naming the folder)",
    )
    add_common_arguments(parser)


def run(args: argparse.Namespace) -> int:
    setup_logging()
    overrides = dict(parse_override(text) for text in args.overrides)
    if args.table == "table7":
        if args.seeds:
            raise ConfigError("--seeds: Table 7 trains nothing; it applies to Tables 2-6")
        report = run_table7(args.params, overrides)
    else:
        report = run_ablation(
            args.params, overrides, args.table, args.row, args.seeds, restart_on_change=args.restart_on_change
        )
    print(report["markdown"])
    return 0


def main(argv: list[str] | None = None) -> int:
    return run_stage("ablate", add_arguments, run, argv)


if __name__ == "__main__":
    raise SystemExit(main())
