"""evaluate.py's run: every photo is read, aligned and rotated once per mode, each evaluator
measures it, and the report is the run's header plus what the evaluators return."""

from __future__ import annotations

import datetime
import os
import shlex
import time

from tqdm import tqdm

from data.photos import load_photo
from evaluation.evaluator import EvalRun, ScoredPhoto
from evaluation.registry import EVALUATORS
from evaluation.report import Example
from face3d.align import align
from face3d.fit import fit_problem
from face3d.imageio import write_png
from models.inference import face_tensors, pose_name, problem
from util.visualizer import to_uint8

REPORT_VERSION = 1


def build_evaluators(run: EvalRun, names=None) -> dict:
    """{evaluator class: its evaluator for this run, or None when it is off}, in report
    order (``names``: registry names; default all of them)."""
    classes = [EVALUATORS.get(n) for n in (names or EVALUATORS)]
    return {cls: cls.build(run) for cls in classes}


class _Clock:
    """Seconds spent in each timed evaluator (reset, process and evaluate together)."""

    def __init__(self, evaluators: dict):
        self.spent = {cls.name: 0.0 for cls in evaluators if cls.timed}

    def call(self, evaluator, method, *args):
        t = time.perf_counter()
        out = method(*args)
        if evaluator.name in self.spent:
            self.spent[evaluator.name] += time.perf_counter() - t
        return out


def start(evaluators: dict) -> _Clock:
    """Reset the evaluators that are on (a verification pairs file is read or drawn here,
    so that a bad one fails the run before the photos are scored); the clock of ``score``."""
    clock = _Clock(evaluators)
    for ev in evaluators.values():
        if ev is not None:
            clock.call(ev, ev.reset)
    return clock


def score(run: EvalRun, photos, evaluators: dict, clock: _Clock,
          t0: float) -> tuple[dict, dict]:
    """(the metric fields of the report, timing_s) of the evaluators (``start``-ed) over the
    photos (``data.photos.Photo``). ``t0``: when the run started; ``timing_s['pose_identity']``
    is the time until the photo loop ended, less what the timed evaluators spent in it.
    Photos that cannot be used go to ``run.failures``. Each evaluator that is off
    contributes its fields as null."""
    active = [e for e in evaluators.values() if e is not None]
    for photo in tqdm(photos, desc="evaluating", unit="photo", dynamic_ncols=True):
        try:
            rgb, fit = load_photo(photo, run.fitter)
            reason = fit_problem(fit)  # another mesh's fit, NaNs: reported, skipped
        except (ValueError, OSError) as e:  # unreadable image, bad fit file, no face
            reason = str(e)
        if reason:
            run.failures.append((photo.rel, " ".join(reason.split())))
            continue
        crop, fit_c, _ = align(rgb, fit, run.opt.crop_size)
        face = face_tensors(crop, fit_c, run.device)
        # the modes differ only in the fill of hidden texels, not in the mesh: one check
        reason = problem(face, run.mesh, run.settings(run.modes[0]))
        if reason:  # e.g. a whole-image mesh that folds: reported, skipped
            run.failures.append((photo.rel, reason))
            continue
        scored = ScoredPhoto(photo.rel, crop, fit_c, face,
                             run.gallery.add(photo.rel, crop), run.describer)
        outputs = {mode: run.rotations(scored.face, run.pose_list, mode) for mode in run.modes}
        for ev in active:
            clock.call(ev, ev.process, scored, outputs)
        if scored.example is not None:  # after the evaluators: captions hold their notes
            show_rotations(scored.example, outputs, run.pose_list)
    in_loop = time.perf_counter() - t0 - sum(clock.spent.values())
    results = {}
    for cls, ev in evaluators.items():
        results.update(dict.fromkeys(cls.keys) if ev is None else clock.call(ev, ev.evaluate))
    return results, {"pose_identity": in_loop, **clock.spent}


def show_rotations(example: Example, outputs: dict, pose_list):
    """Save an example's outputs (and, for the generator, the renders it was given) and
    caption each with its pose and the evaluators' notes."""
    for mode, rotations in outputs.items():
        renders = to_uint8(rotations.renders) if mode == "generator" else None
        row = []
        for k, (yaw, _) in enumerate(pose_list):
            name = pose_name(yaw, None)
            out_path = write_png(rotations.images[k],
                                os.path.join(example.folder, f"{mode}_{name}.png"))
            render_path = None if renders is None else write_png(
                renders[k], os.path.join(example.folder, f"{mode}_{name}_render.png"))
            row.append((render_path, out_path, name + "".join(rotations.notes[k])))
        example.rows[mode] = row


def build_report(run: EvalRun, argv, photos, checkpoint, iteration, id_message,
                 results: dict, timing: dict, t0: float) -> dict:
    """report.json: what was run (the fields documented in evaluate.py), the evaluators'
    fields in registry order, then timing_s."""
    opt, describer = run.opt, run.describer
    evaluated = len(photos) - len([f for f in run.failures if not f[0].startswith("pairs:")])
    report = {
        "version": REPORT_VERSION,
        "command": "python evaluate.py " + shlex.join(argv),
        "created": datetime.datetime.now().isoformat(timespec="seconds"),
        "name": opt.name, "checkpoint": checkpoint if run.model is not None else None,
        "checkpoint_iteration": iteration, "modes": run.modes, "device": str(run.device),
        "seed": opt.seed, "dataset": None if opt.img else (opt.dataroot or opt.dataset),
        "img": opt.img, "crop_size": opt.crop_size, "erode_kernel": opt.erode_kernel,
        "background": opt.background,
        "generator_symmetric_fill": run.gen_fill if run.model is not None else None,
        "yaws": list(opt.yaw_poses), "identity_yaws": list(opt.identity_yaws),
        "photos": {"requested": len(photos), "evaluated": evaluated,
                   "failed": len(photos) - evaluated},
        "identity": {"available": describer is not None, "message": id_message,
                     "model": describer.name if describer else None,
                     "threshold": describer.threshold if describer else None},
        **results,
    }
    report["timing_s"] = {"total": time.perf_counter() - t0, **timing}
    return report
