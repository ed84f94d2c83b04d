"""The MediaPipe face-mesh topology and its derived index maps, loaded from a small data file.

``face3d/assets/facemesh_topology.npz`` is written once by ``python -m face3d.derive_topology``
and committed; nothing here talks to MediaPipe, so rendering and training never import it.

Fields of :func:`load_topology` (all numpy arrays):

* ``triangles`` (852, 3) int64: the surface, consistently wound so that triangles facing
  the camera have NEGATIVE doubled signed area (x1 - x0)(y2 - y0) - (y1 - y0)(x2 - x0) in
  the y-down image frame: counter-clockwise on screen, normal toward the camera (the
  rasteriser's front-facing convention, see render/rasterizer.py).
* ``fill_triangles`` (46, 3) int64: extra triangles that close the two eyes and the mouth
  (the tessellation leaves them open), wound the same way; renderers use both lists.
* ``canonical`` (468, 3) float32: the mean frontal face in the camera frame (x right,
  y down, z away), symmetric about x = 0, eye centres 1.0 apart, origin at the head's
  centre (x = 0, y = mean height of the mesh, z = mean depth of the face outline).
* ``mirror`` (468,) int64: the vertex on the other side of the face (itself on the midline).
* ``landmarks68`` (68,) int64: the mesh vertex used for each iBUG 68-point landmark.
* ``face_oval`` (36,) int64: the mesh border around the face, in order.
"""

from __future__ import annotations

import functools
import os

import numpy as np

ASSET = os.path.join(os.path.dirname(__file__), "assets", "facemesh_topology.npz")
NUM_VERTICES = 468  # the face surface; refine_landmarks adds 10 iris points after these


@functools.lru_cache(maxsize=1)
def load_topology() -> dict[str, np.ndarray]:
    if not os.path.exists(ASSET):
        raise FileNotFoundError(
            f"mesh topology file missing: {ASSET}; regenerate it with "
            "`python -m face3d.derive_topology`"
        )
    with np.load(ASSET) as z:
        topo = {k: z[k] for k in z.files}
    for k in ("triangles", "fill_triangles", "mirror", "landmarks68", "face_oval"):
        topo[k] = topo[k].astype(np.int64)
    return topo


def landmarks5_from_68(lmk68: np.ndarray) -> np.ndarray:
    """The 5 alignment points (image-left eye centre, image-right eye centre, nose tip,
    image-left and image-right mouth corner) from 68 iBUG landmarks (..., 68, D)."""
    return np.stack([
        lmk68[..., 36:42, :].mean(-2),
        lmk68[..., 42:48, :].mean(-2),
        lmk68[..., 30, :],
        lmk68[..., 48, :],
        lmk68[..., 54, :],
    ], axis=-2)
