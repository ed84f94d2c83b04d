"""Rotate faces: every input photo to every requested pose.

    python test.py --name NAME --dataset example --yaw_poses -60 -30 0 30 60
    python test.py --name NAME --img photo.jpg more_photos/ --yaw_poses 0      # frontalise

Outputs, under ``--results_dir/--name``, one folder per photo named by its path (see below):
  <photo>/yaw<Y>_pitch<P>.png   one image per (photo, pose): the generator's output, or the
                                rotated render when there is no checkpoint
  <photo>/yaw<Y>_pitch<P>_render.png   the render it was made from (generator mode only)
  <photo>/aligned.png           the aligned input (--align)
  <photo>/sweep.gif             a yaw sweep -60..60 (--gif)
  rotated_landmarks.txt   ``output_path x1 y1 ... x68 y68`` per image (crop pixels)
  manifest.csv            input,yaw,pitch,output,mode (mode: generator or render)
  failures.txt            input<TAB>reason for photos that could not be used
  index.html              one row per photo, one column per pose, and the GIF
  run.json                the settings of the run that wrote the folder
Without a checkpoint for --name, the rotated renders are written instead (mode ``render``).

Names. ``<photo>`` is the photo's path without its extension: for ``--img``, relative to
the folder all the inputs have in common (``--img a/face.jpg b/face.jpg`` gives ``a/face``
and ``b/face``; one folder: paths inside it); for a dataset, its list entry, where an
absolute path loses its root and ``..`` becomes ``__``, so nothing is written outside
``--results_dir/--name``. Photos whose names differ only in the extension (or in case) keep
it: ``face_jpg``, ``face_png``; any name still taken gets ``_2``, ``_3``. A file given twice
is rotated once. manifest.csv's ``input`` is the photo's name with its extension.

Files are written atomically (an image is complete or absent) and the three lists are
appended and flushed photo by photo, so an interrupted run keeps every photo it finished;
running the same command again redoes the run (and removes the temp files a killed run
left). A folder that holds a run with other settings (options, inputs, generator) is
refused unless ``--overwrite``, which deletes that run's outputs first.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import os
import sys

from tqdm import tqdm

from data.photos import LazyFitter, load_photo, photos_of
from face3d.align import align
from face3d.cli import (
    FolderInUseError,
    OutputFolderError,
    claim_folder,
    output_folder,
)
from face3d.fileio import remove_stale_temps
from face3d.fit import fit_problem
from face3d.imageio import write_png, write_sweep_gif
from models.inference import (
    FitterWithNotice,
    face_tensors,
    load_generator,
    pose_name,
    problem,
    rotate,
)
from options.base_options import OptionsError, resolve_device
from options.test_options import TestOptions
from render.renderer import FaceMesh
from render.settings import RenderSettings
from util.checkpoint import CheckpointError, inside_pretrained
from util.html import HTMLPage
from util.visualizer import to_uint8

# The run's own files at the top of its folder; a photo is never named like one of them.
RUN_FILES = ("manifest.csv", "failures.txt", "rotated_landmarks.txt", "index.html", "run.json")
# Options that change how fast a run goes or where it is, not what it writes.
NOT_SETTINGS = ("device", "nThreads", "batchSize", "overwrite", "results_dir", "is_train",
                "checkpoints_dir")


def poses(opt) -> list[tuple[float, float | None]]:
    return [(y, p) for y in opt.yaw_poses for p in (opt.pitch_poses or [None])]


# ------------------------------------------------------------------------------ names


def safe_relpath(path: str) -> str:
    """``path`` as a relative path that stays inside the folder it is joined to: no root or
    drive, ``..`` -> ``__``, no empty or ``.`` parts, control characters -> ``_``."""
    path = os.path.splitdrive(path)[1].replace("\\", "/")
    parts = []
    for part in path.split("/"):
        if part in ("", "."):
            continue
        part = "__" if part == ".." else "".join("_" if ord(c) < 32 else c for c in part)
        parts.append(part)
    return "/".join(parts) or "_"


def photo_keys(photos, img_args) -> list[str]:
    """Each photo's name with its extension (manifest.csv's ``input``): for --img, its path
    relative to the folder the inputs have in common (a folder given: that folder; a
    file: its folder); for a dataset, its list entry made safe (``safe_relpath``)."""
    if not img_args:
        return [safe_relpath(p.rel) for p in photos]
    bases = [os.path.abspath(g) if os.path.isdir(g) else os.path.dirname(os.path.abspath(g))
             for g in map(str, img_args)]
    root = os.path.commonpath(bases)
    return [safe_relpath(os.path.relpath(os.path.abspath(p.path), root)) for p in photos]


def output_stems(keys: list[str]) -> list[str]:
    """Distinct output folders (relative) for photo names ``keys``: the name without its
    extension; names that then coincide (ignoring case, for case-insensitive disks) keep
    their extension (``face_jpg``); a name still taken gets ``_2``, ``_3`` ..."""
    stems = [os.path.splitext(k)[0] or k for k in keys]
    stems = [s + "_" if s.lower() in RUN_FILES else s for s in stems]
    counts: dict[str, int] = {}
    for s in stems:
        counts[s.lower()] = counts.get(s.lower(), 0) + 1
    stems = [s + "_" + os.path.splitext(k)[1].lstrip(".") if counts[s.lower()] > 1
             and os.path.splitext(k)[1] else s for s, k in zip(stems, keys)]
    taken: set[str] = set()
    out = []
    for s in stems:
        name, n = s, 1
        while name.lower() in taken:
            n += 1
            name = f"{s}_{n}"
        taken.add(name.lower())
        out.append(name)
    return out


def distinct_photos(photos) -> tuple[list, int]:
    """The photos without repeats of one file (given twice, or listed twice); and how many
    were dropped."""
    seen, out = set(), []
    for p in photos:
        key = os.path.realpath(p.path)
        if key not in seen:
            seen.add(key)
            out.append(p)
    return out, len(photos) - len(out)


# ------------------------------------------------------------------------------ run folder


def run_settings(opt, model, keys, photos) -> dict:
    """What defines a run's outputs: its options (less NOT_SETTINGS), the generator file and
    iteration, and the input photos (a digest of their names and paths)."""
    digest = hashlib.sha1()
    for key, photo in zip(keys, photos):
        digest.update(f"{key}\0{os.path.abspath(photo.path)}\n".encode("utf-8", "replace"))
    values = {k: v for k, v in sorted(vars(opt).items()) if k not in NOT_SETTINGS
              and isinstance(v, (int, float, str, bool, list, type(None)))}
    values["generator"] = None if model is None else os.path.abspath(model.generator_file)
    values["generator_iteration"] = None if model is None else model.checkpoint_iteration
    values["inputs"] = f"{len(photos)} photos, sha1 {digest.hexdigest()[:16]}"
    return values


def remove_previous(out_dir: str) -> None:
    """Delete what an earlier test.py run wrote in ``out_dir``: the images its manifest
    lists (with their renders, and each photo folder's aligned.png and sweep.gif), its lists
    and page; then the photo folders that are left empty. Nothing outside ``out_dir``."""
    root = os.path.realpath(out_dir)
    files, folders = set(), set()
    manifest = os.path.join(out_dir, "manifest.csv")
    if os.path.exists(manifest):
        with open(manifest, newline="", encoding="utf-8", errors="replace") as f:
            for row in csv.DictReader(f):
                out = os.path.realpath(os.path.join(out_dir, row.get("output") or ""))
                if not out.startswith(root + os.sep) or not out.endswith(".png"):
                    continue
                folder = os.path.dirname(out)
                files.update({out, out[:-4] + "_render.png",
                              os.path.join(folder, "aligned.png"),
                              os.path.join(folder, "sweep.gif")})
                folders.add(folder)
    files.update(os.path.join(root, n) for n in RUN_FILES)
    for path in files:
        if os.path.isfile(path):
            os.remove(path)
    for folder in sorted(folders, key=len, reverse=True):
        while folder != root and folder.startswith(root + os.sep):
            try:
                os.rmdir(folder)  # only when empty
            except OSError:
                break
            folder = os.path.dirname(folder)


class RunLog:
    """manifest.csv, rotated_landmarks.txt and failures.txt, appended and flushed photo by
    photo: after a crash they list exactly the photos whose outputs are complete."""

    def __init__(self, out_dir: str):
        self._files = contextlib.ExitStack()  # open for the whole run; close() closes them

        def create(name, **kw):
            return self._files.enter_context(
                open(os.path.join(out_dir, name), "w", encoding="utf-8", **kw))

        try:
            self.manifest_file = create("manifest.csv", newline="")
            self.manifest = csv.writer(self.manifest_file)
            self.manifest.writerow(["input", "yaw", "pitch", "output", "mode"])
            self.landmarks = create("rotated_landmarks.txt")
            self.failures_file = create("failures.txt")
        except BaseException:  # e.g. a full disk at the second file: close the first
            self._files.close()
            raise
        self.failures: list[tuple[str, str]] = []
        self._sync()

    def photo(self, manifest_rows, landmark_lines):
        self.manifest.writerows(manifest_rows)
        self.landmarks.writelines(line + "\n" for line in landmark_lines)
        self._sync()

    def failed(self, name: str, reason: str):
        reason = " ".join(str(reason).split())  # one line
        self.failures.append((name, reason))
        self.failures_file.write(f"{name}\t{reason}\n")
        self._sync()

    def _sync(self):
        # flushed per photo: a crashed or killed process loses nothing it reported (the
        # images themselves are flushed, not fsynced, so fsyncing these per photo would not
        # survive a power cut either, and costs hours on a network disk for a million)
        for f in (self.manifest_file, self.landmarks, self.failures_file):
            f.flush()

    def close(self):
        for f in (self.manifest_file, self.landmarks, self.failures_file):
            f.flush()
            os.fsync(f.fileno())
        self._files.close()


# ------------------------------------------------------------------------------ main


def error(message) -> int:
    print(f"error: {message}", file=sys.stderr)
    return 2


def main(argv: list[str] | None = None) -> int:
    options = TestOptions()
    try:
        opt = options.parse(argv)
        device = resolve_device(opt.device)
        out_dir = os.path.join(opt.results_dir, opt.name)
        if inside_pretrained(out_dir):
            raise OptionsError(f"--results_dir/--name: {out_dir} is inside pretrained/, the "
                               "shipped model's folder; write results elsewhere")
        model, message = load_generator(opt, options.parser, device)
        output_folder(out_dir, "--results_dir")
    except (OptionsError, CheckpointError, OutputFolderError, ValueError) as e:
        return error(e)
    mode = "render" if model is None else "generator"
    if mode == "render" and not opt.symmetric_fill:
        opt.symmetric_fill = True
        message += "; hidden texels use the symmetry-aware fill"
    print(message)
    try:
        items = photos_of(opt, fit_first=True)
    except (ValueError, RuntimeError, OSError) as e:
        return error(e)
    items, repeats = distinct_photos(items)
    if repeats:
        print(f"{repeats} input(s) named the same file as another: each file is rotated once")
    keys = photo_keys(items, opt.img)
    stems = output_stems(keys)
    try:
        note = claim_folder(out_dir, run_settings(opt, model, keys, items), opt.overwrite,
                            "manifest.csv", remove_previous,
                            "choose another --name or --results_dir")
    except (FolderInUseError, OSError) as e:
        return error(e)
    if note:
        print(note)
    stale = remove_stale_temps(out_dir)
    if stale:
        print(f"removed {stale} temp file(s) an interrupted run left in {out_dir}")
    try:
        rows, log = rotate_all(opt, device, model, mode, items, keys, stems, out_dir)
        write_page(out_dir, log.failures, rows, poses(opt), mode, opt)
    except OSError as e:  # the disk filled up, the folder went away ...
        print(f"error: writing the results in {out_dir}: {e}", file=sys.stderr)
        return 1
    n_poses = len(poses(opt))
    print(f"{len(rows)} photos x {n_poses} poses -> {out_dir} (mode={mode}); "
          f"{len(log.failures)} failed" + (f", see {os.path.join(out_dir, 'failures.txt')}"
                                           if log.failures else ""))
    print(f"open {os.path.join(out_dir, 'index.html')}")
    return 0 if rows else 1


def rotate_all(opt, device, model, mode, items, keys, stems, out_dir):
    """Rotate every photo; (page rows, the closed RunLog). A photo that cannot be read, has
    an unusable fit or cannot be rotated is logged as failed and the run goes on."""
    mesh = FaceMesh.mediapipe(device)
    pose_list = poses(opt)
    settings = RenderSettings.from_options(opt)
    fitter = FitterWithNotice(LazyFitter())
    log = RunLog(out_dir)
    rows = []
    try:
        for photo, key, stem in tqdm(list(zip(items, keys, stems)), desc="rotating",
                                     unit="photo", dynamic_ncols=True):
            try:
                row = rotate_photo(opt, device, model, mode, photo, key, stem, out_dir, mesh,
                                   pose_list, settings, fitter, log)
            except ValueError as e:  # unreadable image or fit file, no face, a bad fit
                log.failed(key, e)
                continue
            except OSError as e:  # e.g. a file in the way of its output folder
                log.failed(key, f"could not write its outputs: {e}")
                continue
            if row is not None:
                rows.append(row)
    finally:
        log.close()
    return rows, log


def rotate_photo(opt, device, model, mode, photo, key, stem, out_dir, mesh, pose_list, settings,
                 fitter, log):
    """One photo's outputs, then its records; its page row, or None when it failed."""
    rgb, fit = load_photo(photo, fitter)
    reason = fit_problem(fit)
    if reason:
        raise ValueError(f"{reason} ({photo.fit_path or 'fitted'})")
    crop, fit_c, _ = align(rgb, fit, opt.crop_size)
    face = face_tensors(crop, fit_c, device)
    reason = problem(face, mesh, settings)
    if reason:
        log.failed(key, reason)
        return None
    folder = os.path.join(out_dir, stem)
    if opt.align:
        write_png(crop, os.path.join(folder, "aligned.png"))
    views = rotate(face, pose_list, mesh, settings, model, opt.batchSize, opt.bf16)
    outputs, renders = to_uint8(views["output"]), to_uint8(views["image"])
    manifest, landmark_lines, cells = [], [], []
    for k, (yaw, pitch) in enumerate(pose_list):
        name = pose_name(yaw, pitch)
        out_path = os.path.join(folder, name + ".png")
        write_png(outputs[k], out_path)
        render_path = None
        if model is not None:
            render_path = os.path.join(folder, name + "_render.png")
            write_png(renders[k], render_path)
        rel_out = os.path.relpath(out_path, out_dir)
        target_pitch = fit_c.pitch if pitch is None else pitch
        manifest.append((key, yaw, round(target_pitch, 2), rel_out, mode))
        pts = views["landmarks"][k].cpu().numpy().reshape(-1)
        landmark_lines.append(rel_out + " " + " ".join(f"{v:.2f}" for v in pts))
        cells.append((render_path, out_path, name))
    gif = None
    if opt.gif:
        gif = os.path.join(folder, "sweep.gif")
        save_sweep(face, mesh, model, settings, opt.batchSize, gif)
    log.photo(manifest, landmark_lines)
    source = os.path.join(folder, "aligned.png") if opt.align else photo.path
    return source, key, cells, gif


def save_sweep(face, mesh, model, settings, batch_size, path):
    """A yaw sweep -60..60 and back, as a looping GIF (no bf16: a preview); written whole."""
    sweep = [(float(y), None) for y in range(-60, 61, 10)]
    write_sweep_gif(to_uint8(rotate(face, sweep, mesh, settings, model, batch_size)["output"]),
                    path, frame_ms=80)


def write_page(out_dir, failures, rows, pose_list, mode, opt):
    page = HTMLPage(out_dir, f"Rotate-and-Render: {opt.name}")
    what = ("generator outputs: each cell shows the output (top) and the rotated render the "
            "generator was given (below)" if mode == "generator"
            else "rotated renders (no generator: mode=render)")
    page.header(f"{opt.name}: {what}")
    gifs = any(gif for *_, gif in rows)
    columns = (["photo"] + [pose_name(y, p) for y, p in pose_list]
               + (["yaw sweep (GIF)"] if gifs else []))
    table_rows = []
    for source, key, row, gif in rows:
        cells = [(source, key)]
        for render_path, out_path, name in row:
            if mode == "generator":
                cells.append(([out_path, render_path], f"{name}: output (top), the render it "
                                                       "was given (below)"))
            else:
                cells.append((out_path, f"{name}: render"))
        if gifs:
            cells.append((gif, "yaw -60..60, click for the GIF") if gif else (None, ""))
        table_rows.append(cells)
    page.table(columns, table_rows, width=160)
    if failures:
        page.text("Failed: " + "; ".join(f"{rel} ({reason})" for rel, reason in failures))
    page.save()


if __name__ == "__main__":
    sys.exit(main())
