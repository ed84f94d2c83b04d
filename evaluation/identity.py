"""Identity preservation: is the output still the same person as the photo?"""

from __future__ import annotations

import math

import numpy as np

from evaluation.evaluator import Evaluator
from evaluation.report import fmt, table
from util import metrics


def describe_output(describer, image_u8, fit, fallback_landmarks):
    """Descriptor of an output, boxed by its own fit when MediaPipe found a face, else by
    the landmarks the rotated mesh puts there."""
    lm = fit.landmarks68 if fit is not None else fallback_landmarks
    return describer.describe(image_u8, lm)


class IdentityEvaluator(Evaluator):
    """dlib ResNet descriptor distance (same person below 0.6) between the aligned photo and
    each output at the ``--identity_yaws``; the face box comes from the output's own fit, or
    from the rotated mesh's landmarks when none is found. Needs
    ``pip install -r requirements-eval.txt``; off with ``--no_identity``.

    identity_distance {mode: {yaw: {n, mean, median, p90, same_person_fraction, missing}}}
    (null without dlib): ``missing`` counts outputs (or photos) in which no descriptor could
    be computed.
    """

    name = "identity"
    keys = ("identity_distance",)

    @classmethod
    def build(cls, run):
        return cls(run) if run.describer is not None else None

    def reset(self):
        self.dists = {m: {y: [] for y in self.run.opt.identity_yaws} for m in self.run.modes}

    def process(self, photo, outputs):
        describer = self.run.describer
        for mode, rotations in outputs.items():
            for k, (yaw, _) in enumerate(self.run.pose_list):
                if yaw not in self.dists[mode]:
                    continue
                d = (None if photo.descriptor is None else  # NaN: counted as missing
                     describe_output(describer, rotations.images[k], rotations.fits[k],
                                     rotations.landmarks[k]))
                dist = metrics.descriptor_distance(photo.descriptor, d)
                self.dists[mode][yaw].append(dist)
                if math.isfinite(dist):
                    rotations.notes[k].append(f", id distance {dist:.2f}")

    def evaluate(self) -> dict:
        threshold = self.run.describer.threshold
        ident = {}
        for mode, by_yaw in self.dists.items():
            ident[mode] = {}
            for y, v in by_yaw.items():
                a = np.asarray(v, dtype=np.float64)
                entry = metrics.summarise(a)
                ok = a[np.isfinite(a)]
                entry["same_person_fraction"] = float((ok < threshold).mean()) if ok.size else None
                entry["missing"] = int(a.size - ok.size)
                ident[mode][f"{y:g}"] = entry
        return {"identity_distance": ident}

    @staticmethod
    def text(r: dict) -> list[str]:
        if not r["identity_distance"]:
            return []
        modes = r["modes"]
        header = ["yaw"] + [f"{m}:{c}" for m in modes for c in ("mean", "same")]
        rows = [[f"{y:g}"] + [c for m in modes for c in (
            fmt(r["identity_distance"][m][f"{y:g}"]["mean"], "{:.3f}"),
            fmt(r["identity_distance"][m][f"{y:g}"]["same_person_fraction"]))]
            for y in r["identity_yaws"]]
        return ["Identity: dlib distance aligned photo -> output (same person < 0.6; "
                "same = fraction below 0.6)", table(header, rows), ""]
