"""Whole-image meshes: the fitted face mesh extended over the rest of the crop, so that a
rotated render is a whole photo (hair, ears, neck, background) and not a face mask.

The idea is 3DDFA's "3D image meshing" (Zhu et al., CVPR 2016): anchors around the face
get a plausible depth, and the meshed image is rotated. Ours:

* **Rays.** From the centre of the face oval (in the source image) one ray goes through
  each of the 36 face-oval vertices. Every ring below puts one anchor on every ray, so the
  triangle list is the same for every photo: quads between consecutive rings on
  consecutive rays, derived once from the face topology (``WholeImageTopology``).
* **Head rings.** A head ellipsoid is fitted to the face in its canonical frame: as wide
  as the face oval times ``HEAD_WIDTH``, from ``HEAD_TOP`` oval-heights above the oval to
  ``HEAD_BOTTOM`` below it, with the depth of its centre and its depth axis least-squares
  fitted to the oval's own depth. ``HEAD_RINGS`` anchors per ray go from the oval toward the
  ellipsoid's silhouette in the image (where a turned face's oval pokes out of that
  outline, at least ``MIN_HEAD`` times the oval's distance along the ray); each takes the
  depth of the ellipsoid's front surface there, flattened by ``HEAD_DEPTH``. They turn
  rigidly with the face, so the head has volume.
* **Band rings.** Beyond the silhouette, ``BAND_RINGS`` anchors per ray (hair edge, neck,
  shoulders) go outward by ``BAND_WIDTH`` times the ray's length to the silhouette. Each
  moves by a fraction ``w`` of the displacement of its ray's outermost head anchor, ``w``
  falling from 1 at the head to 0. (Turning band anchors by a fraction of the head's
  rotation instead swings them, being behind the pivot, against the face, a parallax that
  exaggerates the turn: on 30 held-out photos the re-fitted yaw was further off at +-30
  degrees and fewer +-60 degree renders were found as faces.)
* **Static rings.** The last band ring and a far ring on a circle of ``FAR_RADIUS`` crop
  sizes around the centre (or further, past the band), so that the mesh covers every crop
  pixel (checked), do not move: camera and body stay.

The mesh is fold-free at the source pose by construction when the face oval is star-shaped
around its centre and inside the ellipsoid's silhouette; ``check_source`` tests every
photo and names the ones that fail (profiles beyond about 60 degrees of yaw), which callers
report per photo.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
import torch

from face3d.pose import euler_to_matrix

HEAD_WIDTH = 1.15  # ellipsoid half-width / face-oval half-width (the ears stick out)
HEAD_TOP = 0.45  # skull and hair above the oval, in oval heights
HEAD_BOTTOM = 0.08  # jaw underside below the oval, in oval heights
HEAD_MARGIN = 1.05  # the oval is kept at least this far inside the ellipse (ratio)
MIN_HEAD = 1.08  # the silhouette is at least this far along each ray (oval at 1)
HEAD_RINGS = (0.3, 0.6, 0.85)  # fraction of the way from the oval to the silhouette
HEAD_DEPTH = 0.5  # head anchors recede from the oval by this fraction of the ellipsoid's
# depth there: the full ellipsoid smears the steep sides of the head over the revealed
# side when it turns (held-out LFW, 30 photos: 0.5 gave the best identity and detection)
BAND_RINGS = ((0.35, 0.6), (0.7, 0.25), (1.0, 0.0))  # (distance, motion weight) per ring
BAND_WIDTH = 0.45  # band length / ray length from the centre to the silhouette
BAND_DEPTH = 0.25  # band's depth behind the silhouette at its outer end, in head widths
FAR_RADIUS = 2.0  # the static far ring's distance from the centre, in crop sizes
STRETCH_FACTOR = 2.0  # a triangle whose area grew by more than this is "stretched"
# The fit's depth (face3d.fitter.DEPTH_SCALE, 1.5) was calibrated so that FACE-ONLY renders
# turned to +-30 degrees re-fit at +-30. With the head, hair and background in the picture
# the re-fit overshoots by 5-7 degrees (100 held-out photos), so the face's depth about its
# centre is scaled by this factor. Swept on 40 held-out photos (0.6 ... 1.0) and checked on
# 100 (README, "Whole-image rendering"): identity distance falls steadily as the face gets
# flatter, and +-30 degree renders re-fit closest to 30 at 0.65-0.7 (0.7: -29 / +32; 0.8:
# -32 / +34). 0.7 against 0.8 on 100 photos: identity at +-30 / 45 / 60 better by 0.02, at
# +-60 the re-fit reads 2-4 degrees less turn (MediaPipe's fits of large yaws fall short of
# the request at every depth: 45-49 degrees for 60), and faces are found as often.
FACE_DEPTH = 0.7


@dataclass(frozen=True)
class WholeImageTopology:
    """The fixed extension of a face mesh: numpy arrays, derived once.

    num_face_vertices: the face mesh's vertex count (its vertices come first, unchanged);
    rings: (R, 36) vertex ids of the anchors beyond the oval, inner ring first;
    triangles: (F, 3) the ring triangles (wound like the face: front-facing is
        counter-clockwise on screen), to append to the face's own triangles;
    mirror: (V,) the mirror vertex of every vertex (anchors mirror across the face's
        midline; band and static anchors are their own mirror: never filled);
    weights: (V,) how much of the head's rotation each vertex follows (1, fractions, 0).
    """


    num_face_vertices: int
    oval: np.ndarray
    rings: np.ndarray
    triangles: np.ndarray
    mirror: np.ndarray
    weights: np.ndarray

    @property
    def num_vertices(self) -> int:
        return self.num_face_vertices + self.rings.size

    @functools.cached_property
    def segments(self) -> list[tuple[int, int, float]]:
        """(start, stop, weight): the vertices in runs of one weight, in order (the face,
        then ring by ring), so a rotation is a few matrix products, not one per vertex."""
        out = []
        for i, w in enumerate(self.weights.tolist()):
            if out and out[-1][2] == w:
                out[-1][1] = i + 1
            else:
                out.append([i, i + 1, w])
        return [tuple(x) for x in out]


def build_topology(face_oval, face_mirror, canonical, num_face_vertices: int
                   ) -> WholeImageTopology:
    """The ring topology around ``face_oval`` (ordered border vertex ids), wound to match
    the face: the oval's order as seen on screen in the ``canonical`` frontal face decides
    which way each quad is split."""
    oval = np.asarray(face_oval, np.int64)
    n = len(oval)
    num_rings = len(HEAD_RINGS) + len(BAND_RINGS) + 1  # + the far ring
    rings = num_face_vertices + np.arange(num_rings * n).reshape(num_rings, n)
    xy = np.asarray(canonical, np.float64)[oval, :2]
    # Twice the signed area of the oval polygon in the y-down frame: negative when the
    # order is counter-clockwise on screen, the front-facing winding.
    a2 = np.sum(xy[:, 0] * np.roll(xy[:, 1], -1) - np.roll(xy[:, 0], -1) * xy[:, 1])
    tris = []
    inner = oval
    for outer in rings:
        j1 = np.roll(np.arange(n), -1)
        # inner_j, inner_j+1 run along the oval, outer is further out: (inner_j, outer_j,
        # outer_j+1) turns the oval's way round, flipped below to the face's winding.
        t1 = np.stack([inner, outer, outer[j1]], 1)
        t2 = np.stack([inner, outer[j1], inner[j1]], 1)
        tris += [t1, t2]
        inner = outer
    triangles = np.concatenate(tris)
    if a2 > 0:
        triangles = triangles[:, [0, 2, 1]]
    # Mirror: the oval's own pairing carries over ring by ring for the head rings.
    pos = {int(v): i for i, v in enumerate(oval)}
    oval_mirror = np.array([pos[int(face_mirror[v])] for v in oval])
    mirror = np.concatenate([np.asarray(face_mirror, np.int64), rings.ravel()])
    for r in range(len(HEAD_RINGS)):
        mirror[rings[r]] = rings[r][oval_mirror]
    weights = np.ones(num_face_vertices + rings.size)
    band_w = [w for _, w in BAND_RINGS] + [0.0]
    for r, w in enumerate(band_w):
        weights[rings[len(HEAD_RINGS) + r]] = w
    return WholeImageTopology(num_face_vertices, oval, rings, triangles, mirror, weights)


@functools.lru_cache(maxsize=1)
def mediapipe_topology() -> WholeImageTopology:
    from face3d.topology import load_topology

    t = load_topology()
    return build_topology(t["face_oval"], t["mirror"], t["canonical"],
                          len(t["canonical"]))


# ------------------------------------------------------------------------ the head ellipsoid
def _canonical_shape(vertices, rotation, scale, translation):
    """The face's own shape X in its canonical frame: ``vertices = s X R^T + t``."""
    return (vertices - translation[:, None]) @ rotation / scale[:, None, None]


