"""Input photos of test.py, evaluate.py, training's quick evaluation, the contact sheet and
the benchmarks: one way to find them (``find_photos``) and one way to read a photo with its
fit (``load_photo``).

A photo is a ``Photo(rel, path, fit_path)``: its path relative to where it was found (it
names the outputs), the image file, and its fit file or None (then it is fitted with
MediaPipe when it is read).
"""

from __future__ import annotations

import os
from typing import NamedTuple

import numpy as np

from face3d.fit import find_fit, load_fit
from face3d.imageio import list_images, read_image


class Photo(NamedTuple):
    rel: str
    path: str
    fit_path: str | None


def require_photos(items: list) -> list:
    """``items``, or a ValueError when there are none (the CLIs refuse to run on nothing)."""
    if not items:
        raise ValueError("no input photos (empty --img folder or dataset range)")
    return items


def sample(items: list, n: int, seed: int) -> list:
    """``n`` items drawn without replacement with ``seed`` (all of them when n is 0 or
    larger than the list), in drawn order."""
    if not n or n >= len(items):
        return list(items)
    idx = np.random.default_rng(seed).choice(len(items), n, replace=False)
    return [items[i] for i in idx]


def _unique_name(rel: str, taken: set[str]) -> str:
    """``rel``, or ``stem~2.ext``, ``stem~3.ext`` ... when a photo already has its name up to
    the extension (case ignored), so no two photos of a run share an output name, however
    the outputs are named (``x/face.jpg``, ``y/face.jpg``, ``face.png`` ...)."""
    stem, ext = os.path.splitext(rel)
    name, n = rel, 1
    while name and os.path.splitext(name)[0].lower() in taken:
        n += 1
        name = f"{stem}~{n}{ext}"
    taken.add(os.path.splitext(name)[0].lower())
    return name


def photos_in(paths) -> list[Photo]:
    """The photos named on a command line: files as given (named by their base name) and
    folders searched recursively (named relative to the folder; symlink loops followed
    once). A missing or odd file is kept, so that reading it reports it per photo instead
    of stopping the run.

    Each photo file is listed once, however often it is reached (given twice, inside a
    given folder too, through two symlinks): the first path wins. ``rel`` is unique even
    without its extension: a later photo whose name is taken becomes ``stem~2.ext``."""
    items, seen, taken = [], set(), set()

    def add(rel: str, path: str):
        real = os.path.realpath(path)
        if real in seen:
            return
        seen.add(real)
        items.append(Photo(_unique_name(rel, taken), path, None))

    for given in map(str, paths):
        if os.path.isdir(given):
            for rel in list_images(given):
                add(rel, os.path.join(given, rel))
        else:
            add(os.path.basename(given), given)
    return items


def dataset_photos(dataset: str | None = None, dataroot: str | None = None, start: int = 0,
                   end: int | None = None, fit_first: bool = False,
                   workers: int = 1) -> list[Photo]:
    """The photos of a registry dataset (``--dataset``) or of a folder (``--dataroot``),
    list entries ``[start:end]``.

    fit_first=True (test.py): the dataset is prepared as for training -- listed, and every
    photo without a fit file is fitted first (``workers`` processes); photos that could not
    be fitted are left out, in list order. fit_first=False (evaluate.py, which samples a few
    photos of a big dataset): no fitting pass; the list is sorted (so a seeded sample does
    not depend on the list's order) and photos without a fit file are fitted when read.
    """
    from data.allface_dataset import prepare_dataset
    from data.registry import adhoc_dataset, get_dataset

    name = dataroot or dataset
    entry = adhoc_dataset(dataroot) if dataroot else get_dataset(dataset)
    if fit_first:
        rel = prepare_dataset(entry, name, workers=max(1, workers), start=start, end=end)
        return [Photo(r, os.path.join(entry["prefix"], r),
                      find_fit(r, entry["fits_dir"], entry["prefix"])) for r in rel]
    from face3d.batch_fit import read_list

    if name == "example":
        prepare_dataset(entry, name, progress=False)  # writes the two photos on first use
    if not os.path.isdir(entry["prefix"]):
        raise ValueError(f"dataset {name!r}: image folder not found: {entry['prefix']}")
    if os.path.exists(entry["file_list"]):
        rel = read_list(entry["file_list"])
    else:
        rel = list_images(entry["prefix"], exclude=entry["fits_dir"])
    items = []
    for r in sorted(set(rel))[start:end]:
        items.append(Photo(r, os.path.join(entry["prefix"], r),
                           find_fit(r, entry["fits_dir"], entry["prefix"])))
    return items


def find_photos(img=None, dataset: str | None = None, dataroot: str | None = None,
                start: int = 0, end: int | None = None, fit_first: bool = False,
                workers: int = 1) -> list[Photo]:
    """The photos of ``img`` (files and folders, fitted when read) when given, else of the
    dataset (see ``dataset_photos``). A ValueError when there is none."""
    if img:
        return require_photos(photos_in(img))
    return require_photos(dataset_photos(dataset, dataroot, start, end, fit_first, workers))


def photos_of(opt, fit_first: bool = False) -> list[Photo]:
    """``find_photos`` for a run's options (``--img``, ``--dataset``, ``--dataroot``,
    ``--list_start``, ``--list_end``, ``--nThreads``)."""
    return find_photos(opt.img, opt.dataset, opt.dataroot, opt.list_start, opt.list_end,
                       fit_first, getattr(opt, "nThreads", 1))


class LazyFitter:
    """One MediaPipe fitter, built on first use (most runs read fit files and never need
    one), shared by everything that fits in a run."""

    def __init__(self, fitter=None):
        self._fitter = fitter

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


def load_photo(photo: Photo, fitter: LazyFitter):
    """(rgb, fit): the fit from its file when there is one, else MediaPipe's. Raises
    ImageReadError, FitFileError or NoFaceError (all ValueErrors) for a photo that cannot
    be used."""
    rgb = read_image(photo.path)
    fit = load_fit(photo.fit_path) if photo.fit_path else fitter.fit(rgb)
    return rgb, fit
