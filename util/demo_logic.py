"""What the web demo (demo.py) does, without any UI: importable and testable without Gradio.

    demo = Demo(*load_model(device="cpu"))        # the shipped generator
    state = demo.prepare("photo.jpg")             # fit + align ONCE; a str is a message
    images = demo.frame(state, yaw=30, pitch=0)   # render + repair only: output, render, masks
    demo.sweep_gif(state, "sweep.gif")            # -60..60 and back

A photo is fitted once per upload: ``prepare`` keeps the aligned crop, its fit and the
input tensors in a ``Prepared`` (the UI's per-session state), and caches the last few by
content, so the same photo uploaded again (or picked again as an example) is not refitted.
A slider change calls ``frame`` alone.

``prepare`` returns, instead of a state, one line for the user (never a traceback):
  "<name>: not a readable image: <reason>"    unreadable, not an image, empty, truncated
  "<name>: no face found[: <reason>]"         MediaPipe found no (plausible) face
  "<name>: cannot be rotated: <reason>"       its whole-image mesh folds at its own pose
"""

from __future__ import annotations

import collections
import dataclasses
import hashlib
import os
import threading

import numpy as np
import torch

from data.photos import LazyFitter
from face3d.align import align
from face3d.fit import Fit
from face3d.imageio import ImageReadError, read_image, write_sweep_gif
from models.inference import face_tensors, model_from_file, problem, rotate
from options.test_options import TestOptions
from render.renderer import FaceMesh
from render.settings import RenderSettings
from util.checkpoint import (
    CheckpointError,
    checkpoint_path,
    pretrained_path,
)
from util.visualizer import to_uint8

EXAMPLES = {"Astronaut (Eileen Collins)": "astronaut.png", "Grace Hopper": "grace_hopper.jpg"}
SWEEP_YAWS = tuple(range(-60, 61, 10))
# The masks picture, colours as in util/contact_sheet.py's legend: what the generator is told.
SEEN, HIDDEN, STRETCHED, OUTSIDE = (110, 110, 110), (230, 40, 40), (60, 120, 230), (0, 0, 0)
CACHED_PHOTOS = 8


def load_model(checkpoint: str | None = None, name: str | None = None,
               checkpoints_dir: str = "./checkpoints", which_epoch: str = "latest",
               device="cpu"):
    """(model or None, RenderSettings, message). The generator is ``checkpoint`` (a training
    checkpoint .pt or an exported .safetensors/.json), else run ``name``'s checkpoint under
    ``checkpoints_dir``, else the shipped one (``util.checkpoint.pretrained_path``: renders
    only when there is none). Raises CheckpointError for a file that is missing or bad."""
    options = TestOptions()
    opt = options.parse(["--device", str(device), "--checkpoints_dir", checkpoints_dir,
                         "--which_epoch", str(which_epoch)] + (["--name", name] if name else []))
    if checkpoint is None and name:
        checkpoint = checkpoint_path(opt)
    if checkpoint is None:
        checkpoint = pretrained_path()
        if checkpoint is None:
            settings = RenderSettings.from_options(opt).replace(symmetric_fill=True)
            return None, settings, ("no generator (none shipped, or RR_PRETRAINED empty): "
                                   "the renders, with the symmetry-aware fill")
    if not os.path.exists(checkpoint):
        raise CheckpointError(f"checkpoint not found: {checkpoint}")
    # The file's own architecture and render settings win, as for test.py.
    model, _ = model_from_file(checkpoint, opt, options.parser, device)
    iteration = model.checkpoint_iteration
    return model, RenderSettings.from_options(opt), (
        f"generator {os.path.relpath(checkpoint)} (iteration "
        f"{'?' if iteration is None else iteration}, {opt.crop_size} px)")


@dataclasses.dataclass
class Prepared:
    """One photo, fitted and aligned: everything a pose change needs."""

    name: str
    crop: np.ndarray      # (S, S, 3) uint8, the aligned photo
    fit: Fit              # in crop pixels
    face: dict            # models.inference.face_tensors of the crop


