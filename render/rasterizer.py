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
  projected) and refer to the face's vertices in the order given in ``faces``. They are
  computed in float64 from the snapped coordinates (stored as float32), so ``interpolate`` of
  the vertex x, y reproduces the pixel centre to within the 1/512 px snapping error.
  ``Fragments.depth`` is the value the depth test used (the triangle's depth plane, evaluated
  in float64 at the start of each row span and stepped along it in float32); it agrees with
  interpolating z with ``bary`` to float32 rounding. Depths never become NaN: extreme z on a
  near-degenerate sliver can at worst overflow to +-inf.
* **Skipped triangles.** Triangles with a non-finite vertex coordinate (NaN/inf) or with |x|
  or |y| beyond 2**20 px (the range in which the int64 fixed-point arithmetic is proved not to
  overflow) are skipped, as if absent. Triangles partly or entirely outside the image are
  clipped to it.

Algorithm (no Python loop over triangles or pixels; only over a few chunks): a cheap int32
pass finds each triangle's snapped bounding box of candidate pixel centres, clipped to the
image (centres with xmin <= x < xmax: a centre on the right/bottom-most coordinate is on a
right/bottom edge or vertex, which the fill rule excludes anyway). Every (triangle, row)
"span" of the surviving triangles then gets its exact column interval by solving the three
edge-function inequalities with integer floor division (the top-left rule folded in as a bias
of 1 on edges that are not top/left), so every enumerated fragment is inside and none is
missed. Fragments get their depth from the triangle's depth plane and are z-buffered with one
``scatter_reduce``; the winners' barycentrics are then computed per covered pixel.
Triangles, spans and fragments are processed in chunks bounded by ``max_chunk_pixels``, so a
triangle covering a huge image or a big batch does not blow memory, and the chunking never
changes the result.

Strategies (``strategy=``; all three give bit-identical results, tested):

* **numba** (the CPU default when numba is importable): the same algorithm compiled for the
  CPU, in render/rasterizer_numba.py: one pass over each image's faces and pixels instead of
  ~1,000 PyTorch operations, several times faster. CPU tensors only. Without numba it falls
  back to compact, silently. The environment variable ``RR_RASTERIZER=torch|numba`` picks
  the CPU default (torch: compact).
* **compact** (the CPU default without numba) keeps only what is needed at each stage: the
  triangles that can cover a pixel, each span's exact pixel run, the covered pixels when
  resolving. Each compaction sizes its output with a host sync, which costs nothing on a CPU.
* **dense** (the default on other devices) never compacts: triangles that draw nothing get
  no rows, every span is enumerated over its whole bounding-box row with the pixels outside
  the triangle masked, and every pixel is resolved. About 2x the arithmetic, but all
  kernels have shapes known in advance: one host sync per call sizes the two expansions
  (one per chunk of spans when there are several), and under a :class:`SizingPlan` (fixed
  sizes with headroom and an overflow flag) none, so
  a whole render can be captured and replayed as a CUDA graph
  (render/cuda_graph.py). On a GPU, small renders are bound by kernel launches
  and syncs, not arithmetic.
