"""Table 1 of the paper as code: test sets, methods, pyiqa metrics, tables and image grids.

    datasets.py     prepare DIV2K-Val-like synthetic sets, RealSR/DRealSR-style pairs, RealLQ250-style LQ sets
    methods.py      fluxir (the trained adapter), bicubic, lanczos, and spandrel-loaded SR checkpoints
    metrics.py      pyiqa metrics with their directions; metrics whose weights are absent are reported, never dropped
    runner.py       the core: prepare the sets, build metrics and methods, restore every image and score it
    report.py       Table 1 reports (metrics.json, summary.json, table1.md/.csv, per_image.csv, grids) and MLflow
    tables.py       means per dataset x method x metric, Table 1 markdown/CSV (best bold, second underlined)
    grids.py        LQ | methods | HQ image grids
    ablations.py    the paper's ablations (Tables 2-7) as data: each row a params override
    param_count.py  `fluxir params`: adapter parameter counts at a base's shape vs Table 2

The stage :mod:`fluxir.stages.benchmark` runs the core and writes the reports; the ablations (Tables 2-7)
are run by :mod:`fluxir.experiments.ablate`.
"""