def fit_head(vertices, rotation, scale, translation, oval):
    """The head ellipsoid of each face in its canonical frame: centre (B, 3) and semi-axes
    (B, 3). float64 in, float64 out."""
    X = _canonical_shape(vertices, rotation, scale, translation)[:, oval]  # (B, n, 3)
    x, y, z = X.unbind(-1)
    half_w = x.abs().amax(1)
    top, bottom = y.amin(1), y.amax(1)
    height = bottom - top
    y_top, y_bot = top - HEAD_TOP * height, bottom + HEAD_BOTTOM * height
    cy, b = (y_top + y_bot) / 2, (y_bot - y_top) / 2
    a = HEAD_WIDTH * half_w
    # Grow the ellipse until every oval point is HEAD_MARGIN inside it (jaw corners).
    q = ((x / a[:, None]) ** 2 + ((y - cy[:, None]) / b[:, None]) ** 2).amax(1)
    grow = (q.sqrt() * HEAD_MARGIN).clamp(min=1.0)
    a, b = a * grow, b * grow
    # Depth: z_j = cz - c * sqrt(1 - q_j), least squares in (cz, c), c kept in [0.5, 2] a.
    s = (1 - (x / a[:, None]) ** 2 - ((y - cy[:, None]) / b[:, None]) ** 2).clamp(min=0).sqrt()
    s_mean, z_mean = s.mean(1), z.mean(1)
    cov = ((s - s_mean[:, None]) * (z - z_mean[:, None])).mean(1)
    var = ((s - s_mean[:, None]) ** 2).mean(1).clamp(min=1e-12)
    c = torch.minimum(torch.maximum(-cov / var, 0.5 * a), 2.0 * a)
    cz = z_mean + c * s_mean
    centre = torch.stack([torch.zeros_like(cy), cy, cz], -1)
    return centre, torch.stack([a, b, c], -1)


