"""Pipeline stages: each module has a pure core and a thin `main()` (`python -m fluxir.stages.<name>`)."""
