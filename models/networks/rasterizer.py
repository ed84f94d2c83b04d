"""Exact, vectorised triangle rasteriser in plain PyTorch (forward only, CPU or GPU).

Conventions
-----------
* **Screen space.** ``vertices[..., 0:2]`` are continuous pixel coordinates: x to the right,
  y downwards, the image's top-left corner at (0, 0). Pixel (row ``i``, column ``j``) has its
  centre at ``(j + 0.5, i + 0.5)`` and a pixel is covered by a triangle when its *centre* is
  inside it. ``vertices[..., 2]`` is depth in the same scale and **smaller z is nearer**: the
  camera looks along +z with x right and y down (the OpenCV camera frame).
* **Sub-pixel snapping.** x and y are snapped to 1/256 px (``round(x * 256)``, half to even)
  and every inside test is done on the snapped integers in int64, as GPUs do. Edge functions
  of an edge shared by two triangles are then exact negatives of each other, so results do
  not depend on the order of the vertices, the device or the chunking.
* **Fill rule (top-left).** A pixel centre exactly on an edge belongs to the triangle only if
  that edge is a *top* edge (exactly horizontal, the triangle below it) or a *left* edge (the
  triangle to its right). A centre on an edge shared by two triangles is therefore drawn
  exactly once (no cracks, no double coverage), and likewise a centre on a vertex shared by a
  closed fan of triangles.
* **Winding and back faces.** With ``A2 = (x1-x0)(y2-y0) - (y1-y0)(x2-x0)`` (twice the signed
  area in this y-down frame), a triangle is **front-facing when A2 < 0**, which is
  *counter-clockwise as seen on screen* (y down). In a right-handed camera frame (x right,
  y down, z forward) this is the triangle whose right-hand-rule normal
  ``(v1-v0) x (v2-v0)`` points towards the camera (negative z), i.e. the usual "CCW seen from
  outside" mesh convention. ``cull_backfaces=False`` (default) draws both windings and lets
  the z-buffer decide; ``cull_backfaces=True`` drops triangles with A2 > 0 (clockwise on
  screen). Zero-area triangles (after snapping) never draw anything.
* **Depth test.** The nearest fragment (smallest z interpolated at the pixel centre, in
  float32) wins; exact depth ties go to the lowest face index. The comparison is exact: the
  float depth is turned into an order-preserving int32 and packed with the face index into
  one int64 key that is min-reduced with ``scatter_reduce``, so the result is independent of
  the order in which fragments are produced (and of the device).
* **Barycentrics** are screen-space (affine, no perspective correction: the input is already
  projected) and refer to the face's vertices in the order given in ``faces``; they are
  computed from the snapped coordinates, so ``interpolate`` of the vertex x, y reproduces the
  pixel centre to within the 1/512 px snapping error. ``Fragments.depth`` is the value used by
  the depth test (the plane equation stepped along the row in float32); it agrees with
  interpolating z with ``bary`` to float rounding.
* **Skipped triangles.** Triangles with a non-finite vertex (NaN/inf) or with |x| or |y|
  beyond 2**20 px (the range the int64 fixed-point arithmetic is proved safe for) are skipped,
  as if absent. Triangles partly or entirely outside the image are clipped to it.

Algorithm (no Python loop over triangles or pixels): per triangle, the range of pixel rows
whose centres can be inside is found from the snapped bounding box (clipped to the image);
every (triangle, row) "span" then gets its exact column interval by solving the three
edge-function inequalities with integer floor division (the top-left rule folded in as a
bias of 1 on edges that are not top/left), so every enumerated (span, column) fragment is
inside; fragments get their depth by stepping the triangle's depth plane and are z-buffered
with one ``scatter_reduce``. Triangles, spans and fragments are processed in chunks bounded
by ``max_chunk_pixels``, so memory stays bounded for huge triangles and big batches.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

__all__ = ["Fragments", "rasterize", "interpolate", "DEFAULT_MAX_CHUNK_PIXELS"]

DEFAULT_MAX_CHUNK_PIXELS = 1 << 21

SUBPIXEL_BITS = 8
_ONE = 1 << SUBPIXEL_BITS  # one pixel in fixed-point units
_HALF = _ONE // 2  # pixel centres sit at _ONE * j + _HALF
# |x|, |y| <= 2**20 px keeps fixed coordinates within 2**28, coordinate differences within
# 2**29 and every edge-function value (two products of such differences) within 2**60.
MAX_COORD = float(1 << 20)
MAX_SIZE = 1 << 20  # image height/width limit, for the same reason

_EMPTY = torch.iinfo(torch.int64).max
_LOW32 = 0xFFFFFFFF
_FLT_MAX = torch.finfo(torch.float32).max


@dataclass
class Fragments:
    """Per-pixel result of :func:`rasterize` (B images of H x W pixels).

    Attributes:
        face_ids: (B, H, W) int64 index into ``faces`` of the visible triangle, -1 where empty.
        bary: (B, H, W, 3) float32 barycentric weights of that face's 3 vertices (in the order
            given in ``faces``), 0 where empty.
        depth: (B, H, W) float32 interpolated z of the visible triangle, 0 where empty.
        mask: (B, H, W) bool, True where some triangle covers the pixel centre.
    """

    face_ids: torch.Tensor
    bary: torch.Tensor
    depth: torch.Tensor
    mask: torch.Tensor


def _check_size(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"rasterize: {name} must be an int, got {type(value).__name__}")
    if not 0 <= value <= MAX_SIZE:
        raise ValueError(f"rasterize: {name} must be in [0, {MAX_SIZE}], got {value}")
    return value


def _validate(vertices, faces, height, width, max_chunk_pixels):
    if not isinstance(vertices, torch.Tensor) or not isinstance(faces, torch.Tensor):
        raise ValueError("rasterize: vertices and faces must be torch.Tensors")
    if vertices.ndim == 2:
        vertices = vertices.unsqueeze(0)
    if vertices.ndim != 3 or vertices.shape[-1] != 3:
        raise ValueError("rasterize: vertices must have shape (B, V, 3) or (V, 3), "
                         f"got {tuple(vertices.shape)}")
    if not vertices.is_floating_point():
        raise ValueError(f"rasterize: vertices must be a float tensor, got {vertices.dtype}")
    if faces.ndim != 2 or faces.shape[1] != 3:
        raise ValueError(f"rasterize: faces must have shape (F, 3), got {tuple(faces.shape)}")
    if faces.is_floating_point() or faces.is_complex() or faces.dtype == torch.bool:
        raise ValueError(f"rasterize: faces must be an integer tensor, got {faces.dtype}")
    height = _check_size("height", height)
    width = _check_size("width", width)
    if isinstance(max_chunk_pixels, bool) or not isinstance(max_chunk_pixels, int) \
            or max_chunk_pixels < 1:
        raise ValueError(f"rasterize: max_chunk_pixels must be a positive int, "
                         f"got {max_chunk_pixels!r}")
    num_verts = vertices.shape[1]
    faces = faces.to(device=vertices.device, dtype=torch.int64)
    if faces.shape[0] >= 1 << 31:
        raise ValueError("rasterize: at most 2**31 - 1 faces are supported")
    if faces.numel():
        lo, hi = torch.aminmax(faces)
        lo, hi = int(lo), int(hi)  # the one host sync of validation
        if lo < 0 or hi >= num_verts:
            raise ValueError(f"rasterize: faces index out of range: values span [{lo}, {hi}] "
                             f"but there are {num_verts} vertices")
    return vertices, faces, height, width


def _expand(counts: torch.Tensor, cum: torch.Tensor, start: int, stop: int):
    """Elements ``[start, stop)`` of the virtual list where owner k appears counts[k] times.

    ``cum`` is the inclusive cumulative sum of ``counts``. Returns (owner, offset) with offset
    the element's position inside its owner's run. Lets every chunk of a huge expansion be
    built without materialising the whole expansion.
    """
    device = counts.device
    n = counts.shape[0]
    if start == 0 and stop == int(cum[-1]):
        owner = torch.repeat_interleave(counts, output_size=stop)
    else:
        bounds = torch.tensor([start, stop - 1], device=device, dtype=cum.dtype)
        k0, k1 = torch.searchsorted(cum, bounds, right=True).tolist()
        k1 = min(k1 + 1, n)
        sub = counts[k0:k1].clone()
        sub[0] -= start - int(cum[k0] - counts[k0])
        sub[-1] -= int(cum[k1 - 1]) - stop
        owner = torch.repeat_interleave(torch.arange(k0, k1, device=device), sub,
                                        output_size=stop - start)
    offset = torch.arange(start, stop, device=device) - (cum - counts)[owner]
    return owner, offset


def _snap(coord: torch.Tensor) -> torch.Tensor:
    return torch.round(coord.double() * _ONE).long()


def _raster_triangles(zbuf, verts_flat, faces, t0, t1, num_faces, num_verts, height, width,
                      cull_backfaces, chunk):
    """Z-buffer the flat triangles ``[t0, t1)`` (index ``b * F + f``) into ``zbuf``."""
    device = verts_flat.device
    t = torch.arange(t0, t1, device=device)
    batch = torch.div(t, num_faces, rounding_mode="floor")
    face = t - batch * num_faces
    tv = verts_flat[faces[face] + (batch * num_verts).unsqueeze(1)]  # (T, 3, 3)

    xy = tv[..., :2]
    valid = torch.isfinite(tv).all(2).all(1) & (xy.abs() <= MAX_COORD).all(2).all(1)
    tv = torch.where(valid[:, None, None], tv, 0.0)  # keeps NaN out of the int conversion
    X = _snap(tv[..., 0])
    Y = _snap(tv[..., 1])
    x0, x1, x2 = X.unbind(1)
    y0, y1, y2 = Y.unbind(1)
    area2 = (x1 - x0) * (y2 - y0) - (y1 - y0) * (x2 - x0)

    # Range of pixel centres (_ONE * j + _HALF) inside the snapped bounding box.
    cmin = ((X.amin(1) + (_ONE - 1 - _HALF)) >> SUBPIXEL_BITS).clamp_min_(0)
    cmax = ((X.amax(1) - _HALF) >> SUBPIXEL_BITS).clamp_max_(width - 1)
    rmin = ((Y.amin(1) + (_ONE - 1 - _HALF)) >> SUBPIXEL_BITS).clamp_min_(0)
    rmax = ((Y.amax(1) - _HALF) >> SUBPIXEL_BITS).clamp_max_(height - 1)
    keep = valid & (area2 != 0) & (cmax >= cmin) & (rmax >= rmin)
    if cull_backfaces:
        keep &= area2 < 0
    kept = keep.nonzero().squeeze(1)
    if kept.numel() == 0:
        return

    X, Y, area2 = X[kept], Y[kept], area2[kept]
    cmin, cmax, rmin, rmax = cmin[kept], cmax[kept], rmin[kept], rmax[kept]
    z = tv[kept, :, 2].double()
    face = face[kept]
    pix_batch = batch[kept] * (height * width)
    sign = torch.where(area2 > 0, 1, -1)
    abs_area2 = (area2 * sign).double()

    # Edge i is opposite vertex i. Multiplying by `sign` orients every triangle clockwise on
    # screen (positive area), so "inside" is n_i >= 0 for all i, and the top-left rule can be
    # read off the oriented edge direction alone.
    # n_i(j, r) = colc_i * j + rowc_i * r + const_i, at pixel centre (j, r), minus the bias.
    colc, rowc, const, bias = [], [], [], []
    for s_idx, e_idx in ((1, 2), (2, 0), (0, 1)):
        xs, ys = X[:, s_idx], Y[:, s_idx]
        dx = (X[:, e_idx] - xs) * sign
        dy = (Y[:, e_idx] - ys) * sign
        top_left = (dy < 0) | ((dy == 0) & (dx > 0))
        colc.append(dy * -_ONE)
        rowc.append(dx * _ONE)
        const.append(dx * (_HALF - ys) - dy * (_HALF - xs))
        # Integer edge values: "> 0, or == 0 on a top/left edge" is ">= bias".
        bias.append((~top_left).long())
    colc = torch.stack(colc, 1)
    rowc = torch.stack(rowc, 1)
    const = torch.stack(const, 1)
    bias = torch.stack(bias, 1)

    # Depth plane relative to the bounding box's first pixel, where it is well conditioned:
    # z = z0 + b1 (z1 - z0) + b2 (z2 - z0) with b_i = n_i / |A2|.
    dz1 = (z[:, 1] - z[:, 0]) / abs_area2
    dz2 = (z[:, 2] - z[:, 0]) / abs_area2
    n_origin = colc[:, 1:] * cmin[:, None] + rowc[:, 1:] * rmin[:, None] + const[:, 1:]
    z_origin = z[:, 0] + n_origin[:, 0].double() * dz1 + n_origin[:, 1].double() * dz2
    z_col = colc[:, 1].double() * dz1 + colc[:, 2].double() * dz2
    z_row = rowc[:, 1].double() * dz1 + rowc[:, 2].double() * dz2
    const = const - bias

    rows = rmax - rmin + 1
    rows_cum = rows.cumsum(0)
    total_spans = int(rows_cum[-1])
    span_chunk = max(1, chunk // 4)
    for s0 in range(0, total_spans, span_chunk):
        s1 = min(s0 + span_chunk, total_spans)
        k, dr = _expand(rows, rows_cum, s0, s1)
        row = rmin[k] + dr
        # Columns j with colc*j + (rowc*row + const) >= 0 for all three edges, exactly.
        rhs = rowc[k] * row[:, None] + const[k]  # (S, 3)
        ck = colc[k]
        q = torch.div(rhs, ck.abs().clamp_min(1), rounding_mode="floor")
        lo = torch.where(ck > 0, -q, -(1 << 62)).amax(1)
        hi = torch.where(ck < 0, q, 1 << 62).amin(1)
        lo = torch.maximum(lo, cmin[k])
        hi = torch.minimum(hi, cmax[k])
        # A horizontal edge (colc == 0) admits the whole row or none of it.
        row_ok = ((ck != 0) | (rhs >= 0)).all(1)
        length = torch.where(row_ok, (hi - lo + 1).clamp_min(0), 0)

        length_cum = length.cumsum(0)
        total = int(length_cum[-1])
        if total == 0:
            continue
        span_pix = pix_batch[k] + row * width + lo
        span_z = (z_origin[k] + z_col[k] * (lo - cmin[k]).double()
                  + z_row[k] * dr.double()).float()
        span_zc = z_col[k].clamp(-_FLT_MAX, _FLT_MAX).float()
        span_face = face[k]
        for f0 in range(0, total, chunk):
            f1 = min(f0 + chunk, total)
            sid, off = _expand(length, length_cum, f0, f1)
            depth = span_z[sid] + span_zc[sid] * off.float()
            key = _depth_key(depth) | span_face[sid]
            zbuf.scatter_reduce_(0, span_pix[sid] + off, key, reduce="amin")


def _depth_key(depth: torch.Tensor) -> torch.Tensor:
    """Order-preserving int64 key with the float32 depth in the high 32 bits."""
    bits = (depth + 0.0).view(torch.int32)  # + 0.0 turns -0.0 into +0.0 so they tie
    # Negative floats order backwards as ints: flipping their magnitude bits fixes that.
    bits = bits ^ ((bits >> 31) & 0x7FFFFFFF)
    return bits.long() << 32


def _key_depth(key: torch.Tensor) -> torch.Tensor:
    bits = (key >> 32).int()
    return (bits ^ ((bits >> 31) & 0x7FFFFFFF)).view(torch.float32)


@torch.no_grad()
def rasterize(vertices: torch.Tensor, faces: torch.Tensor, height: int, width: int,
              cull_backfaces: bool = False,
              max_chunk_pixels: int = DEFAULT_MAX_CHUNK_PIXELS) -> Fragments:
    """Rasterise a batch of triangle meshes sharing one topology (see the module docstring).

    Args:
        vertices: (B, V, 3) or (V, 3) float tensor of pixel-space x, y and depth z (smaller z
            is nearer). (V, 3) is treated as B = 1.
        faces: (F, 3) integer tensor of vertex indices, shared by the batch (moved to the
            vertices' device if needed).
        height, width: output size in pixels.
        cull_backfaces: drop triangles that are clockwise on screen (A2 > 0); by default
            both windings are drawn and the z-buffer decides.
        max_chunk_pixels: at most this many candidate fragments (and proportionally fewer
            triangles and row spans) are held in memory at once; smaller values only trade
            speed for memory, never change the result.

    Returns:
        :class:`Fragments` on the vertices' device.

    Raises:
        ValueError: on wrong shapes or dtypes, out-of-range face indices or bad sizes.
    """
    vertices, faces, height, width = _validate(vertices, faces, height, width,
                                               max_chunk_pixels)
    device = vertices.device
    batch, num_verts = vertices.shape[:2]
    num_faces = faces.shape[0]
    num_pix = batch * height * width
    zbuf = torch.full((num_pix,), _EMPTY, dtype=torch.int64, device=device)
    verts_flat = vertices.reshape(batch * num_verts, 3)
    num_tris = batch * num_faces
    if num_pix and num_tris:
        tri_chunk = max(1, max_chunk_pixels // 8)
        for t0 in range(0, num_tris, tri_chunk):
            _raster_triangles(zbuf, verts_flat, faces, t0, min(t0 + tri_chunk, num_tris),
                              num_faces, num_verts, height, width, cull_backfaces,
                              max_chunk_pixels)
    return _resolve(zbuf, verts_flat, faces, batch, num_verts, height, width)


def _resolve(zbuf, verts_flat, faces, batch, num_verts, height, width) -> Fragments:
    """Decode the packed z-buffer and compute exact barycentrics of the winning faces."""
    shape = (batch, height, width)
    mask = zbuf != _EMPTY
    face_ids = torch.where(mask, zbuf & _LOW32, -1)
    depth = torch.where(mask, _key_depth(zbuf), 0.0)
    bary = torch.zeros(zbuf.shape[0], 3, dtype=torch.float32, device=zbuf.device)

    idx = mask.view(shape).nonzero()  # (P, 3): batch, row, column
    if idx.shape[0]:
        pix = (idx[:, 0] * height + idx[:, 1]) * width + idx[:, 2]
        tv = verts_flat[faces[face_ids[pix]] + (idx[:, 0] * num_verts).unsqueeze(1)]
        X = _snap(tv[..., 0])
        Y = _snap(tv[..., 1])
        px = (idx[:, 2] * _ONE + _HALF).unsqueeze(1)
        py = (idx[:, 1] * _ONE + _HALF).unsqueeze(1)
        # n_i = edge function of the edge opposite vertex i at the pixel centre; the three
        # add up to A2 exactly, and n_i / A2 is the barycentric weight of vertex i.
        xs, ys = X[:, [1, 2, 0]], Y[:, [1, 2, 0]]
        xe, ye = X[:, [2, 0, 1]], Y[:, [2, 0, 1]]
        n = ((xe - xs) * (py - ys) - (ye - ys) * (px - xs)).double()
        bary[pix] = (n / n.sum(1, keepdim=True)).float()
    return Fragments(face_ids=face_ids.view(shape), bary=bary.view(*shape, 3),
                     depth=depth.view(shape), mask=mask.view(shape))


@torch.no_grad()
def interpolate(fragments: Fragments, faces: torch.Tensor,
                vertex_attrs: torch.Tensor) -> torch.Tensor:
    """Barycentric interpolation of per-vertex attributes at every covered pixel.

    Args:
        fragments: output of :func:`rasterize`.
        faces: the (F, 3) faces given to :func:`rasterize`.
        vertex_attrs: (B, V, C) float attributes, or (V, C) shared by the whole batch.

    Returns:
        (B, H, W, C) tensor (dtype of ``vertex_attrs``, at least float32), 0 where empty.
    """
    if not isinstance(vertex_attrs, torch.Tensor) or not isinstance(faces, torch.Tensor):
        raise ValueError("interpolate: faces and vertex_attrs must be torch.Tensors")
    batch, height, width = fragments.face_ids.shape
    if vertex_attrs.ndim == 2:
        vertex_attrs = vertex_attrs.unsqueeze(0).expand(batch, -1, -1)
    if vertex_attrs.ndim != 3 or vertex_attrs.shape[0] != batch:
        raise ValueError(f"interpolate: vertex_attrs must have shape ({batch}, V, C) or (V, C), "
                         f"got {tuple(vertex_attrs.shape)}")
    if not vertex_attrs.is_floating_point():
        raise ValueError(f"interpolate: vertex_attrs must be a float tensor, "
                         f"got {vertex_attrs.dtype}")
    if faces.ndim != 2 or faces.shape[1] != 3 or faces.is_floating_point():
        raise ValueError(f"interpolate: faces must be an (F, 3) integer tensor, "
                         f"got {tuple(faces.shape)} {faces.dtype}")
    num_verts, channels = vertex_attrs.shape[1:]
    device = fragments.face_ids.device
    dtype = torch.promote_types(vertex_attrs.dtype, torch.float32)
    faces = faces.to(device=device, dtype=torch.int64)
    out = torch.zeros(batch * height * width, channels, dtype=dtype, device=device)
    idx = fragments.mask.nonzero()
    if idx.shape[0] and channels:
        pix = (idx[:, 0] * height + idx[:, 1]) * width + idx[:, 2]
        vid = faces[fragments.face_ids.view(-1)[pix]] + (idx[:, 0] * num_verts).unsqueeze(1)
        attrs = vertex_attrs.to(device=device, dtype=dtype).reshape(batch * num_verts, channels)
        w = fragments.bary.view(-1, 3)[pix].to(dtype)
        out[pix] = (attrs[vid[:, 0]] * w[:, 0:1] + attrs[vid[:, 1]] * w[:, 1:2]
                    + attrs[vid[:, 2]] * w[:, 2:3])
    return out.view(batch, height, width, channels)
