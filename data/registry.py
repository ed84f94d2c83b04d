"""The dataset registry: edit this file to add your own face collections.

Each entry (``DATASETS.register(NAME, dict(...))``), as in the original Rotate-and-Render:
  prefix        folder the image paths are relative to;
  file_list     text file, one relative image path per line (built from the folder when it
                does not exist);
  landmark_list ``realign_lmk`` written by the fitting step (5 alignment points per image);
  fits_dir      where ``3ddfa/inference.py`` wrote (or will write) the fit files;
  folder_level  how many trailing path components name an output (1: file name, 2:
                identity/file), so results of different identities do not collide;
  relist        (optional) list the folder anew each time instead of trusting file_list.
Relative paths are relative to the repository root. Images without a fit are fitted on
first use (``prepare_dataset``), so a new folder works out of the box.

``--dataset`` takes one name or several, comma-separated (``example,lfw``): their photos
are concatenated. ``--dataroot DIR`` uses an ad-hoc folder of photos instead (fits in
``DIR/fits``).
"""

from __future__ import annotations

import os

from util.registry import Registry

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

DATASETS = Registry("dataset", flag="--dataset",
                    hint="or add yours to data/registry.py, or use --dataroot DIR")
# Dataset classes (--dataset_mode); a class registers itself with @DATASET_MODES.register.
DATASET_MODES = Registry("dataset mode", flag="--dataset_mode")

# The public-domain portraits shipped by scikit-image and matplotlib (face3d.examples).
DATASETS.register("example", dict(
    prefix="datasets/example/images", file_list="datasets/example/file_list.txt",
    landmark_list="datasets/example/fits/realign_lmk", fits_dir="datasets/example/fits",
    folder_level=1))
# Labeled Faces in the Wild, as laid out in ../shared/data/lfw (Person/Person_NNNN.jpg).
DATASETS.register("lfw", dict(
    prefix="../shared/data/lfw", file_list="datasets/lfw/file_list.txt",
    landmark_list="datasets/lfw/fits/realign_lmk", fits_dir="datasets/lfw/fits",
    folder_level=2))
# The original release's example set, with its own 3DDFA fits next to it (ours go here).
DATASETS.register("rr_example", dict(
    prefix="../shared/data/rr_example/Images", file_list="../shared/data/rr_example/file_list.txt",
    landmark_list="datasets/rr_example/fits/realign_lmk", fits_dir="datasets/rr_example/fits",
    folder_level=1))


def resolve(entry: dict) -> dict:
    """The entry with its paths made absolute (relative to the repository root)."""
    out = dict(entry)
    for k in ("prefix", "file_list", "landmark_list", "fits_dir"):
        if not os.path.isabs(out[k]):
            out[k] = os.path.normpath(os.path.join(REPO, out[k]))
    return out


def dataset_names(spec: str) -> list[str]:
    """``--dataset`` value -> registry names: comma-separated, blanks and repeats dropped."""
    names = []
    for n in spec.split(","):
        n = n.strip()
        if n and n not in names:
            names.append(n)
    if not names:
        raise ValueError(f"--dataset {spec!r} names no dataset; choose from: "
                         f"{', '.join(DATASETS)}")
    return names


def get_dataset(name: str) -> dict:
    return resolve(DATASETS.get(name))


def adhoc_dataset(dataroot: str) -> dict:
    """An entry for a plain folder of photos (searched recursively)."""
    root = os.path.abspath(dataroot)
    return dict(prefix=root, file_list=os.path.join(root, "fits", "file_list.txt"),
                landmark_list=os.path.join(root, "fits", "realign_lmk"),
                fits_dir=os.path.join(root, "fits"), folder_level=1,
                relist=True)  # list the folder every time: photos may have been added
