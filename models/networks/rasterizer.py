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
_INVALID = torch.iinfo(torch.int32).min  # fixed-point x, y of an unusable vertex


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


def _expand(counts, excl, incl, total, start, stop):
    """Elements ``[start, stop)`` of the virtual list in which owner k appears counts[k] times.

    ``incl``/``excl`` are the inclusive/exclusive cumulative sums of ``counts`` and ``total``
    their sum. Returns (owner, offset), offset being the element's position within its
    owner's run. Lets a huge expansion be processed in chunks without materialising it.
    """
    device = counts.device
    if start == 0 and stop == total:
        owner = torch.repeat_interleave(counts, output_size=total)
    else:
        bounds = torch.tensor([start, stop - 1], device=device, dtype=incl.dtype)
        k0, k1 = torch.searchsorted(incl, bounds, right=True).tolist()
        k1 += 1
        first, last = torch.stack([excl[k0], incl[k1 - 1]]).tolist()
        sub = counts[k0:k1].clone()
        sub[0] -= start - first
        sub[-1] -= last - stop
        owner = torch.repeat_interleave(torch.arange(k0, k1, device=device), sub,
                                        output_size=stop - start)
    offset = torch.arange(start, stop, device=device) - excl.index_select(0, owner)
    return owner, offset


def _snap_vertices(verts_flat: torch.Tensor):
    """Fixed-point x, y (int32, 1/256 px; _INVALID where unusable) and z of every vertex."""
    ok = torch.isfinite(verts_flat).all(1) & (verts_flat[:, :2].abs() <= MAX_COORD).all(1)
    # The fill keeps NaN/inf out of the float -> int conversion and marks the vertex.
    xy = torch.round(verts_flat[:, :2].double() * _ONE).masked_fill_(~ok[:, None], _INVALID)
    xy = xy.int()
    return xy[:, 0].contiguous(), xy[:, 1].contiguous(), verts_flat[:, 2].contiguous()


def _min3(a, b, c):
    return torch.minimum(torch.minimum(a, b), c)


def _max3(a, b, c):
    return torch.maximum(torch.maximum(a, b), c)


