"""Evaluate Rotate-and-Render: pose accuracy, identity preservation, LFW-style verification
and self-supervised reconstruction, for a checkpoint or for the render-only baselines.

    python evaluate.py --dataset lfw --max_photos 200 --mode render symmetry    # baselines
    python evaluate.py --name NAME --dataset lfw --max_photos 200               # a checkpoint
    python evaluate.py --name NAME --img my_photos/ --yaw_poses -45 0 45 --pairs 0

Modes (``--mode``, several allowed; default ``generator`` when <checkpoints_dir>/<name>/
<which_epoch>.pt exists, else ``render symmetry``):
  render     the raw rotated render (hidden texels keep the smeared texture: "artifacts")
  symmetry   the rotated render with the symmetry-aware fill of hidden texels
  generator  the generator's repair of the render (its input is made with the fill,
             erosion and background the checkpoint was trained with)

Metrics (``util.metrics``; identity needs ``pip install -r requirements-eval.txt``):
  pose            every photo is aligned and rotated to every ``--yaw_poses`` yaw (absolute:
                  the photo's own yaw is replaced; its pitch is kept); each output is fitted
                  again with MediaPipe: per yaw, the fraction of outputs in which a face is
                  still found and the mean / median / 90th percentile of |fitted - requested
                  yaw| over those.
  identity        dlib ResNet descriptor distance (same person below 0.6) between the aligned
                  photo and each output (``--identity_yaws``); the face box comes from the
                  output's own fit, or from the rotated mesh's landmarks when none is found.
  verification    LFW-style pairs (``--pairs`` same + ``--pairs`` different people, drawn from
                  ``--pairs_root`` with ``--seed``, saved to the pairs file and read back from
                  ``--pairs_file`` when it exists). Distances of each pair with both photos as
                  they are, and with the first photo frontalised (yaw 0, own pitch) in each
                  mode. Accuracy at the fixed threshold 0.6, 10-fold cross-validated accuracy
                  (best threshold on 9 folds, scored on the 10th; folds dealt round-robin per
                  class in file order) and ROC AUC. Pairs in which any descriptor is missing
                  are dropped from every condition (counted). Runs with ``--dataset lfw`` or
                  ``--pairs_file``; ``--pairs 0`` turns it off.
  reconstruction  the paper's self-supervised pair on each photo: rotate a->b->a with b drawn
                  by ``sample_target_poses`` from a generator seeded by (--seed, photo path);
                  each mode's output vs the real photo at a, inside the eroded face mask and
                  over the whole crop: L1 ([0, 1] units), PSNR (dB, peak 1), SSIM (skimage),
                  and the identity distance to the real photo.

Outputs in ``--out`` (default results/<name>/eval):
  report.json   every figure below; report.txt the same as readable tables (also printed);
  index.html    example rows: source, then each mode's output (and render) per yaw, and the
                reconstruction of each example; images under examples/;
  failures.txt  photos that could not be used, with the reason;
  lfw_pairs_seed<S>_n<N>.txt  the verification pairs (LFW pairs.txt layout) unless
                --pairs_file names another path.

report.json fields (``REPORT_KEYS``):
  version, command, created, name, checkpoint, checkpoint_iteration, modes, device, seed,
  dataset, img, crop_size, erode_kernel, background, generator_symmetric_fill, yaws,
  identity_yaws, photos {requested, evaluated, failed}, identity {available, message,
  model, threshold}, pose {mode: {yaw: {requested_yaw, n, found_fraction, mean_abs_error,
  median_abs_error, p90_abs_error, mean_fitted_yaw}}}, pose_overall {mode: {found_fraction,
  mean_abs_error, p90_abs_error}}, pose_source_refit {n, found_fraction, mean_abs_error,
  p90_abs_error} (the aligned photo itself re-fitted: the fitter's own yaw error, the floor
  of the pose figures), identity_distance {mode: {yaw: {n, mean, median, p90,
  same_person_fraction, missing}}} (null without dlib), reconstruction {n, photos [{path,
  yaw_a, yaw_b, pitch_a, pitch_b}], mode: {mask: {l1, psnr, ssim}, full: {l1, psnr, ssim},
  identity_distance}} (null with --no_reconstruction), verification {pairs_file, seed,
  requested_per_class, pairs_used, pairs_dropped, threshold_protocol, as_is {...},
  frontalised {mode: {...}}} (null when not run), each condition {pairs, same, different,
  accuracy_at_threshold, threshold, accuracy_cv, accuracy_cv_std, cv_threshold, cv_folds,
  auc, mean_distance_same, mean_distance_different}, timing_s {total, pose_identity,
  reconstruction, verification}. Yaw keys are written like "-60", "0", "15"; a value that
  could not be measured is null.

``quick_eval(model, photos, device)`` is the small version the trainer calls every few
iterations (see its docstring).
"""

from __future__ import annotations

import contextlib
import copy
import datetime
import json
import math
import os
import shlex
import sys
import time
import zlib
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

from data.photos import photos_in, require_photos
from face3d.align import align
from face3d.fit import FitFileError, fit_path_for, load_fit
from face3d.imageio import ImageReadError, read_image
from models.inference import face_tensors as to_tensors
from models.inference import load_generator, rotate
from options.base_options import OptionsError, resolve_device
from options.test_options import TestOptions
from render.renderer import FaceMesh, rotated_view, sample_target_poses, training_pair
from render.settings import RenderSettings
from util import metrics
from util.checkpoint import CheckpointError, checkpoint_path
from util.html import HTMLPage
from util.visualizer import to_uint8

REPO = Path(__file__).resolve().parent
LFW_ROOT = REPO.parent / "shared" / "data" / "lfw"
MODES = ("render", "symmetry", "generator")
REPORT_VERSION = 1
REPORT_KEYS = ("version", "command", "created", "name", "checkpoint", "checkpoint_iteration",
               "modes", "device", "seed", "dataset", "img", "crop_size", "erode_kernel",
               "background", "generator_symmetric_fill", "yaws", "identity_yaws", "photos",
               "identity", "pose", "pose_overall", "pose_source_refit", "identity_distance",
               "reconstruction", "verification", "timing_s")
MODE_LABEL = {"render": "render (artifacts)", "symmetry": "render + symmetry fill",
              "generator": "generator"}


