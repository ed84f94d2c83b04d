"""Models: ``--model`` picks one of ``MODELS`` (models/registry.py); importing this package
registers them."""

from __future__ import annotations

from models.registry import MODELS
from models.rotate_model import RotateModel, RotateSPADEModel

__all__ = ["MODELS", "RotateModel", "RotateSPADEModel", "create_model"]


def create_model(opt, nets: dict | None = None):
    """The model ``opt.model`` names; ``nets`` (name -> module, e.g. rebuilt from a
    checkpoint) replaces the networks the options would build."""
    return MODELS.get(opt.model)(opt, nets)
