"""``allface``: aligned face crops with their fits, from any registry entry or folder.

Each item is a dict of tensors: ``image`` (3, S, S) in [-1, 1], the fit in crop pixels
(``vertices`` (468, 3), ``rotation`` (3, 3), ``scale``, ``translation`` (3,), ``yaw``,
``pitch``, ``roll``, ``landmarks`` (68, 2)) and ``path`` (relative to the prefix).
"""

from __future__ import annotations

import os
import sys

import numpy as np
import torch
from torch.utils.data import Dataset

from data.registry import DATASET_MODES
from face3d.align import align
from face3d.batch_fit import read_list
from face3d.fileio import atomic_write
from face3d.fit import FitFileError, fit_path_for, load_fit
from face3d.imageio import IMAGE_EXTENSIONS, list_images, read_image


class DatasetError(RuntimeError):
    """A dataset that cannot be used; the message says which and why."""



def prepare_dataset(entry: dict, name: str, max_size: int | None = None,
                    workers: int = 1, progress: bool = True, start: int = 0,
                    end: int | None = None) -> list[str]:
    """Make sure the entry's photos exist, are listed and fitted; returns the relative paths
    that have a fit, in list order. Only list entries ``[start:end]`` (then at most
    ``max_size`` of them) are considered, so a slice of a big list fits only that slice."""
    if name == "example" and not os.path.isdir(entry["prefix"]):
        from face3d.examples import materialize_examples

        materialize_examples(entry["prefix"])
    if not os.path.isdir(entry["prefix"]):
        raise DatasetError(f"dataset {name!r}: image folder not found: {entry['prefix']}")
    if os.path.exists(entry["file_list"]) and not entry.get("relist"):
        relpaths = read_list(entry["file_list"])
    else:
        relpaths = list_images(entry["prefix"], exclude=entry["fits_dir"])
        if not relpaths:
            raise DatasetError(f"dataset {name!r}: no photos ({', '.join(IMAGE_EXTENSIONS)}) "
                               f"under {entry['prefix']}")
        with atomic_write(entry["file_list"]) as f:
            f.write("".join(r + "\n" for r in relpaths))
    relpaths = relpaths[start:end]
    if max_size:
        relpaths = relpaths[:max_size]
    missing = [r for r in relpaths if not os.path.exists(fit_path_for(r, entry["fits_dir"]))]
    failed_file = os.path.join(entry["fits_dir"], "failures.txt")
    known_failures = set()
    if os.path.exists(failed_file):
        with open(failed_file) as f:
            known_failures = {line.split("\t")[0] for line in f}
    missing = [r for r in missing if r not in known_failures]
    if missing:
        from face3d.batch_fit import run

        print(f"dataset {name!r}: fitting {len(missing)} photos into {entry['fits_dir']}")
        run(missing, entry["prefix"], entry["fits_dir"], workers=workers, progress=progress,
            suffix=".new")
        _merge_lists(entry["fits_dir"])
    usable = [r for r in relpaths if os.path.exists(fit_path_for(r, entry["fits_dir"]))]
    if not usable:
        raise DatasetError(f"dataset {name!r}: none of {len(relpaths)} photos has a fit "
                           f"(see {failed_file})")
    try:  # fits written by an older format would fail later, mid-training: say so now
        load_fit(fit_path_for(usable[0], entry["fits_dir"]))
    except FitFileError as e:
        raise DatasetError(f"dataset {name!r}: {e} (or delete {entry['fits_dir']})") from None
    return usable


def _merge_lists(fits_dir: str):
    """Append the lists of a fitting pass (``*.new``) to the dataset's own."""
    for base in ("realign_lmk", "failures.txt"):
        new = os.path.join(fits_dir, base + ".new")
        if os.path.exists(new):
            with open(new) as src, open(os.path.join(fits_dir, base), "a") as dst:
                dst.write(src.read())
            os.remove(new)


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
                print(f"warning: dataset {self.name!r}, skipping {rel}: {e}", file=sys.stderr)
        raise DatasetError(f"dataset {self.name!r}: {self.MAX_SKIPS} unreadable items in a row "
                           f"from index {index}; check {self.entry['prefix']}")

    def load(self, rel: str) -> dict:
        rgb = read_image(os.path.join(self.entry["prefix"], rel))
        fit = load_fit(fit_path_for(rel, self.entry["fits_dir"]))
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
