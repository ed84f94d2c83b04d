"""Fit every photo of a folder, list file or single image; the engine of ``3ddfa/inference.py``.

Writes, under ``--save_dir``:
* ``<relative/path>.npz`` per photo, extension kept (``a/face.jpg`` -> ``a/face.jpg.npz``;
  see ``face3d.fit``; fits named ``a/face.npz`` by older versions are still read);
* ``realign_lmk``: ``relpath label x1 y1 ... x5 y5`` per fitted photo, in list order; the
  label numbers the person (the photo's folder) among the sorted folders of the whole
  list, before sharding, so every shard of a list gives a person the same label;
* ``failures.txt``: ``relpath<TAB>reason`` per photo that could not be fitted;
* with ``--vis``: ``vis/<relative/path>.jpg`` (``a/face.jpg.jpg``), the mesh drawn on it.
With ``--shard K/N`` the two text files get a ``.shardKofN`` suffix (``cat`` them to merge).

Every file is written atomically: a crash or kill -9 loses at most the photo being fitted,
and a re-run resumes, skipping photos whose fit file is complete and valid and retrying
the failed ones (they have no fit); the temp files of a killed run are removed by the
next. Lists keep non-UTF-8 file names byte for byte. A failure never stops the batch; the
exit status is non-zero only when the arguments are wrong, the lists cannot be written
(full disk ...), or not a single photo could be fitted. An empty shard exits 0.
"""

from __future__ import annotations

import argparse
import errno
import multiprocessing as mp
import os
import re
import sys
from dataclasses import dataclass

import numpy as np

from face3d.cli import ArgumentParser
from face3d.fileio import atomic_write, remove_stale_temps
from face3d.fit import FitFileError, find_fit, fit_path_for, load_fit
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


# C0 controls other than tab, and DEL: no list of paths holds them, a binary file does.
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")
_BOMS = ((b"\xef\xbb\xbf", "utf-8"), (b"\xff\xfe", "utf-16-le"), (b"\xfe\xff", "utf-16-be"))


def decode_list(raw: bytes) -> str:
    """The text of a list file: UTF-8 (BOM or not; bytes that are not UTF-8 become
    surrogates, so a Latin-1 file name still names the same file, as ``os.fsdecode``
    would) or UTF-16 with a BOM. A UTF-16 list of paths always holds NUL bytes (its ASCII
    ``.jpg``, its line breaks); without them the "BOM" is the start of a Latin-1 name
    (``\xfe\xff`` is "þÿ")."""
    for bom, codec in _BOMS:
        if raw.startswith(bom):
            if codec == "utf-8":
                return raw[len(bom):].decode("utf-8", errors="surrogateescape")
            if b"\0" in raw or raw == bom:
                return raw[len(bom):].decode(codec)  # strict: a broken one is refused
    return raw.decode("utf-8", errors="surrogateescape")


def list_lines(text: str) -> list[str]:
    """Lines ending in LF, CRLF or (old Mac) CR alone. Not ``str.splitlines``: it also
    splits at characters a file name may hold (U+2028, U+0085 ...)."""
    if "\n" not in text:
        return text.split("\r")
    return [ln[:-1] if ln.endswith("\r") else ln for ln in text.split("\n")]


def read_list(list_path: str) -> list[str]:
    """Relative paths from a list file: one per line (see :func:`list_path_of`: extra numeric
    columns, as in ``realign_lmk``, are dropped and spaces inside paths are kept), blank
    lines and ``#`` comments ignored, LF, CRLF or CR line endings, UTF-8 (non-UTF-8 bytes
    kept as ``os.fsdecode`` keeps them) or UTF-16 with a BOM.

    Raises ``InputListError`` (a ValueError) with one line for a missing list, a folder,
    an unreadable file or a binary one (control characters: not a list of paths)."""
    if os.path.isdir(list_path):
        raise InputListError(f"image list is a folder, not a list file: {list_path} (to fit "
                             f"every photo under it, use --img {list_path})")
    if not os.path.exists(list_path):
        raise InputListError(f"image list not found: {list_path}")
    try:
        with open(list_path, "rb") as f:
            text = decode_list(f.read())
    except OSError as e:
        raise InputListError(f"image list unreadable ({e.strerror or e}): {list_path}") from None
    except UnicodeDecodeError as e:
        raise InputListError(f"image list has a UTF-16 mark but is not UTF-16 ({e.reason} at "
                             f"byte {e.start}): {list_path}") from None
    out = []
    for n, line in enumerate(list_lines(text), 1):
        line = line.strip(" \t\f\v")
        if not line or line.startswith("#"):
            continue
        if _CONTROL.search(line):
            raise InputListError(f"image list line {n} holds control characters: not a text "
                                 f"list of paths (a binary file?): {list_path}")
        out.append(list_path_of(line))
    return out


