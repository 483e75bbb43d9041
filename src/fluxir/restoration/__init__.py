"""Restoring images with a trained adapter: FluxIRPipeline (sampling), tiling, and the `fluxir restore` command."""