class EvalOptions(TestOptions):
    """Evaluate rotated faces: pose accuracy, identity, verification, reconstruction."""

    prog = "evaluate.py"

    def initialize(self, parser):
        p = super().initialize(parser)
        p.set_defaults(yaw_poses=[str(y) for y in range(-60, 61, 15)])
        p.add_argument("--mode", nargs="+", choices=MODES, default=None,
                       help="what to score: render (raw rotated render), symmetry (render "
                            "with the symmetry-aware fill), generator (the checkpoint's "
                            "output); several allowed. Default: generator when the checkpoint "
                            "exists, else render symmetry")
        p.add_argument("--max_photos", type=int, default=100,
                       help="score at most this many photos, drawn with --seed from the "
                            "dataset list or --img folders (0: all)")
        p.add_argument("--out", default=None,
                       help="output folder (default: <results_dir>/<name>/eval)")
        p.add_argument("--identity_yaws", nargs="+", type=float, default=None,
                       help="yaws at which identity distances are computed (each costs a "
                            "dlib descriptor per photo and mode; default: every --yaw_poses)")
        p.add_argument("--no_identity", action="store_true",
                       help="skip every identity metric (no dlib needed)")
        p.add_argument("--no_reconstruction", action="store_true",
                       help="skip the self-supervised reconstruction metrics")
        p.add_argument("--pairs", type=int, default=300,
                       help="verification pairs per class (same / different person) to draw "
                            "when no pairs file exists; 0 turns verification off")
        p.add_argument("--pairs_file", default=None,
                       help="verification pairs in LFW pairs.txt layout: read when it exists "
                            "(so a run is exactly repeatable), else drawn and written there "
                            "(default: <out>/lfw_pairs_seed<seed>_n<pairs>.txt)")
        p.add_argument("--pairs_root", default=str(LFW_ROOT),
                       help="folder of <Person>/<Person>_NNNN.jpg photos the pairs refer to")
        p.add_argument("--html_rows", type=int, default=6,
                       help="photos shown on index.html (their images go to <out>/examples)")
        return p

    def validate(self, opt):
        super().validate(opt)
        if opt.max_photos < 0 or opt.pairs < 0 or opt.html_rows < 0:
            raise OptionsError("--max_photos, --pairs and --html_rows must be >= 0")
        opt.identity_yaws = (list(opt.yaw_poses) if opt.identity_yaws is None
                             else [float(y) for y in opt.identity_yaws])
        if opt.pitch_poses:
            raise OptionsError("evaluate.py scores yaw only: drop --pitch_poses")
        extra = [y for y in opt.identity_yaws if y not in opt.yaw_poses]
        if extra:
            raise OptionsError(f"--identity_yaws {extra} are not among --yaw_poses")


# ------------------------------------------------------------------------------ photos


def sample(items: list, n: int, seed: int) -> list:
    """``n`` items drawn without replacement with ``seed`` (all of them when n is 0 or
    larger than the list), in drawn order."""
    if not n or n >= len(items):
        return list(items)
    idx = np.random.default_rng(seed).choice(len(items), n, replace=False)
    return [items[i] for i in idx]


def select_photos(opt) -> list[tuple[str, str, str | None]]:
    """[(relpath, image path, fit path or None)]: a --seed sample of --max_photos photos of
    the --img folders or of the dataset's (sorted) list. Photos without a fit file are
    fitted on the fly, so no dataset-wide fitting pass is needed. A ValueError when there
    is no photo."""
    if opt.img:
        return sample(require_photos(photos_in(opt.img)), opt.max_photos, opt.seed)
    from data.allface_dataset import prepare_dataset
    from data.registry import adhoc_dataset, get_dataset
    from face3d.batch_fit import read_list
    from face3d.imageio import list_images

    name = opt.dataroot or opt.dataset
    entry = adhoc_dataset(opt.dataroot) if opt.dataroot else get_dataset(opt.dataset)
    if name == "example":
        prepare_dataset(entry, name, progress=False)  # writes the two photos on first use
    if not os.path.isdir(entry["prefix"]):
        raise ValueError(f"dataset {name!r}: image folder not found: {entry['prefix']}")
    if os.path.exists(entry["file_list"]):
        rel = read_list(entry["file_list"])
    else:
        rel = list_images(entry["prefix"], exclude=entry["fits_dir"])
    rel = sorted(set(rel))[opt.list_start:opt.list_end]
    items = []
    for r in rel:
        fit_path = fit_path_for(r, entry["fits_dir"])
        items.append((r, os.path.join(entry["prefix"], r),
                      fit_path if os.path.exists(fit_path) else None))
    return sample(require_photos(items), opt.max_photos, opt.seed)


class Fitting:
    """One lazily built MediaPipe fitter, shared by every stage."""

    def __init__(self):
        self._fitter = None

    @property
    def fitter(self):
        if self._fitter is None:
            from face3d.fitter import MediaPipeFitter

            self._fitter = MediaPipeFitter()
        return self._fitter

    def fit(self, rgb):
        return self.fitter.fit(np.ascontiguousarray(rgb))

    def try_fit(self, rgb):
        """The fit, or None when no (plausible) face is found."""
        from face3d.fitter import NoFaceError

        try:
            return self.fit(rgb)
        except NoFaceError:
            return None


def load_photo(path: str, fit_path: str | None, fitting: Fitting):
    """(rgb, fit): the fit from its file when there is one, else MediaPipe's."""
    rgb = read_image(path)
    fit = load_fit(fit_path) if fit_path else fitting.fit(rgb)
    return rgb, fit


# ------------------------------------------------------------------------------ outputs


def pose_name(yaw: float, pitch: float | None) -> str:
    return f"yaw{yaw:+g}" + ("" if pitch is None else f"_pitch{pitch:+g}")


def mode_options(opt, mode: str, gen_fill: bool):
    """A copy of ``opt`` whose symmetric_fill makes ``mode``'s input."""
    o = copy.copy(opt)
    o.symmetric_fill = {"render": False, "symmetry": True, "generator": gen_fill}[mode]
    return o


def run_generator(model, renders, landmarks, batch_size: int, autocast=None,
                  source_yaw: float | None = None):
    """G's output for renders (B, 3, S, S) with the rotated landmarks (B, 68, 2);
    ``source_yaw`` (degrees, the pose the texture came from) lets --label_mask models skip
    the mask for near-frontal sources, as at test time."""
    outs = []
    for s in range(0, renders.shape[0], batch_size):
        n = renders[s:s + batch_size].shape[0]
        data = {"input": renders[s:s + batch_size], "landmarks": landmarks[s:s + batch_size]}
        if source_yaw is not None:
            data["source_yaw"] = torch.full((n,), float(source_yaw))
        with torch.no_grad(), (autocast or contextlib.nullcontext()):
            outs.append(model(data, "inference").float())
    return torch.cat(outs)


