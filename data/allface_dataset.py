"""``allface``: aligned face crops with their fits, from any registry entry or folder.

Each item is a dict of tensors: ``image`` (3, S, S) in [-1, 1], the fit in crop pixels
(``vertices`` (468, 3), ``rotation`` (3, 3), ``scale``, ``translation`` (3,), ``yaw``,
``pitch``, ``roll``, ``landmarks`` (68, 2)) and ``path`` (relative to the prefix).
"""

from __future__ import annotations

import os
import re
import sys
import time
from collections import Counter

import numpy as np
import torch
from torch.utils.data import Dataset

from data.registry import DATASET_MODES
from face3d.align import align
from face3d.batch_fit import list_path_of, printable, read_list
from face3d.fileio import atomic_write
from face3d.fit import FitFileError, FitFormatError, find_fit, load_fit
from face3d.imageio import IMAGE_EXTENSIONS, list_images, read_image


class DatasetError(RuntimeError):
    """A dataset that cannot be used; the message says which and why."""


def prepare_dataset(entry: dict, name: str, max_size: int | None = None,
                    workers: int = 1, progress: bool = True, start: int = 0,
                    end: int | None = None) -> list[str]:
    """Make sure the entry's photos exist, are listed and fitted; returns the relative paths
    that have a fit, in list order. Only list entries ``[start:end]`` (then at most
    ``max_size`` of them) are considered, so a slice of a big list fits only that slice.

    Photos listed in the fits' ``failures.txt`` are not fitted again on every run, except
    those that changed since (a copy that was incomplete when it failed): they are retried.
    The photos left out are counted per reason on one line, with how to retry them all."""
    if name == "example" and not os.path.isdir(entry["prefix"]):
        from face3d.examples import materialize_examples

        materialize_examples(entry["prefix"])
    if not os.path.isdir(entry["prefix"]):
        raise DatasetError(f"dataset {name!r}: image folder not found: {entry['prefix']}")
    if os.path.exists(entry["file_list"]) and not entry.get("relist"):
        everything = read_list(entry["file_list"])
    else:
        everything = list_images(entry["prefix"], exclude=entry["fits_dir"])
        if not everything:
            raise DatasetError(f"dataset {name!r}: no photos ({', '.join(IMAGE_EXTENSIONS)}) "
                               f"under {entry['prefix']}")
        with atomic_write(entry["file_list"], encoding="utf-8", errors="surrogateescape") as f:
            f.write("".join(r + "\n" for r in everything))
    relpaths = everything[start:end]
    if max_size:
        relpaths = relpaths[:max_size]
    fits_dir, prefix = entry["fits_dir"], entry["prefix"]
    failed_file = os.path.join(fits_dir, "failures.txt")
    _merge_lists(fits_dir)  # of a pass that was killed before it merged
    failures = read_failures(failed_file)
    missing = [r for r in relpaths if not find_fit(r, fits_dir, prefix)]
    retried = [r for r in missing if r in failures and _changed_since(
        os.path.join(prefix, r), failed_file)]
    retried_set = set(retried)  # sets: a million photos must not cost n^2 membership tests
    todo = [r for r in missing if r not in failures or r in retried_set]
    if todo:
        from face3d.batch_fit import labels_for, run

        again = f" ({len(retried)} failed before and changed since)" if retried else ""
        print(f"dataset {name!r}: fitting {len(todo)} photos{again} into {fits_dir}")
        started = time.time()
        run(todo, prefix, fits_dir, workers=workers, progress=progress, suffix=".new",
            labels=dict(zip(everything, labels_for(everything))))
        _merge_lists(fits_dir)
        if os.path.exists(failed_file):  # a photo replaced while this pass ran is newer
            os.utime(failed_file, (started, started))
        failures = read_failures(failed_file)
    usable = [r for r in relpaths if find_fit(r, fits_dir, prefix)]
    usable_set = set(usable)
    excluded = [r for r in relpaths if r not in usable_set]
    if excluded:
        print(exclusion_summary(name, excluded, len(relpaths), failures, failed_file))
    if not usable:
        raise DatasetError(f"dataset {name!r}: none of {len(relpaths)} photos has a fit "
                           f"(see {failed_file})")
    try:  # fits written by an older format would fail later, mid-training: say so now
        load_fit(find_fit(usable[0], fits_dir, prefix))
    except FitFormatError as e:
        raise DatasetError(f"dataset {name!r}: {e} (or delete {fits_dir})") from None
    except FitFileError:  # one damaged fit: that photo fails on its own where it is used
        pass
    return usable


def _changed_since(photo: str, failed_file: str) -> bool:
    """Whether ``photo`` was written (or replaced, renamed: ctime, which ``cp -p`` cannot
    set back) after ``failed_file`` last recorded failures."""
    try:
        st = os.stat(photo)
        return max(st.st_mtime, st.st_ctime) > os.stat(failed_file).st_mtime
    except OSError:
        return False  # still missing: it stays failed


def reason_kind(reason: str) -> str:
    """The kind of a failure, for counting: its text up to the details (``no face found``,
    ``unreadable or truncated image``, ``file not found``, ``OSError`` ...)."""
    return re.split(r" \(|: |, ", reason, maxsplit=1)[0].strip() or "unknown"