def _ray_terms(rotation, scale, translation, centre, axes, origin, direction):
    """For image points ``origin + mu * direction`` (B, n, 2), the ellipsoid test along
    the view ray in whitened coordinates: u(mu) = u0 + mu * u1 and v (the view direction),
    so that the depth z of a surface point solves |u + z v|^2 = 1."""
    inv = 1.0 / (scale[:, None] * axes)  # (B, 3): canonical -> unit sphere, per unit px
    Rt = rotation.transpose(1, 2)
    o3 = torch.cat([origin, torch.zeros_like(origin[..., :1])], -1)
    d3 = torch.cat([direction, torch.zeros_like(direction[..., :1])], -1)
    u0 = ((o3 - translation[:, None]) @ Rt.transpose(1, 2) - scale[:, None, None]
          * centre[:, None]) * inv[:, None]
    u1 = (d3 @ Rt.transpose(1, 2)) * inv[:, None]
    v = (rotation[:, 2, :] * inv)[:, None]  # R^T e_z, whitened
    return u0, u1, v


def _silhouette(u0, u1, v):
    """mu at which the ray leaves the ellipsoid's silhouette (the discriminant's root)."""
    vv = (v * v).sum(-1)
    A = (u1 * v).sum(-1) ** 2 - vv * (u1 * u1).sum(-1)
    B = (u0 * v).sum(-1) * (u1 * v).sum(-1) - vv * (u0 * u1).sum(-1)
    C = (u0 * v).sum(-1) ** 2 - vv * ((u0 * u0).sum(-1) - 1)
    A = torch.where(A < -1e-12, A, torch.full_like(A, -1e-12))
    return (-B - (B * B - A * C).clamp(min=0).sqrt()) / A


