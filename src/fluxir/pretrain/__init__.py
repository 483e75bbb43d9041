"""Pretraining of the ``mini`` base model on CPU: a FLUX-layout VAE and a small FLUX transformer.

``photos`` (the real photographs shipped by installed packages), ``crops`` (train and held-out crops),
``checkpoint`` (atomic, resumable training state), ``vae``, ``prior`` and ``build`` (the whole run and
the saved diffusers FluxPipeline folder), configured by ``settings.PretrainConfig``.
"""
