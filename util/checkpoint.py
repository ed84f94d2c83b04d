"""Checkpoints: one file per save, written atomically, loaded with ``weights_only=True``.

A checkpoint is a dict: ``nets`` (name -> state_dict), ``optimizers`` (name -> state_dict),
``iteration``, ``epoch``, ``epoch_iter`` (batches done in that epoch), ``options`` (a plain
dict) and ``rng`` (``rng_state()``: torch CPU and CUDA, NumPy and Python generator states,
plus ``ranks``: those of every DDP process), so resuming is exact.
"""

from __future__ import annotations

import os
import random
import tempfile

import numpy as np
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


def rng_state() -> dict:
    """This process's random generator states, in types ``weights_only`` loading accepts."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()  # noqa: NPY002
    return {"torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)),
                      "pos": int(pos), "has_gauss": int(has_gauss), "cached": float(cached)},
            "python": random.getstate()}


def set_rng_state(state: dict) -> None:
    """Restore what ``rng_state()`` captured (older checkpoints hold only ``torch``)."""
    torch.set_rng_state(state["torch"])
    cuda = state.get("cuda") or []
    if cuda and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda)
    if "numpy" in state:
        n = state["numpy"]
        keys = n["keys"].numpy().astype(np.uint32)
        np.random.set_state((n["kind"], keys, n["pos"], n["has_gauss"], n["cached"]))  # noqa: NPY002
    if "python" in state:
        version, internal, gauss = state["python"]
        random.setstate((version, tuple(internal), gauss))


def adopt_options(opt, saved: dict, parser, keys) -> list[str]:
    """Give ``opt`` the checkpoint's value of each option in ``keys`` (the options the saved
    networks were built with), so a run can load it without repeating its flags. Returns a
    warning for each value typed on the command line that the checkpoint overrides."""
    warnings = []
    for key in keys:
        if key not in saved or not hasattr(opt, key) or getattr(opt, key) == saved[key]:
            continue
        mine = getattr(opt, key)
        if mine != parser.get_default(key):
            warnings.append(f"--{key} {mine} conflicts with the checkpoint's {key}="
                            f"{saved[key]}; using the checkpoint's")
        setattr(opt, key, saved[key])
    return warnings
