"""The fit file: one ``.npz`` per photo, the contract between fitting and everything after it.

Load one with :func:`load_fit`; every array is in the photo's pixel frame (see the
conventions in ``face3d/__init__.py``).
"""

from __future__ import annotations

import dataclasses
import os
import zipfile

import numpy as np

from face3d.fileio import atomic_write
from face3d.topology import NUM_VERTICES

# 2: MediaPipe depth scaled by face3d.fitter.DEPTH_SCALE (1.5); fits of format 1 have the
# raw depth and no longer match the canonical mesh.
FORMAT_VERSION = 2


class FitFileError(ValueError):
    """A fit file that is missing, unreadable or lacks required fields."""


class FitFormatError(FitFileError):
    """A fit file written in an older format: every fit of that fitting run needs a refit,
    so a dataset reports it once, up front, rather than per photo."""


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
# name -> shape of the float arrays; each must be float32 or float64 and finite.
_ARRAYS = {"vertices": (NUM_VERTICES, 3), "iris": (10, 3), "landmarks68": (68, 2),
           "landmarks5": (5, 2), "rotation": (3, 3), "translation": (3,)}
# A fit file is about 20 kB: anything far larger is not one of ours (and a zip member
# that claims gigabytes would otherwise be allocated before it is read).
MAX_MEMBER_BYTES = 1 << 20


def _one_line(e: BaseException) -> str:
    text = " ".join(str(e).split()) or type(e).__name__
    return text if len(text) <= 160 else text[:157] + "..."


def _read_arrays(path: str) -> dict[str, np.ndarray]:
    """Every array of the .npz at ``path``; FitFileError for anything that is not a small
    zip of plain (non-pickled) arrays."""
    try:
        with open(path, "rb") as f:
            magic = f.read(4)
    except OSError as e:  # permissions, a folder ...
        raise FitFileError(f"unreadable fit file ({_one_line(e)}): {path}") from None
    if magic not in (b"PK\x03\x04", b"PK\x05\x06"):  # np.load would try it as a pickle
        raise FitFileError(f"not a fit file (not an .npz archive): {path}")
    try:
        with np.load(path, allow_pickle=False) as z:
            big = [i.filename for i in z.zip.infolist() if i.file_size > MAX_MEMBER_BYTES]
            if big:
                raise FitFileError(f"not a fit file (member {big[0]!r} larger than "
                                   f"{MAX_MEMBER_BYTES} bytes): {path}")
            data = {k: z[k] for k in z.files}
        odd = [k for k, v in data.items() if not isinstance(v, np.ndarray)]
        if odd:  # NpzFile gives a member that is not .npy as raw bytes
            raise FitFileError(f"not a fit file (member {odd[0]!r} is not a numpy array): "
                               f"{path}")
        return data
    except FitFileError:
        raise
    except zipfile.BadZipFile:
        raise FitFileError(f"not a fit file (not an .npz archive): {path}") from None
    except ValueError as e:
        if "pickle" in str(e).lower():  # refused, never executed
            raise FitFileError(f"fit file holds pickled objects, refused for safety: "
                               f"{path}") from None
        raise FitFileError(f"unreadable fit file ({_one_line(e)}): {path}") from None
    except Exception as e:  # zlib.error, EOFError, a CRC mismatch, MemoryError ...
        raise FitFileError(f"unreadable fit file ({type(e).__name__}: {_one_line(e)}): "
                           f"{path}") from None


class _BadField(Exception):
    """What is wrong with one field (load_fit adds the field's and the file's names)."""


def _field(name: str, v: np.ndarray):
    """The checked value of one field; ``_BadField`` says what is wrong with it."""
    kind = v.dtype.kind
    if name in _ARRAYS:
        if v.shape != _ARRAYS[name]:
            raise _BadField(f"has shape {v.shape}, expected {_ARRAYS[name]}")
        if v.dtype not in (np.float32, np.float64):
            raise _BadField(f"has dtype {v.dtype}, expected float32 or float64")
        if not np.isfinite(v).all():
            raise _BadField(f"has {int((~np.isfinite(v)).sum())} non-finite values (NaN or inf)")
        return v
    if name == "image_size":
        if v.shape != (2,) or kind not in "iu":
            raise _BadField(f"is {v.dtype} of shape {v.shape}, expected 2 integers (height, width)")
        if (v < 1).any() or (v > 1_000_000).any():
            raise _BadField(f"is {tuple(int(x) for x in v)}, not a plausible (height, width)")
        return int(v[0]), int(v[1])
    if v.shape != ():
        raise _BadField(f"has shape {v.shape}, expected a single value")
    if name in _FLOATS:
        if kind not in "fiu":
            raise _BadField(f"has dtype {v.dtype}, expected a number")
        x = float(v)
        if not np.isfinite(x):
            raise _BadField(f"is {x}, expected a finite number")
        return x
    if name in _INTS:
        if kind not in "iu":
            raise _BadField(f"has dtype {v.dtype}, expected an integer")
        return int(v)
    if kind != "U":
        raise _BadField(f"has dtype {v.dtype}, expected text")
    return str(v)


