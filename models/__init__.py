"""Models: ``--model`` picks one of ``MODELS``."""

from __future__ import annotations

from models.rotate_model import RotateModel, RotateSPADEModel

MODELS = {"rotate": RotateModel, "rotatespade": RotateSPADEModel}


def find_model_class(name: str):
    if name not in MODELS:
        raise ValueError(f"unknown --model {name!r}; choose one of: {', '.join(MODELS)}")
    return MODELS[name]


def create_model(opt):
    return find_model_class(opt.model)(opt)