def printable(text: str) -> str:
    """``text`` safe to print on any terminal: non-UTF-8 bytes of file names as \\xNN."""
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


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
    rel = list_images(img, exclude=save_dir)
    unlistable = [r for r in rel if any(c in r for c in "\n\r\t")]
    if unlistable:  # realign_lmk and failures.txt are one photo per line, tab-separated
        print(f"warning: skipping {len(unlistable)} photos whose names hold a line break or "
              f"tab (rename them), e.g. {printable(repr(unlistable[0]))}", file=sys.stderr)
        skip = set(unlistable)
        rel = [r for r in rel if r not in skip]
    return img, rel


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


def available_cpus() -> int:
    """CPU cores this process may run on (its affinity mask: a cluster job's share, not the
    machine's count)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def cap_workers(workers: int, jobs: int) -> int:
    """``workers`` limited to the available cores (more processes than cores only contend:
    64 workers on 2 cores ran 15x slower) and to the number of photos; says so when the
    request was cut by the cores."""
    cpus = available_cpus()
    if workers > cpus:
        print(f"note: --workers {workers} capped at {cpus}, the CPU cores available to this "
              f"process", file=sys.stderr)
    return max(1, min(workers, cpus, jobs))


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
    if not cfg["overwrite"]:
        existing = find_fit(relpath, cfg["save_dir"], cfg["prefix"])
        if existing:
            try:
                return Outcome(relpath, "skipped", load_fit(existing).landmarks5)
            except FitFileError:
                pass  # a damaged or invalid earlier fit: fit again
    try:
        rgb = read_image(os.path.join(cfg["prefix"], relpath))
        fit = _FITTER.fit(rgb)
        fit.save(out_path)
        if cfg["vis"]:
            vis_path = fit_path_for(relpath, os.path.join(cfg["save_dir"], "vis"))
            _save_vis(rgb, fit, os.path.splitext(vis_path)[0] + ".jpg")
        return Outcome(relpath, "fitted", fit.landmarks5)
    except (ImageReadError, NoFaceError) as e:
        return Outcome(relpath, "failed", reason=_one_line(str(e)))
    except Exception as e:  # keep the batch going; the reason is recorded, not swallowed
        return Outcome(relpath, "failed", reason=_one_line(f"{type(e).__name__}: {e}"))


def _one_line(text: str) -> str:
    """A reason fit for ``failures.txt``'s one-line, tab-separated records."""
    return " ".join(text.split())


def _save_vis(rgb, fit, path):
    import cv2

    from face3d.draw import draw_fit

    with atomic_write(path, "wb") as f:
        _, data = cv2.imencode(".jpg", cv2.cvtColor(draw_fit(rgb, fit), cv2.COLOR_RGB2BGR))
        f.write(data.tobytes())


def write_lists(save_dir: str, outcomes: list[Outcome], labels: dict[str, int],
                suffix: str = "") -> None:
    """``realign_lmk`` and ``failures.txt`` (+ ``suffix``) of ``outcomes``, each atomically
    (a full disk leaves the previous file as it was), file names byte for byte."""
    enc = dict(encoding="utf-8", errors="surrogateescape", newline="\n")
    with atomic_write(os.path.join(save_dir, "realign_lmk" + suffix), **enc) as f:
        for o in outcomes:
            if o.status != "failed":
                pts = " ".join(f"{v:.2f}" for v in o.landmarks5.reshape(-1))
                f.write(f"{o.relpath} {labels[o.relpath]} {pts}\n")
    with atomic_write(os.path.join(save_dir, "failures.txt" + suffix), **enc) as f:
        for o in outcomes:
            if o.status == "failed":
                f.write(f"{o.relpath}\t{o.reason}\n")


