"""LFW-style verification: are two photos of a person still recognised as one person when
the first is frontalised?"""

from __future__ import annotations

import os
import sys

from tqdm import tqdm

from evaluation.evaluator import Evaluator
from evaluation.identity import describe_output
from evaluation.lfw_pairs import LFW_ROOT, list_people, make_pairs, read_pairs, write_pairs
from evaluation.report import fmt, table
from face3d.align import align
from face3d.imageio import ImageReadError, read_image
from models.inference import face_tensors
from util import metrics

THRESHOLD_PROTOCOL = ("accuracy_at_threshold: distance < 0.6 is 'same' (dlib); accuracy_cv: "
                      "10-fold CV, best threshold on 9 folds scored on the 10th; auc: ROC AUC "
                      "of -distance")


class VerificationEvaluator(Evaluator):
    """LFW-style pairs (``--pairs`` same + ``--pairs`` different people, drawn from
    ``--pairs_root`` with ``--seed``, saved to the pairs file and read back from
    ``--pairs_file`` when it exists). Distances of each pair with both photos as they are,
    and with the first photo frontalised (yaw 0, own pitch) in each mode. Accuracy at the
    fixed threshold 0.6, 10-fold cross-validated accuracy (best threshold on 9 folds, scored
    on the 10th; folds dealt round-robin per class in file order) and ROC AUC. Pairs in
    which any descriptor is missing are dropped from every condition (counted). Runs with
    ``--dataset lfw``, ``--pairs_file`` or a ``--pairs_root`` of one's own, and the identity
    model; ``--pairs 0`` turns it off.

    verification {pairs_file, seed, requested_per_class, pairs_used, pairs_dropped,
    threshold_protocol, as_is {...}, frontalised {mode: {...}}} (null when not run), each
    condition {pairs, same, different, accuracy_at_threshold, threshold, accuracy_cv,
    accuracy_cv_std, cv_threshold, cv_folds, auc, mean_distance_same,
    mean_distance_different}.
    """

    name = "verification"
    keys = ("verification",)
    timed = True

    @classmethod
    def build(cls, run):
        opt = run.opt
        # Pairs come from LFW-style folders: run them for the lfw dataset, or when the user
        # names a pairs file or a --pairs_root of their own.
        wanted = opt.pairs > 0 and (opt.pairs_file or opt.pairs_root != str(LFW_ROOT)
                                    or (opt.dataset == "lfw" and not opt.img
                                        and not opt.dataroot))
        if wanted and run.describer is None:
            print("verification skipped: it needs the identity model", file=sys.stderr)
        return cls(run) if wanted and run.describer is not None else None

    def reset(self):
        """Read the pairs file, or draw the pairs and write it: before the photos are
        scored, so that a bad pairs file or root fails the run at once (ValueError,
        OSError)."""
        opt = self.run.opt
        self.pairs_file = opt.pairs_file or os.path.join(
            self.run.out_dir, f"lfw_pairs_seed{opt.seed}_n{opt.pairs}.txt")
        if os.path.exists(self.pairs_file):
            self.pairs = read_pairs(self.pairs_file)
            print(f"verification: {len(self.pairs)} pairs read from {self.pairs_file}")
            return
        if not os.path.isdir(opt.pairs_root):
            raise ValueError(f"--pairs_root {opt.pairs_root} not found (LFW-style "
                             "Person/Person_NNNN.jpg photos)")
        self.pairs = make_pairs(list_people(opt.pairs_root), opt.pairs, opt.seed)
        root_name = os.path.basename(os.path.normpath(opt.pairs_root))
        write_pairs(self.pairs, self.pairs_file, f"Rotate-and-Render evaluation pairs: seed "
                    f"{opt.seed}, {opt.pairs} same + {opt.pairs} different people, drawn "
                    f"from {root_name}/ by evaluation.lfw_pairs.make_pairs")
        print(f"verification: {len(self.pairs)} pairs drawn (seed {opt.seed}) -> "
              f"{self.pairs_file}")

    def distances(self) -> list[tuple[bool, float, list[float]]]:
        """(same, distance as is, [distance with the first photo frontalised, per mode]) of
        every pair whose descriptors could all be computed."""
        run = self.run
        descs, frontal = {}, {m: {} for m in run.modes}
        needed_a = {a for a, _, _ in self.pairs}
        for rel in tqdm(sorted({p for a, b, _ in self.pairs for p in (a, b)}),
                        desc="verification", unit="photo", dynamic_ncols=True):
            try:
                rgb = read_image(os.path.join(run.opt.pairs_root, rel))
            except ImageReadError as e:
                run.failures.append((f"pairs:{rel}", str(e)))
                continue
            fit = run.fitter.try_fit(rgb)
            descs[rel] = run.describer.describe(rgb, None if fit is None else fit.landmarks68)
            if rel not in needed_a or fit is None:
                continue
            crop, fit_c, _ = align(rgb, fit, run.opt.crop_size)
            face = face_tensors(crop, fit_c, run.device)
            for mode in run.modes:
                rotations = run.rotations(face, [(0.0, None)], mode)
                img = rotations.images[0]
                frontal[mode][rel] = describe_output(run.describer, img, rotations.fits[0],
                                                     rotations.landmarks[0])
        rows = []
        for a, b, same in self.pairs:
            da, db = descs.get(a), descs.get(b)
            fr = [frontal[m].get(a) for m in run.modes]
            if da is None or db is None or any(f is None for f in fr):
                continue
            rows.append((same, metrics.descriptor_distance(da, db),
                         [metrics.descriptor_distance(f, db) for f in fr]))
        return rows

    def evaluate(self) -> dict:
        rows = self.distances()
        labels = [r[0] for r in rows]
        opt = self.run.opt
        return {"verification": {
            "pairs_file": os.path.abspath(self.pairs_file), "seed": opt.seed,
            "requested_per_class": opt.pairs, "pairs_used": len(rows),
            "pairs_dropped": len(self.pairs) - len(rows),
            "threshold_protocol": THRESHOLD_PROTOCOL,
            "as_is": metrics.verification_summary([r[1] for r in rows], labels),
            "frontalised": {m: metrics.verification_summary([r[2][k] for r in rows], labels)
                            for k, m in enumerate(self.run.modes)}}}

    @staticmethod
    def text(r: dict) -> list[str]:
        ver = r["verification"]
        if not ver:
            return []
        header = ["condition", "acc@0.6", "acc 10-fold", "AUC", "d same", "d diff"]
        conds = [("as is", ver["as_is"])] + [(f"frontal {m}", v)
                                              for m, v in ver["frontalised"].items()]
        rows = [[n, fmt(v["accuracy_at_threshold"], "{:.3f}"),
                 fmt(v["accuracy_cv"], "{:.3f}") + " ± " + fmt(v["accuracy_cv_std"], "{:.3f}"),
                 fmt(v["auc"], "{:.3f}"), fmt(v["mean_distance_same"], "{:.3f}"),
                 fmt(v["mean_distance_different"], "{:.3f}")] for n, v in conds]
        return [f"Verification: {ver['pairs_used']} pairs used ({ver['pairs_dropped']} "
                f"dropped), {os.path.basename(ver['pairs_file'])}; first photo of each pair "
                "frontalised (yaw 0) or as is", table(header, rows), ""]