def _take3(a: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """Columns ``idx`` of a contiguous (3, n) tensor (1-D index_select is the fast gather)."""
    n = a.shape[1]
    flat = (idx.unsqueeze(0) + torch.arange(0, 3 * n, n, device=idx.device).unsqueeze(1))
    return a.reshape(-1).index_select(0, flat.view(-1)).view(3, -1)


def _raster_chunk(zbuf, X, Y, Z, faces_t, b0, b1, f0, f1, num_verts, height, width,
                  cull_backfaces, chunk):
    """Z-buffer faces ``[f0, f1)`` of images ``[b0, b1)`` into ``zbuf``."""
    device = zbuf.device
    nf = f1 - f0
    vid = faces_t[:, f0:f1]
    if b1 - b0 > 1 or b0:
        offs = torch.arange(b0, b1, device=device) * num_verts
        vid = vid.unsqueeze(1) + offs.view(1, -1, 1)
    vid = vid.reshape(3, -1)  # (corner, triangle), triangle t = (b - b0) * nf + (f - f0)
    num_tris = vid.shape[1]

    # Cheap int32 bounding-box pass over all triangles first: on dense meshes most
    # triangles contain no pixel centre and never reach the int64 work below.
    xi = X.index_select(0, vid.reshape(-1)).view(3, num_tris)
    yi = Y.index_select(0, vid.reshape(-1)).view(3, num_tris)
    xmin = _min3(xi[0], xi[1], xi[2])
    ymin = _min3(yi[0], yi[1], yi[2])
    # Pixel centres _ONE * j + _HALF with xmin <= centre < xmax (same for rows). The strict
    # upper bound is exact, not a shortcut: a centre at the rightmost (bottom-most)
    # coordinate lies on a right (bottom) edge or vertex, which the top-left rule excludes.
    cmin = ((xmin + (_ONE - 1 - _HALF)) >> SUBPIXEL_BITS).clamp_min_(0)
    rmin = ((ymin + (_ONE - 1 - _HALF)) >> SUBPIXEL_BITS).clamp_min_(0)
    cmax = ((_max3(xi[0], xi[1], xi[2]) - (_HALF + 1)) >> SUBPIXEL_BITS).clamp_max_(width - 1)
    rmax = ((_max3(yi[0], yi[1], yi[2]) - (_HALF + 1)) >> SUBPIXEL_BITS).clamp_max_(height - 1)
    keep = (cmax >= cmin) & (rmax >= rmin) & (xmin != _INVALID)
    kept = keep.nonzero().squeeze(1)
    if kept.numel() == 0:
        return

    x = _take3(xi, kept).long()
    y = _take3(yi, kept).long()
    area2 = (x[1] - x[0]) * (y[2] - y[0]) - (y[1] - y[0]) * (x[2] - x[0])
    good = (area2 < 0) if cull_backfaces else (area2 != 0)
    if not bool(good.all()):
        sel = good.nonzero().squeeze(1)
        if sel.numel() == 0:
            return
        kept, area2 = kept.index_select(0, sel), area2.index_select(0, sel)
        x, y = _take3(x, sel), _take3(y, sel)
    n = kept.numel()
    cmin, cmax, rmin, rmax = (v.index_select(0, kept).long() for v in (cmin, cmax, rmin, rmax))
    z = Z.index_select(0, _take3(vid, kept).view(-1)).view(3, n).double()
    if b1 - b0 > 1:
        b_local = torch.div(kept, nf, rounding_mode="floor")
        face = kept - b_local * nf + f0
        pix_base = (b_local + b0) * (height * width) + rmin * width + cmin
    else:
        face = kept + f0
        pix_base = rmin * width + cmin + b0 * height * width

    # Edge i is opposite vertex i. Multiplying by `sign` orients every triangle clockwise on
    # screen (positive area), so inside is "n_i >= bias_i for all i" and the top-left rule
    # can be read off the oriented edge direction alone. All relative to the bounding box's
    # first pixel centre: n_i(dc, dr) = colc_i dc + rowc_i dr + n0_i.
    sign = area2.sign()
    ox = cmin * _ONE + _HALF
    oy = rmin * _ONE + _HALF
    fields = {k: [] for k in ("nr", "nc", "d", "lo", "hi", "n0", "colc", "rowc")}
    for s_idx, e_idx in ((1, 2), (2, 0), (0, 1)):
        xs, ys = x[s_idx], y[s_idx]
        dx = (x[e_idx] - xs) * sign
        dy = (y[e_idx] - ys) * sign
        colc = dy * -_ONE
        rowc = dx * _ONE
        n0 = dx * (oy - ys) - dy * (ox - xs)
        # Not top-left (bias 1) <=> dy > 0, or dy == 0 and dx < 0 <=> dy * 2**31 - dx > 0.
        bias = ((dx - dy * (1 << 31)) >> 63) & 1
        # Along a row the edge bounds the span from the left when colc > 0 ("lo" edge), from
        # the right when colc < 0 ("hi"); horizontal edges never cut a row inside the strict
        # bounding box. Solve colc dc + rhs >= bias (rhs = rowc dr + n0) exactly with one
        # truncating division of a numerator that is non-negative whenever it matters:
        #   lo edge: dc >= ceil((bias - rhs) / d)   = trunc((bias - rhs + d - 1) / d)
        #   hi edge: dc <  floor((rhs - bias) / d) + 1 = trunc((rhs - bias + d) / d)
        sg = colc.sign()
        is_lo = sg.clamp_min(0)
        is_hi = (-sg).clamp_min(0)
        d = colc.abs().clamp_min_(1)
        fields["nr"].append(-sg * rowc)
        fields["nc"].append(-sg * (n0 - bias) + (is_lo + is_hi) * d - is_lo)
        fields["d"].append(d)
        fields["lo"].append(is_lo)
        fields["hi"].append(is_hi)
        fields["n0"].append(n0)
        fields["colc"].append(colc)
        fields["rowc"].append(rowc)
    f = {k: torch.stack(v) for k, v in fields.items()}

    # Depth plane z = z0 + b1 (z1 - z0) + b2 (z2 - z0) with b_i = n_i / |A2|, relative to the
    # bounding box's first pixel, where it is well conditioned.
    abs_area2 = (area2 * sign).double()
    dz1 = (z[1] - z[0]) / abs_area2
    dz2 = (z[2] - z[0]) / abs_area2
    z_origin = z[0] + f["n0"][1].double() * dz1 + f["n0"][2].double() * dz2
    z_col = f["colc"][1].double() * dz1 + f["colc"][2].double() * dz2
    z_row = f["rowc"][1].double() * dz1 + f["rowc"][2].double() * dz2
    # Clamped so that a near-degenerate sliver gives +-inf depths, never inf * 0 = NaN.
    z_step = z_col.clamp(-_FLT_MAX, _FLT_MAX).float()

    # Three slots per triangle: its first lo edge, its first hi edge (every non-degenerate
    # triangle has both) and the remaining edge, which is neutralised on the side it does
    # not bound by an offset of +-2**61 (|quotients| stay below 2**60).
    lo, hi = f["lo"], f["hi"]
    first_lo = (1 - lo[0]) * (2 - lo[1])
    first_hi = (1 - hi[0]) * (2 - hi[1])
    slots = torch.cat([first_lo, 3 - first_lo - first_hi, first_hi])  # (3n,) L, M, H
    flat = slots * n + torch.arange(n, device=device).repeat(3)
    mid = flat[n:2 * n]
    big = 1 << 61
    table = torch.cat([
        f["nr"].view(-1).index_select(0, flat),
        f["nc"].view(-1).index_select(0, flat),
        f["d"].view(-1).index_select(0, flat),
        (1 - lo.view(-1).index_select(0, mid)) * big,
        (1 - hi.view(-1).index_select(0, mid)) * big,
        cmax - cmin + 1,
        pix_base,
        face,
    ]).view(14, n)

    rows = rmax - rmin + 1
    rows_incl = rows.cumsum(0)
    rows_excl = rows_incl - rows
    total_spans = int(rows_incl[-1])
    span_chunk = max(1, chunk // 16)
    for s0 in range(0, total_spans, span_chunk):
        s1 = min(s0 + span_chunk, total_spans)
        k, dr = _expand(rows, rows_excl, rows_incl, total_spans, s0, s1)
        t = [row.index_select(0, k) for row in table]
        q = [torch.div(t[i] * dr + t[3 + i], t[6 + i], rounding_mode="trunc")
             for i in range(3)]
        start = torch.maximum(q[0], q[1] - t[9]).clamp_min_(0)
        stop = torch.minimum(torch.minimum(q[2], q[1] + t[10]), t[11])
        length = (stop - start).clamp_min_(0)
        len_incl = length.cumsum(0)
        total = int(len_incl[-1])
        if total == 0:
            continue
        len_excl = len_incl - length
        span_pix = t[12] + dr * width + start
        span_z = (z_origin.index_select(0, k) + z_col.index_select(0, k) * start.double()
                  + z_row.index_select(0, k) * dr.double()).float()
        span_dz = z_step.index_select(0, k)
        span_face = t[13]
        for g0 in range(0, total, chunk):
            g1 = min(g0 + chunk, total)
            sid, off = _expand(length, len_excl, len_incl, total, g0, g1)
            depth = span_z.index_select(0, sid) + span_dz.index_select(0, sid) * off.float()
            key = _depth_key(depth) | span_face.index_select(0, sid)
            pix = span_pix.index_select(0, sid) + off
            zbuf.scatter_reduce_(0, pix, key, reduce="amin")


def _depth_key(depth: torch.Tensor) -> torch.Tensor:
    """Order-preserving int64 key with the float32 depth in the high 32 bits."""
    bits = (depth + 0.0).view(torch.int32)  # + 0.0 turns -0.0 into +0.0 so that they tie
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
        cull_backfaces: drop triangles that are clockwise on screen (A2 > 0, back-facing);
            by default both windings are drawn and the z-buffer decides.
        max_chunk_pixels: at most this many candidate fragments (and proportionally fewer
            triangles and row spans) are processed at once, which bounds memory; it never
            changes the result.

    Returns:
        :class:`Fragments` on the vertices' device.

    Raises:
        ValueError: on wrong shapes or dtypes, out-of-range face indices or bad sizes.
    """
    vertices, faces, height, width = _validate(vertices, faces, height, width,
                                               max_chunk_pixels)
    batch, num_verts = vertices.shape[:2]
    num_faces = faces.shape[0]
    zbuf = torch.full((batch * height * width,), _EMPTY, dtype=torch.int64,
                      device=vertices.device)
    X, Y, Z = _snap_vertices(vertices.reshape(batch * num_verts, 3))
    if zbuf.numel() and num_faces:
        faces_t = faces.t().contiguous()
        # Whole images per chunk while they fit, else slices of one image's faces.
        tri_chunk = max(1, max_chunk_pixels // 16)
        images = max(1, tri_chunk // num_faces)
        face_step = num_faces if images > 1 else tri_chunk
        for b0 in range(0, batch, images):
            for f0 in range(0, num_faces, face_step):
                _raster_chunk(zbuf, X, Y, Z, faces_t, b0, min(b0 + images, batch), f0,
                              min(f0 + face_step, num_faces), num_verts, height, width,
                              cull_backfaces, max_chunk_pixels)
    return _resolve(zbuf, X, Y, faces, batch, num_verts, height, width)


def _resolve(zbuf, X, Y, faces, batch, num_verts, height, width) -> Fragments:
    """Decode the packed z-buffer; exact barycentrics of the winning faces."""
    shape = (batch, height, width)
    mask = zbuf != _EMPTY
    # Sign-extending the low 32 bits gives the face index, and -1 for the empty key.
    face_ids = (zbuf << 32) >> 32
    depth = torch.zeros(zbuf.shape[0], dtype=torch.float32, device=zbuf.device)
    bary = torch.zeros(zbuf.shape[0], 3, dtype=torch.float32, device=zbuf.device)
    idx = mask.view(shape).nonzero()  # (P, 3): image, row, column
    if idx.shape[0]:
        pix = (idx[:, 0] * height + idx[:, 1]) * width + idx[:, 2]
        keys = zbuf.index_select(0, pix)
        depth.index_copy_(0, pix, _key_depth(keys))
        vid = faces.index_select(0, keys & _LOW32) + (idx[:, 0] * num_verts).unsqueeze(1)
        vid = vid.t().reshape(-1)
        x = X.index_select(0, vid).view(3, -1).long()
        y = Y.index_select(0, vid).view(3, -1).long()
        px = idx[:, 2] * _ONE + _HALF
        py = idx[:, 1] * _ONE + _HALF
        # n_i: edge function of the edge opposite vertex i at the pixel centre. The three add
        # up to A2 exactly, and n_i / A2 is the barycentric weight of vertex i.
        n = torch.stack([(x[e] - x[s]) * (py - y[s]) - (y[e] - y[s]) * (px - x[s])
                         for s, e in ((1, 2), (2, 0), (0, 1))], 1)
        area2 = n.sum(1, keepdim=True).double()
        bary.index_copy_(0, pix, (n.double() / area2).float())
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
    idx = fragments.mask.nonzero()  # (P, 3): image, row, column
    if idx.shape[0] and channels:
        pix = (idx[:, 0] * height + idx[:, 1]) * width + idx[:, 2]
        face = fragments.face_ids.reshape(-1).index_select(0, pix)
        vid = faces.index_select(0, face) + (idx[:, 0] * num_verts).unsqueeze(1)
        vid = vid.t().contiguous()
        attrs = vertex_attrs.to(device=device, dtype=dtype).reshape(batch * num_verts, channels)
        w = fragments.bary.reshape(-1, 3).index_select(0, pix).to(dtype).t().unsqueeze(2)
        val = attrs.index_select(0, vid[0]) * w[0]
        val += attrs.index_select(0, vid[1]) * w[1]
        val += attrs.index_select(0, vid[2]) * w[2]
        out.index_copy_(0, pix, val)
    return out.view(batch, height, width, channels)