def _front_depth(u, v):
    """Depth of the near surface point along the view ray (the discriminant clamped at the
    silhouette), in the whitened frame's z units (pixels)."""
    vv = (v * v).sum(-1)
    uv = (u * v).sum(-1)
    disc = (uv * uv - vv * ((u * u).sum(-1) - 1)).clamp(min=0)
    return (-uv - disc.sqrt()) / vv


def flatten(vertices, translation, face_depth: float = FACE_DEPTH):
    """The face as the whole-image mesh uses it: depth about the head's centre scaled by
    ``face_depth`` (a run's ``RenderSettings.face_depth``) in the camera frame, so x and y at
    the source pose (the texture coordinates) are untouched."""
    z = translation[:, None, 2] + face_depth * (vertices[..., 2] - translation[:, None, 2])
    return torch.cat([vertices[..., :2], z[..., None]], -1)


def extend_vertices(vertices, rotation, scale, translation, size: int,
                    topology: WholeImageTopology | None = None):
    """The whole-image mesh of each photo at its source pose: (B, V, 3), the face's own
    vertices first, then the ring anchors (``topology.rings`` order), in the vertices'
    dtype. ``size`` is the crop's side in pixels (the far ring goes FAR_RADIUS sizes out).
    No host sync (CUDA-graph friendly)."""
    topo = mediapipe_topology() if topology is None else topology
    dtype = vertices.dtype
    v64, R, s, t = (a.to(torch.float64) for a in (vertices, rotation, scale, translation))
    oval = torch.as_tensor(topo.oval, device=vertices.device)
    centre, axes = fit_head(v64, R, s, t, oval)
    oval_xy = v64[:, oval, :2]
    origin = oval_xy.mean(1, keepdim=True).expand_as(oval_xy)
    direction = oval_xy - origin
    u0, u1, v = _ray_terms(R, s, t, centre, axes, origin, direction)
    mu_sil = _silhouette(u0, u1, v).clamp(min=MIN_HEAD)  # (B, n)
    rings = []

    def point(mu, depth):
        return torch.cat([origin + mu[..., None] * direction, depth[..., None]], -1)

    oval_z = v64[:, oval, 2]
    for f in HEAD_RINGS:
        mu = 1 + f * (mu_sil - 1)
        z = _front_depth(u0 + mu[..., None] * u1, v)
        # never in front of the oval point of its ray, where the face's edge is
        rings.append(point(mu, oval_z + HEAD_DEPTH * (z - oval_z).clamp(min=0)))
    z_sil = rings[-1][..., 2]
    depth_step = BAND_DEPTH * 2 * s[:, None] * axes[:, None, 0]
    for g, _ in BAND_RINGS:
        rings.append(point(mu_sil * (1 + BAND_WIDTH * g), z_sil + g * depth_step))
    length = direction.norm(dim=-1).clamp(min=1e-6)
    # a circle (so its polygon is convex) past both the crop and the band's outer ring
    band_end = (rings[-1][..., :2] - origin).norm(dim=-1).amax(1, keepdim=True)
    radius = torch.maximum(torch.full_like(band_end, FAR_RADIUS * size), 1.25 * band_end)
    rings.append(point(radius / length, z_sil + depth_step))
    return torch.cat([v64] + rings, 1).to(dtype)