"""

from __future__ import annotations

import contextlib
import math
import os
import weakref
from dataclasses import dataclass

import torch

__all__ = ["Fragments", "rasterize", "rasterize_depth", "interpolate", "default_max_chunk_pixels",
           "default_strategy", "numba_available", "STRATEGIES", "ENV_VAR"]

STRATEGIES = ("compact", "dense", "numba")
ENV_VAR = "RR_RASTERIZER"  # torch | numba: the CPU default

# Fragments per step: ~50 bytes each at peak, plus ~300 bytes per triangle for chunk // 8
# triangles. GPUs get bigger steps: fewer kernel launches and host syncs.
_CHUNK_CPU = 1 << 21
_CHUNK_GPU = 1 << 22

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


def default_max_chunk_pixels(device: torch.device | str) -> int:
    """``max_chunk_pixels`` used when None is given: 2**21 on CPU, 2**22 on other devices."""
    return _CHUNK_CPU if torch.device(device).type == "cpu" else _CHUNK_GPU


def default_strategy(device: torch.device | str) -> str:
    """``strategy`` used when None is given: "dense" on other devices than the CPU; on the
    CPU "numba" when numba is importable, unless the environment variable RR_RASTERIZER is
    "torch" (then, and without numba, "compact"); set but empty counts as unset."""
    if torch.device(device).type != "cpu":
        return "dense"
    choice = os.environ.get(ENV_VAR, "").strip() or "numba"
    if choice not in ("torch", "numba"):
        raise ValueError(f"{ENV_VAR} must be torch or numba, got {choice!r}")
    return "numba" if choice == "numba" and numba_available() else "compact"


_NUMBA: list = []  # [the compiled kernel's module, or None when numba is not importable]


def _numba_module():
    """render.rasterizer_numba, imported on first use (numba's import takes ~0.5 s), or None
    when numba cannot be imported."""
    if not _NUMBA:
        try:
            from render import rasterizer_numba
        except ImportError:
            rasterizer_numba = None
        _NUMBA.append(rasterizer_numba)
    return _NUMBA[0]


def numba_available() -> bool:
    """Whether the compiled CPU kernel (strategy "numba") can run here."""
    return _numba_module() is not None


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
    if max_chunk_pixels is None:
        max_chunk_pixels = default_max_chunk_pixels(vertices.device)
    if isinstance(max_chunk_pixels, bool) or not isinstance(max_chunk_pixels, int) \
            or max_chunk_pixels < 1:
        raise ValueError(f"rasterize: max_chunk_pixels must be a positive int or None, "
                         f"got {max_chunk_pixels!r}")
    num_verts = vertices.shape[1]
    faces = faces.to(device=vertices.device, dtype=torch.int64)
    if faces.shape[0] >= 1 << 31:
        raise ValueError("rasterize: at most 2**31 - 1 faces are supported")
    _check_face_range("rasterize", faces, num_verts, "there are")
    return vertices, faces, height, width, max_chunk_pixels


# id(faces) -> (weak reference, _version, min, max): a mesh's faces are range-checked once,
# not on every call; the check is a host sync, which on a GPU costs more than the rest of a
# small render. (Keyed by id: tensors compare elementwise, so they cannot be dict keys.)
_FACE_RANGES: dict = {}


def _check_face_range(caller: str, faces: torch.Tensor, num_verts: int, what: str):
    if not faces.numel():
        return
    key = id(faces)
    cached = _FACE_RANGES.get(key)
    if cached is not None and cached[0]() is faces and cached[1] == faces._version:
        lo, hi = cached[2:]
    else:
        lo, hi = (int(v) for v in torch.aminmax(faces))
        ref = weakref.ref(faces, lambda _, key=key: _FACE_RANGES.pop(key, None))
        _FACE_RANGES[key] = (ref, faces._version, lo, hi)
    if lo < 0 or hi >= num_verts:
        raise ValueError(f"{caller}: faces index out of range: values span [{lo}, {hi}] "
                         f"but {what} {num_verts} vertices")


def _check_strategy(caller: str, strategy, device) -> str:
    """The strategy to run: the default for None, and "compact" for "numba" when numba is
    not importable."""
    if strategy is None:
        strategy = default_strategy(device)
    if strategy not in STRATEGIES:
        raise ValueError(f"{caller}: strategy must be one of {', '.join(STRATEGIES)} or None, "
                         f"got {strategy!r}")
    if strategy == "numba":
        if torch.device(device).type != "cpu":
            raise ValueError(f"{caller}: strategy numba runs on CPU tensors only, "
                             f"got {torch.device(device)}")
        if not numba_available():
            strategy = "compact"
    return strategy


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
    if verts_flat.dtype not in (torch.float32, torch.float64):
        verts_flat = verts_flat.float()  # x * 256 must not overflow a half float
    x, y, z = verts_flat.unbind(1)
    # |x| <= MAX_COORD is False for NaN and inf, so it covers finiteness too.
    bad = ~((x.abs() <= MAX_COORD) & (y.abs() <= MAX_COORD) & torch.isfinite(z))
    # Exact: x * 256 and the rounding lose nothing in float32/64 for |x| <= 2**20. The fill
    # keeps NaN/inf out of the float -> int conversion and marks the vertex.
    X = torch.round(x * _ONE).masked_fill_(bad, _INVALID).int()
    Y = torch.round(y * _ONE).masked_fill_(bad, _INVALID).int()
    return X, Y, z.contiguous()


def _min3(a: torch.Tensor) -> torch.Tensor:
    """Minimum over the 3 rows of ``a`` (``amin(0)`` is ~100x slower for int64 on CPU)."""
    return torch.minimum(torch.minimum(a[0], a[1]), a[2])


def _take(a: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """Columns ``idx`` of a contiguous (R, n) tensor, as a contiguous (R, len(idx)) tensor.

    On CPU one 1-D ``index_select`` per row: much faster there than advanced indexing or
    an index_select along dim 1 (which is one kernel, the better choice on a GPU, and the
    one the dense strategy always uses, so that its operations are the same on any device).
    """
    if a.device.type != "cpu":
        return a.index_select(1, idx)
    out = a.new_empty(a.shape[0], idx.shape[0])
    for r in range(a.shape[0]):
        torch.index_select(a[r], 0, idx, out=out[r])
    return out


_ROTATIONS: dict = {}


def _rotations(device):
    """Row orders (1, 2, 0) and (2, 0, 1), cached per device (no host-to-device copy)."""
    if device not in _ROTATIONS:
        _ROTATIONS[device] = (torch.tensor([1, 2, 0], device=device),
                              torch.tensor([2, 0, 1], device=device))
    return _ROTATIONS[device]


def _raster_chunk(zbuf, X, Y, Z, faces_t, b0, b1, f0, f1, num_verts, height, width,
                  cull_backfaces, chunk, dense):
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
    xmin = _min3(xi)
    # Pixel centres _ONE * j + _HALF with xmin <= centre < xmax (same for rows). The strict
    # upper bound is exact, not a shortcut: a centre at the rightmost (bottom-most)
    # coordinate lies on a right (bottom) edge or vertex, which the top-left rule excludes.
    cmin = ((xmin + (_ONE - 1 - _HALF)) >> SUBPIXEL_BITS).clamp_min_(0)
    rmin = ((_min3(yi) + (_ONE - 1 - _HALF)) >> SUBPIXEL_BITS).clamp_min_(0)
    cmax = ((xi.amax(0) - (_HALF + 1)) >> SUBPIXEL_BITS).clamp_max_(width - 1)
    rmax = ((yi.amax(0) - (_HALF + 1)) >> SUBPIXEL_BITS).clamp_max_(height - 1)
    keep = (cmax >= cmin) & (rmax >= rmin) & (xmin != _INVALID)
    if dense:
        # No compaction (it would cost a host sync): triangles that draw nothing get no
        # rows below, and the garbage the int64 work computes for them is never read.
        kept = torch.arange(num_tris, device=device)
        x, y = xi.long(), yi.long()
        bbox = torch.stack([cmin, cmax, rmin, rmax]).long()
        corners = vid
    else:
        kept = keep.nonzero().squeeze(1)
        if kept.numel() == 0:
            return
        x = _take(xi, kept).long()
        y = _take(yi, kept).long()
        bbox = _take(torch.stack([cmin, cmax, rmin, rmax]), kept).long()
        corners = _take(vid, kept)
    area2 = (x[1] - x[0]) * (y[2] - y[0]) - (y[1] - y[0]) * (x[2] - x[0])
    if cull_backfaces and not dense:  # typically half the triangles: worth a compaction
        sel = (area2 < 0).nonzero().squeeze(1)
        if sel.numel() == 0:
            return
        kept, area2, x, y = kept[sel], area2[sel], _take(x, sel), _take(y, sel)
        bbox, corners = _take(bbox, sel), _take(corners, sel)
    cmin, cmax, rmin, rmax = bbox
    z = Z.index_select(0, corners.reshape(-1)).view(3, -1).double()
    if b1 - b0 > 1:
        b_local = torch.div(kept, nf, rounding_mode="floor")
        face = kept - b_local * nf + f0
        pix_base = (b_local + b0) * (height * width) + rmin * width + cmin
    else:
        face = kept + f0
        pix_base = rmin * width + cmin + b0 * height * width

    # Row i of these (3, n) tensors is the edge opposite vertex i, from vertex s = i + 1 to
    # e = i + 2 (mod 3). Multiplying by `sign` orients every triangle clockwise on screen
    # (positive area), so inside is "n_i >= bias_i for all i" and the top-left rule can be
    # read off the oriented edge direction alone. Everything is relative to the bounding
    # box's first pixel centre: n_i(dc, dr) = colc_i dc + rowc_i dr + n0_i.
    sign = area2.sign()
    s_idx, e_idx = _rotations(device)
    xs, ys = x.index_select(0, s_idx), y.index_select(0, s_idx)
    dx = (x.index_select(0, e_idx) - xs) * sign
    dy = (y.index_select(0, e_idx) - ys) * sign
    n0 = dx * (rmin * _ONE + _HALF - ys) - dy * (cmin * _ONE + _HALF - xs)
    colc = dy * -_ONE
    rowc = dx * _ONE
    # Not top-left (bias 1) <=> dy > 0, or dy == 0 and dx < 0 <=> dy * 2**31 - dx > 0.
    bias = ((dx - dy * (1 << 31)) >> 63) & 1

    # Depth plane z = z0 + b1 (z1 - z0) + b2 (z2 - z0) with b_i = n_i / |A2|, relative to the
    # bounding box's first pixel, where it is well conditioned.
    abs_area2 = (area2 * sign).double()
    dz1 = (z[1] - z[0]) / abs_area2
    dz2 = (z[2] - z[0]) / abs_area2
    zplane = torch.stack([
        z[0] + n0[1].double() * dz1 + n0[2].double() * dz2,
        colc[1].double() * dz1 + colc[2].double() * dz2,
        rowc[1].double() * dz1 + rowc[2].double() * dz2,
    ])
    # Depths are clamped finite (span start and step) so that the extreme z of a sliver
    # can overflow to +-inf but never give NaN (inf * 0, inf - inf).
    z_step = zplane[1].clamp(-_FLT_MAX, _FLT_MAX).float()

    # On row dr, edge i holds for the columns dc with colc dc >= -e, e = rowc dr + n0 - bias.
    # With g = floor(e / |colc|) that is dc >= -g if colc > 0 (the edge bounds the span from
    # the left), dc <= g if colc < 0 (from the right). Horizontal edges (colc == 0) never cut
    # a row inside the strict bounding box. An edge is neutralised on the side it does not
    # bound by an offset of 2**61 (|g| < 2**60 by the coordinate limits).
    sg = colc.sign()
    table = torch.cat([
        rowc, n0 - bias, colc.abs().clamp_min_(1),
        (1 - sg.clamp_min(0)) << 61, (1 + sg.clamp_max(0)) << 61,
        torch.stack([cmax - cmin, pix_base, face]),
    ])
    del x, y, xs, ys, dx, dy, n0, colc, rowc, bias, sg

    # Triangles that draw nothing (zero area, and in the dense mode also empty boxes and
    # culled faces) get no rows rather than a compaction; their depth planes are never read.
    drawn = area2 != 0
    if dense:
        drawn &= keep if not cull_backfaces else keep & (area2 < 0)
    rows = (rmax - rmin + 1) * drawn
    if dense:
        _dense_spans(zbuf, table, zplane, z_step, rows, cmax - cmin + 1, width, chunk)
    else:
        _compact_spans(zbuf, table, zplane, z_step, rows, width, chunk)


def _span_columns(t, dr):
    """First and last column (relative to the box) of each span's exact pixel run; the run
    is empty when last < first. ``t``: the spans' rows of the triangle table."""
    g = torch.div(t[0:3] * dr + t[3:6], t[6:9], rounding_mode="floor")
    start = (g + t[9:12]).neg_().amax(0).clamp_min_(0)
    stop = torch.minimum(_min3(g + t[12:15]), t[15])
    return start, stop


def _span_depth(zp, z_step, k, start, dr):
    """Depth at each span's first pixel (float64 plane ``zp`` of each span, clamped finite)
    and its step."""
    span_z = (zp[0] + zp[1] * start.double() + zp[2] * dr.double())
    return span_z.clamp_(-_FLT_MAX, _FLT_MAX).float(), z_step.index_select(0, k)


def _fragment_keys(span_z, span_dz, span_face, sid, off):
    """Packed z-buffer keys of fragments ``off`` pixels along spans ``sid``."""
    depth = span_z.index_select(0, sid) + span_dz.index_select(0, sid) * off.float()
    return _depth_key(depth) | span_face.index_select(0, sid)


def _compact_spans(zbuf, table, zplane, z_step, rows, width, chunk):
    """Enumerate exactly the covered fragments, compacting as it goes (host syncs size each
    expansion)."""
    rows_incl = rows.cumsum(0)
    rows_excl = rows_incl - rows
    total_spans = int(rows_incl[-1])
    span_chunk = max(1, chunk // 8)
    for s0 in range(0, total_spans, span_chunk):
        s1 = min(s0 + span_chunk, total_spans)
        k, dr = _expand(rows, rows_excl, rows_incl, total_spans, s0, s1)
        t = _take(table, k)
        start, stop = _span_columns(t, dr)
        length = (stop - start + 1).clamp_min_(0)
        len_incl = length.cumsum(0)
        total = int(len_incl[-1])
        if total == 0:
            continue
        len_excl = len_incl - length
        span_pix = t[16] + dr * width + start
        span_z, span_dz = _span_depth(_take(zplane, k), z_step, k, start, dr)
        for g0 in range(0, total, chunk):
            sid, off = _expand(length, len_excl, len_incl, total, g0, min(g0 + chunk, total))
            key = _fragment_keys(span_z, span_dz, t[17], sid, off)
            zbuf.scatter_reduce_(0, span_pix.index_select(0, sid) + off, key, reduce="amin")


def _slots(counts, incl, s0, s1):
    """Slots ``[s0, s1)`` of the virtual list in which owner k appears counts[k] times (incl:
    inclusive cumsum of counts): (owner, offset within the owner's run, valid). Fixed shapes
    and no host sync; slots past the list's end are not valid (their owner is the last)."""
    slot = torch.arange(s0, s1, device=counts.device)
    owner = torch.searchsorted(incl, slot, right=True)
    valid = owner < incl.shape[0]
    owner.clamp_max_(incl.shape[0] - 1)
    offset = slot - (incl.index_select(0, owner) - counts.index_select(0, owner))
    return owner, offset, valid


def _dense_spans(zbuf, table, zplane, z_step, rows, cols, width, chunk):
    """Enumerate every box pixel of every span with fixed-shape kernels, masking those
    outside the triangle. Sized by host syncs (one when everything fits one chunk), or,
    under a :class:`SizingPlan` that is replaying, by the plan: no sync at all, so that the
    whole call can be captured in a CUDA graph."""
    rows_incl = rows.cumsum(0)
    span_chunk = max(1, chunk // 8)
    plan = _ACTIVE_PLAN[-1] if _ACTIVE_PLAN else None
    replaying = plan is not None and plan.replaying
    if replaying:
        num_spans, room = plan._sizes_for_step()
        plan._flags.append(rows_incl[-1] > num_spans)
    else:
        num_spans, num_padded = torch.stack([rows_incl[-1], (rows * cols).sum()]).tolist()
        most = 0
    for s0 in range(0, num_spans, span_chunk):
        s1 = min(s0 + span_chunk, num_spans)
        k, dr, span_ok = _slots(rows, rows_incl, s0, s1)
        t = table.index_select(1, k)  # (not _take: the dense path's ops are the GPU's)
        start, stop = _span_columns(t, dr)
        length = (t[15] + 1) * span_ok  # the whole box row
        len_incl = length.cumsum(0)
        if replaying:
            total = room
            plan._flags.append(len_incl[-1] > room)
        else:
            total = num_padded if s1 - s0 == num_spans else int(len_incl[-1])
            most = max(most, total)
        span_pix = t[16] + dr * width
        span_z, span_dz = _span_depth(zplane.index_select(1, k), z_step, k, start, dr)
        for g0 in range(0, total, chunk):
            sid, col, ok = _slots(length, len_incl, g0, min(g0 + chunk, total))
            off = col - start.index_select(0, sid)
            ok &= (off >= 0) & (col <= stop.index_select(0, sid))
            key = _fragment_keys(span_z, span_dz, t[17], sid, off).masked_fill_(~ok, _EMPTY)
            pix = (span_pix.index_select(0, sid) + col).masked_fill_(~ok, 0)
            zbuf.scatter_reduce_(0, pix, key, reduce="amin")
    if plan is not None and not replaying:
        plan._note_sizes(num_spans, most)


_ACTIVE_PLAN: list = []  # the SizingPlans in effect, innermost last (not thread-safe)


class SizingPlan:
    """Fixed sizes for the dense rasteriser, so that a function of fixed input shapes runs
    with no host sync and the same kernel shapes every time (as a CUDA graph needs).

    Run the function once under ``with plan.recording():`` (the rasteriser syncs as usual
    and notes how much work each of its steps needed), then under ``with plan.replay():``
    as often as wanted: each step gets room for its recorded work times ``headroom``
    (enough for other inputs of similar geometry: spans in total, and box pixels per chunk
    of spans), and :meth:`overflowed` (a device bool tensor) says afterwards whether any
    step needed more, in which case that run's output is incomplete and the function should
    be recorded again. Steps are matched by their order, which depends only on the input
    shapes.
    """

    def __init__(self, headroom: float = 1.5):
        if not headroom >= 1.0:
            raise ValueError(f"SizingPlan: headroom must be >= 1, got {headroom!r}")
        self.headroom = headroom
        self.sizes: list[tuple[int, int]] = []  # per step: (spans, box pixels per span chunk)
        self.replaying = False
        self._step = 0
        self._flags: list[torch.Tensor] = []

    def _note_sizes(self, num_spans: int, most_padded: int):
        room = lambda n: max(16, math.ceil(n * self.headroom))  # noqa: E731
        self.sizes.append((room(num_spans), room(most_padded)))

    def _sizes_for_step(self) -> tuple[int, int]:
        if self._step >= len(self.sizes):
            raise RuntimeError("SizingPlan: more rasteriser steps than were recorded "
                               "(did the input shapes change?)")
        self._step += 1
        return self.sizes[self._step - 1]

    @contextlib.contextmanager
    def recording(self):
        self.sizes, self.replaying = [], False
        with self._active():
            yield self

    @contextlib.contextmanager
    def replay(self):
        self.replaying, self._step, self._flags = True, 0, []
        try:
            with self._active():
                yield self
        finally:
            self.replaying = False

    @contextlib.contextmanager
    def _active(self):
        _ACTIVE_PLAN.append(self)
        try:
            yield
        finally:
            _ACTIVE_PLAN.pop()

    def overflowed(self) -> torch.Tensor | bool:
        """Whether the last replay ran out of room (a device tensor: reading it syncs)."""
        return torch.stack(self._flags).any() if self._flags else False


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
              cull_backfaces: bool = False, max_chunk_pixels: int | None = None,
              strategy: str | None = None, *, _scratch: str | None = None) -> Fragments:
    """Rasterise a batch of triangle meshes sharing one topology (see the module docstring).

    Args:
        vertices: (B, V, 3) or (V, 3) float tensor of pixel-space x, y and depth z (smaller z
            is nearer). (V, 3) is treated as B = 1.
        faces: (F, 3) integer tensor of vertex indices, shared by the batch (moved to the
            vertices' device if needed).
        height, width: output size in pixels.
        cull_backfaces: drop triangles that are clockwise on screen (A2 > 0, back-facing);
            by default both windings are drawn and the z-buffer decides.
        max_chunk_pixels: at most this many candidate fragments (and an eighth as many
            triangles and row spans, and whole rows of covered pixels when resolving) are
            processed at once, which bounds temporary memory (~50 bytes per fragment,
            ~300 per triangle); it never changes the result (the numba strategy has no
            temporaries to bound and ignores it). None (default):
            :func:`default_max_chunk_pixels` of the vertices' device.
        strategy: "compact", "dense" or "numba" (same result, see the module docstring);
            None (default): :func:`default_strategy` of the vertices' device.
        _scratch: internal (the renderer's): with the numba strategy, write into this
            thread's reusable buffers of that name (``rasterizer_numba.scratch``), which
            the next such call overwrites; other strategies ignore it.

    Returns:
        :class:`Fragments` on the vertices' device.

    Raises:
        ValueError: on wrong shapes or dtypes, out-of-range face indices, bad sizes or a
            bad strategy.
    """
    vertices, faces, height, width, max_chunk_pixels = _validate(
        vertices, faces, height, width, max_chunk_pixels)
    strategy = _check_strategy("rasterize", strategy, vertices.device)
    batch, num_verts = vertices.shape[:2]
    num_faces = faces.shape[0]
    shape = (batch, height, width)
    if strategy == "numba":
        face_ids, bary, depth, mask = _numba_module().rasterize(
            vertices.reshape(batch * num_verts, 3), faces, batch, height, width,
            cull_backfaces, _scratch)
        return Fragments(face_ids=face_ids.view(shape), bary=bary.view(*shape, 3),
                         depth=depth.view(shape), mask=mask.view(shape))
    dense = strategy == "dense"
    zbuf = torch.full((batch * height * width,), _EMPTY, dtype=torch.int64,
                      device=vertices.device)
    X, Y, Z = _snap_vertices(vertices.reshape(batch * num_verts, 3))
    faces_t = faces.t().contiguous()
    if zbuf.numel() and num_faces:
        # Whole images per chunk while they fit, else slices of one image's faces.
        tri_chunk = max(1, max_chunk_pixels // 8)
        images = max(1, tri_chunk // num_faces)
        face_step = num_faces if images > 1 else tri_chunk
        for b0 in range(0, batch, images):
            for f0 in range(0, num_faces, face_step):
                _raster_chunk(zbuf, X, Y, Z, faces_t, b0, min(b0 + images, batch), f0,
                              min(f0 + face_step, num_faces), num_verts, height, width,
                              cull_backfaces, max_chunk_pixels, dense)
    return _resolve(zbuf, X, Y, faces_t, batch, num_verts, height, width, max_chunk_pixels,
                    dense)


@torch.no_grad()
def rasterize_depth(vertices: torch.Tensor, faces: torch.Tensor, height: int, width: int,
                    cull_backfaces: bool = False, *, strategy: str | None = None,
                    _scratch: str | None = None):
    """(depth, mask) of :func:`rasterize` (its arguments but ``max_chunk_pixels``, and the
    same values), without the face ids and barycentrics: what a visibility test needs.
    With the numba strategy those are never computed (about a third of the work, and most
    of the memory written); other strategies rasterise in full and return the two.
    ``_scratch``: as :func:`rasterize`'s (the numba strategy only)."""
    vertices, faces, height, width, _ = _validate(vertices, faces, height, width, None)
    strategy = _check_strategy("rasterize_depth", strategy, vertices.device)
    if strategy != "numba":
        frags = rasterize(vertices, faces, height, width, cull_backfaces, strategy=strategy)
        return frags.depth, frags.mask
    batch, num_verts = vertices.shape[:2]
    _, _, depth, mask = _numba_module().rasterize(
        vertices.reshape(batch * num_verts, 3), faces, batch, height, width, cull_backfaces,
        _scratch, depth_only=True)
    shape = (batch, height, width)
    return depth.view(shape), mask.view(shape)


def _corner_ids(faces_t, face, image, num_verts):
    """(3, P) flat vertex ids of the corners of ``face`` (P,) in batch image ``image`` (P,)."""
    num_faces = faces_t.shape[1]
    offs = torch.arange(0, 3 * num_faces, num_faces, device=face.device).unsqueeze(1)
    vid = faces_t.reshape(-1).index_select(0, (face.unsqueeze(0) + offs).view(-1))
    return vid.view(3, -1) + image * num_verts


def _covered_pixels(mask, height, width, chunk, dense, num_faces):
    """The pixels of a (B, H, W) mask to work on, in chunks of ~``chunk`` pixels (whole rows).

    Yields (pix, image, row, col, covered) per chunk: int64 tensors of flat pixel index,
    batch image, row and column, and ``covered`` the mask at those pixels. Compact: only the
    covered pixels (``covered`` is None); dense: every pixel, with no host sync. Nothing
    when the mesh has no faces (no pixel is covered).
    """
    num_rows = mask.shape[0] * height
    if num_rows == 0 or width == 0 or num_faces == 0:
        return
    step = max(1, chunk // width)
    if dense:
        flat = mask.reshape(-1)
        for p0 in range(0, flat.numel(), step * width):
            p1 = min(p0 + step * width, flat.numel())
            pix = torch.arange(p0, p1, device=mask.device)
            grow = torch.div(pix, width, rounding_mode="floor")
            image = torch.div(grow, height, rounding_mode="floor")
            yield pix, image, grow - image * height, pix - grow * width, flat[p0:p1]
        return
    image_of_row = torch.arange(num_rows, device=mask.device) // height
    rows = mask.reshape(num_rows, width)
    for r0 in range(0, num_rows, step):
        grow, col = rows[r0:r0 + step].nonzero().t()
        if grow.numel() == 0:
            continue
        grow += r0
        image = image_of_row.index_select(0, grow)
        yield grow * width + col, image, grow - image * height, col, None


def _resolve(zbuf, X, Y, faces_t, batch, num_verts, height, width, chunk, dense) -> Fragments:
    """Decode the packed z-buffer; exact barycentrics of the winning faces."""
    shape = (batch, height, width)
    mask = zbuf != _EMPTY
    # Sign-extending the low 32 bits gives the face index, and -1 for the empty key.
    face_ids = (zbuf << 32) >> 32
    depth = torch.zeros(zbuf.shape[0], dtype=torch.float32, device=zbuf.device)
    bary = torch.zeros(zbuf.shape[0], 3, dtype=torch.float32, device=zbuf.device)
    for pix, image, row, col, covered in _covered_pixels(mask.view(shape), height, width,
                                                         chunk, dense, faces_t.shape[1]):
        keys = zbuf.index_select(0, pix)
        if covered is not None:  # empty pixels: face 0 at depth 0 keeps the arithmetic sane
            keys = keys.masked_fill(~covered, 0)
        vid = _corner_ids(faces_t, keys & _LOW32, image, num_verts).view(-1)
        x = X.index_select(0, vid).view(3, -1)
        y = Y.index_select(0, vid).view(3, -1)
        px = (col * _ONE + _HALF).int()
        py = (row * _ONE + _HALF).int()
        # n_i: edge function of the edge opposite vertex i at the pixel centre; n_i / A2 is
        # the barycentric weight of vertex i. Differences are exact in int32 (< 2**30);
        # the products are done in float64, exact to ~1e-16 relative. (Row by row: on a
        # CPU, int32 rows are several times faster than whole (3, P) float64 tensors.)
        n = [(x[e] - x[s]).double() * (py - y[s]).double()
             - (y[e] - y[s]).double() * (px - x[s]).double()
             for s, e in ((1, 2), (2, 0), (0, 1))]
        inv_area2 = 1.0 / (n[0] + n[1] + n[2])
        weights = torch.stack([(v * inv_area2).float() for v in n], 1)
        if covered is not None:
            weights = weights.masked_fill_(~covered[:, None], 0.0)
        bary.index_copy_(0, pix, weights)
        depth.index_copy_(0, pix, _key_depth(keys))
    return Fragments(face_ids=face_ids.view(shape), bary=bary.view(*shape, 3),
                     depth=depth.view(shape), mask=mask.view(shape))


@torch.no_grad()
def interpolate(fragments: Fragments, faces: torch.Tensor, vertex_attrs: torch.Tensor,
                max_chunk_pixels: int | None = None,
                strategy: str | None = None) -> torch.Tensor:
    """Barycentric interpolation of per-vertex attributes at every covered pixel.

    Args:
        fragments: output of :func:`rasterize`.
        faces: the (F, 3) faces given to :func:`rasterize`.
        vertex_attrs: (B, V, C) float attributes, or (V, C) shared by the whole batch.
        max_chunk_pixels: covered pixels processed at once, bounding temporary memory;
            None: :func:`default_max_chunk_pixels` of the device.
        strategy: as for :func:`rasterize` (same result either way).

    Returns:
        (B, H, W, C) tensor of ``vertex_attrs``'s dtype (at least float32), 0 where empty.

    Raises:
        ValueError: on wrong shapes or dtypes, faces out of range for ``vertex_attrs``, or a
            bad strategy.
    """
    if not isinstance(vertex_attrs, torch.Tensor) or not isinstance(faces, torch.Tensor):
        raise ValueError("interpolate: faces and vertex_attrs must be torch.Tensors")
    batch, height, width = fragments.face_ids.shape
    shared = vertex_attrs.ndim == 2
    if not (shared or vertex_attrs.ndim == 3 and vertex_attrs.shape[0] == batch):
        raise ValueError(f"interpolate: vertex_attrs must have shape ({batch}, V, C) or (V, C), "
                         f"got {tuple(vertex_attrs.shape)}")
    if not vertex_attrs.is_floating_point():
        raise ValueError(f"interpolate: vertex_attrs must be a float tensor, "
                         f"got {vertex_attrs.dtype}")
    if faces.ndim != 2 or faces.shape[1] != 3 or faces.is_floating_point() \
            or faces.dtype == torch.bool:
        raise ValueError(f"interpolate: faces must be an (F, 3) integer tensor, "
                         f"got {tuple(faces.shape)} {faces.dtype}")
    num_verts, channels = vertex_attrs.shape[-2:]
    device = fragments.face_ids.device
    strategy = _check_strategy("interpolate", strategy, device)
    faces = faces.to(device=device, dtype=torch.int64)
    _check_face_range("interpolate", faces, num_verts, "vertex_attrs has")
    dtype = torch.promote_types(vertex_attrs.dtype, torch.float32)
    if channels == 0:
        return torch.zeros(batch, height, width, 0, dtype=dtype, device=device)
    attrs = vertex_attrs.to(device=device, dtype=dtype).reshape(-1, channels)
    if strategy == "numba" and faces.shape[0]:
        out = _numba_module().interpolate(
            fragments.face_ids.reshape(-1), fragments.bary.reshape(-1, 3),
            fragments.mask.reshape(-1), faces, attrs, height, width,
            0 if shared else num_verts)
        return out.view(batch, height, width, channels)
    dense = strategy == "dense"
    out = torch.zeros(batch * height * width, channels, dtype=dtype, device=device)
    faces_t = faces.t().contiguous()
    face_ids = fragments.face_ids.reshape(-1)
    bary = fragments.bary.reshape(-1, 3)
    if max_chunk_pixels is None:
        max_chunk_pixels = default_max_chunk_pixels(device)
    for pix, image, _, _, covered in _covered_pixels(fragments.mask, height, width,
                                                     max_chunk_pixels, dense, faces.shape[0]):
        face = face_ids.index_select(0, pix)
        if covered is not None:
            face = face.clamp_min_(0)
        vid = _corner_ids(faces_t, face, image, 0 if shared else num_verts)
        w = bary.index_select(0, pix).to(dtype).t().unsqueeze(2)
        val = attrs.index_select(0, vid[0]) * w[0]
        val += attrs.index_select(0, vid[1]) * w[1]
        val += attrs.index_select(0, vid[2]) * w[2]
        if covered is not None:
            val = val.masked_fill_(~covered[:, None], 0.0)
        out.index_copy_(0, pix, val)
    return out.view(batch, height, width, channels)
