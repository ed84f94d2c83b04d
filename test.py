"""Rotate faces: every input photo to every requested pose.

    python test.py --name NAME --dataset example --yaw_poses -60 -30 0 30 60
    python test.py --name NAME --img photo.jpg more_photos/ --yaw_poses 0      # frontalise

Outputs, under ``--results_dir/--name``:
  <photo path without extension>/yaw<Y>_pitch<P>.png   one image per (photo, pose): the
                                                       generator's output, or the rotated
                                                       render when there is no checkpoint
  <photo path without extension>/yaw<Y>_pitch<P>_render.png   the render it was made from
                                                       (generator mode only)
  <photo path without extension>/aligned.png           the aligned input (--align)
  <photo path without extension>/sweep.gif             a yaw sweep -60..60 (--gif)
  rotated_landmarks.txt   ``output_path x1 y1 ... x68 y68`` per image (crop pixels)
  manifest.csv            input,yaw,pitch,output,mode (mode: generator or render)
  failures.txt            input<TAB>reason for photos that could not be used
  index.html              one row per photo, one column per pose
Without a checkpoint for --name, the rotated renders are written instead (mode ``render``).
"""

from __future__ import annotations

import csv
import os
import sys

import numpy as np
from PIL import Image
from tqdm import tqdm

from data.photos import LazyFitter, load_photo, photos_of
from face3d.align import align
from face3d.fileio import atomic_write
from models.inference import face_tensors, load_generator, pose_name, problem, rotate
from options.base_options import OptionsError, resolve_device
from options.test_options import TestOptions
from render.renderer import FaceMesh
from render.settings import RenderSettings
from util.checkpoint import CheckpointError
from util.html import HTMLPage
from util.visualizer import to_uint8


def poses(opt) -> list[tuple[float, float | None]]:
    return [(y, p) for y in opt.yaw_poses for p in (opt.pitch_poses or [None])]


def save_png(array: np.ndarray, path: str):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.fromarray(array).save(path)


def main(argv: list[str] | None = None) -> int:
    options = TestOptions()
    try:
        opt = options.parse(argv)
        device = resolve_device(opt.device)
        model, message = load_generator(opt, options.parser, device)
    except (OptionsError, CheckpointError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    mode = "render" if model is None else "generator"
    if mode == "render" and not opt.symmetric_fill:
        opt.symmetric_fill = True
        message += "; hidden texels use the symmetry-aware fill"
    print(message)
    try:
        items = photos_of(opt, fit_first=True)
    except (ValueError, RuntimeError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    out_dir = os.path.join(opt.results_dir, opt.name)
    os.makedirs(out_dir, exist_ok=True)
    mesh = FaceMesh.mediapipe(device)
    pose_list = poses(opt)
    settings = RenderSettings.from_options(opt)
    fitter = LazyFitter()
    manifest, failures, landmark_lines, rows = [], [], [], []
    for photo in tqdm(items, desc="rotating", unit="photo", dynamic_ncols=True):
        rel = photo.rel
        try:
            rgb, fit = load_photo(photo, fitter)
        except ValueError as e:  # unreadable image, bad fit file, no face: reported, skipped
            failures.append((rel, str(e)))
            continue
        crop, fit_c, _ = align(rgb, fit, opt.crop_size)
        stem = os.path.splitext(rel)[0]
        face = face_tensors(crop, fit_c, device)
        reason = problem(face, mesh, settings)
        if reason:
            failures.append((rel, reason))
            continue
        row = []
        if opt.align:
            save_png(crop, os.path.join(out_dir, stem, "aligned.png"))
        views = rotate(face, pose_list, mesh, settings, model, opt.batchSize, opt.bf16)
        outputs, renders = to_uint8(views["output"]), to_uint8(views["image"])
        for k, (yaw, pitch) in enumerate(pose_list):
            name = pose_name(yaw, pitch)
            out_path = os.path.join(out_dir, stem, name + ".png")
            save_png(outputs[k], out_path)
            render_path = None
            if model is not None:
                render_path = os.path.join(out_dir, stem, name + "_render.png")
                save_png(renders[k], render_path)
            rel_out = os.path.relpath(out_path, out_dir)
            target_pitch = fit_c.pitch if pitch is None else pitch
            manifest.append((rel, yaw, round(target_pitch, 2), rel_out, mode))
            pts = views["landmarks"][k].cpu().numpy().reshape(-1)
            landmark_lines.append(rel_out + " " + " ".join(f"{v:.2f}" for v in pts))
            row.append((render_path, out_path, name))
        if opt.gif:
            save_sweep(face, mesh, model, settings, opt.batchSize,
                       os.path.join(out_dir, stem, "sweep.gif"))
        rows.append((os.path.join(out_dir, stem, "aligned.png") if opt.align else photo.path,
                     rel, row))
    write_outputs(out_dir, manifest, failures, landmark_lines, rows, pose_list, mode, opt)
    print(f"{len(rows)} photos x {len(pose_list)} poses -> {out_dir} (mode={mode}); "
          f"{len(failures)} failed" + (f", see {os.path.join(out_dir, 'failures.txt')}"
                                       if failures else ""))
    print(f"open {os.path.join(out_dir, 'index.html')}")
    return 0 if rows else 1


def save_sweep(face, mesh, model, settings, batch_size, path):
    """A yaw sweep -60..60 and back, as a looping GIF (no bf16: a preview)."""
    sweep = [(float(y), None) for y in range(-60, 61, 10)]
    frames = [Image.fromarray(a) for a in to_uint8(
        rotate(face, sweep, mesh, settings, model, batch_size)["output"])]
    frames += frames[-2:0:-1]  # and back again
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=80, loop=0)


def write_outputs(out_dir, manifest, failures, landmark_lines, rows, pose_list, mode, opt):
    # whole files or none: an interrupted run never leaves a truncated manifest
    with atomic_write(os.path.join(out_dir, "manifest.csv"), "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["input", "yaw", "pitch", "output", "mode"])
        w.writerows(manifest)
    with atomic_write(os.path.join(out_dir, "failures.txt")) as f:
        f.writelines(f"{rel}\t{reason}\n" for rel, reason in failures)
    with atomic_write(os.path.join(out_dir, "rotated_landmarks.txt")) as f:
        f.writelines(line + "\n" for line in landmark_lines)
    page = HTMLPage(out_dir, f"Rotate-and-Render: {opt.name}")
    what = ("generator outputs, each beside the rotated render it was given" if mode == "generator"
            else "rotated renders (no generator: mode=render)")
    page.header(f"{opt.name}: {what}")
    columns = ["photo"] + [pose_name(y, p) for y, p in pose_list]
    table_rows = []
    for source, rel, row in rows:
        cells = [(source, rel)]
        for render_path, out_path, name in row:
            if mode == "generator":
                cells.append(([render_path, out_path], f"{name}: render | output"))
            else:
                cells.append((out_path, f"{name}: render"))
        table_rows.append(cells)
    page.table(columns, table_rows, width=160)
    if failures:
        page.text("Failed: " + "; ".join(f"{rel} ({reason})" for rel, reason in failures))
    page.save()


if __name__ == "__main__":
    sys.exit(main())
