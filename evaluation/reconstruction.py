"""Self-supervised reconstruction: the paper's a->b->a pair, scored against the real photo."""

from __future__ import annotations

import os
import zlib

import numpy as np
import torch

from evaluation.evaluator import MODE_LABEL, Evaluator
from evaluation.report import fmt, table
from face3d.imageio import write_png
from models.inference import repair
from render.renderer import sample_target_poses, training_pair
from util import metrics
from util.visualizer import to_uint8

SECTION = "Reconstruction: rotate a->b->a, compare with the real photo"


def gather(values: list[dict], key: str) -> float | None:
    """Mean of one metric over photos (finite values; PSNR's inf is kept out and counted)."""
    a = np.array([v[key] for v in values], dtype=np.float64)
    a = a[np.isfinite(a)]
    return float(a.mean()) if a.size else None


def recon_seed(seed: int, rel: str) -> int:
    """The reconstruction pose of a photo depends only on --seed and its path."""
    return seed * 1_000_003 + zlib.crc32(rel.encode("utf-8"))


class ReconstructionEvaluator(Evaluator):
    """The paper's self-supervised pair on each photo: rotate a->b->a with b drawn by
    ``sample_target_poses`` from a generator seeded by (--seed, photo path); each mode's
    output vs the real photo at a, inside the eroded face mask and over the whole crop: L1
    ([0, 1] units), PSNR (dB, peak 1), SSIM (skimage), and the identity distance to the real
    photo. Off with ``--no_reconstruction``.

    reconstruction {n, photos [{path, yaw_a, yaw_b, pitch_a, pitch_b}], mode: {mask: {l1,
    psnr, ssim}, full: {l1, psnr, ssim}, identity_distance}} (null when off).
    """

    name = "reconstruction"
    keys = ("reconstruction",)
    timed = True

    @classmethod
    def build(cls, run):
        return None if run.opt.no_reconstruction else cls(run)

    def reset(self):
        self.scores = {m: {"mask": [], "full": [], "id": []} for m in self.run.modes}
        self.poses: list[dict] = []

    def process(self, photo, outputs):
        run, opt, face, fit = self.run, self.run.opt, photo.face, photo.fit
        gen = torch.Generator().manual_seed(recon_seed(opt.seed, photo.rel))
        yaw_b, pitch_b = sample_target_poses(torch.tensor([fit.yaw]), torch.tensor([fit.pitch]),
                                             gen, opt.pose_noise, opt.large_pose,
                                             opt.pitch_noise)
        pairs = {}  # one pair per fill setting: modes that render alike share it
        with torch.no_grad():
            for mode in run.modes:
                settings = run.settings(mode)
                if settings not in pairs:
                    pairs[settings] = training_pair(
                        face["image"], face["vertices"], face["rotation"], face["scale"],
                        face["translation"], yaw_b.to(run.device), pitch_b.to(run.device),
                        run.mesh, settings=settings)
        # every mode is scored in one mask: the unfilled pair's when there is one
        first = pairs[min(pairs, key=lambda s: s.symmetric_fill)]
        mask = first["mask"][0, 0].cpu().numpy() > 0.5
        cells = [(write_png(photo.crop, os.path.join(photo.example.folder, "recon_real.png")),
                  f"real (pose a), b = yaw {float(yaw_b[0]):+.0f}")] if photo.example else []
        for mode in run.modes:
            pair = pairs[run.settings(mode)]
            out = pair["input"]
            if mode == "generator":  # the texture of the a->b->a render comes from b's view
                out = repair(run.model, out, pair["landmarks_a"], yaw_b, 1, opt.bf16,
                             masks=run.model.pair_masks(pair))
            out_u8 = np.ascontiguousarray(to_uint8(out)[0])
            in_mask = metrics.image_metrics(out_u8, photo.crop, mask)
            self.scores[mode]["mask"].append(in_mask)
            self.scores[mode]["full"].append(metrics.image_metrics(out_u8, photo.crop))
            if run.describer is not None:
                d = (None if photo.descriptor is None
                     else run.describer.describe(out_u8, fit.landmarks68))
                self.scores[mode]["id"].append(metrics.descriptor_distance(photo.descriptor, d))
            if photo.example:
                path = write_png(out_u8, os.path.join(photo.example.folder, f"recon_{mode}.png"))
                cells.append((path, f"{MODE_LABEL[mode]}: PSNR in mask "
                                    f"{in_mask['psnr']:.1f} dB"))
        if photo.example:
            run.gallery.section(SECTION, ["real"] + [MODE_LABEL[m] for m in run.modes], cells)
        self.poses.append({"path": photo.rel, "yaw_a": float(fit.yaw),
                           "yaw_b": float(yaw_b[0]), "pitch_a": float(fit.pitch),
                           "pitch_b": float(pitch_b[0])})

    def evaluate(self) -> dict:
        rec = {"n": len(self.poses), "photos": self.poses}
        for mode, r in self.scores.items():
            ids = metrics.summarise(r["id"]) if r["id"] else None
            rec[mode] = {"mask": {k: gather(r["mask"], k) for k in ("l1", "psnr", "ssim")},
                         "full": {k: gather(r["full"], k) for k in ("l1", "psnr", "ssim")},
                         "identity_distance": None if ids is None else ids["mean"]}
        return {"reconstruction": rec}

    @staticmethod
    def text(r: dict) -> list[str]:
        rec = r["reconstruction"]
        if not rec:
            return []
        header = ["mode", "L1 mask", "PSNR mask", "SSIM mask", "L1 full", "PSNR full",
                  "SSIM full", "id dist"]
        rows = [[m, fmt(rec[m]["mask"]["l1"], "{:.4f}"), fmt(rec[m]["mask"]["psnr"]),
                 fmt(rec[m]["mask"]["ssim"], "{:.3f}"), fmt(rec[m]["full"]["l1"], "{:.4f}"),
                 fmt(rec[m]["full"]["psnr"]), fmt(rec[m]["full"]["ssim"], "{:.3f}"),
                 fmt(rec[m]["identity_distance"], "{:.3f}")] for m in r["modes"]]
        return [f"Reconstruction a->b->a vs the real photo ({rec['n']} photos; mask = eroded "
                "face mask, full = whole crop; L1 in [0,1] units, PSNR dB)",
                table(header, rows), ""]
