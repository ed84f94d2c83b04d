"""Fit every photo of a folder, list file or single image; the engine of ``3ddfa/inference.py``.

Writes, under ``--save_dir``:
* ``<relative/path>.npz`` per photo (see ``face3d.fit``), written atomically;
* ``realign_lmk``: ``relpath label x1 y1 ... x5 y5`` per fitted photo, in list order;
* ``failures.txt``: ``relpath<TAB>reason`` per photo that could not be fitted;
* with ``--vis``: ``vis/<relative/path>.jpg``, the mesh drawn on the photo.
With ``--shard K/N`` the two text files get a ``.shardKofN`` suffix (``cat`` them to merge).
A failure never stops the batch; the exit status is non-zero only when the arguments are
wrong or not a single photo could be fitted.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import re
import sys
from dataclasses import dataclass

import numpy as np

from face3d.cli import ArgumentParser
from face3d.fileio import atomic_write
from face3d.fit import FitFileError, fit_path_for, load_fit
from face3d.imageio import list_images


class InputListError(ValueError):
    """The list of photos could not be built (missing list, empty input ...)."""


@dataclass
class Outcome:
    relpath: str
    status: str  # "fitted" | "skipped" | "failed"
    landmarks5: np.ndarray | None = None
    reason: str = ""


def _is_number(token: str) -> bool:
    try:
        float(token)
    except ValueError:
        return False
    return True


def list_path_of(line: str) -> str:
    """The path on one (stripped, non-empty) list line: the line without any trailing
    numeric columns, so ``realign_lmk`` lines (``relpath label x1 y1 ... x5 y5``) give their
    path and paths may contain spaces. Tab-separated lines give their first column."""
    if "\t" in line:
        return line.split("\t", 1)[0].strip()
    tokens = list(re.finditer(r"\S+", line))
    end = len(tokens)
    while end > 1 and _is_number(tokens[end - 1].group()):
        end -= 1
    return line[:tokens[end - 1].end()]


def read_list(list_path: str) -> list[str]:
    """Relative paths from a list file: one per line (see :func:`list_path_of`: extra numeric
    columns, as in ``realign_lmk``, are dropped and spaces inside paths are kept), blank
    lines and ``#`` comments ignored, Windows line endings accepted."""
    if not os.path.isfile(list_path):
        raise InputListError(f"image list not found: {list_path}")
    with open(list_path, encoding="utf-8-sig", errors="replace") as f:
        lines = f.read().splitlines()
    out = []
    for line in lines:
        line = line.strip()
        if line and not line.startswith("#"):
            out.append(list_path_of(line))
    return out


def collect_inputs(img_list: str | None, img_prefix: str | None, img: str | None,
                   save_dir: str | None = None):
    """(prefix, relpaths) from ``--img_list/--img_prefix`` or ``--img`` (file or folder; the
    output folder is skipped when it lies inside, so its --vis pictures are not refitted)."""
    if img_list:
        return img_prefix or os.path.dirname(os.path.abspath(img_list)), read_list(img_list)
    if img is None:
        raise InputListError("give --img_list LIST (with --img_prefix DIR) or --img PATH")
    if os.path.isfile(img):
        return os.path.dirname(os.path.abspath(img)), [os.path.basename(img)]
    if not os.path.isdir(img):
        raise InputListError(f"--img: no such file or folder: {img}")
    return img, list_images(img, exclude=save_dir)


def shard(items: list, spec: str | None) -> list:
    """Items of shard ``K/N`` (1-based K): every N-th item starting at K-1, so shards stay
    balanced even when the list is sorted by identity."""
    if not spec:
        return items
    try:
        k, n = (int(v) for v in spec.split("/"))
    except ValueError:
        raise InputListError(f"--shard must look like K/N (e.g. 3/16), got {spec!r}") from None
    if not 1 <= k <= n:
        raise InputListError(f"--shard {spec}: need 1 <= K <= N")
    return items[k - 1::n]


def labels_for(relpaths: list[str]) -> list[int]:
    """Identity label per photo: the index of its folder among the sorted folders; when all
    photos share one folder (as in the original example list), the line index."""
    folders = [os.path.dirname(r) for r in relpaths]
    uniq = sorted(set(folders))
    if len(uniq) <= 1:
        return list(range(len(relpaths)))
    index = {f: i for i, f in enumerate(uniq)}
    return [index[f] for f in folders]


# Each worker process owns one fitter (MediaPipe graphs are not shareable across processes).
_FITTER = None
_CONFIG: dict = {}


def _init_worker(config: dict):
    global _FITTER, _CONFIG
    from face3d.fitter import MediaPipeFitter

    _CONFIG = config
    # Building the MediaPipe graph takes about a second: reuse the one of an earlier run in
    # this process (workers=1 calls from Python) when its settings match.
    if _FITTER is None or _FITTER.max_side != config["max_side"]:
        _FITTER = MediaPipeFitter(max_side=config["max_side"])