def exclusion_summary(name: str, excluded: list[str], total: int, failures: dict[str, str],
                      failed_file: str) -> str:
    kinds = Counter(reason_kind(failures[r]) if r in failures else "no fit file"
                    for r in excluded)
    parts = ", ".join(f"{n} {k}" for k, n in kinds.most_common())
    return (f"dataset {name!r}: {len(excluded)} of {total} photos excluded ({parts}); they are "
            f"listed in {failed_file}, retried when a photo changes; to retry all of them, "
            f"delete that file")


def read_failures(path: str) -> dict[str, str]:
    """relpath -> reason of a ``failures.txt`` (empty when there is none)."""
    if not os.path.exists(path):
        return {}
    with open(path, encoding="utf-8", errors="surrogateescape", newline="\n") as f:
        rows = (ln.rstrip("\n").split("\t", 1) for ln in f if ln.strip())
        return {r[0]: (r[1] if len(r) > 1 else "") for r in rows}


def _read_realign(path: str) -> dict[str, str]:
    if not os.path.exists(path):
        return {}
    with open(path, encoding="utf-8", errors="surrogateescape", newline="\n") as f:
        return {list_path_of(ln.strip()): ln.rstrip("\n") for ln in f if ln.strip()}


def _merge_lists(fits_dir: str):
    """Fold the lists of a fitting pass (``*.new``) into the dataset's own: a photo's newer
    record replaces its older one, and a photo fitted now leaves failures.txt. Both are
    rewritten atomically, then the ``.new`` files removed, so a crash at any point loses
    nothing (the next run merges again)."""
    new_lmk, new_fail = (os.path.join(fits_dir, b + ".new")
                         for b in ("realign_lmk", "failures.txt"))
    if not (os.path.exists(new_lmk) or os.path.exists(new_fail)):
        return
    lmk_path, fail_path = (os.path.join(fits_dir, b) for b in ("realign_lmk", "failures.txt"))
    lmk, fresh = _read_realign(lmk_path), _read_realign(new_lmk)
    lmk.update(fresh)
    failures = read_failures(fail_path)
    failures.update(read_failures(new_fail))
    failures = {r: why for r, why in failures.items() if r not in fresh}
    enc = dict(encoding="utf-8", errors="surrogateescape", newline="\n")
    with atomic_write(lmk_path, **enc) as f:
        f.write("".join(line + "\n" for line in lmk.values()))
    with atomic_write(fail_path, **enc) as f:
        f.write("".join(f"{r}\t{why}\n" for r, why in failures.items()))
    for path in (new_lmk, new_fail):
        if os.path.exists(path):
            os.remove(path)


@DATASET_MODES.register("allface")
class AllFaceDataset(Dataset):
    @staticmethod
    def modify_commandline_options(parser, is_train):
        parser.add_argument("--max_dataset_size", type=int, default=None,
                            help="use at most this many photos of the list (in list order)")
        return parser

    def __init__(self, opt, entry: dict, name: str):
        """One registry entry (``data.registry``); ``data.create_dataset`` builds them from
        --dataset / --dataroot."""
        self.crop_size = opt.crop_size
        self.entry, self.name = entry, name
        self.relpaths = prepare_dataset(entry, name, opt.max_dataset_size,
                                        workers=max(1, opt.nThreads))

    def __len__(self):
        return len(self.relpaths)

    # A photo or fit that became unreadable after the dataset was prepared is reported on
    # one line and replaced by the next item, so a long training run keeps going.
    MAX_SKIPS = 16

    def __getitem__(self, index: int) -> dict:
        for attempt in range(self.MAX_SKIPS):
            rel = self.relpaths[(index + attempt) % len(self.relpaths)]
            try:
                return self.load(rel)
            except (ValueError, FitFileError) as e:
                print(printable(f"warning: dataset {self.name!r}, skipping {rel}: {e}"),
                      file=sys.stderr)
        raise DatasetError(f"dataset {self.name!r}: {self.MAX_SKIPS} unreadable items in a row "
                           f"from index {index}; check {self.entry['prefix']}")

    def load(self, rel: str) -> dict:
        rgb = read_image(os.path.join(self.entry["prefix"], rel))
        fit_path = find_fit(rel, self.entry["fits_dir"], self.entry["prefix"])
        if fit_path is None:
            raise FitFileError(f"fit file of {rel} not found under {self.entry['fits_dir']}")
        fit = load_fit(fit_path)
        crop, f, _ = align(rgb, fit, self.crop_size)
        image = torch.from_numpy(crop).permute(2, 0, 1).float() / 127.5 - 1.0
        return dict(image=image, vertices=torch.from_numpy(f.vertices),
                    rotation=torch.from_numpy(f.rotation), scale=torch.tensor(f.scale),
                    translation=torch.from_numpy(f.translation),
                    yaw=torch.tensor(f.yaw, dtype=torch.float32),
                    pitch=torch.tensor(f.pitch, dtype=torch.float32),
                    roll=torch.tensor(f.roll, dtype=torch.float32),
                    landmarks=torch.from_numpy(np.ascontiguousarray(f.landmarks68)),
                    path=rel)
