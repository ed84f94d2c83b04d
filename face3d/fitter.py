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


# Upside-down photos. MediaPipe's mesh is trained on upright faces: on a photo turned by 180
# degrees it usually returns a plausible-looking but wrong, upright mesh (300 LFW photos: a
# face in 80%, median |roll| 5 degrees), and neither its roll nor its residual tells it
# apart reliably (choosing the lower residual of the two orientations fits 2 in 300 upright
# photos upside down). The face DETECTOR's confidence does: on 300 LFW photos each turned by
# 0, +-30, 150, 180 and 210 degrees, the orientation (photo or photo turned by 180) with the
# higher detector score was the nearer-upright one in 1502 of 1502 pairs. The mesh graph runs
# that detector anyway and reports its score; when the score is below UPRIGHT_SCORE the
# detector alone (about 2 ms) also scores the photo turned by 180, and if that scores higher
# the mesh (about 10 ms) runs again on it. Upright photos scored 0.76-0.99 (13% below 0.9),
# turned ones at most 0.88: the check is nearly free for upright photos.
UPRIGHT_SCORE = 0.9
# Meshes deviating more than this from the canonical face (relative RMS) are refused;
# real LFW faces give 0.08 (median) to 0.17 (max over 200 photos; with DEPTH_SCALE 1.5).
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
            from mediapipe.python.solution_base import SolutionBase
            from mediapipe.python.solutions import face_detection, face_mesh

            # face_mesh.FaceMesh with the same settings (static_image_mode=True,
            # refine_landmarks=True), but also returning the graph's face detections: their
            # scores tell upright from upside-down photos at no extra cost.
            self._mesh = SolutionBase(
                binary_graph_path=face_mesh._BINARYPB_FILE_PATH,
                side_inputs={"num_faces": max_num_faces, "with_attention": True,
                             "use_prev_landmarks": False},
                calculator_params={
                    "facedetectionshortrangecpu__facedetectionshortrange__facedetection__"
                    "TensorsToDetectionsCalculator.min_score_thresh": min_detection_confidence,
                    "facelandmarkcpu__ThresholdingCalculator.threshold": 0.5},
                outputs=["multi_face_landmarks", "face_detections"])
            # The same short-range detector alone, with a low threshold so that weak (e.g.
            # upside-down) faces still get a score to compare.
            self._detector = face_detection.FaceDetection(
                model_selection=0, min_detection_confidence=min(0.1, min_detection_confidence))
        self.max_side = max_side
        self.version = mediapipe_version()

    def close(self):
        self._mesh.close()
        self._detector.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def detect(self, rgb: np.ndarray) -> list[np.ndarray]:
        """All faces as (478, 3) float64 arrays in the photo's pixel frame, largest first
        (the photo as it is: no upside-down check)."""
        return self._mesh_faces(self._prepare(rgb), rgb.shape[:2])[0]

    def _prepare(self, rgb: np.ndarray) -> np.ndarray:
        """Check the photo; downscale it so its longer side is at most ``max_side``."""
        if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
            raise ValueError(f"expected an HxWx3 uint8 RGB image, got {rgb.shape} {rgb.dtype}")
        h, w = rgb.shape[:2]
        if min(h, w) < 16:
            raise NoFaceError(f"image too small to hold a face ({w}x{h} px)")
        if max(h, w) > self.max_side:
            import cv2

            factor = max(h, w) / self.max_side
            size = (max(1, round(w / factor)), max(1, round(h / factor)))
            rgb = cv2.resize(rgb, size, interpolation=cv2.INTER_AREA)
        return np.ascontiguousarray(rgb)

    def _score(self, rgb: np.ndarray) -> float:
        """The face detector's highest confidence on the photo (0 when it finds nothing)."""
        result = self._detector.process(rgb)
        return max((d.score[0] for d in result.detections or []), default=0.0)

    def _mesh_faces(self, rgb: np.ndarray, size) -> tuple[list[np.ndarray], float]:
        """Mesh points of the faces in ``rgb`` (prepared), in pixels of a photo of ``size``
        (height, width) that ``rgb`` is a downscaled copy of, and the detector's highest
        score (0 when it found no face)."""
        h, w = size
        hh, ww = rgb.shape[:2]
        result = self._mesh.process({"image": rgb})
        score = max((d.score[0] for d in result.face_detections or []), default=0.0)
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
        return faces, score

    def fit(self, rgb: np.ndarray) -> Fit:
        """Fit the largest face, also in an upside-down photo (see ``UPRIGHT_SCORE``);
        raises ``NoFaceError`` when there is none."""
        h, w = rgb.shape[:2]
        small = self._prepare(rgb)
        faces, score = self._mesh_faces(small, (h, w))
        if score < UPRIGHT_SCORE or not faces:
            turned = np.ascontiguousarray(small[::-1, ::-1])
            if self._score(turned) > score:
                turned_faces, _ = self._mesh_faces(turned, (h, w))
                if turned_faces:
                    faces = [f * (-1, -1, 1) + (w, h, 0) for f in turned_faces]
        if not faces:
            raise NoFaceError("no face found")
        best = fit_from_points(faces[0], (h, w), len(faces), self.version)
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