def mode_outputs(face, pose_list, mesh, opt, mode, model, gen_fill, autocast=None,
                 source_yaw: float | None = None):
    """(outputs, renders, landmarks) of one face at every pose for one mode."""
    view = rotate(face, pose_list, mesh,
                  RenderSettings.from_options(mode_options(opt, mode, gen_fill)))
    renders = view["image"]
    outputs = renders
    if mode == "generator":
        outputs = run_generator(model, renders, view["landmarks"], opt.batchSize, autocast,
                                source_yaw)
    return outputs, renders, view["landmarks"]


def describe_output(describer, image_u8, fit, fallback_landmarks):
    """Descriptor of an output, boxed by its own fit when MediaPipe found a face, else by
    the landmarks the rotated mesh puts there."""
    lm = fit.landmarks68 if fit is not None else fallback_landmarks
    return describer.describe(image_u8, lm)


def recon_seed(seed: int, rel: str) -> int:
    """The reconstruction pose of a photo depends only on --seed and its path."""
    return seed * 1_000_003 + zlib.crc32(rel.encode("utf-8"))


def safe_stem(rel: str) -> str:
    stem = os.path.splitext(rel)[0]
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in stem)[-80:]


def save_png(array: np.ndarray, path: str) -> str:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.fromarray(array).save(path)
    return path


# ------------------------------------------------------------------------------ pairs


def list_people(root: str) -> dict[str, list[str]]:
    """person -> sorted photo relpaths (``Person/Person_NNNN.jpg``) under an LFW-style root."""
    from face3d.imageio import IMAGE_EXTENSIONS

    people = {}
    for person in sorted(os.listdir(root)):
        folder = os.path.join(root, person)
        if not os.path.isdir(folder) or person.startswith("."):
            continue
        files = sorted(f for f in os.listdir(folder) if f.lower().endswith(IMAGE_EXTENSIONS))
        if files:
            people[person] = [f"{person}/{f}" for f in files]
    return people


