"""Pictures of fits a person can look at: the mesh wireframe and landmarks drawn on a photo."""

from __future__ import annotations

import cv2
import numpy as np

from face3d.fit import Fit
from face3d.topology import load_topology


def draw_fit(rgb: np.ndarray, fit: Fit, thickness: int | None = None) -> np.ndarray:
    """A copy of ``rgb`` with the mesh (front-facing triangles only), the 68 landmarks
    (green) and the 5 alignment points (red) drawn on it."""
    topo = load_topology()
    out = np.ascontiguousarray(rgb.copy())
    t = thickness or max(1, round(fit.scale / 60))
    v = fit.vertices[:, :2]
    tri = topo["triangles"]
    a, b, c = v[tri[:, 0]], v[tri[:, 1]], v[tri[:, 2]]
    front = ((b - a)[:, 0] * (c - a)[:, 1] - (c - a)[:, 0] * (b - a)[:, 1]) < 0
    shift = 4  # sub-pixel precision for cv2 drawing
    pts = np.round(v[tri[front]] * (1 << shift)).astype(np.int32)
    wire = out.copy()
    cv2.polylines(wire, list(pts), True, (120, 200, 255), 1, cv2.LINE_AA, shift)
    out = cv2.addWeighted(wire, 0.45, out, 0.55, 0)  # see-through, so the face stays visible
    for points, radius, colour in ((fit.landmarks68, t + 1, (0, 230, 0)),
                                   (fit.landmarks5, 2 * t + 1, (255, 40, 40))):
        for x, y in np.round(points * (1 << shift)).astype(int):
            cv2.circle(out, (int(x), int(y)), radius, colour, -1, cv2.LINE_AA, shift)
    return out
