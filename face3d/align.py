"""5-point similarity alignment of a photo and its fit to the canonical crop.

The template is the ArcFace 112-px five-point template scaled by 290/112 and shifted by
(50, 60) inside a 400-px canvas (as in the original Rotate-and-Render), then scaled to
``crop_size``. Points are image-left eye, image-right eye, nose tip, mouth corners.
"""

from __future__ import annotations

import dataclasses

import cv2
import numpy as np

from face3d.fit import Fit
from face3d.pose import matrix_to_euler, similarity_align

_ARCFACE_112 = np.array([[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366],
                         [41.5493, 92.3655], [70.7299, 92.2041]])


def template5(crop_size: int) -> np.ndarray:
    """The five canonical points (5, 2) in a ``crop_size`` crop, our pixel convention."""
    return (_ARCFACE_112 * (290.0 / 112.0) + (50.0, 60.0)) * (crop_size / 400.0)


def alignment_matrix(landmarks5: np.ndarray, crop_size: int) -> np.ndarray:
    """2x3 similarity ``M`` with ``crop_xy = M @ [x, y, 1]`` (continuous pixel coords)."""
    R, s, t = similarity_align(landmarks5, template5(crop_size))
    return np.hstack([s * R, t[:, None]])


def warp_image(rgb: np.ndarray, M: np.ndarray, crop_size: int,
               border: int = cv2.BORDER_REFLECT101) -> np.ndarray:
    """Resample ``rgb`` into the crop. Our coordinates put pixel centres at +0.5 while
    OpenCV puts them at integers; the offset is folded into the matrix here."""
    A, b = M[:, :2], M[:, 2]
    M_cv = np.hstack([A, (b + A @ [0.5, 0.5] - 0.5)[:, None]])
    return cv2.warpAffine(rgb, M_cv, (crop_size, crop_size), flags=cv2.INTER_LINEAR,
                          borderMode=border)


def transform_fit(fit: Fit, M: np.ndarray, image_size: tuple[int, int]) -> Fit:
    """The fit expressed in the aligned crop: x/y through ``M``, depth scaled by its scale,
    and the pose composed with its in-plane rotation."""
    A, b = M[:, :2], M[:, 2]
    s = float(np.sqrt(abs(np.linalg.det(A))))
    rot2 = A / s
    R3 = np.eye(3)
    R3[:2, :2] = rot2

    def pts(p):
        p = np.asarray(p, dtype=np.float64)
        out = p.copy()
        out[..., :2] = p[..., :2] @ A.T + b
        if p.shape[-1] == 3:
            out[..., 2] = p[..., 2] * s
        return out.astype(np.float32)

    rotation = R3 @ fit.rotation.astype(np.float64)
    yaw, pitch, roll = matrix_to_euler(rotation)
    return dataclasses.replace(
        fit, vertices=pts(fit.vertices), iris=pts(fit.iris), landmarks68=pts(fit.landmarks68),
        landmarks5=pts(fit.landmarks5), rotation=rotation.astype(np.float32),
        scale=fit.scale * s, translation=pts(fit.translation[None])[0],
        yaw=yaw, pitch=pitch, roll=roll, image_size=tuple(image_size))


def align(rgb: np.ndarray, fit: Fit, crop_size: int) -> tuple[np.ndarray, Fit, np.ndarray]:
    """(crop, fit in crop coordinates, M) for a photo and its fit."""
    M = alignment_matrix(fit.landmarks5, crop_size)
    return warp_image(rgb, M, crop_size), transform_fit(fit, M, (crop_size, crop_size)), M
