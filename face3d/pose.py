"""Head pose: Euler angles <-> rotation matrices, and similarity (Umeyama) alignment.

Frame: x right, y down, z away from the camera (OpenCV camera frame). A frontal face
looks along -z. ``R = Rz(roll) @ Ry(yaw) @ Rx(pitch)`` with the signs chosen so that

* yaw > 0 turns the face toward the image's right (its forward vector gets +x),
* pitch > 0 tilts the face up (forward vector gets -y, up in the image),
* roll > 0 turns the face clockwise as seen in the image (y points down).

The same formulas serve numpy (fitting) and torch (rendering), so they live here once.
"""

from __future__ import annotations

import numpy as np


def _rot_x(a, lib):
    c, s = lib.cos(a), lib.sin(a)
    one, zero = lib.ones_like(a), lib.zeros_like(a)
    return lib.stack([lib.stack([one, zero, zero], -1),
                      lib.stack([zero, c, s], -1),
                      lib.stack([zero, -s, c], -1)], -2)


def _rot_y(a, lib):
    c, s = lib.cos(a), lib.sin(a)
    one, zero = lib.ones_like(a), lib.zeros_like(a)
    return lib.stack([lib.stack([c, zero, -s], -1),
                      lib.stack([zero, one, zero], -1),
                      lib.stack([s, zero, c], -1)], -2)


def _rot_z(a, lib):
    c, s = lib.cos(a), lib.sin(a)
    one, zero = lib.ones_like(a), lib.zeros_like(a)
    return lib.stack([lib.stack([c, -s, zero], -1),
                      lib.stack([s, c, zero], -1),
                      lib.stack([zero, zero, one], -1)], -2)


def euler_to_matrix(yaw, pitch, roll):
    """Rotation matrix (..., 3, 3) from angles in DEGREES; numpy arrays or torch tensors."""
    if isinstance(yaw, np.ndarray | float | int | np.floating):
        lib = np
        yaw, pitch, roll = (np.deg2rad(np.asarray(v, dtype=np.float64)) for v in (yaw, pitch, roll))
    else:
        import torch as lib

        yaw, pitch, roll = (lib.deg2rad(v) for v in (yaw, pitch, roll))
    return _rot_z(roll, lib) @ _rot_y(yaw, lib) @ _rot_x(pitch, lib)


def matrix_to_euler(R: np.ndarray) -> tuple[float, float, float]:
    """(yaw, pitch, roll) in degrees of a 3x3 rotation made by ``euler_to_matrix``.

    Yaw is taken in [-90, 90]; at exactly +-90 (gimbal lock) roll is set to 0.
    """
    R = np.asarray(R, dtype=np.float64)
    # R[2, 0] = sin(yaw), R[2, 1] = -cos(yaw) sin(pitch), R[2, 2] = cos(yaw) cos(pitch),
    # R[1, 0] = sin(roll) cos(yaw), R[0, 0] = cos(roll) cos(yaw)
    yaw = np.arcsin(np.clip(R[2, 0], -1.0, 1.0))
    if abs(np.cos(yaw)) > 1e-6:
        pitch = np.arctan2(-R[2, 1], R[2, 2])
        roll = np.arctan2(R[1, 0], R[0, 0])
    else:
        pitch = np.arctan2(R[1, 2], R[1, 1])
        roll = 0.0
    return tuple(float(np.rad2deg(v)) for v in (yaw, pitch, roll))


def similarity_align(src: np.ndarray, dst: np.ndarray, weights: np.ndarray | None = None):
    """Least-squares similarity ``dst ~= s * src @ R.T + t`` (Umeyama 1991), R proper.

    ``src`` and ``dst`` are (N, D) point sets (D = 2 or 3). Returns (R, s, t).
    """
    src = np.asarray(src, dtype=np.float64)
    dst = np.asarray(dst, dtype=np.float64)
    w = np.ones(len(src)) if weights is None else np.asarray(weights, dtype=np.float64)
    w = w / w.sum()
    mu_s, mu_d = w @ src, w @ dst
    xs, xd = src - mu_s, dst - mu_d
    cov = (xd * w[:, None]).T @ xs
    U, S, Vt = np.linalg.svd(cov)
    d = np.ones(src.shape[1])
    if np.linalg.det(U) * np.linalg.det(Vt) < 0:
        d[-1] = -1.0  # keep a rotation, never a reflection
    R = U @ np.diag(d) @ Vt
    var_s = (w * (xs**2).sum(1)).sum()
    s = float((S * d).sum() / var_s)
    t = mu_d - s * R @ mu_s
    return R, s, t
