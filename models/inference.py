"""The inference library: load a generator for a run, and turn aligned photos into outputs
at target poses. test.py, evaluate.py, training's quick evaluation, the contact sheet and
benchmarks/test.py all go through here, so "how a face is rotated at test time" has one
home:

    model, message = load_generator(opt, parser, device)      # or None: renders only
    face = face_tensors(crop, fit, device)                      # an aligned photo + its fit
    views = rotate(face, [(30.0, None)], mesh, RenderSettings.from_options(opt), model)
    views["output"]                                             # G's repair of views["image"]
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import os
import sys

import numpy as np
import torch

from render.renderer import FaceMesh, scope_problems, source_view
from render.settings import RenderSettings
from util.checkpoint import adopt_options, checkpoint_path, load_generator_file, pretrained_path


def model_from_file(path: str, opt, parser: argparse.ArgumentParser, device):
    """(model, warnings): the model around the generator file ``path`` (a training
    checkpoint .pt or an exported .safetensors/.json), rebuilt from the file. What it was
    trained with (architecture, crop size, landmark-map and render settings) is adopted
    into ``opt``; ``warnings`` name each conflicting value the user typed. The model's
    ``checkpoint_iteration`` and ``generator_file`` say what was loaded."""
    netG, trained_with, iteration = load_generator_file(path, device)
    # A render setting the checkpoint predates was, when it was trained, what the
    # dataclass default still means (render_scope: 'face'), not today's command-line default.
    for f in dataclasses.fields(RenderSettings):
        trained_with.setdefault(f.name, f.default)
    warnings = adopt_options(opt, trained_with, parser)
    from models import create_model

    opt.is_train = False
    model = create_model(opt, {"netG": netG})
    model.eval().to(device)
    model.checkpoint_iteration = iteration
    model.generator_file = path
    return model, warnings


def load_generator(opt, parser: argparse.ArgumentParser, device):
    """(model or None, message). The generator is the run's checkpoint (--name,
    --which_epoch) when it exists, else the shipped one (``util.checkpoint.pretrained_path``)
    when there is one; ``model.generator_file`` says which. It is rebuilt from the file;
    what it was trained with (architecture, crop size, landmark-map and render settings)
    wins over the command line, with a warning for each conflict the user typed."""
    path = checkpoint_path(opt)
    if opt.render_only:
        return None, "--render_only: writing rotated renders (mode=render)"
    source = path
    if not os.path.exists(path):
        shipped = pretrained_path()
        if shipped is None:
            return None, (f"no checkpoint at {path}: writing rotated renders without a "
                          "generator (mode=render)")
        source = f"the shipped model {os.path.relpath(shipped)} (no checkpoint at {path})"
        path = shipped
    model, warnings = model_from_file(path, opt, parser, device)
    for warning in warnings:
        print(f"warning: {warning}", file=sys.stderr)
    iteration = model.checkpoint_iteration
    return model, (f"generator from {source} (iteration "
                   f"{'?' if iteration is None else iteration})")


# ------------------------------------------------------------------------------ inputs

class FitterWithNotice:
    """A ``data.photos.LazyFitter`` that prints one line before it builds MediaPipe (its
    first fit takes ~15 s: the models are loaded), so a run does not look stuck."""

    def __init__(self, lazy):
        self._lazy, self._told = lazy, False

    def _tell(self):
        if not self._told and getattr(self._lazy, "_fitter", None) is None:
            print("loading the face fitter (first fit takes ~15 s)...", flush=True)
        self._told = True

    def fit(self, rgb):
        self._tell()
        return self._lazy.fit(rgb)

    def try_fit(self, rgb):
        self._tell()
        return self._lazy.try_fit(rgb)

    @property
    def fitter(self):
        self._tell()
        return self._lazy.fitter


# ------------------------------------------------------------------------------ running G


def pose_name(yaw: float, pitch: float | None) -> str:
    """How outputs at a pose are named: ``yaw+30``, ``yaw-15_pitch+10``."""
    return f"yaw{yaw:+g}" + ("" if pitch is None else f"_pitch{pitch:+g}")


def face_tensors(crop: np.ndarray, fit, device) -> dict:
    """A batch of one aligned photo in the dataset's batch layout: image (1, 3, S, S) in
    [-1, 1], the fit in crop pixels (vertices, rotation, scale, translation) and its pose
    (yaw, pitch (1,) in degrees)."""
    return dict(image=torch.from_numpy(crop).permute(2, 0, 1)[None].float().to(device) / 127.5 - 1,
                vertices=torch.from_numpy(fit.vertices)[None].to(device),
                rotation=torch.from_numpy(fit.rotation)[None].to(device),
                scale=torch.tensor([fit.scale], device=device),
                translation=torch.from_numpy(fit.translation)[None].to(device),
                yaw=torch.tensor([fit.yaw], dtype=torch.float32, device=device),
                pitch=torch.tensor([fit.pitch], dtype=torch.float32, device=device))


def repair(model, renders, landmarks, source_yaw=None, batch_size: int | None = None,
           bf16: bool = False, masks=None) -> torch.Tensor:
    """G's output (float32) for renders (B, 3, S, S) with the rotated landmarks (B, 68, 2),
    ``batch_size`` at a time (None: all at once). ``source_yaw`` (B,) in degrees, the pose
    the texture came from, lets --label_mask models skip the mask for near-frontal sources,
    as the original did at test time. ``bf16``: bfloat16 autocast on CUDA (ignored on the
    CPU, where it is slower). ``masks`` (B, 2, S, S): the renders' hidden and stretched
    masks, for a generator that reads them (``model.view_masks`` / ``model.pair_masks``)."""
    step = batch_size or renders.shape[0]
    autocast = (torch.autocast("cuda", dtype=torch.bfloat16)
                if bf16 and renders.device.type == "cuda" else contextlib.nullcontext())
    yaw = None if source_yaw is None else torch.as_tensor(source_yaw).float().cpu()
    outs = []
    for s in range(0, renders.shape[0], step):
        data = {"input": renders[s:s + step], "landmarks": landmarks[s:s + step]}
        if yaw is not None:
            data["source_yaw"] = yaw[s:s + step]
        if masks is not None:
            data["masks"] = masks[s:s + step]
        with torch.no_grad(), autocast:
            outs.append(model(data, "inference").float())
    return torch.cat(outs)


def problem(face: dict, mesh: FaceMesh, settings: RenderSettings) -> str:
    """Why one face (a ``face_tensors`` batch of one) cannot be rotated with ``settings``,
    or '' (see ``render.renderer.scope_problems``)."""
    return scope_problems(face["image"], face["vertices"], face["rotation"], face["scale"],
                          face["translation"], mesh, settings)[0]


def rotate(faces: dict, poses, mesh: FaceMesh, settings: RenderSettings, model=None,
           batch_size: int | None = None, bf16: bool = False) -> dict:
    """Every face of a batch turned to every pose: render, then repair when a ``model`` is
    given.

    faces:    a batch as ``face_tensors`` or the dataset makes it (image, vertices,
              rotation, scale, translation, yaw, pitch; B faces);
    poses:    [(yaw, pitch or None)] in degrees; None keeps each face's own pitch;
    settings: how the generator's input is rendered (a checkpoint's, for its generator).
    Returns ``rotated_view``'s outputs for the B * len(poses) views, face by face (face 0 at
    every pose, then face 1, ...): image (the render), landmarks (68, 2), masks ...; plus
    output: G's repair of the render, or the render itself without a model. Views are
    rendered and repaired ``batch_size`` at a time (None: all at once); the render of a
    view does not depend on the others in its batch, so this changes speed, not results.
    """
    n_faces = faces["image"].shape[0]
    own_yaw = faces["yaw"].float().cpu().tolist()
    own_pitch = faces["pitch"].float().cpu().tolist()
    views = [(i, float(y), own_pitch[i] if p is None else float(p))
             for i in range(n_faces) for y, p in poses]
    step = batch_size or len(views)
    device = faces["image"].device
    parts = []
    with torch.no_grad():
        # the source pose's raster and masks once per photo, not once per pose
        source = source_view(faces["image"], faces["vertices"], faces["rotation"],
                             faces["scale"], faces["translation"], mesh, settings)
        for s in range(0, len(views), step):
            chunk = views[s:s + step]
            idx = torch.tensor([i for i, _, _ in chunk], device=device)
            view = source.select(idx).rotated_view(
                torch.tensor([y for _, y, _ in chunk], device=device),
                torch.tensor([p for _, _, p in chunk], device=device), settings)
            view["output"] = view["image"]
            if model is not None:
                view["output"] = repair(model, view["image"], view["landmarks"],
                                        [own_yaw[i] for i, _, _ in chunk], bf16=bf16,
                                        masks=(model.view_masks(view)
                                               if getattr(model, "uses_masks", False)
                                               else None))
            parts.append(view)
    return {k: torch.cat([p[k] for p in parts]) for k, v in parts[0].items()
            if torch.is_tensor(v)}


@contextlib.contextmanager
def inference_context(model):
    """Run a training model's generator at inference: G in eval mode and unwrapped from DDP
    (``model(..., "inference")`` then runs on this process alone, so the other ranks need
    not take part); its mode and wrapper are restored on exit."""
    from models.rotate_model import _unwrap

    wrapped = model.netG
    netG = _unwrap(wrapped)
    was_training = netG.training
    netG.eval()
    model.netG = netG
    try:
        yield model
    finally:
        model.netG = wrapped
        netG.train(was_training)