def make_pairs(people: dict[str, list[str]], n: int, seed: int):
    """``n`` distinct same-person pairs (a person with >= 2 photos, two of them) and ``n``
    distinct different-person pairs (two people, one photo each), drawn with ``seed``:
    [(relpath_a, relpath_b, is_same)]."""
    rng = np.random.default_rng(seed)
    names = sorted(people)
    multi = [p for p in names if len(people[p]) >= 2]
    if not multi or len(names) < 2:
        raise ValueError("the pairs root needs people with two or more photos and at least "
                         "two people")
    max_same = sum(len(people[p]) * (len(people[p]) - 1) // 2 for p in multi)
    same, diff = [], []
    seen = set()
    while len(same) < min(n, max_same):
        p = multi[rng.integers(len(multi))]
        i, j = sorted(rng.choice(len(people[p]), 2, replace=False))
        key = (people[p][i], people[p][j])
        if key not in seen:
            seen.add(key)
            same.append((*key, True))
    tries = 0
    while len(diff) < n and tries < 100 * n + 100:
        tries += 1
        i, j = rng.choice(len(names), 2, replace=False)
        a = people[names[i]][rng.integers(len(people[names[i]]))]
        b = people[names[j]][rng.integers(len(people[names[j]]))]
        if (a, b) not in seen and (b, a) not in seen:
            seen.add((a, b))
            diff.append((a, b, False))
    return same + diff


def _split_lfw(rel: str) -> tuple[str, int]:
    person = rel.split("/")[0]
    number = os.path.splitext(os.path.basename(rel))[0].rsplit("_", 1)[-1]
    return person, int(number)


def write_pairs(pairs, path: str, header: str):
    """LFW pairs.txt layout: ``name n1 n2`` (same person), ``name1 n1 name2 n2``
    (different), after ``#`` comment lines."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    lines = [f"# {header}"]
    for a, b, same in pairs:
        (pa, na), (pb, nb) = _split_lfw(a), _split_lfw(b)
        lines.append(f"{pa}\t{na}\t{nb}" if same else f"{pa}\t{na}\t{pb}\t{nb}")
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")


def read_pairs(path: str):
    """Pairs from an LFW-layout file (ours, or LFW's own pairs.txt: its all-numbers header
    lines and ``#`` comments are skipped); photo names as ``Person/Person_NNNN.jpg``."""
    pairs = []
    with open(path) as f:
        for k, line in enumerate(f, 1):
            parts = line.split()
            if not parts or parts[0].startswith("#") or all(p.isdigit() for p in parts):
                continue
            try:
                if len(parts) == 3:
                    p, a, b = parts[0], int(parts[1]), int(parts[2])
                    pairs.append((f"{p}/{p}_{a:04d}.jpg", f"{p}/{p}_{b:04d}.jpg", True))
                elif len(parts) == 4:
                    pa, a, pb, b = parts[0], int(parts[1]), parts[2], int(parts[3])
                    pairs.append((f"{pa}/{pa}_{a:04d}.jpg", f"{pb}/{pb}_{b:04d}.jpg", False))
                else:
                    raise ValueError
            except ValueError:
                raise ValueError(f"{path}:{k}: expected 'name n1 n2' or 'name1 n1 name2 n2', "
                                 f"got {line.strip()!r}") from None
    if not pairs:
        raise ValueError(f"no pairs in {path}")
    return pairs


# ------------------------------------------------------------------------------ evaluation


class Evaluation:
    """State shared by the stages of one evaluate.py run."""

    def __init__(self, opt, device, model, modes, gen_fill, describer, out_dir):
        self.opt, self.device, self.model, self.modes = opt, device, model, modes
        self.gen_fill, self.describer, self.out_dir = gen_fill, describer, out_dir
        self.mesh = FaceMesh.mediapipe(device)
        self.fitting = Fitting()
        self.pose_list = [(float(y), None) for y in opt.yaw_poses]
        self.autocast = (torch.autocast("cuda", dtype=torch.bfloat16)
                         if opt.bf16 and device.type == "cuda" else None)
        self.failures: list[tuple[str, str]] = []
        self.examples: list[dict] = []
        self.recon_time = 0.0
        self.source_refit: list[tuple[float | None, float]] = []  # (refitted, own) yaw

    def outputs(self, face, pose_list, mode, source_yaw):
        return mode_outputs(face, pose_list, self.mesh, self.opt, mode, self.model,
                            self.gen_fill, self.autocast, source_yaw)

    # ------------------------------------------------------------------ pose + identity
    def pose_identity(self, photos):
        opt, modes = self.opt, self.modes
        fitted = {m: {y: [] for y, _ in self.pose_list} for m in modes}
        dists = {m: {y: [] for y in opt.identity_yaws} for m in modes}
        recon = {m: {"mask": [], "full": [], "id": []} for m in modes}
        recon_poses = []
        for rel, path, fit_path in tqdm(photos, desc="evaluating", unit="photo",
                                        dynamic_ncols=True):
            try:
                rgb, fit = load_photo(path, fit_path, self.fitting)
            except (ImageReadError, FitFileError, ValueError) as e:
                self.failures.append((rel, str(e)))
                continue
            crop, fit_c, _ = align(rgb, fit, opt.crop_size)
            face = to_tensors(crop, fit_c, self.device)
            refit = self.fitting.try_fit(crop)  # the fitter's own error on the real crop
            self.source_refit.append((None if refit is None else refit.yaw, fit_c.yaw))
            src_desc = (self.describer.describe(crop, fit_c.landmarks68)
                        if self.describer else None)
            example = None
            if len(self.examples) < opt.html_rows:
                folder = os.path.join(self.out_dir, "examples",
                                      f"{len(self.examples):03d}_{safe_stem(rel)}")
                example = {"rel": rel, "folder": folder, "rows": {}, "recon": []}
                example["source"] = save_png(crop, os.path.join(folder, "source.png"))
                self.examples.append(example)
            for mode in modes:
                outs, renders, lms = self.outputs(face, self.pose_list, mode, fit_c.yaw)
                outs_u8 = to_uint8(outs)
                row = []
                for k, (yaw, _) in enumerate(self.pose_list):
                    img = np.ascontiguousarray(outs_u8[k])
                    f = self.fitting.try_fit(img)
                    fitted[mode][yaw].append(None if f is None else f.yaw)
                    dist = None
                    if self.describer is not None and yaw in dists[mode]:
                        d = (None if src_desc is None else  # NaN: counted as missing
                             describe_output(self.describer, img, f, lms[k].cpu().numpy()))
                        dist = metrics.descriptor_distance(src_desc, d)
                        dists[mode][yaw].append(dist)
                    if example is not None:
                        name = pose_name(yaw, None)
                        out_path = save_png(img, os.path.join(example["folder"],
                                                              f"{mode}_{name}.png"))
                        render_path = None
                        if mode == "generator":
                            render_path = save_png(
                                to_uint8(renders[k:k + 1])[0],
                                os.path.join(example["folder"], f"{mode}_{name}_render.png"))
                        caption = name + ("" if f is not None else " (no face found)")
                        if f is not None:
                            caption += f": fitted yaw {f.yaw:+.0f}"
                        if dist is not None and math.isfinite(dist):
                            caption += f", id distance {dist:.2f}"
                        row.append((render_path, out_path, caption))
                if example is not None:
                    example["rows"][mode] = row
            if not opt.no_reconstruction:
                t = time.perf_counter()
                recon_poses.append(self.reconstruct(rel, crop, fit_c, face, src_desc, recon,
                                                    example))
                self.recon_time += time.perf_counter() - t
        return fitted, dists, recon, recon_poses

    # ------------------------------------------------------------------ reconstruction
    def reconstruct(self, rel, crop, fit_c, face, src_desc, recon, example):
        opt = self.opt
        gen = torch.Generator().manual_seed(recon_seed(opt.seed, rel))
        yaw_b, pitch_b = sample_target_poses(torch.tensor([fit_c.yaw]),
                                             torch.tensor([fit_c.pitch]), gen, opt.pose_noise,
                                             opt.large_pose, opt.pitch_noise)
        fills = sorted({mode_options(opt, m, self.gen_fill).symmetric_fill for m in self.modes})
        pairs = {}
        with torch.no_grad():
            for fill in fills:
                pairs[fill] = training_pair(
                    face["image"], face["vertices"], face["rotation"], face["scale"],
                    face["translation"], yaw_b.to(self.device), pitch_b.to(self.device),
                    self.mesh,
                                            settings=RenderSettings.from_options(opt).replace(symmetric_fill=fill))
        mask = pairs[fills[0]]["mask"][0, 0].cpu().numpy() > 0.5
        if example is not None:
            example["recon"].append(("real", save_png(crop, os.path.join(
                example["folder"], "recon_real.png")), f"real (pose a), b = yaw "
                f"{float(yaw_b[0]):+.0f}"))
        for mode in self.modes:
            pair = pairs[mode_options(opt, mode, self.gen_fill).symmetric_fill]
            out = pair["input"]
            if mode == "generator":
                # the texture of the a->b->a render comes from the view at b
                out = run_generator(self.model, out, pair["landmarks_a"], 1, self.autocast,
                                    float(yaw_b[0]))
            out_u8 = np.ascontiguousarray(to_uint8(out)[0])
            m_in = metrics.image_metrics(out_u8, crop, mask)
            m_full = metrics.image_metrics(out_u8, crop)
            recon[mode]["mask"].append(m_in)
            recon[mode]["full"].append(m_full)
            if self.describer is not None:
                d = (None if src_desc is None
                     else self.describer.describe(out_u8, fit_c.landmarks68))
                recon[mode]["id"].append(metrics.descriptor_distance(src_desc, d))
            if example is not None:
                path = save_png(out_u8, os.path.join(example["folder"], f"recon_{mode}.png"))
                example["recon"].append((mode, path, f"{MODE_LABEL[mode]}: PSNR in mask "
                                                     f"{m_in['psnr']:.1f} dB"))
        return {"path": rel, "yaw_a": float(fit_c.yaw), "yaw_b": float(yaw_b[0]),
                "pitch_a": float(fit_c.pitch), "pitch_b": float(pitch_b[0])}

    # ------------------------------------------------------------------ verification
    def verification(self, pairs, root):
        """Distances per pair: as is, and with the first photo frontalised in each mode."""
        descs, frontal = {}, {m: {} for m in self.modes}
        needed_a = {a for a, _, _ in pairs}
        photos = sorted({p for a, b, _ in pairs for p in (a, b)})
        for rel in tqdm(photos, desc="verification", unit="photo", dynamic_ncols=True):
            try:
                rgb = read_image(os.path.join(root, rel))
            except ImageReadError as e:
                self.failures.append((f"pairs:{rel}", str(e)))
                continue
            fit = self.fitting.try_fit(rgb)
            descs[rel] = self.describer.describe(rgb, None if fit is None else fit.landmarks68)
            if rel not in needed_a or fit is None:
                continue
            crop, fit_c, _ = align(rgb, fit, self.opt.crop_size)
            face = to_tensors(crop, fit_c, self.device)
            for mode in self.modes:
                outs, _, lms = self.outputs(face, [(0.0, None)], mode, fit_c.yaw)
                img = np.ascontiguousarray(to_uint8(outs)[0])
                frontal[mode][rel] = describe_output(self.describer, img,
                                                     self.fitting.try_fit(img),
                                                     lms[0].cpu().numpy())
        rows = []
        for a, b, same in pairs:
            da, db = descs.get(a), descs.get(b)
            fr = [frontal[m].get(a) for m in self.modes]
            if da is None or db is None or any(f is None for f in fr):
                continue
            rows.append((same, metrics.descriptor_distance(da, db),
                         [metrics.descriptor_distance(f, db) for f in fr]))
        return rows


def gather(values: list[dict], key: str) -> float | None:
    """Mean of one metric over photos (finite values; PSNR's inf is kept out and counted)."""
    a = np.array([v[key] for v in values], dtype=np.float64)
    a = a[np.isfinite(a)]
    return float(a.mean()) if a.size else None


def build_report(ev: Evaluation, fitted, dists, recon, recon_poses, verification) -> dict:
    opt = ev.opt
    pose, overall, ident = {}, {}, {}
    for mode in ev.modes:
        pose[mode] = {f"{y:g}": metrics.pose_summary(v, y) for y, v in fitted[mode].items()}
        all_fit = [f for v in fitted[mode].values() for f in v]
        all_req = [y for y, v in fitted[mode].items() for _ in v]
        err = metrics.yaw_errors(all_fit, all_req)
        s = metrics.summarise(err)
        overall[mode] = {"found_fraction": float(np.isfinite(err).mean()) if err.size else None,
                         "mean_abs_error": s["mean"], "p90_abs_error": s["p90"]}
        if ev.describer is not None:
            ident[mode] = {}
            for y, v in dists[mode].items():
                a = np.asarray(v, dtype=np.float64)
                entry = metrics.summarise(a)
                ok = a[np.isfinite(a)]
                entry["same_person_fraction"] = (float((ok < ev.describer.threshold).mean())
                                                 if ok.size else None)
                entry["missing"] = int(a.size - ok.size)
                ident[mode][f"{y:g}"] = entry
    reconstruction = None
    if not opt.no_reconstruction:
        reconstruction = {"n": len(recon_poses), "photos": recon_poses}
        for mode in ev.modes:
            r = recon[mode]
            ids = metrics.summarise(r["id"]) if r["id"] else None
            reconstruction[mode] = {
                "mask": {k: gather(r["mask"], k) for k in ("l1", "psnr", "ssim")},
                "full": {k: gather(r["full"], k) for k in ("l1", "psnr", "ssim")},
                "identity_distance": None if ids is None else ids["mean"]}
    refit = [r for r, _ in ev.source_refit]
    err = metrics.yaw_errors(refit, [own for _, own in ev.source_refit])
    s = metrics.summarise(err)
    source = {"n": len(refit), "found_fraction": float(np.isfinite(err).mean()) if err.size
              else None, "mean_abs_error": s["mean"], "p90_abs_error": s["p90"]}
    return {"pose": pose, "pose_overall": overall, "pose_source_refit": source,
            "identity_distance": ident if ev.describer is not None else None,
            "reconstruction": reconstruction, "verification": verification}


def verification_report(rows, modes, pairs, pairs_file, seed, per_class) -> dict:
    labels = [r[0] for r in rows]
    as_is = metrics.verification_summary([r[1] for r in rows], labels)
    frontalised = {m: metrics.verification_summary([r[2][k] for r in rows], labels)
                   for k, m in enumerate(modes)}
    return {"pairs_file": os.path.abspath(pairs_file), "seed": seed,
            "requested_per_class": per_class, "pairs_used": len(rows),
            "pairs_dropped": len(pairs) - len(rows),
            "threshold_protocol": "accuracy_at_threshold: distance < 0.6 is 'same' (dlib); "
                                  "accuracy_cv: 10-fold CV, best threshold on 9 folds scored "
                                  "on the 10th; auc: ROC AUC of -distance",
            "as_is": as_is, "frontalised": frontalised}


# ------------------------------------------------------------------------------ text + html


def _f(v, fmt="{:.2f}") -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    if isinstance(v, float) and math.isinf(v):
        return "inf"
    return fmt.format(v)


def _table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(str(c)) for c in col) for col in zip(header, *rows)]
    line = lambda cells: "  ".join(str(c).rjust(w) for c, w in zip(cells, widths))  # noqa: E731
    return "\n".join([line(header), "  ".join("-" * w for w in widths)]
                     + [line(r) for r in rows])


