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

import contextlib
import csv
import os
import sys

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

from face3d.align import align
from face3d.fit import FitFileError, fit_path_for, load_fit
from face3d.imageio import ImageReadError, read_image
from models.inference import load_generator
from options.base_options import OptionsError, resolve_device
from options.test_options import TestOptions
from render.renderer import FaceMesh, rotated_view
from render.settings import RenderSettings
from util.checkpoint import CheckpointError
from util.html import HTMLPage
from util.visualizer import to_uint8


def require_photos(items: list) -> list:
    """``items``, or a ValueError when there are none (test.py and evaluate.py refuse to run
    on nothing)."""
    if not items:
        raise ValueError("no input photos (empty --img folder or dataset range)")
    return items


def collect_inputs(opt) -> tuple[list[tuple[str, str, str | None]], str]:
    """[(relpath, image path, fit path or None)], prefix. Photos given with --img are fitted
    on the fly; dataset photos use their fits. A ValueError when there is no photo."""
    if opt.img:
        from face3d.imageio import list_images

        items = []
        for given in opt.img:
            if os.path.isdir(given):
                items += [(rel, os.path.join(given, rel), None) for rel in list_images(given)]
            else:  # a missing or odd file is reported per photo, not as a crash
                items.append((os.path.basename(given), given, None))
        return require_photos(items), ""
    from data.allface_dataset import prepare_dataset
    from data.registry import adhoc_dataset, get_dataset

    entry = adhoc_dataset(opt.dataroot) if opt.dataroot else get_dataset(opt.dataset)
    rel = prepare_dataset(entry, opt.dataroot or opt.dataset, workers=max(1, opt.nThreads),
                          start=opt.list_start, end=opt.list_end)
    return require_photos([(r, os.path.join(entry["prefix"], r),
                            fit_path_for(r, entry["fits_dir"])) for r in rel]), entry["prefix"]


def poses(opt) -> list[tuple[float, float | None]]:
    return [(y, p) for y in opt.yaw_poses for p in (opt.pitch_poses or [None])]


def pose_name(yaw: float, pitch: float | None) -> str:
    return f"yaw{yaw:+g}" + ("" if pitch is None else f"_pitch{pitch:+g}")


def to_tensors(crop: np.ndarray, fit, device) -> dict:
    return dict(image=torch.from_numpy(crop).permute(2, 0, 1)[None].float().to(device) / 127.5 - 1,
                vertices=torch.from_numpy(fit.vertices)[None].to(device),
                rotation=torch.from_numpy(fit.rotation)[None].to(device),
                scale=torch.tensor([fit.scale], device=device),
                translation=torch.from_numpy(fit.translation)[None].to(device),
                pitch=float(fit.pitch))