def _fit_one(relpath: str) -> Outcome:
    from face3d.fitter import NoFaceError
    from face3d.imageio import ImageReadError, read_image

    cfg = _CONFIG
    out_path = fit_path_for(relpath, cfg["save_dir"])
    if not cfg["overwrite"] and os.path.exists(out_path):
        try:
            return Outcome(relpath, "skipped", load_fit(out_path).landmarks5)
        except FitFileError:
            pass  # a damaged earlier fit: fit again
    try:
        rgb = read_image(os.path.join(cfg["prefix"], relpath))
        fit = _FITTER.fit(rgb)
        fit.save(out_path)
        if cfg["vis"]:
            vis_path = fit_path_for(relpath, os.path.join(cfg["save_dir"], "vis"))
            _save_vis(rgb, fit, os.path.splitext(vis_path)[0] + ".jpg")
        return Outcome(relpath, "fitted", fit.landmarks5)
    except (ImageReadError, NoFaceError) as e:
        return Outcome(relpath, "failed", reason=str(e))
    except Exception as e:  # keep the batch going; the reason is recorded, not swallowed
        return Outcome(relpath, "failed", reason=f"{type(e).__name__}: {e}")


def _save_vis(rgb, fit, path):
    import cv2

    from face3d.draw import draw_fit

    os.makedirs(os.path.dirname(path), exist_ok=True)
    cv2.imwrite(path, cv2.cvtColor(draw_fit(rgb, fit), cv2.COLOR_RGB2BGR))


def run(relpaths: list[str], prefix: str, save_dir: str, workers: int = 1,
        overwrite: bool = False, max_side: int = 1920, vis: bool = False,
        suffix: str = "", progress: bool = True) -> list[Outcome]:
    """Fit ``relpaths`` (under ``prefix``) into ``save_dir``; returns one Outcome each, in
    order, and writes ``realign_lmk`` and ``failures.txt`` (with ``suffix``)."""
    from tqdm import tqdm

    os.makedirs(save_dir, exist_ok=True)
    config = dict(prefix=prefix, save_dir=save_dir, overwrite=overwrite, max_side=max_side,
                  vis=vis)
    bar = dict(total=len(relpaths), desc="fitting", unit="img", disable=not progress,
               dynamic_ncols=True)
    workers = min(workers, len(relpaths))
    if workers <= 1:
        _init_worker(config)
        outcomes = [_fit_one(r) for r in tqdm(relpaths, **bar)]
    else:
        # spawn: MediaPipe and torch are not fork-safe once initialised in the parent.
        ctx = mp.get_context("spawn")
        # Chunks amortise the inter-process traffic but must not starve a worker on a short
        # list: at least 4 chunks per worker.
        chunksize = max(1, min(8, len(relpaths) // (4 * workers)))
        with ctx.Pool(workers, initializer=_init_worker, initargs=(config,)) as pool:
            outcomes = list(tqdm(pool.imap(_fit_one, relpaths, chunksize=chunksize), **bar))

    ok = [o for o in outcomes if o.status != "failed"]
    labels = dict(zip([o.relpath for o in ok], labels_for([o.relpath for o in ok])))
    with atomic_write(os.path.join(save_dir, "realign_lmk" + suffix)) as f:
        for o in ok:
            pts = " ".join(f"{v:.2f}" for v in o.landmarks5.reshape(-1))
            f.write(f"{o.relpath} {labels[o.relpath]} {pts}\n")
    with atomic_write(os.path.join(save_dir, "failures.txt" + suffix)) as f:
        for o in outcomes:
            if o.status == "failed":
                f.write(f"{o.relpath}\t{o.reason}\n")
    return outcomes


def build_parser() -> argparse.ArgumentParser:
    p = ArgumentParser(
        prog="3ddfa/inference.py", description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--img_list", help="text file of image paths relative to --img_prefix, one "
                   "per line (extra columns, blank lines and # comments are ignored)")
    p.add_argument("--img_prefix", help="folder the list's paths are relative to (default: the "
                   "list's folder)")
    p.add_argument("--img", help="a single image or a folder (searched recursively) instead of "
                   "--img_list")
    p.add_argument("--save_dir", required=True, help="output folder for fits and lists")
    p.add_argument("--workers", type=int, default=1, help="worker processes (default 1)")
    p.add_argument("--shard", help="K/N: fit only the K-th of N interleaved parts of the list "
                   "(for cluster job arrays; K is 1-based)")
    p.add_argument("--overwrite", action="store_true", help="refit photos whose fit file "
                   "exists (default: skip them, so an interrupted run resumes)")
    p.add_argument("--max_side", type=int, default=1920, help="photos larger than this are "
                   "downscaled for detection; fits are in the original pixels (default 1920)")
    p.add_argument("--vis", action="store_true", help="also write vis/<path>.jpg with the "
                   "fitted mesh drawn on each photo")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.workers < 1:
        parser.error("--workers must be >= 1")
    try:
        prefix, relpaths = collect_inputs(args.img_list, args.img_prefix, args.img,
                                          args.save_dir)
        relpaths = shard(relpaths, args.shard)
    except InputListError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if not relpaths:
        print("error: no images to fit (empty list or folder)", file=sys.stderr)
        return 2
    suffix = ""
    if args.shard:
        k, n = args.shard.split("/")
        suffix = f".shard{k}of{n}"
    outcomes = run(relpaths, prefix, args.save_dir, workers=args.workers,
                   overwrite=args.overwrite, max_side=args.max_side, vis=args.vis,
                   suffix=suffix, progress=not args.quiet)
    counts = {s: sum(o.status == s for o in outcomes) for s in ("fitted", "skipped", "failed")}
    print(f"fitted {counts['fitted']}, skipped (already fitted) {counts['skipped']}, "
          f"failed {counts['failed']} of {len(outcomes)} images -> {args.save_dir}")
    if counts["failed"]:
        print(f"failures listed in {os.path.join(args.save_dir, 'failures.txt' + suffix)}")
    return 0 if counts["fitted"] + counts["skipped"] > 0 else 1


if __name__ == "__main__":
    sys.exit(main())
