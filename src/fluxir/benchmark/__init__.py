"""Table 1 of the paper as code: test sets, methods, pyiqa metrics, tables and image grids.

    datasets.py  prepare DIV2K-Val-like synthetic sets, RealSR/DRealSR-style pairs, RealLQ250-style LQ sets
    methods.py   fluxir (the trained adapter), bicubic, lanczos, and spandrel-loaded SR checkpoints
    metrics.py   pyiqa metrics with their directions; metrics whose weights are absent are reported, never dropped
    tables.py    means per dataset x method x metric, Table 1 markdown/CSV (best bold, second underlined)
    grids.py     LQ | methods | HQ image grids

The stage that ties them together is :mod:`fluxir.stages.benchmark`; the ablations (Tables 2-7) are
:mod:`fluxir.experiments.ablate`.
"""