def format_report(r: dict) -> str:
    modes = r["modes"]
    out = [f"Rotate-and-Render evaluation: {r['name']} ({', '.join(modes)})",
           f"photos: {r['photos']['evaluated']} evaluated of {r['photos']['requested']} "
           f"({r['photos']['failed']} failed); crop {r['crop_size']}, seed {r['seed']}, "
           f"device {r['device']}",
           f"checkpoint: {r['checkpoint'] or 'none'}",
           r["identity"]["message"], ""]
    out.append("Pose: |fitted yaw - requested yaw| in degrees over outputs where MediaPipe "
               "finds a face (found = fraction of outputs)")
    header = ["yaw"] + [f"{m}:{c}" for m in modes for c in ("mean", "p90", "found")]
    rows = []
    for y in r["yaws"]:
        k = f"{y:g}"
        rows.append([k] + [c for m in modes for c in (
            _f(r["pose"][m][k]["mean_abs_error"], "{:.1f}"),
            _f(r["pose"][m][k]["p90_abs_error"], "{:.1f}"),
            _f(r["pose"][m][k]["found_fraction"]))])
    rows.append(["all"] + [c for m in modes for c in (
        _f(r["pose_overall"][m]["mean_abs_error"], "{:.1f}"),
        _f(r["pose_overall"][m]["p90_abs_error"], "{:.1f}"),
        _f(r["pose_overall"][m]["found_fraction"]))])
    src = r["pose_source_refit"]
    out += [_table(header, rows),
            f"(the aligned photos themselves, re-fitted: mean {_f(src['mean_abs_error'], '{:.1f}')}"
            f", p90 {_f(src['p90_abs_error'], '{:.1f}')}, found {_f(src['found_fraction'])}: "
            "the fitter's own error)", ""]
    if r["identity_distance"]:
        out.append("Identity: dlib distance aligned photo -> output (same person < 0.6; "
                   "same = fraction below 0.6)")
        header = ["yaw"] + [f"{m}:{c}" for m in modes for c in ("mean", "same")]
        rows = [[f"{y:g}"] + [c for m in modes for c in (
            _f(r["identity_distance"][m][f"{y:g}"]["mean"], "{:.3f}"),
            _f(r["identity_distance"][m][f"{y:g}"]["same_person_fraction"]))]
            for y in r["identity_yaws"]]
        out += [_table(header, rows), ""]
    rec = r["reconstruction"]
    if rec:
        out.append(f"Reconstruction a->b->a vs the real photo ({rec['n']} photos; mask = "
                   "eroded face mask, full = whole crop; L1 in [0,1] units, PSNR dB)")
        header = ["mode", "L1 mask", "PSNR mask", "SSIM mask", "L1 full", "PSNR full",
                  "SSIM full", "id dist"]
        rows = [[m, _f(rec[m]["mask"]["l1"], "{:.4f}"), _f(rec[m]["mask"]["psnr"]),
                 _f(rec[m]["mask"]["ssim"], "{:.3f}"), _f(rec[m]["full"]["l1"], "{:.4f}"),
                 _f(rec[m]["full"]["psnr"]), _f(rec[m]["full"]["ssim"], "{:.3f}"),
                 _f(rec[m]["identity_distance"], "{:.3f}")] for m in modes]
        out += [_table(header, rows), ""]
    ver = r["verification"]
    if ver:
        out.append(f"Verification: {ver['pairs_used']} pairs used ({ver['pairs_dropped']} "
                   f"dropped), {os.path.basename(ver['pairs_file'])}; first photo of each "
                   "pair frontalised (yaw 0) or as is")
        header = ["condition", "acc@0.6", "acc 10-fold", "AUC", "d same", "d diff"]
        conds = [("as is", ver["as_is"])] + [(f"frontal {m}", v)
                                              for m, v in ver["frontalised"].items()]
        rows = [[n, _f(v["accuracy_at_threshold"], "{:.3f}"),
                 _f(v["accuracy_cv"], "{:.3f}") + " ± " + _f(v["accuracy_cv_std"], "{:.3f}"),
                 _f(v["auc"], "{:.3f}"), _f(v["mean_distance_same"], "{:.3f}"),
                 _f(v["mean_distance_different"], "{:.3f}")] for n, v in conds]
        out += [_table(header, rows), ""]
    t = r["timing_s"]
    out.append("time (s): " + ", ".join(f"{k} {v:.0f}" for k, v in t.items()))
    return "\n".join(out)