class Demo:
    """The demo's operations for one model (``load_model``'s first two values)."""

    def __init__(self, model, settings: RenderSettings, device="cpu", crop_size: int = 256,
                 fitter: LazyFitter | None = None, description: str = ""):
        self.model, self.settings, self.device = model, settings, torch.device(device)
        self.description = description  # which model, for the page
        if model is not None:  # the generator runs at the crop size it was exported for
            crop_size = model.opt.crop_size
        self.crop_size = crop_size
        self.fitter = fitter or LazyFitter()
        self.mesh = FaceMesh.mediapipe(self.device)
        self._cache: collections.OrderedDict[str, Prepared] = collections.OrderedDict()
        # Gradio runs each event listener in its own queue, so an upload, an example click
        # and a slider can arrive at once: one MediaPipe fitter and one CPU, one at a time
        self._lock = threading.RLock()

    def warm_up(self) -> None:
        """Build MediaPipe's graphs and run the first frame now (seconds: graphs, compiled
        kernels, allocations), so that the user's first upload is not the slow one. Leaves
        the first example in the cache."""
        state = self.prepare_example(next(iter(EXAMPLES)))
        if isinstance(state, Prepared):
            self.frame(state, 30, 0)

    # ------------------------------------------------------------------ one photo, once
    def prepare(self, photo, name: str | None = None) -> Prepared | str:
        """A path or an HxWx3 uint8 RGB array -> ``Prepared``, or a one-line message."""
        with self._lock:
            return self._prepare(photo, name)

    def _prepare(self, photo, name: str | None) -> Prepared | str:
        if isinstance(photo, (str, os.PathLike)):
            path = os.fspath(photo)
            name = name or os.path.basename(path)
            try:
                rgb = read_image(path)
            except ImageReadError as e:  # its message names the (temporary) path
                return f"{name}: not a readable image: {str(e).replace(path, '').rstrip(': ')}"
        else:
            rgb, name = np.ascontiguousarray(photo), name or "photo"
        key = hashlib.sha1(rgb.tobytes()).hexdigest() + str(rgb.shape)
        if key in self._cache:
            self._cache.move_to_end(key)
            return dataclasses.replace(self._cache[key], name=name)
        from face3d.fitter import NoFaceError

        try:
            fit = self.fitter.fit(rgb)
        except NoFaceError as e:
            reason = "" if str(e) == "no face found" else f": {e}"
            return f"{name}: no face found{reason}"
        crop, fit_c, _ = align(rgb, fit, self.crop_size)
        face = face_tensors(crop, fit_c, self.device)
        reason = problem(face, self.mesh, self.settings)
        if reason:
            return f"{name}: cannot be rotated: {reason}"
        state = Prepared(name, crop, fit_c, face)
        self._cache[key] = state
        while len(self._cache) > CACHED_PHOTOS:
            self._cache.popitem(last=False)
        return state

    def prepare_example(self, label: str) -> Prepared | str:
        """A built-in example by its label in ``EXAMPLES``."""
        from face3d.examples import example_images

        return self.prepare(example_images()[EXAMPLES[label]], name=EXAMPLES[label])

    # ------------------------------------------------------------------ per slider change
    def frame(self, state: Prepared, yaw: float, pitch: float | None = None) -> dict:
        """The photo at (yaw, pitch) in degrees (pitch None: its own): output (the
        generator's repair, or the render without a model), render, masks (the picture of
        what the generator is told), each (S, S, 3) uint8; and the hidden and stretched
        fractions of the crop."""
        with self._lock:
            views = rotate(state.face, [(float(yaw), None if pitch is None else float(pitch))],
                           self.mesh, self.settings, self.model)
        hidden, stretched = views["hidden"][0, 0].bool(), views["stretched"][0, 0].bool()
        return dict(output=to_uint8(views["output"])[0], render=to_uint8(views["image"])[0],
                    masks=mask_picture(views["coverage"][0, 0].bool(), hidden, stretched),
                    hidden=float(hidden.float().mean()),
                    stretched=float(stretched.float().mean()))

    def sweep_gif(self, state: Prepared, path: str, yaws=SWEEP_YAWS,
                  frame_ms: int = 100) -> str:
        """A looping GIF of the outputs turning through ``yaws`` and back; returns ``path``."""
        with self._lock:
            out = to_uint8(rotate(state.face, [(float(y), None) for y in yaws], self.mesh,
                                  self.settings, self.model)["output"])
        return write_sweep_gif(out, path, frame_ms)


def mask_picture(coverage, hidden, stretched) -> np.ndarray:
    """(H, W) bool tensors -> (H, W, 3) uint8: grey seen, red hidden in the photo, blue
    stretched (revealed behind the turning head, or from outside the crop)."""
    out = np.zeros((*coverage.shape, 3), np.uint8)
    out[:] = OUTSIDE
    out[coverage.cpu().numpy()] = SEEN
    out[stretched.cpu().numpy()] = STRETCHED
    out[hidden.cpu().numpy()] = HIDDEN
    return out
