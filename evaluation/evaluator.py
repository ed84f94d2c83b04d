"""The evaluator interface (after detectron2's ``DatasetEvaluator``) and what every evaluator
of an evaluate.py run shares.

``evaluation.run.score`` drives them: ``reset()`` once, ``process(photo, outputs)`` for each
photo that could be read and aligned, ``evaluate()`` at the end for the evaluator's fields of
report.json. ``photo`` is a ``ScoredPhoto`` (the aligned crop, its fit, its tensors);
``outputs`` maps each scored mode to a ``Rotations`` (that mode's outputs at every
``--yaw_poses`` yaw), made once per photo and shared, so the expensive parts (rendering,
the generator, re-fitting the outputs with MediaPipe) are not repeated per metric.
"""

from __future__ import annotations

from functools import cached_property

import numpy as np

from data.photos import LazyFitter
from evaluation.report import Example, Gallery
from models.inference import rotate
from render.renderer import FaceMesh
from render.settings import RenderSettings
from util.visualizer import to_uint8

MODES = ("render", "symmetry", "generator")
MODE_LABEL = {"render": "render (artifacts)", "symmetry": "render + symmetry fill",
              "generator": "generator"}


class EvalRun:
    """One evaluate.py run: its options, device, generator (or None), scored modes, the
    identity describer (or None), output folder, and what is built once for all photos (the
    mesh, the MediaPipe fitter, the example gallery, the failures list)."""

    def __init__(self, opt, device, model, modes, gen_fill: bool, describer, out_dir: str):
        self.opt, self.device, self.model, self.modes = opt, device, model, modes
        self.gen_fill, self.describer, self.out_dir = gen_fill, describer, out_dir
        self.mesh = FaceMesh.mediapipe(device)
        self.fitter = LazyFitter()
        self.pose_list = [(float(y), None) for y in opt.yaw_poses]
        self.gallery = Gallery(out_dir, opt.html_rows)
        self.failures: list[tuple[str, str]] = []

    def settings(self, mode: str) -> RenderSettings:
        """How ``mode``'s input is rendered: the run's settings (the checkpoint's, when a
        generator is scored) with that mode's fill of hidden texels."""
        fill = {"render": False, "symmetry": True, "generator": self.gen_fill}[mode]
        return RenderSettings.from_options(self.opt).replace(symmetric_fill=fill)

    def rotations(self, face: dict, poses, mode: str) -> Rotations:
        views = rotate(face, poses, self.mesh, self.settings(mode),
                       self.model if mode == "generator" else None, self.opt.batchSize,
                       self.opt.bf16)
        return Rotations(views, self.fitter)


class ScoredPhoto:
    """One photo being scored: ``rel`` (its name), ``crop`` (aligned, HxWx3 uint8), ``fit``
    (in crop pixels), ``face`` (``models.inference.face_tensors``) and ``example`` (its
    ``report.Example`` when index.html shows it, else None)."""

    def __init__(self, rel: str, crop: np.ndarray, fit, face: dict, example: Example | None,
                 describer=None):
        self.rel, self.crop, self.fit, self.face, self.example = rel, crop, fit, face, example
        self._describer = describer

    @cached_property
    def descriptor(self):
        """The identity descriptor of the aligned photo (None without a describer or when
        none is found); computed once for the evaluators that compare with it."""
        if self._describer is None:
            return None
        return self._describer.describe(self.crop, self.fit.landmarks68)


class Rotations:
    """One mode's outputs for one photo: ``images`` (uint8 outputs, one per pose),
    ``renders`` (the renders they were made from, (P, 3, S, S) in [-1, 1]), ``landmarks``
    ((P, 68, 2) of the rotated mesh), ``fits`` (MediaPipe's fit of each output, None where
    no face is found; fitted on first use) and ``notes`` (per output, caption fragments that
    evaluators add for index.html)."""

    def __init__(self, views: dict, fitter: LazyFitter):
        self.images = [np.ascontiguousarray(a) for a in to_uint8(views["output"])]
        self.renders = views["image"]
        self.landmarks = views["landmarks"].cpu().numpy()
        self.notes: list[list[str]] = [[] for _ in self.images]
        self._fitter = fitter

    @cached_property
    def fits(self) -> list:
        return [self._fitter.try_fit(im) for im in self.images]


class Evaluator:
    """One metric of the report. Subclasses set:

    name:  the registry name (``evaluation/registry.py``);
    keys:  the report.json fields ``evaluate()`` returns; each is null in the report when
           the evaluator is off (``build`` returned None). The class docstring documents
           them (a test checks it);
    timed: True when its time is reported on its own, as ``timing_s[name]`` (else it counts
           in ``timing_s['pose_identity']``, the photo loop);
    and override ``process`` / ``evaluate`` (and ``text`` for report.txt).
    """

    name = ""
    keys: tuple[str, ...] = ()
    timed = False

    @classmethod
    def build(cls, run: EvalRun) -> Evaluator | None:
        """The evaluator for this run, or None when it is off (its fields are null)."""
        return cls(run)

    def __init__(self, run: EvalRun):
        self.run = run

    def reset(self):
        """Prepare for a run (called once, before the first photo)."""

    def process(self, photo: ScoredPhoto, outputs: dict[str, Rotations]):
        """Measure one photo."""

    def evaluate(self) -> dict:
        """{key: value} for each of ``keys``."""
        raise NotImplementedError

    @staticmethod
    def text(report: dict) -> list[str]:
        """This evaluator's lines of report.txt, from the report alone (none when off)."""
        return []
