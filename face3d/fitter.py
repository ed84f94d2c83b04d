"""Fit a 3D face mesh and head pose to a photo with MediaPipe Face Mesh, offline on CPU.

MediaPipe's legacy ``solutions.face_mesh`` graph (face detector + 468-point mesh + iris
refinement) ships inside the mediapipe==0.10.9 wheel, so nothing is downloaded.
"""

from __future__ import annotations

import contextlib
import os

import numpy as np

from face3d.fit import Fit
from face3d.pose import matrix_to_euler, similarity_align
from face3d.topology import NUM_VERTICES, landmarks5_from_68, load_topology


class NoFaceError(ValueError):
    """No (plausible) face was found in the photo."""


def mediapipe_version() -> str:
    from importlib.metadata import version

    return version("mediapipe")


# MediaPipe's detector is trained on upright faces: on an upside-down photo it usually
# returns a plausible-looking but wrong, upright mesh (on 300 LFW photos turned by 180
# degrees: a face in 80%, median |roll| 5 degrees, residual 0.06 to 0.2, median 0.10). When
# no face is found, the roll is large or the residual is high, we also fit the photo turned
# by 180 degrees and keep the mesh that agrees better with the canonical face (lower
# residual). On those 300 photos this fits 98% of the upside-down ones the right way up,
# at the cost of a second MediaPipe pass for 9% of the upright ones (residual above 0.07).
ROLL_RECHECK = 20.0
RESIDUAL_RECHECK = 0.07
# Meshes deviating more than this from the canonical face (relative RMS) are refused;
# real LFW faces give 0.05 (median) to 0.11 (max over 100 photos).
MAX_RESIDUAL = 0.25


# MediaPipe's z is documented as "roughly the scale of x", but faces rendered from its raw
# depth look turned by less than asked: re-fitting renders of 8 photos turned to +-30 degrees
# gave 17.6 degrees on average (tan ratio ~0.65). Scaling depth by 1.5 makes rotations
# self-consistent (+-15/30 degrees re-fit at 12.8-18.4 / 29.3-33.9) and profiles look right.
# It applies to every fit and to the canonical mesh (face3d/derive_topology.py).
DEPTH_SCALE = 1.5


class MediaPipeFitter:
    """Fits faces in RGB uint8 photos.

    Args:
        max_side: photos whose longer side exceeds this are downscaled for detection
            (coordinates are mapped back), which bounds time and memory for huge photos.
        max_num_faces: how many faces MediaPipe may return; the largest is kept.
        min_detection_confidence: the face detector's threshold.
    """

    def __init__(self, max_side: int = 1920, max_num_faces: int = 4,
                 min_detection_confidence: float = 0.5):
        with _quiet_stderr():
            from mediapipe.python.solutions import face_mesh

            self._mesh = face_mesh.FaceMesh(
                static_image_mode=True, max_num_faces=max_num_faces, refine_landmarks=True,
                min_detection_confidence=min_detection_confidence)
        self.max_side = max_side
        self.version = mediapipe_version()

    def close(self):
        self._mesh.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def detect(self, rgb: np.ndarray) -> list[np.ndarray]:
        """All faces as (478, 3) float64 arrays in the photo's pixel frame, largest first."""
        if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
            raise ValueError(f"expected an HxWx3 uint8 RGB image, got {rgb.shape} {rgb.dtype}")
        h, w = rgb.shape[:2]
        if min(h, w) < 16:
            raise NoFaceError(f"image too small to hold a face ({w}x{h} px)")
        factor = 1.0
        if max(h, w) > self.max_side:
            import cv2

            factor = max(h, w) / self.max_side
            size = (max(1, round(w / factor)), max(1, round(h / factor)))
            rgb = cv2.resize(rgb, size, interpolation=cv2.INTER_AREA)
        hh, ww = rgb.shape[:2]
        result = self._mesh.process(np.ascontiguousarray(rgb))
        faces = []
        for lm in result.multi_face_landmarks or []:
            a = np.array([(p.x, p.y, p.z) for p in lm.landmark], dtype=np.float64)
            # x, y are normalised by width / height, z by width (MediaPipe's convention), with
            # pixel centres at whole multiples (x * width = column index; measured: fits of a
            # photo upscaled k times by pixel repetition are offset by (k - 1) / 2 px).
            # Shift to our convention (centres at +0.5), then scale back to the photo.
            a = (a * (ww, hh, ww * DEPTH_SCALE) + (0.5, 0.5, 0.0)) * (w / ww, h / hh, w / ww)
            faces.append(a)
        faces.sort(key=lambda f: -np.ptp(f[:, 0]) * np.ptp(f[:, 1]))
        return faces

    def fit(self, rgb: np.ndarray) -> Fit:
        """Fit the largest face; raises ``NoFaceError`` when there is none."""
        faces = self.detect(rgb)
        h, w = rgb.shape[:2]
        best = None
        if faces:
            best = fit_from_points(faces[0], (h, w), len(faces), self.version)
        if (best is None or abs(best.roll) > ROLL_RECHECK
                or best.residual > RESIDUAL_RECHECK):
            turned = self.detect(np.ascontiguousarray(rgb[::-1, ::-1]))
            if turned:
                back = turned[0] * (-1, -1, 1) + (w, h, 0)
                alt = fit_from_points(back, (h, w), len(turned), self.version)
                if best is None or alt.residual < best.residual:
                    best = alt
        if best is None:
            raise NoFaceError("no face found")
        if best.residual > MAX_RESIDUAL:
            raise NoFaceError(f"implausible face mesh (residual {best.residual:.2f} > "
                              f"{MAX_RESIDUAL})")
        return best


def fit_from_points(points: np.ndarray, image_size, num_faces: int = 1,
                    fitter_version: str = "") -> Fit:
    """Build a :class:`Fit` from MediaPipe's 478 points in pixels (pose, landmarks)."""
    topo = load_topology()
    verts = points[:NUM_VERTICES]
    R, s, t = similarity_align(topo["canonical"], verts)
    posed = s * topo["canonical"] @ R.T + t
    residual = float(np.sqrt(((posed - verts) ** 2).sum(1).mean()) / s)
    yaw, pitch, roll = matrix_to_euler(R)
    lmk68 = verts[topo["landmarks68"], :2]
    return Fit(
        vertices=verts.astype(np.float32), iris=points[NUM_VERTICES:].astype(np.float32),
        landmarks68=lmk68.astype(np.float32),
        landmarks5=landmarks5_from_68(lmk68).astype(np.float32),
        rotation=R.astype(np.float32), scale=float(s), translation=t.astype(np.float32),
        yaw=yaw, pitch=pitch, roll=roll, image_size=(int(image_size[0]), int(image_size[1])),
        num_faces=num_faces, residual=residual, fitter_version=fitter_version)


@contextlib.contextmanager
def _quiet_stderr():
    """Silence the C++ logging MediaPipe prints while building its graph."""
    try:
        fd = os.dup(2)
    except OSError:
        yield
        return
    with open(os.devnull, "w") as devnull:
        os.dup2(devnull.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(fd, 2)
            os.close(fd)