def write_html(ev: Evaluation, report: dict, text: str):
    page = HTMLPage(ev.out_dir, f"Evaluation: {report['name']}")
    page.header(f"Evaluation of {report['name']} ({', '.join(ev.modes)}): "
                f"{report['photos']['evaluated']} photos")
    for line in text.splitlines()[1:4]:
        page.text(line)
    columns = ["source"] + [pose_name(y, None) for y, _ in ev.pose_list]
    rows = []
    for ex in ev.examples:
        for mode, row in ex["rows"].items():
            cells = [(ex["source"], f"{ex['rel']} ({MODE_LABEL[mode]})")]
            for render_path, out_path, caption in row:
                paths = [render_path, out_path] if render_path else out_path
                label = "render | output: " if render_path else ""
                cells.append((paths, label + caption))
            rows.append(cells)
    if rows:
        page.header("Rotations (requested yaw; captions: the re-fitted yaw and the identity "
                    "distance to the source)")
        page.table(columns, rows, width=128)
    rec_rows = [[(p, c) for _, p, c in ex["recon"]] for ex in ev.examples if ex["recon"]]
    if rec_rows:
        page.header("Reconstruction: rotate a->b->a, compare with the real photo")
        page.table(["real"] + [MODE_LABEL[m] for m in ev.modes], rec_rows, width=160)
    page.header("Report")
    with page.doc:
        from dominate.tags import pre

        pre(text)
    if ev.failures:
        page.text("Failed: " + "; ".join(f"{r} ({why})" for r, why in ev.failures[:50]))
    page.save()


