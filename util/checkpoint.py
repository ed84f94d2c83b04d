"""Checkpoints: one file per save, written atomically, loaded with ``weights_only=True``.

A checkpoint is a dict: ``nets`` (name -> state_dict), ``optimizers`` (name -> state_dict),
``iteration``, ``epoch``, ``epoch_iter`` (batches done in that epoch), ``options`` (a plain
dict) and ``rng`` (torch CPU/CUDA generator states), so resuming is exact.
"""

from __future__ import annotations

import os
import tempfile

import torch


class CheckpointError(RuntimeError):
    """A checkpoint that is missing, corrupt or does not fit the model."""


def save_checkpoint(state: dict, path: str) -> None:
    """Write ``state`` to ``path`` via a temp file in the same folder and a rename, so a
    crash or Ctrl-C mid-write never leaves a truncated checkpoint behind."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp_", suffix=".pt", dir=folder)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(state, f)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def load_checkpoint(path: str, map_location="cpu") -> dict:
    if not os.path.exists(path):
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # torch raises many types for damaged files
        raise CheckpointError(f"corrupt or unreadable checkpoint {path}: "
                              f"{type(e).__name__}: {str(e).splitlines()[0][:200]}") from None
    if not isinstance(state, dict) or "nets" not in state:
        raise CheckpointError(f"{path} is not a Rotate-and-Render checkpoint (no 'nets' entry)")
    return state


def load_net(net: torch.nn.Module, state_dict: dict, name: str, path: str) -> None:
    """Load strictly, turning key or shape mismatches into one readable error."""
    own = net.state_dict()
    missing = sorted(set(own) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(own))
    wrong = sorted(k for k in set(own) & set(state_dict) if own[k].shape != state_dict[k].shape)
    if missing or unexpected or wrong:
        def few(keys):
            return ", ".join(keys[:5]) + (f" (+{len(keys) - 5} more)" if len(keys) > 5 else "")

        parts = []
        if missing:
            parts.append(f"missing keys: {few(missing)}")
        if unexpected:
            parts.append(f"unexpected keys: {few(unexpected)}")
        if wrong:
            parts.append("different shapes: " + few(
                [f"{k} {tuple(state_dict[k].shape)} vs {tuple(own[k].shape)}" for k in wrong]))
        raise CheckpointError(f"{path}: {name} does not match this model ({'; '.join(parts)}); "
                              "was it trained with other options (--model, --netG, --ngf, "
                              "--label_nc ...)?")
    net.load_state_dict(state_dict)


def checkpoint_path(opt, which: str | int | None = None) -> str:
    which = opt.which_epoch if which is None else which
    return os.path.join(opt.checkpoints_dir, opt.name, f"{which}.pt")