def run(relpaths: list[str], prefix: str, save_dir: str, workers: int = 1,
        overwrite: bool = False, max_side: int = 1920, vis: bool = False,
        suffix: str = "", progress: bool = True,
        labels: dict[str, int] | None = None) -> list[Outcome]:
    """Fit ``relpaths`` (under ``prefix``) into ``save_dir``; returns one Outcome each, in
    order, and writes ``realign_lmk`` and ``failures.txt`` (with ``suffix``).

    ``labels``: relpath -> identity label, computed by the caller over the whole list (so
    that shards and partial runs agree); default :func:`labels_for` of ``relpaths``.
    Raises OSError when a list cannot be written (the previous one is left intact)."""
    from tqdm import tqdm

    os.makedirs(save_dir, exist_ok=True)
    remove_stale_temps(save_dir)  # of a run killed mid-write
    if labels is None:
        labels = dict(zip(relpaths, labels_for(relpaths)))
    config = dict(prefix=prefix, save_dir=save_dir, overwrite=overwrite, max_side=max_side,
                  vis=vis)
    bar = dict(total=len(relpaths), desc="fitting", unit="img", disable=not progress,
               dynamic_ncols=True)
    workers = cap_workers(workers, len(relpaths))
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
    write_lists(save_dir, outcomes, labels, suffix)
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
    if args.max_side < 1:
        parser.error(f"--max_side must be a positive number of pixels, got {args.max_side}")
    if os.path.exists(args.save_dir) and not os.path.isdir(args.save_dir):
        print(f"error: --save_dir is a file, not a folder: {args.save_dir}", file=sys.stderr)
        return 2
    try:
        prefix, everything = collect_inputs(args.img_list, args.img_prefix, args.img,
                                            args.save_dir)
        relpaths = shard(everything, args.shard)
    except InputListError as e:
        print(f"error: {printable(str(e))}", file=sys.stderr)
        return 2
    if not everything:
        print("error: no images to fit (empty list or folder)", file=sys.stderr)
        return 2
    suffix = ""
    if args.shard:
        k, n = args.shard.split("/")
        suffix = f".shard{int(k)}of{int(n)}"
    labels = dict(zip(everything, labels_for(everything)))
    try:
        if not relpaths:  # normal in a job array with more tasks than photos
            os.makedirs(args.save_dir, exist_ok=True)
            write_lists(args.save_dir, [], labels, suffix)
            print(f"shard {args.shard} of a list of {len(everything)} photos is empty: "
                  f"nothing to fit (empty lists written)")
            return 0
        outcomes = run(relpaths, prefix, args.save_dir, workers=args.workers,
                       overwrite=args.overwrite, max_side=args.max_side, vis=args.vis,
                       suffix=suffix, progress=not args.quiet, labels=labels)
    except OSError as e:  # a full disk, a read-only folder ...: earlier lists stay intact
        where = e.filename or args.save_dir
        hint = "free space and re-run" if e.errno == errno.ENOSPC else "re-run"
        print(f"error: could not write to {printable(str(where))}: {e.strerror or e} (the "
              f"fits written so far are kept; {hint} to resume)", file=sys.stderr)
        return 1
    counts = {s: sum(o.status == s for o in outcomes) for s in ("fitted", "skipped", "failed")}
    print(f"fitted {counts['fitted']}, skipped (already fitted) {counts['skipped']}, "
          f"failed {counts['failed']} of {len(outcomes)} images -> {args.save_dir}")
    if counts["failed"]:
        print(f"failures listed in {os.path.join(args.save_dir, 'failures.txt' + suffix)}")
    return 0 if counts["fitted"] + counts["skipped"] > 0 else 1


if __name__ == "__main__":
    sys.exit(main())
