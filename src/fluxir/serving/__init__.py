"""Serving a trained adapter to people: ``fluxir app``, a Gradio page to restore images (app), the
upload checks and adapter loading behind it (inputs, adapters).

The registry itself (versions, aliases, ``fluxir models promote``) is fluxir.tracking.registry and
fluxir.models.registry_commands; the pyfunc model is fluxir.restoration.pyfunc.
"""