def load_fit(path: str | os.PathLike) -> Fit:
    """Load and check a fit file written by ``3ddfa/inference.py``.

    Every field is checked: present, of the documented shape (468 vertices ...), of a
    float (or integer, text) dtype, finite; ``scale`` positive, ``rotation`` a rotation.

    Raises ``FitFileError`` -- a ``ValueError`` -- for every problem with the file (missing,
    unreadable, not an .npz, pickled content (refused, never run), a wrong or malformed
    field, an older format), with a one-line message naming the file and the problem.
    Nothing else escapes for bad content, so callers handle a photo's fit with
    ``except ValueError`` (or ``except (ValueError, OSError)``) and go on with the next.
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FitFileError(f"fit file not found: {path}")
    data = _read_arrays(path)
    names = [f.name for f in dataclasses.fields(Fit)]
    missing = [n for n in names if n not in data]
    if missing:
        raise FitFileError(f"fit file lacks {', '.join(missing)}: {path}")
    try:
        version = _field("format_version", data["format_version"])
    except _BadField as e:
        raise FitFileError(f"fit file field 'format_version' {e}: {path}") from None
    if version != FORMAT_VERSION:  # first: an old file gets "refit", not a field error
        raise FitFormatError(f"fit file has format {version}, this version reads "
                           f"{FORMAT_VERSION}; refit (3ddfa/inference.py --overwrite): {path}")
    try:
        return Fit(**_checked(data))
    except _BadField as e:
        raise FitFileError(f"fit file {e}: {path}") from None


def _checked(values: dict) -> dict:
    """Every field of a fit (name -> value) checked: the ``Fit`` keyword arguments, or
    ``_BadField`` naming the first field that is wrong."""
    kw = {}
    for n in (f.name for f in dataclasses.fields(Fit)):
        try:
            kw[n] = _field(n, np.asarray(values[n]))
        except _BadField as e:
            raise _BadField(f"field {n!r} {e}") from None
    if kw["scale"] <= 0:
        raise _BadField(f"field 'scale' is {kw['scale']}, expected > 0")
    if kw["num_faces"] < 1:
        raise _BadField(f"field 'num_faces' is {kw['num_faces']}, expected >= 1")
    R = kw["rotation"].astype(np.float64)
    if np.abs(R @ R.T - np.eye(3)).max() > 1e-3 or np.linalg.det(R) < 0:
        raise _BadField("field 'rotation' is not a rotation matrix")
    return kw


def fit_problem(fit: Fit) -> str:
    """Why a ``Fit`` (from a file, the fitter, or made by hand) cannot be used, or '': the
    checks ``load_fit`` makes, for fits that never were a file."""
    try:
        _checked({f.name: getattr(fit, f.name) for f in dataclasses.fields(Fit)})
    except _BadField as e:
        return f"fit {e}"
    return ""


def _inside(rel: str, save_dir: str) -> str:
    """``rel`` under ``save_dir``: an absolute path or ``..`` components never lead outside
    it (the root is dropped and ``..`` becomes ``__``)."""
    rel = os.path.splitdrive(rel)[1]
    if os.altsep:
        rel = rel.replace(os.altsep, os.sep)
    parts = ["__" if p == ".." else p for p in rel.split(os.sep) if p not in ("", ".")]
    return os.path.join(save_dir, *parts)


def fit_path_for(image_relpath: str, save_dir: str) -> str:
    """Where the fit of ``image_relpath`` is written: the same relative path under
    ``save_dir`` with ``.npz`` appended, extension kept (``a/face.jpg`` -> ``a/face.jpg.npz``),
    so ``face.jpg`` and ``face.png`` of one folder never share a fit. Read fits with
    :func:`find_fit`, which also finds those of older versions (``a/face.npz``)."""
    return _inside(image_relpath + ".npz", save_dir)


def legacy_fit_path(image_relpath: str, save_dir: str) -> str:
    """Where versions before the extension was kept wrote the fit (``a/face.npz``)."""
    return _inside(os.path.splitext(image_relpath)[0] + ".npz", save_dir)


_STEMS: dict[str, tuple[int, dict[str, int]]] = {}


def _photos_with_stem(folder: str, stem: str) -> int:
    """How many image files of ``folder`` are called ``stem.<ext>`` (the listing is cached
    while the folder is unchanged: one listdir per folder, not per photo)."""
    from face3d.imageio import IMAGE_EXTENSIONS

    try:
        mtime = os.stat(folder).st_mtime_ns
    except OSError:
        return 0
    cached = _STEMS.get(folder)
    if cached is None or cached[0] != mtime:
        counts: dict[str, int] = {}
        for name in os.listdir(folder):
            base, ext = os.path.splitext(name)
            if ext.lower() in IMAGE_EXTENSIONS:
                counts[base] = counts.get(base, 0) + 1
        if len(_STEMS) > 10_000:  # bounded: drop the oldest folder, not the whole cache
            _STEMS.pop(next(iter(_STEMS)))
        cached = _STEMS[folder] = (mtime, counts)
    return cached[1].get(stem, 0)


def find_fit(image_relpath: str, save_dir: str, prefix: str | None = None) -> str | None:
    """The fit file of ``image_relpath`` under ``save_dir``, or None when there is none.

    The current name (:func:`fit_path_for`) first; else an older version's ``face.npz``,
    but only when the photo is the only ``face.*`` image of its folder under ``prefix``
    (with ``face.jpg`` and ``face.png`` side by side nobody knows whose fit it is, so both
    are refitted under their own names). Without ``prefix`` old names are not used."""
    path = fit_path_for(image_relpath, save_dir)
    if os.path.exists(path):
        return path
    old = legacy_fit_path(image_relpath, save_dir)
    if prefix is None or not os.path.exists(old):
        return None
    from face3d.imageio import IMAGE_EXTENSIONS

    photo = os.path.join(prefix, image_relpath)
    stem = os.path.splitext(os.path.basename(photo))[0]
    if os.path.splitext(stem)[1].lower() in IMAGE_EXTENSIONS:
        # x.jpg.png's old name x.jpg.npz is the current name of x.jpg's fit: never borrow it
        return None
    return old if _photos_with_stem(os.path.dirname(photo) or ".", stem) <= 1 else None
