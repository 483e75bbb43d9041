"""fluxir: FluxGen data acquisition + FluxIR adapter for real-world image restoration."""

__version__ = "0.1.0"
