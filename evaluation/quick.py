"""The small evaluation the trainer logs every ``--eval_freq`` iterations: reconstruction
and pose (and identity with a describer) of a fixed batch of held-out photos, as flat
scalars for tensorboard.

    from evaluation.quick import load_eval_batch, quick_eval
    eval_batch = load_eval_batch("lfw", n=32, crop_size=opt.crop_size)   # once
    ...
    if iteration % opt.eval_freq == 0 and is_main:
        vis.scalars(quick_eval(model, eval_batch, device), iteration)
"""

from __future__ import annotations

import os

import numpy as np
import torch

from data.photos import LazyFitter, find_photos, load_photo, sample
from evaluation.identity import describe_output
from evaluation.reconstruction import gather
from face3d.align import align
from models.inference import face_tensors, inference_context, repair, rotate
from render.renderer import sample_target_poses, training_pair
from render.settings import RenderSettings
from util import metrics
from util.visualizer import to_uint8

_FITTER = LazyFitter()  # one per process: the trainer calls quick_eval many times


def load_eval_batch(source, n: int = 32, crop_size: int = 256, seed: int = 0) -> dict:
    """A fixed batch of aligned photos for ``quick_eval``, in the dataset's batch layout
    (image (B, 3, S, S) in [-1, 1], vertices, rotation, scale, translation, yaw, pitch,
    path). ``source``: a list of image paths, a folder (searched recursively) or a registry
    dataset name (e.g. ``"lfw"``); ``n`` photos are drawn with ``seed`` and fitted with
    MediaPipe (fit files are used when the dataset has them). Photos without a face are
    skipped. Keep these photos out of the training set for a held-out score."""
    if isinstance(source, (list, tuple)) or os.path.isdir(str(source)):
        items = find_photos(img=list(source) if isinstance(source, (list, tuple)) else [source])
    else:
        items = find_photos(dataset=str(source))
    faces = []
    for photo in sample(items, n * 2, seed):  # spares for photos without a face
        if len(faces) == n:
            break
        try:
            rgb, fit = load_photo(photo, _FITTER)
        except ValueError:  # unreadable, no face: a spare takes its place
            continue
        crop, f, _ = align(rgb, fit, crop_size)
        faces.append(dict(face_tensors(crop, f, "cpu"), path=photo.rel))
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

    ``photos``: a batch dict as ``load_eval_batch`` or the DataLoader makes it (image,
    vertices, rotation, scale, translation, yaw, pitch), or a dataset / list of such items
    (its first ``max_photos`` are collated here); for a held-out score, photos the model
    does not train on. ``model``: a RotateModel; its generator may be DDP-wrapped (see
    ``models.inference.inference_context``: the other ranks need not take part). The
    model is put in eval mode and back into the mode it had. Deterministic: the
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

    if not isinstance(photos, dict):
        photos = default_collate([photos[i] for i in range(min(len(photos), max_photos))])
    faces = {k: v.to(device) for k, v in photos.items() if torch.is_tensor(v)}
    fitting = _FITTER if fitter is None else LazyFitter(fitter)  # a caller's MediaPipeFitter
    opt = model.opt
    settings = RenderSettings.from_options(opt)
    mesh = model.mesh_on(device)
    out: dict[str, float] = {}
    with inference_context(model), torch.no_grad():
        gen = torch.Generator().manual_seed(seed)
        yaw_b, pitch_b = sample_target_poses(faces["yaw"], faces["pitch"], gen, opt.pose_noise,
                                             opt.large_pose, opt.pitch_noise)
        pair = training_pair(faces["image"], faces["vertices"], faces["rotation"],
                             faces["scale"], faces["translation"], yaw_b.to(device),
                             pitch_b.to(device), mesh, settings=settings)
        fake = repair(model, pair["input"], pair["landmarks_a"], yaw_b, batch_size,
                      masks=model.pair_masks(pair))
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
        for y in yaws:
            views = rotate(faces, [(float(y), None)], mesh, settings, model, batch_size)
            imgs = [np.ascontiguousarray(im) for im in to_uint8(views["output"])]
            fits = [fitting.try_fit(im) for im in imgs]
            fitted = [None if f is None else f.yaw for f in fits]
            s = metrics.pose_summary(fitted, y)
            out[f"eval/pose_err_yaw{y:+g}"] = s["mean_abs_error"]
            out[f"eval/pose_found_yaw{y:+g}"] = s["found_fraction"]
            all_fit += fitted
            all_req += [y] * len(fitted)
            if src_desc is not None:
                lms = views["landmarks"].cpu().numpy()
                d = [metrics.descriptor_distance(sd, describe_output(describer, im, f, lm))
                     for sd, im, f, lm in zip(src_desc, imgs, fits, lms)]
                out[f"eval/id_dist_yaw{y:+g}"] = metrics.summarise(d)["mean"]
        overall = metrics.yaw_error_summary(all_fit, all_req)
        out["eval/pose_err"] = overall["mean_abs_error"]
        out["eval/pose_found"] = overall["found_fraction"]
    # tensorboard wants numbers: a metric with no value (e.g. no face found) becomes NaN
    return {k: (float("nan") if v is None else float(v)) for k, v in out.items()}