# ------------------------------------------------------------------------------ rotation
def rotate_whole(src, rotation, scale, translation, yaw, pitch,
                 topology: WholeImageTopology | None = None):
    """Turn whole-image meshes (from ``extend_vertices``) to (yaw, pitch), degrees, keeping
    the source's roll. Face and head vertices turn rigidly, exactly as ``rotate_vertices``
    moves the face; a band vertex moves by the fraction ``weights[i]`` of how far the
    outermost head anchor of its ray moved (so turning there and back returns it exactly);
    static anchors are copied unchanged."""
    topo = mediapipe_topology() if topology is None else topology
    dev, dtype = src.device, src.dtype
    R = rotation.to(torch.float64)
    roll = torch.rad2deg(torch.atan2(R[:, 1, 0], R[:, 0, 0]))
    target = euler_to_matrix(yaw.to(dev, torch.float64), pitch.to(dev, torch.float64), roll)
    delta = target @ R.transpose(1, 2)  # (B, 3, 3): source camera frame -> target
    t = translation.to(torch.float64)[:, None]
    src64 = src.to(torch.float64)
    parts = []
    edge = topo.rings[len(HEAD_RINGS) - 1]  # the outermost head ring, in ray order
    shift = None
    for start, stop, w in topo.segments:  # vertices in runs of one weight
        part = src64[:, start:stop]
        if w == 1:
            part = (part - t) @ delta.transpose(1, 2) + t
            if shift is None and stop > edge[-1]:
                e0 = edge[0] - start
                shift = part[:, e0:e0 + len(edge)] - src64[:, edge[0]:edge[-1] + 1]
        elif w > 0:
            part = part + w * shift
        parts.append(part)
    return torch.cat(parts, 1).to(dtype)


# ------------------------------------------------------------------------ per-photo checks
def signed_areas(vertices, triangles):
    """Twice the signed screen areas (B, F) of ``triangles`` (negative = front-facing)."""
    p = vertices[..., :2].to(torch.float64)
    a, b, c = p[:, triangles[:, 0]], p[:, triangles[:, 1]], p[:, triangles[:, 2]]
    return ((b[..., 0] - a[..., 0]) * (c[..., 1] - a[..., 1])
            - (b[..., 1] - a[..., 1]) * (c[..., 0] - a[..., 0]))


def check_source(src, size: int, topology: WholeImageTopology | None = None) -> list[str]:
    """Per photo, '' when its whole-image mesh is usable at the source pose, else why not:
    a ring triangle folds (the oval is not star-shaped around its centre, or pokes out of
    the head's silhouette: a profile), or the far ring leaves a crop corner uncovered."""
    topo = mediapipe_topology() if topology is None else topology
    tri = torch.as_tensor(topo.triangles, device=src.device)
    area = signed_areas(src, tri)
    folded = (area > 1e-6).sum(1)
    far = src[:, torch.as_tensor(topo.rings[-1], device=src.device), :2].to(torch.float64)
    corners = torch.tensor([[0, 0], [size, 0], [size, size], [0, size]],
                           dtype=torch.float64, device=src.device)
    # A corner is inside the (counter-clockwise on screen) far polygon when it is on the
    # inner side of every edge.
    e0, e1 = far, far.roll(-1, 1)
    cross = ((e1[:, None, :, 0] - e0[:, None, :, 0]) * (corners[None, :, None, 1]
             - e0[:, None, :, 1]) - (e1[:, None, :, 1] - e0[:, None, :, 1])
             * (corners[None, :, None, 0] - e0[:, None, :, 0]))
    # the far ring lies on a circle, so its polygon is convex: inside = same side of all
    shoelace = (e0[..., 0] * e1[..., 1] - e1[..., 0] * e0[..., 1]).sum(1)
    uncovered = ~((cross * shoelace.sign()[:, None, None]) >= 0).all(2)
    out = []
    for n_fold, unc in zip(folded.tolist(), uncovered.any(1).tolist()):
        if n_fold:
            out.append(f"whole-image mesh folds at the source pose ({n_fold} ring triangles;"
                       " a profile or a bad fit); use --render_scope face")
        elif unc:
            out.append("whole-image mesh leaves a crop corner uncovered")
        else:
            out.append("")
    return out


def stretch_ratio(src, dst, triangles):
    """Per triangle (B, F): its screen area at ``dst`` over its area at ``src`` (inf where
    a triangle of no area grows)."""
    a_src = signed_areas(src, triangles).abs()
    a_dst = signed_areas(dst, triangles).abs()
    return torch.where(a_src > 1e-9, a_dst / a_src.clamp(min=1e-9),
                       torch.where(a_dst > 1e-9, torch.full_like(a_dst, np.inf),
                                   torch.ones_like(a_dst)))