# ------------------------------------------------------------------------------ main


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    options = EvalOptions()
    t0 = time.perf_counter()
    try:
        opt = options.parse(argv)
        device = resolve_device(opt.device)
        ckpt = checkpoint_path(opt)
        modes = opt.mode or (["generator"] if os.path.exists(ckpt) and not opt.render_only
                             else ["render", "symmetry"])
        modes = list(dict.fromkeys(modes))
        model, gen_fill, iteration = None, False, None
        if "generator" in modes:
            if opt.render_only or not os.path.exists(ckpt):
                raise CheckpointError(f"--mode generator needs a checkpoint: none at {ckpt} "
                                      "(check --name, --checkpoints_dir, --which_epoch; or "
                                      "score the baselines with --mode render symmetry)")
            model, message = load_generator(opt, options.parser, device)
            print(message)
            # load_generator gave opt the checkpoint's render settings (erode_kernel,
            # background, symmetric_fill): the generator's input looks like its training input.
            gen_fill, iteration = bool(opt.symmetric_fill), model.checkpoint_iteration
    except (OptionsError, CheckpointError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    out_dir = opt.out or os.path.join(opt.results_dir, opt.name, "eval")
    os.makedirs(out_dir, exist_ok=True)
    describer, id_message = None, "identity metrics off (--no_identity)"
    if not opt.no_identity:
        from util.identity import load_describer

        describer, id_message = load_describer()
    print(id_message)
    try:
        photos = select_photos(opt)
    except (ValueError, RuntimeError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"scoring {len(photos)} photos x {len(opt.yaw_poses)} yaws in modes "
          f"{', '.join(modes)} -> {out_dir}")

    ev = Evaluation(opt, device, model, modes, gen_fill, describer, out_dir)
    fitted, dists, recon, recon_poses = ev.pose_identity(photos)
    t1 = time.perf_counter()

    verification = None
    # Pairs come from LFW-style folders: run them for the lfw dataset, or when the user names
    # a pairs file or a --pairs_root of their own.
    run_pairs = opt.pairs > 0 and (opt.pairs_file or opt.pairs_root != str(LFW_ROOT)
                                   or (opt.dataset == "lfw" and not opt.img
                                       and not opt.dataroot))
    if run_pairs and describer is None:
        print("verification skipped: it needs the identity model", file=sys.stderr)
    elif run_pairs:
        pairs_file = opt.pairs_file or os.path.join(
            out_dir, f"lfw_pairs_seed{opt.seed}_n{opt.pairs}.txt")
        try:
            if os.path.exists(pairs_file):
                pairs = read_pairs(pairs_file)
                print(f"verification: {len(pairs)} pairs read from {pairs_file}")
            else:
                if not os.path.isdir(opt.pairs_root):
                    raise ValueError(f"--pairs_root {opt.pairs_root} not found (LFW-style "
                                     "Person/Person_NNNN.jpg photos)")
                pairs = make_pairs(list_people(opt.pairs_root), opt.pairs, opt.seed)
                root_name = os.path.basename(os.path.normpath(opt.pairs_root))
                write_pairs(pairs, pairs_file, f"Rotate-and-Render evaluation pairs: seed "
                            f"{opt.seed}, {opt.pairs} same + {opt.pairs} different people, "
                            f"drawn from {root_name}/ by evaluate.make_pairs")
                print(f"verification: {len(pairs)} pairs drawn (seed {opt.seed}) -> "
                      f"{pairs_file}")
        except (OSError, ValueError) as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        rows = ev.verification(pairs, opt.pairs_root)
        verification = verification_report(rows, modes, pairs, pairs_file, opt.seed, opt.pairs)
    t2 = time.perf_counter()

    evaluated = len(photos) - len([f for f in ev.failures if not f[0].startswith("pairs:")])
    report = {
        "version": REPORT_VERSION,
        "command": "python evaluate.py " + shlex.join(argv),
        "created": datetime.datetime.now().isoformat(timespec="seconds"),
        "name": opt.name, "checkpoint": ckpt if model is not None else None,
        "checkpoint_iteration": iteration, "modes": modes, "device": str(device),
        "seed": opt.seed, "dataset": None if opt.img else (opt.dataroot or opt.dataset),
        "img": opt.img, "crop_size": opt.crop_size, "erode_kernel": opt.erode_kernel,
        "background": opt.background,
        "generator_symmetric_fill": gen_fill if model is not None else None,
        "yaws": list(opt.yaw_poses), "identity_yaws": list(opt.identity_yaws),
        "photos": {"requested": len(photos), "evaluated": evaluated,
                   "failed": len(photos) - evaluated},
        "identity": {"available": describer is not None, "message": id_message,
                     "model": describer.name if describer else None,
                     "threshold": describer.threshold if describer else None},
    }
    report.update(build_report(ev, fitted, dists, recon, recon_poses, verification))
    report["timing_s"] = {"total": time.perf_counter() - t0,
                          "pose_identity": t1 - t0 - ev.recon_time,
                          "reconstruction": ev.recon_time, "verification": t2 - t1}
    text = format_report(report)
    with open(os.path.join(out_dir, "report.json"), "w") as f:
        json.dump(json_safe(report), f, indent=1, allow_nan=False)
    with open(os.path.join(out_dir, "report.txt"), "w") as f:
        f.write(text + "\n")
    with open(os.path.join(out_dir, "failures.txt"), "w") as f:
        f.writelines(f"{r}\t{why}\n" for r, why in ev.failures)
    write_html(ev, report, text)
    print(text)
    print(f"open {os.path.join(out_dir, 'index.html')}")
    return 0 if evaluated else 1


def json_safe(o):
    """Plain JSON: numpy scalars as numbers, NaN / inf (no value) as null."""
    if isinstance(o, dict):
        return {str(k): json_safe(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [json_safe(v) for v in o]
    if isinstance(o, (np.floating, np.integer, np.bool_)):
        o = o.item()
    if isinstance(o, float) and not math.isfinite(o):
        return None
    return o


# ------------------------------------------------------------------------------ training


_QUICK_FITTING = Fitting()


def load_eval_batch(source, n: int = 32, crop_size: int = 256, seed: int = 0) -> dict:
    """A fixed batch of aligned photos for ``quick_eval``, in the dataset's batch layout
    (image (B, 3, S, S) in [-1, 1], vertices, rotation, scale, translation, yaw, pitch,
    path). ``source``: a list of image paths, a folder (searched recursively) or a registry
    dataset name (e.g. ``"lfw"``); ``n`` photos are drawn with ``seed`` and fitted with
    MediaPipe (fit files are used when the dataset has them). Photos without a face are
    skipped. Keep these photos out of the training set for a held-out score."""
    from face3d.imageio import list_images

    if isinstance(source, (list, tuple)):
        items = [(os.path.basename(str(p)), str(p), None) for p in source]
    elif os.path.isdir(str(source)):
        items = [(rel, os.path.join(str(source), rel), None)
                 for rel in list_images(str(source))]
    else:
        from types import SimpleNamespace

        items = select_photos(SimpleNamespace(img=None, dataroot=None, dataset=str(source),
                                              list_start=0, list_end=None, max_photos=0,
                                              seed=seed))
    items = sample(items, n * 2, seed)  # spares for photos without a face
    faces = []
    for rel, path, fit_path in items:
        if len(faces) == n:
            break
        try:
            rgb, fit = load_photo(path, fit_path, _QUICK_FITTING)
        except (ImageReadError, FitFileError, ValueError):
            continue
        crop, f, _ = align(rgb, fit, crop_size)
        t = to_tensors(crop, f, "cpu")
        t["yaw"] = torch.tensor([f.yaw], dtype=torch.float32)
        t["pitch"] = torch.tensor([f.pitch], dtype=torch.float32)
        t["path"] = rel
        faces.append(t)
    if not faces:
        raise ValueError(f"no usable face among the photos of {source!r}")
    batch = {k: torch.cat([t[k] for t in faces]) for k in
             ("image", "vertices", "rotation", "scale", "translation", "yaw", "pitch")}
    batch["path"] = [t["path"] for t in faces]
    return batch


def quick_eval(model, photos, device, yaws=(-45.0, 0.0, 45.0), seed: int = 0,
               batch_size: int = 8, fitter=None, describer=None,
               max_photos: int = 32) -> dict[str, float]:
    """A small fixed evaluation of a (training) model; returns flat scalars to log.

    Call it from the trainer every ``--eval_freq`` iterations on the main process::

        from evaluate import load_eval_batch, quick_eval
        eval_batch = load_eval_batch("lfw", n=32, crop_size=opt.crop_size)   # once
        ...
        if iteration % opt.eval_freq == 0 and is_main:
            vis.scalars(quick_eval(model, eval_batch, device), iteration)

    ``photos``: a batch dict as ``load_eval_batch`` or the DataLoader makes it (image,
    vertices, rotation, scale, translation, yaw, pitch), or a dataset / list of such items
    (its first ``max_photos`` are collated here); for a held-out score, photos the model
    does not train on. ``model``: a RotateModel; its generator may be DDP-wrapped (the
    model's own inference runs on the unwrapped G, so the other ranks need not take part).
    The model is put in eval mode and back into the mode it had. Deterministic: the
    reconstruction poses come from ``seed``. For 32 photos at 256 px and 3 yaws: 128
    generator passes and 96 MediaPipe fits, a few seconds on a GPU, a minute or more on CPU.

    Keys: ``eval/recon_{l1,psnr,ssim}_mask`` (G's reconstruction of the a->b->a render vs
    the real photo in the face mask), ``eval/recon_psnr_mask_input`` (the same for the
    render itself, the baseline G must beat), ``eval/pose_err_yaw{Y}`` (mean |fitted -
    requested| yaw of G's rotations), ``eval/pose_found_yaw{Y}``, ``eval/pose_err`` and
    ``eval/pose_found`` over all yaws, and with a ``describer``
    (``util.identity.FaceDescriber``) ``eval/id_dist_yaw{Y}``.
    """
    from torch.utils.data import default_collate

    from models.rotate_model import _unwrap

    if not isinstance(photos, dict):
        photos = default_collate([photos[i] for i in range(min(len(photos), max_photos))])
    tensors = {k: v.to(device) for k, v in photos.items() if torch.is_tensor(v)}
    wrapped = model.netG
    netG = _unwrap(wrapped)
    mesh = model.mesh_on(device)
    opt = model.opt
    was_training = netG.training
    netG.eval()
    model.netG = netG  # model(..., "inference") without DDP, for the duration
    fitting = _QUICK_FITTING
    if fitter is not None:  # a MediaPipeFitter to share with the caller
        fitting = Fitting()
        fitting._fitter = fitter

    def generate(images, landmarks, source_yaw):
        out = []
        for s in range(0, images.shape[0], batch_size):
            out.append(model({"input": images[s:s + batch_size],
                              "landmarks": landmarks[s:s + batch_size],
                              "source_yaw": source_yaw[s:s + batch_size].cpu()},
                             "inference").float())
        return torch.cat(out)

    out: dict[str, float] = {}
    try:
        with torch.no_grad():
            gen = torch.Generator().manual_seed(seed)
            yaw_b, pitch_b = sample_target_poses(tensors["yaw"], tensors["pitch"], gen,
                                                 opt.pose_noise, opt.large_pose,
                                                 opt.pitch_noise)
            pair = training_pair(tensors["image"], tensors["vertices"], tensors["rotation"],
                                 tensors["scale"], tensors["translation"], yaw_b.to(device),
                                 pitch_b.to(device), mesh,
                                 settings=RenderSettings.from_options(opt))
            fake = generate(pair["input"], pair["landmarks_a"], yaw_b)
            real_u8, fake_u8, inp_u8 = (to_uint8(pair["real"]), to_uint8(fake),
                                        to_uint8(pair["input"]))
            masks = pair["mask"][:, 0].cpu().numpy() > 0.5
            rec = [metrics.image_metrics(f, r, m) for f, r, m in zip(fake_u8, real_u8, masks)]
            for k in ("l1", "psnr", "ssim"):
                out[f"eval/recon_{k}_mask"] = gather(rec, k)
            out["eval/recon_psnr_mask_input"] = gather(
                [{"psnr": metrics.psnr(i, r, m)} for i, r, m in zip(inp_u8, real_u8, masks)],
                "psnr")
            src_desc = ([describer.describe(r, lm) for r, lm in
                         zip(real_u8, pair["landmarks_a"].cpu().numpy())]
                        if describer is not None else None)
            all_fit, all_req = [], []
            n = tensors["image"].shape[0]
            for y in yaws:
                yaw = torch.full((n,), float(y), device=device)
                view = rotated_view(tensors["image"], tensors["vertices"], tensors["rotation"],
                                    tensors["scale"], tensors["translation"], yaw,
                                    tensors["pitch"], mesh,
                                    settings=RenderSettings.from_options(opt))
                imgs = to_uint8(generate(view["image"], view["landmarks"], tensors["yaw"]))
                fits = [fitting.try_fit(np.ascontiguousarray(im)) for im in imgs]
                fitted = [None if f is None else f.yaw for f in fits]
                s = metrics.pose_summary(fitted, y)
                out[f"eval/pose_err_yaw{y:+g}"] = s["mean_abs_error"]
                out[f"eval/pose_found_yaw{y:+g}"] = s["found_fraction"]
                all_fit += fitted
                all_req += [y] * n
                if src_desc is not None:
                    lms = view["landmarks"].cpu().numpy()
                    d = [metrics.descriptor_distance(
                        sd, describe_output(describer, np.ascontiguousarray(im), f, lm))
                         for sd, im, f, lm in zip(src_desc, imgs, fits, lms)]
                    out[f"eval/id_dist_yaw{y:+g}"] = metrics.summarise(d)["mean"]
            err = metrics.yaw_errors(all_fit, all_req)
            out["eval/pose_err"] = metrics.summarise(err)["mean"]
            out["eval/pose_found"] = float(np.isfinite(err).mean())
    finally:
        model.netG = wrapped
        netG.train(was_training)
    # tensorboard wants numbers: a metric with no value (e.g. no face found) becomes NaN
    return {k: (float("nan") if v is None else float(v)) for k, v in out.items()}


if __name__ == "__main__":
    sys.exit(main())