def render_poses(face: dict, pose_list, mesh: FaceMesh, opt) -> dict:
    """Renders (B = number of poses) of one face."""
    n = len(pose_list)
    dev = face["image"].device
    yaw = torch.tensor([y for y, _ in pose_list], device=dev)
    pitch = torch.tensor([face["pitch"] if p is None else p for _, p in pose_list], device=dev)
    rep = {k: v.expand(n, *v.shape[1:]) for k, v in face.items() if torch.is_tensor(v)}
    return rotated_view(rep["image"], rep["vertices"], rep["rotation"], rep["scale"],
                        rep["translation"], yaw, pitch, mesh,
                        settings=RenderSettings.from_options(opt))


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
        items, _ = collect_inputs(opt)
    except (ValueError, RuntimeError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    out_dir = os.path.join(opt.results_dir, opt.name)
    os.makedirs(out_dir, exist_ok=True)
    mesh = FaceMesh.mediapipe(device)
    pose_list = poses(opt)
    fitter = None
    manifest, failures, landmark_lines, rows = [], [], [], []
    autocast = (torch.autocast("cuda", dtype=torch.bfloat16) if opt.bf16 and device.type == "cuda"
                else contextlib.nullcontext())
    for rel, path, fit_path in tqdm(items, desc="rotating", unit="photo", dynamic_ncols=True):
        try:
            rgb = read_image(path)
            if fit_path is None:
                if fitter is None:
                    from face3d.fitter import MediaPipeFitter

                    fitter = MediaPipeFitter()
                fit = fitter.fit(rgb)
            else:
                fit = load_fit(fit_path)
        except (ImageReadError, FitFileError, ValueError) as e:
            failures.append((rel, str(e)))
            continue
        crop, fit_c, _ = align(rgb, fit, opt.crop_size)
        stem = os.path.splitext(rel)[0]
        face = to_tensors(crop, fit_c, device)
        row = []
        if opt.align:
            save_png(crop, os.path.join(out_dir, stem, "aligned.png"))
        for start in range(0, len(pose_list), opt.batchSize):
            chunk = pose_list[start:start + opt.batchSize]
            with torch.no_grad():
                view = render_poses(face, chunk, mesh, opt)
                renders = view["image"]
                outputs = renders
                if model is not None:
                    with autocast:
                        outputs = model({"input": renders, "landmarks": view["landmarks"],
                                         "source_yaw": torch.full((len(chunk),), fit_c.yaw)},
                                        "inference").float()
            for k, (yaw, pitch) in enumerate(chunk):
                name = pose_name(yaw, pitch)
                out_path = os.path.join(out_dir, stem, name + ".png")
                save_png(to_uint8(outputs[k:k + 1])[0], out_path)
                render_path = None
                if model is not None:
                    render_path = os.path.join(out_dir, stem, name + "_render.png")
                    save_png(to_uint8(renders[k:k + 1])[0], render_path)
                rel_out = os.path.relpath(out_path, out_dir)
                target_pitch = face["pitch"] if pitch is None else pitch
                manifest.append((rel, yaw, round(target_pitch, 2), rel_out, mode))
                pts = view["landmarks"][k].cpu().numpy().reshape(-1)
                landmark_lines.append(rel_out + " " + " ".join(f"{v:.2f}" for v in pts))
                row.append((render_path, out_path, name))
        if opt.gif:
            save_sweep(face, fit_c.yaw, mesh, model, opt,
                       os.path.join(out_dir, stem, "sweep.gif"))
        rows.append((os.path.join(out_dir, stem, "aligned.png") if opt.align else path, rel, row))
    write_outputs(out_dir, manifest, failures, landmark_lines, rows, pose_list, mode, opt)
    print(f"{len(rows)} photos x {len(pose_list)} poses -> {out_dir} (mode={mode}); "
          f"{len(failures)} failed" + (f", see {os.path.join(out_dir, 'failures.txt')}"
                                       if failures else ""))
    print(f"open {os.path.join(out_dir, 'index.html')}")
    return 0 if rows else 1


def save_sweep(face, source_yaw, mesh, model, opt, path):
    sweep = [(float(y), None) for y in range(-60, 61, 10)]
    frames = []
    with torch.no_grad():
        for start in range(0, len(sweep), opt.batchSize):
            view = render_poses(face, sweep[start:start + opt.batchSize], mesh, opt)
            images = view["image"]
            if model is not None:
                images = model({"input": images, "landmarks": view["landmarks"],
                                "source_yaw": torch.full((len(images),), source_yaw)},
                               "inference")
            frames += [Image.fromarray(a) for a in to_uint8(images.float())]
    frames += frames[-2:0:-1]  # and back again
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=80, loop=0)


def write_outputs(out_dir, manifest, failures, landmark_lines, rows, pose_list, mode, opt):
    with open(os.path.join(out_dir, "manifest.csv"), "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["input", "yaw", "pitch", "output", "mode"])
        w.writerows(manifest)
    with open(os.path.join(out_dir, "failures.txt"), "w") as f:
        f.writelines(f"{rel}\t{reason}\n" for rel, reason in failures)
    with open(os.path.join(out_dir, "rotated_landmarks.txt"), "w") as f:
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
