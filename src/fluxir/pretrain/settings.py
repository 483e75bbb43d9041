"""The pretraining settings are the ``pretrain`` section of the config (one definition of every default)."""

from fluxir.config.pretrain import PretrainConfig

__all__ = ["PretrainConfig"]
