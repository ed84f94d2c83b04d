"""The fit file: one ``.npz`` per photo, the contract between fitting and everything after it.

Load one with :func:`load_fit`; every array is in the photo's pixel frame (see the
conventions in ``face3d/__init__.py``).
"""

from __future__ import annotations

import dataclasses
import os

import numpy as np

from face3d.fileio import atomic_write

# 2: MediaPipe depth scaled by face3d.fitter.DEPTH_SCALE (1.5); fits of format 1 have the
# raw depth and no longer match the canonical mesh.
FORMAT_VERSION = 2


class FitFileError(ValueError):
    """A fit file that is missing, unreadable or lacks required fields."""


@dataclasses.dataclass
class Fit:
    """One fitted face.

    vertices:    (468, 3) mesh vertices, x/y in image pixels, z depth in pixels (away > 0).
    iris:        (10, 3) iris points (MediaPipe refine_landmarks), same frame.
    landmarks68: (68, 2) iBUG 68 landmarks, image pixels.
    landmarks5:  (5, 2) eye centres, nose tip, mouth corners (image-left first).
    rotation, scale, translation: the pose, ``vertices ~= scale * canonical @ rotation.T +
                 translation`` where ``canonical`` is ``load_topology()['canonical']``.
    yaw, pitch, roll: the pose in degrees (signs documented in ``face3d.pose``).
    image_size:  (height, width) of the photo the fit belongs to.
    num_faces:   faces found in the photo; this fit is the largest one.
    residual:    RMS distance (pixels) between the vertices and the posed canonical mesh,
                 relative to ``scale``: large values flag implausible meshes.
    """

    vertices: np.ndarray
    iris: np.ndarray
    landmarks68: np.ndarray
    landmarks5: np.ndarray
    rotation: np.ndarray
    scale: float
    translation: np.ndarray
    yaw: float
    pitch: float
    roll: float
    image_size: tuple[int, int]
    num_faces: int = 1
    residual: float = 0.0
    fitter: str = "mediapipe-facemesh"
    fitter_version: str = ""
    format_version: int = FORMAT_VERSION

    def to_arrays(self) -> dict[str, np.ndarray]:
        out = {}
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            # Python floats are stored as float64 so that save + load gives them back exactly.
            out[f.name] = np.asarray(v, dtype=np.float64) if isinstance(v, float) else np.asarray(v)
        return out

    def save(self, path: str | os.PathLike) -> None:
        """Write atomically (temp file + rename) so an interrupted run never leaves a
        half-written fit that a resumed run would then skip."""
        with atomic_write(path, "wb") as f:
            np.savez(f, **self.to_arrays())


_FLOATS = ("scale", "yaw", "pitch", "roll", "residual")
_INTS = ("num_faces", "format_version")
_STRS = ("fitter", "fitter_version")


def load_fit(path: str | os.PathLike) -> Fit:
    """Load a fit file written by ``3ddfa/inference.py`` (raises ``FitFileError``)."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FitFileError(f"fit file not found: {path}")
    try:
        with np.load(path, allow_pickle=False) as z:
            data = {k: z[k] for k in z.files}
    except Exception as e:  # BadZipFile, zlib.error, EOFError, a bare .npy ...: all "unreadable"
        raise FitFileError(f"unreadable fit file ({type(e).__name__}: {e}): {path}") from None
    names = [f.name for f in dataclasses.fields(Fit)]
    missing = [n for n in names if n not in data]
    if missing:
        raise FitFileError(f"fit file lacks {', '.join(missing)}: {path}")
    kw = {}
    for n in names:
        v = data[n]
        try:
            if n in _FLOATS:
                kw[n] = float(v)
            elif n in _INTS:
                kw[n] = int(v)
            elif n in _STRS:
                kw[n] = str(v)
            elif n == "image_size":
                kw[n] = (int(v[0]), int(v[1]))
            else:
                kw[n] = v
        except (TypeError, ValueError, IndexError) as e:
            raise FitFileError(f"fit file field {n!r} is malformed ({e}): {path}") from None
    if kw["format_version"] != FORMAT_VERSION:
        raise FitFileError(f"fit file has format {kw['format_version']}, this version reads "
                           f"{FORMAT_VERSION}; refit (3ddfa/inference.py --overwrite): {path}")
    return Fit(**kw)


def fit_path_for(image_relpath: str, save_dir: str) -> str:
    """Where the fit of ``image_relpath`` lives: the same relative path under ``save_dir``
    with the extension replaced by ``.npz``. An absolute path or ``..`` components never
    lead outside ``save_dir``: the root is dropped and ``..`` becomes ``__``."""
    rel = os.path.splitdrive(os.path.splitext(image_relpath)[0] + ".npz")[1]
    if os.altsep:
        rel = rel.replace(os.altsep, os.sep)
    parts = ["__" if p == ".." else p for p in rel.split(os.sep) if p not in ("", ".")]
    return os.path.join(save_dir, *parts)
