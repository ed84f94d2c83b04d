"""Checkpoints: one file per save, written atomically, loaded with ``weights_only=True``.

``Checkpointer`` is the one writer and reader of a training checkpoint (detectron2's
checkpointer owns what is saved; as in nanoGPT the file holds the networks' constructor
arguments, so the architecture is rebuilt from it, not from options repeated on the command
line). A checkpoint (format 2) is a dict:

  format      2
  nets        name (netG, netD, netD_rotate) -> state_dict
  net_specs   name -> ``models.networks.net_spec``: registry kind, name and constructor
              arguments; ``models.networks.rebuild(spec)`` builds that architecture again
  settings    option values the generator's input depends on (``RotateModel.settings``:
              --model, --crop_size, the landmark-map and render options), so inference
              feeds the generator what it was trained on
  optimizers  name -> state_dict
  iteration, epoch, epoch_iter (batches done in that epoch)
  options     every option of the run, as plain values (for the record)
  rng         ``rng_state()`` (torch CPU and CUDA, NumPy, Python) plus ``ranks``: those of
              every DDP process, so resuming is exact

A checkpoint written before format 2 has no ``format``, ``net_specs`` or ``settings``;
``Checkpointer.load`` derives them from its saved options, which is how such a file was
read when it was written.

A *shipped generator* (``export_generator``, e.g. ``pretrained/``) is the generator alone:
NAME.safetensors (its state_dict in fp16; no pickle) and NAME.json beside it holding
``format``, ``netG`` (its ``net_spec``), ``settings`` (as in a checkpoint) and ``training``
(a free-form record). ``load_generator_file`` reads either kind of file.
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import random
import re

import numpy as np
import torch

from face3d.fileio import atomic_write
from models import MODELS
from models.networks import DISCRIMINATORS, GENERATORS, net_spec, rebuild, spec_options

FORMAT = 2
EXPORT_FORMAT = 1
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# The generator that ships with the project: test.py, evaluate.py and v100_test.sh use it
# when the run names no checkpoint that exists. $RR_PRETRAINED names another file; set
# empty, none (the render-only behaviour, which the test suite keeps by default).
PRETRAINED = os.path.join(REPO, "pretrained", "blend_lfw.safetensors")
PRETRAINED_ENV = "RR_PRETRAINED"


def pretrained_path() -> str | None:
    """The shipped generator a run falls back to, or None when there is none."""
    path = os.environ.get(PRETRAINED_ENV, PRETRAINED)
    return path if path and os.path.exists(path) else None


class CheckpointError(RuntimeError):
    """A checkpoint that is missing, corrupt or does not fit the model."""


def save_checkpoint(state: dict, path: str) -> None:
    """``torch.save`` via ``atomic_write``: a crash or Ctrl-C mid-write never leaves a
    truncated checkpoint behind, nor replaces the previous one."""
    with atomic_write(path, "wb") as f:
        torch.save(state, f)


def inside_pretrained(path: str) -> bool:
    """Whether ``path`` is the shipped model's folder (pretrained/) or inside it: no command
    writes there (export_generator.py, with its own --overwrite, is how a file gets there)."""
    folder = os.path.realpath(os.path.dirname(PRETRAINED))
    target = os.path.realpath(path)
    return target == folder or target.startswith(folder + os.sep)


def load_checkpoint(path: str, map_location="cpu") -> dict:
    if not os.path.exists(path):
        raise CheckpointError(f"checkpoint not found: {path}")
    if os.path.isdir(path):
        raise CheckpointError(f"checkpoint {path} is a folder, not a file")
    if os.path.getsize(path) == 0:
        raise CheckpointError(f"checkpoint {path} is empty (0 bytes): an interrupted copy? "
                              "Copy it again, or delete it to start afresh")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        refused, why = _weights_only_reason(str(e))
        if refused:
            # torch's message suggests weights_only=False, which would run the file's code
            raise CheckpointError(
                f"checkpoint {path} refused for safety: it holds {why}, and loading it could "
                "run code from the file; use checkpoints written by train.py (or re-save a "
                "trusted one with its tensors and plain values only)") from None
        raise CheckpointError(f"corrupt or unreadable checkpoint {path}: {why}") from None
    except Exception as e:  # torch raises many types for damaged files
        raise CheckpointError(f"corrupt or unreadable checkpoint {path}: "
                              f"{_first_line(e)}") from None
    if not isinstance(state, dict) or "nets" not in state:
        raise CheckpointError(f"{path} is not a Rotate-and-Render checkpoint (no 'nets' entry)")
    return state


def _weights_only_reason(message: str) -> tuple[bool, str]:
    """(refused for safety?, what torch's weights_only unpickler objected to), from its
    message, without its advice to load with weights_only=False. A pickle that names a
    Python global (a class, or a function such as os.system) is refused; anything else is
    damage."""
    found = re.search(r"GLOBAL ([\w.]+)", message)
    if found:
        return True, f"a Python object ({found.group(1)}) other than tensors and plain values"
    detail = message.split("WeightsUnpickler error:", 1)[-1]
    lines = [line.strip() for line in detail.splitlines() if line.strip()
             and not any(hint in line for hint in ("weights_only", "Weights only load failed",
                                                   "Check the documentation",
                                                   "Please file an issue"))]
    return False, f"UnpicklingError: {(lines[0] if lines else 'not a torch.save file')[:200]}"


def _first_line(e: BaseException) -> str:
    """``Type: first line of the message`` (some of torch's errors have an empty one)."""
    lines = [line for line in str(e).splitlines() if line.strip()]
    return type(e).__name__ + (f": {lines[0][:200]}" if lines else "")


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
    """The checkpoint of run ``--name`` that ``which`` (default ``--which_epoch``) names."""
    which = opt.which_epoch if which is None else which
    return Checkpointer(os.path.join(opt.checkpoints_dir, opt.name)).path(which)


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


def adopt_options(opt, values: dict, parser) -> list[str]:
    """Give ``opt`` each of ``values`` (option name -> what the checkpoint was trained with;
    names that are not options of this command are skipped), so a run can load the
    checkpoint without repeating its flags. Returns a warning for each value typed on the
    command line that the checkpoint overrides."""
    warnings = []
    for key, value in values.items():
        if not hasattr(opt, key) or getattr(opt, key) == value:
            continue
        mine = getattr(opt, key)
        if mine != parser.get_default(key):
            warnings.append(f"--{key} {mine} conflicts with the checkpoint's {key}="
                            f"{value}; using the checkpoint's")
        setattr(opt, key, value)
    return warnings


class Checkpointer:
    """Writes and reads the checkpoints of one run folder (see the module docstring)."""

    def __init__(self, folder: str):
        self.folder = folder

    def path(self, which: str | int) -> str:
        return os.path.join(self.folder, f"{which}.pt")

    def save(self, which: str | int, nets: dict, optimizers: dict, *, settings: dict,
             options: dict, iteration: int, epoch: int, epoch_iter: int, rng: dict) -> str:
        """Write ``<folder>/<which>.pt``; ``nets`` are the plain (unwrapped) modules."""
        state = {"format": FORMAT,
                 "nets": {n: net.state_dict() for n, net in nets.items()},
                 "net_specs": {n: net_spec(net) for n, net in nets.items()},
                 "settings": dict(settings),
                 "optimizers": {n: o.state_dict() for n, o in optimizers.items()},
                 "iteration": iteration, "epoch": epoch, "epoch_iter": epoch_iter,
                 "options": {k: v for k, v in options.items()
                             if isinstance(v, (int, float, str, bool, type(None)))},
                 "rng": rng}
        path = self.path(which)
        save_checkpoint(state, path)
        return path

    @staticmethod
    def load(path: str) -> dict:
        """The checkpoint at ``path`` in format 2 (an older one is upgraded in memory)."""
        state = load_checkpoint(path)
        if state.get("format", 1) > FORMAT:
            raise CheckpointError(f"{path} has checkpoint format {state['format']}; this "
                                  f"version reads up to {FORMAT}: update the code")
        return state if "net_specs" in state else _upgraded(state, path)

    @staticmethod
    def rebuild_nets(state: dict, path: str) -> dict:
        """name -> a freshly initialised net of each saved architecture (weights not loaded:
        the trainer loads them with the optimisers)."""
        return {n: _rebuild(spec, n, path) for n, spec in state["net_specs"].items()}

    @staticmethod
    def trained_with(state: dict, names=None) -> dict:
        """Option values the checkpoint's nets ``names`` (default: all) and their input were
        made with: the settings, each net's registry name under its flag (--netG, --netD)
        and its constructor arguments (those named like an option are that option)."""
        values = dict(state["settings"])
        for n in state["net_specs"] if names is None else names:
            values.update(spec_options(state["net_specs"][n]))
        return values

    @staticmethod
    def progress(state: dict, path: str) -> tuple[int, int, int]:
        """(iteration, epoch, epoch_iter) of a training checkpoint."""
        for key in ("iteration", "epoch", "epoch_iter"):
            if key not in state:
                raise CheckpointError(f"{path} has no {key!r}: not a training checkpoint")
        return state["iteration"], state["epoch"], state["epoch_iter"]

    @classmethod
    def load_generator(cls, path: str, device) -> tuple[torch.nn.Module, dict, int | None]:
        """(generator rebuilt from the file with its weights, in eval mode on ``device``;
        the option values it was trained with (``trained_with``); its iteration)."""
        state = cls.load(path)
        if "netG" not in state["nets"]:
            raise CheckpointError(f"{path} holds no generator (netG)")
        net = _rebuild(state["net_specs"]["netG"], "netG", path)
        load_net(net, state["nets"]["netG"], "netG", path)
        return net.eval().to(device), cls.trained_with(state, ["netG"]), state.get("iteration")


def _rebuild(spec: dict, name: str, path: str) -> torch.nn.Module:
    try:
        return rebuild(spec)
    except (KeyError, TypeError, ValueError) as e:  # a name or argument this code lacks
        raise CheckpointError(f"{path}: cannot rebuild its {name}: {e}") from None


def _upgraded(state: dict, path: str) -> dict:
    """A checkpoint from before format 2, with ``net_specs`` and ``settings`` derived from
    its saved options as the code of its time did (``define_G(opt)``, ``define_D(opt)``)."""
    saved = argparse.Namespace(**(state.get("options") or {}))
    try:
        model_cls = MODELS.get(saved.model)
        g_cls = GENERATORS.get(saved.netG)
        specs = {"netG": {"kind": GENERATORS.what, "name": saved.netG,
                          "args": g_cls.args_from_opt(saved)}}
        d_names = [n for n in ("netD", "netD_rotate") if n in state["nets"]]
        if d_names:
            d_args = DISCRIMINATORS.get(saved.netD).args_from_opt(
                saved, model_cls.discriminator_input_nc(saved, g_cls))
            for n in d_names:
                specs[n] = {"kind": DISCRIMINATORS.what, "name": saved.netD, "args": d_args}
    except AttributeError as e:  # an option the networks need is not in the saved ones
        raise CheckpointError(
            f"{path} predates checkpoints that record their architecture, and its saved "
            f"options lack {e.name!r}; convert it by adding the value it was trained with: "
            f"state = torch.load(path); state['options'][{e.name!r}] = VALUE; "
            "torch.save(state, path)") from None
    except ValueError as e:  # a model or network name this code does not have
        raise CheckpointError(f"{path}: cannot rebuild its networks from its saved options "
                              f"({e})") from None
    return dict(state, format=FORMAT, net_specs=specs,
                settings=model_cls.settings_from_options(saved))


# ------------------------------------------------------------------- shipped generators


def export_paths(path: str) -> tuple[str, str]:
    """(NAME.safetensors, NAME.json) of an exported generator named by either path."""
    stem = os.path.splitext(path)[0]
    return stem + ".safetensors", stem + ".json"


def export_generator(net: torch.nn.Module, settings: dict, path: str,
                     training: dict | None = None) -> tuple[str, str]:
    """Write ``net`` (built by from_opt/from_args) as fp16 safetensors plus its JSON;
    both atomically, the JSON last, so a reader never finds a JSON without its weights."""
    from safetensors.torch import save

    weights, meta = export_paths(path)
    tensors = {k: (v.detach().to(torch.float16) if v.is_floating_point() else v.detach())
               .cpu().contiguous() for k, v in net.state_dict().items()}
    with atomic_write(weights, "wb") as f:
        f.write(save(tensors))
    record = {"format": EXPORT_FORMAT, "netG": net_spec(net), "settings": dict(settings),
              "training": dict(training or {})}
    with atomic_write(meta) as f:
        json.dump(record, f, indent=1, sort_keys=True)
        f.write("\n")
    return weights, meta


def load_exported_generator(path: str, device="cpu") -> tuple[torch.nn.Module, dict, int | None]:
    """Like ``Checkpointer.load_generator`` for an exported generator: (net in eval mode
    on ``device``, the option values it was trained with, its iteration)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    weights, meta = export_paths(path)
    for f in (weights, meta):
        if not os.path.exists(f):
            raise CheckpointError(f"shipped generator incomplete: {f} not found")
    try:
        with open(meta) as f:
            record = json.load(f)
        spec, settings = record["netG"], record["settings"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise CheckpointError(f"{meta} is not a generator description "
                              f"({type(e).__name__}: {e})") from None
    if record.get("format", 0) > EXPORT_FORMAT:
        raise CheckpointError(f"{meta} has format {record['format']}; this version reads up "
                              f"to {EXPORT_FORMAT}: update the code")
    net = _rebuild(spec, "netG", meta)
    try:
        state = load_file(weights)
    except (SafetensorError, OSError) as e:
        raise CheckpointError(f"corrupt or unreadable {weights}: {e}") from None
    own = net.state_dict()
    state = {k: v.to(own[k].dtype) if k in own else v for k, v in state.items()}
    load_net(net, state, "netG", weights)
    trained_with = dict(settings, **spec_options(spec))
    return net.eval().to(device), trained_with, record.get("training", {}).get("iteration")


def load_generator_file(path: str, device="cpu") -> tuple[torch.nn.Module, dict, int | None]:
    """A generator from a training checkpoint (.pt) or an exported one (.safetensors/.json)."""
    if path.endswith((".safetensors", ".json")):
        return load_exported_generator(path, device)
    return Checkpointer.load_generator(path, device)
