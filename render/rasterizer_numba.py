"""The rasteriser of render/rasterizer.py compiled for the CPU with numba, bit for bit.

Same algorithm and the same arithmetic as the PyTorch path (see that module's docstring for
the conventions): vertices snapped to 1/256 px, each triangle's integer bounding box, exact
span bounds from the edge functions by floor division (top-left rule as a bias of 1), depth
from the float64 depth plane at each span's first pixel stepped in float32, the same packed
(depth, face) int64 key min-reduced per pixel, and one float64 barycentric pass over the
winning pixels. Every floating-point operation is done in the same order and precision as
there, and numba compiles without fast-math (no fused multiply-adds, no reassociation), so
face ids, barycentrics, depths and masks are identical, NaN and infinite depths included.

What differs is only how the work is scheduled: one parallel loop over *tiles* (an image,
or a band of its rows when there are fewer images than threads), each of which z-buffers
its faces in index order into its own rows and then resolves those rows while they are still
in cache. Tiles never share pixels, so there are no races, and the only temporaries are
the snapped coordinates (two int32 per vertex) and two ints per row; ``max_chunk_pixels``
has nothing to bound here. The z-buffer lives in the face-id output itself (for depth
and mask alone, in this thread's scratch buffer).

Threads follow ``torch.get_num_threads()``. numba's own default threading layer on Linux
(GNU OpenMP) kills any process forked after it ran, which DataLoader workers are, so unless
``NUMBA_THREADING_LAYER`` says otherwise a fork-safe layer is used: ``tbb`` (installed with
the requirements on Linux x86_64; thread-safe, and it starts a parallel loop in
microseconds), else on Linux the built-in ``workqueue`` (about 0.1 ms per parallel loop,
and it may not be entered by two threads at once, hence :func:`launching`'s lock; on macOS
and Windows numba may pick its OpenMP layer, fork-safe there). Compiled code is
cached on disk (``cache=True``): the first call in a fresh environment compiles for a few
seconds, later processes load it.
"""

from __future__ import annotations

import contextlib
import ctypes
import importlib.metadata
import math
import os
import threading

import numba
import numpy as np
import torch
from llvmlite import ir
from numba import njit, prange, types
from numba.extending import intrinsic

# The tbb wheel's library by the name numba asks the dynamic loader for (per platform).
_TBB_LIBRARIES = ("libtbb.so.12", "libtbb.12.dylib", "tbb12.dll")


def tbb_library() -> str | None:
    """The full path of the tbb wheel's library (not loaded), or None without the wheel."""
    try:
        files = importlib.metadata.files("tbb") or []
    except importlib.metadata.PackageNotFoundError:
        return None
    paths = [os.path.realpath(f.locate()) for f in files if f.name in _TBB_LIBRARIES]
    return paths[0] if paths else None


def preload_tbb() -> str | None:
    """Load the tbb wheel's library by its full path; returns the path, or None where the
    wheel is not installed or its library does not load. pip puts it in <prefix>/lib,
    which the loader does not search for a venv's Python (numba's tbb layer then silently
    falls back to workqueue; numba issue 6108); numba finds it by name once it is loaded.
    This also wins over an older system libtbb that numba would find and reject."""
    path = tbb_library()
    if path is None:
        return None
    try:
        ctypes.CDLL(path, mode=getattr(ctypes, "RTLD_GLOBAL", 0))
    except OSError:
        return None
    return path


preload_tbb()  # (for NUMBA_THREADING_LAYER=tbb too)
if "NUMBA_THREADING_LAYER" not in os.environ:
    # tbb where it loads (the tbb package), else workqueue; never GNU OpenMP, which kills
    # forked children (DataLoader workers). tbb starts a parallel loop in ~2 us, workqueue
    # in ~100 us: at batch 1 that was a third of a render.
    numba.config.THREADING_LAYER = "forksafe"

_LOCK = threading.Lock()
# A lock held by another thread at fork time would stay held forever in the child.
os.register_at_fork(after_in_child=lambda: globals().__setitem__("_LOCK", threading.Lock()))


def threading_layer() -> str | None:
    """numba's threading layer in this process ("tbb", "workqueue", ...), None before the
    first parallel kernel has run (numba picks it then)."""
    try:
        return numba.threading_layer()
    except ValueError:
        return None


@contextlib.contextmanager
def launching():
    """Around every kernel call: numba takes torch's thread count (which starts its
    threading layer), and the workqueue layer, which may not be entered by two threads at
    once, is entered by one (so is any layer not known to be thread-safe)."""
    _use_torch_threads()
    if threading_layer() in ("tbb", "omp"):
        yield
        return
    with _LOCK:
        yield

# The PyTorch path's constants (render/rasterizer.py), restated as plain ints for numba.
_BITS = 8
_ONE = 1 << _BITS
_HALF = _ONE // 2
_MAX_COORD = float(1 << 20)
_INVALID = -(1 << 31)
_EMPTY = (1 << 63) - 1
_LOW32 = 0xFFFFFFFF
_FLT_MAX = float(np.finfo(np.float32).max)


@intrinsic
def _f32_bits(typingctx, x):
    """The IEEE bits of a float32 as an int32 (torch's ``.view(torch.int32)``)."""
    if x != types.float32:
        return None

    def codegen(context, builder, sig, args):
        return builder.bitcast(args[0], ir.IntType(32))

    return types.int32(types.float32), codegen


@intrinsic
def _bits_f32(typingctx, b):
    """The float32 whose IEEE bits are the int32 ``b``."""
    if b != types.int32:
        return None

    def codegen(context, builder, sig, args):
        return builder.bitcast(args[0], ir.FloatType())

    return types.float32(types.int32), codegen


@njit(inline="always")
def _u(i):
    """Index ``i`` (known >= 0) as unsigned: numba then skips its negative-index fix-up
    (index + length when negative), a compare and select per access that also keeps
    simple loops from vectorising."""
    return np.uint64(i)


@njit(inline="always")
def _clamp_f32(v):
    """float32 of ``v`` clamped to the finite float32 range; NaN stays NaN (torch.clamp)."""
    if v != v:
        return np.float32(v)
    return np.float32(min(max(v, -_FLT_MAX), _FLT_MAX))


@njit(inline="always")
def _depth_key(depth, face):
    """Order-preserving int64 key of a float32 depth (high 32 bits) and a face index."""
    bits = np.int64(_f32_bits(depth + np.float32(0.0)))  # + 0.0 makes -0.0 tie with +0.0
    bits ^= (bits >> 31) & 0x7FFFFFFF  # negative floats order backwards as ints
    return (bits << 32) | face


@njit(inline="always")
def _key_depth(key):
    bits = key >> 32
    return _bits_f32(np.int32(bits ^ ((bits >> 31) & 0x7FFFFFFF)))


@njit(inline="always")
def _edge(dx, dy, xs, ys, rmin, cmin):
    """One edge from (xs, ys) along (dx, dy), oriented clockwise: its coefficients per row
    and per column, its value at the box's first pixel centre less the fill-rule bias, and
    that value itself (for the depth plane)."""
    n0 = dx * (rmin * _ONE + _HALF - ys) - dy * (cmin * _ONE + _HALF - xs)
    # Not top-left (bias 1) <=> dy > 0, or dy == 0 and dx < 0.
    bias = 1 if dy > 0 or (dy == 0 and dx < 0) else 0
    return dx * _ONE, dy * -_ONE, n0 - bias, n0


@njit(inline="always")
def _tighten(start, stop, rowc, colc, n0b, dr):
    """Narrow the span [start, stop] of row dr to the columns dc where this edge holds,
    colc dc >= -e with e = rowc dr + n0b: with g = floor(e / |colc|), dc >= -g when colc > 0
    (the edge bounds the span from the left), dc <= g when colc < 0; a horizontal edge
    never cuts a row inside the strict bounding box."""
    if colc > 0:
        start = max(start, -((rowc * dr + n0b) // colc))
    elif colc < 0:
        stop = min(stop, (rowc * dr + n0b) // -colc)
    return start, stop


@njit(inline="always")
def _occupied_rows(Y, v0, v1, height):
    """Rows [lo, hi) that the image's valid vertices span (clipped): where its work is."""
    lo = np.int64(1) << 40
    hi = -lo
    for v in range(v0, v1):
        y = np.int64(Y[v])
        if y != _INVALID:
            lo = min(lo, y)
            hi = max(hi, y)
    if hi < lo:
        return 0, height
    return min(max(lo >> _BITS, 0), height), min(max((hi >> _BITS) + 1, 0), height)


@njit(cache=True, parallel=True, nogil=True)
def rasterize_kernel(verts, faces, batch, height, width, cull, bands,
                     zbuf, bary, depth, mask, fragments):
    """Fill the flat (B*H*W) outputs ``zbuf`` (int64, becomes the face ids), ``bary``
    ((B*H*W, 3) float32), ``depth`` (float32) and ``mask`` (bool) for vertices
    (B*V, 3, float32 or float64) and faces (F, 3, int64 in range), ``bands`` tiles per image.
    ``fragments`` False: only depth and mask (``zbuf`` is then only the z-buffer, left
    holding keys, and ``bary`` is not touched: what a visibility test needs, for a fraction
    of the memory traffic)."""
    num_verts = verts.shape[0] // batch if batch else 0
    n = verts.shape[0]
    X = np.empty(n, np.int32)
    Y = np.empty(n, np.int32)
    for i in prange(n):
        x = verts[i, 0]
        y = verts[i, 1]
        if abs(x) <= _MAX_COORD and abs(y) <= _MAX_COORD and np.isfinite(verts[i, 2]):
            X[i] = np.int32(np.rint(np.float64(x) * _ONE))  # exact, half to even
            Y[i] = np.int32(np.rint(np.float64(y) * _ONE))
        else:
            X[i] = _INVALID
            Y[i] = _INVALID
    num_faces = faces.shape[0]
    for tile in prange(batch * bands):
        b = tile // bands
        band = tile - b * bands
        vb = b * num_verts
        lo, hi = _occupied_rows(Y, vb, vb + num_verts, height)
        # Bands split the occupied rows evenly; the first and last reach the image's edges.
        r0 = 0 if band == 0 else lo + (hi - lo) * band // bands
        r1 = height if band == bands - 1 else lo + (hi - lo) * (band + 1) // bands
        img = b * height * width
        # Per row, the columns that fragments reached: the rest is filled as empty at
        # memory speed instead of being resolved pixel by pixel (most of a crop is empty),
        # and a row's z-buffer is cleared when its first fragment comes.
        first = np.full(max(r1 - r0, 0), width, np.int64)
        last = np.full(max(r1 - r0, 0), -1, np.int64)
        if r1 > r0:
            _draw_faces(X, Y, verts, faces, num_faces, vb, img, r0, r1, height, width, cull,
                        zbuf, first, last)
        for r in range(r0, r1):
            row = img + r * width
            c0 = first[r - r0]
            c1 = last[r - r0] + 1
            if c1 <= c0:
                c0 = c1 = width
            _fill_empty(row, row + c0, zbuf, bary, depth, mask, fragments)
            _fill_empty(row + c1, row + width, zbuf, bary, depth, mask, fragments)
            py = r * _ONE + _HALF
            for c in range(c0, c1):
                p = row + c
                key = zbuf[_u(p)]
                if key == _EMPTY:
                    _fill_empty(p, p + 1, zbuf, bary, depth, mask, fragments)
                    continue
                mask[_u(p)] = True
                depth[_u(p)] = _key_depth(key)
                if not fragments:
                    continue
                f = key & _LOW32
                zbuf[_u(p)] = f
                i0 = _u(faces[_u(f), 0] + vb)
                i1 = _u(faces[_u(f), 1] + vb)
                i2 = _u(faces[_u(f), 2] + vb)
                x0 = np.int64(X[i0])
                x1 = np.int64(X[i1])
                x2 = np.int64(X[i2])
                y0 = np.int64(Y[i0])
                y1 = np.int64(Y[i1])
                y2 = np.int64(Y[i2])
                px = c * _ONE + _HALF
                # n_i: edge function of the edge opposite vertex i (from i+1 to i+2), with
                # the products in float64 in the PyTorch path's order.
                n0 = (np.float64(x2 - x1) * np.float64(py - y1)
                      - np.float64(y2 - y1) * np.float64(px - x1))
                n1 = (np.float64(x0 - x2) * np.float64(py - y2)
                      - np.float64(y0 - y2) * np.float64(px - x2))
                n2 = (np.float64(x1 - x0) * np.float64(py - y0)
                      - np.float64(y1 - y0) * np.float64(px - x0))
                inv_area2 = 1.0 / (n0 + n1 + n2)
                bary[_u(p), 0] = np.float32(n0 * inv_area2)
                bary[_u(p), 1] = np.float32(n1 * inv_area2)
                bary[_u(p), 2] = np.float32(n2 * inv_area2)


@njit(inline="always")
def _fill_empty(p0, p1, zbuf, bary, depth, mask, fragments):
    """Pixels [p0, p1) as the PyTorch path leaves uncovered ones (only depth and mask
    without ``fragments``). (Plain loops: a slice assignment makes an array view, whose
    reference counting costs about as much as filling a short run.)"""
    for p in range(p0, p1):
        mask[_u(p)] = False
        depth[_u(p)] = 0.0
    if fragments:
        for p in range(p0, p1):
            zbuf[_u(p)] = -1
            bary[_u(p), 0] = 0.0
            bary[_u(p), 1] = 0.0
            bary[_u(p), 2] = 0.0


@njit(inline="always")
def _draw_faces(X, Y, verts, faces, num_faces, vb, img, r0, r1, height, width, cull, zbuf,
                first, last):
    """Z-buffer every face of one image into its rows [r0, r1), in face order; ``first``
    and ``last`` (per row of the band) widen to the columns the fragments reach."""
    for f in range(num_faces):
        i0 = _u(faces[f, 0] + vb)
        i1 = _u(faces[f, 1] + vb)
        i2 = _u(faces[f, 2] + vb)
        x0 = np.int64(X[i0])
        x1 = np.int64(X[i1])
        x2 = np.int64(X[i2])
        if x0 == _INVALID or x1 == _INVALID or x2 == _INVALID:
            continue
        y0 = np.int64(Y[i0])
        y1 = np.int64(Y[i1])
        y2 = np.int64(Y[i2])
        # The bounding box of candidate centres (as the PyTorch path's int32 pass).
        rmin = max((min(y0, y1, y2) + (_ONE - 1 - _HALF)) >> _BITS, 0)
        rmax = min((max(y0, y1, y2) - (_HALF + 1)) >> _BITS, height - 1)
        row_lo = max(rmin, r0)
        row_hi = min(rmax, r1 - 1)
        if row_hi < row_lo:
            continue
        cmin = max((min(x0, x1, x2) + (_ONE - 1 - _HALF)) >> _BITS, 0)
        cmax = min((max(x0, x1, x2) - (_HALF + 1)) >> _BITS, width - 1)
        if cmax < cmin:
            continue
        area2 = (x1 - x0) * (y2 - y0) - (y1 - y0) * (x2 - x0)
        if area2 == 0 or (cull and area2 > 0):
            continue
        sign = 1 if area2 > 0 else -1
        # Edge i runs from vertex i+1 to i+2, oriented so that the area is positive.
        rc0, cc0, nb0, _ = _edge((x2 - x1) * sign, (y2 - y1) * sign, x1, y1, rmin, cmin)
        rc1, cc1, nb1, n01 = _edge((x0 - x2) * sign, (y0 - y2) * sign, x2, y2, rmin, cmin)
        rc2, cc2, nb2, n02 = _edge((x1 - x0) * sign, (y1 - y0) * sign, x0, y0, rmin, cmin)
        # Depth plane relative to the box's first pixel (float64, the PyTorch path's order).
        z0 = np.float64(verts[i0, 2])
        abs_area2 = np.float64(area2 * sign)
        dz1 = (np.float64(verts[i1, 2]) - z0) / abs_area2
        dz2 = (np.float64(verts[i2, 2]) - z0) / abs_area2
        zp0 = z0 + np.float64(n01) * dz1 + np.float64(n02) * dz2
        zp1 = np.float64(cc1) * dz1 + np.float64(cc2) * dz2
        zp2 = np.float64(rc1) * dz1 + np.float64(rc2) * dz2
        z_step = _clamp_f32(zp1)
        width_box = cmax - cmin
        for row in range(row_lo, row_hi + 1):
            dr = row - rmin
            start, stop = _tighten(0, width_box, rc0, cc0, nb0, dr)
            start, stop = _tighten(start, stop, rc1, cc1, nb1, dr)
            start, stop = _tighten(start, stop, rc2, cc2, nb2, dr)
            if stop < start:
                continue
            span_z = _clamp_f32(zp0 + zp1 * np.float64(start) + zp2 * np.float64(dr))
            p = img + row * width + cmin + start
            band_row = _u(row - r0)
            if last[band_row] < 0:
                for q in range(img + row * width, img + (row + 1) * width):
                    zbuf[_u(q)] = _EMPTY
            first[band_row] = min(first[band_row], cmin + start)
            last[band_row] = max(last[band_row], cmin + stop)
            for off in range(stop - start + 1):
                key = _depth_key(span_z + z_step * np.float32(off), f)
                if key < zbuf[_u(p + off)]:
                    zbuf[_u(p + off)] = key


def _bands(batch: int, height: int) -> int:
    """Tiles per image: enough that every thread gets the same number of tiles."""
    threads = numba.get_num_threads()
    return max(1, min(threads // math.gcd(batch, threads) if batch else 1, max(height, 1)))


def _use_torch_threads():
    """numba uses as many threads as torch is told to (at most what numba started)."""
    want = max(1, min(torch.get_num_threads(), numba.config.NUMBA_NUM_THREADS))
    if numba.get_num_threads() != want:
        numba.set_num_threads(want)


_SCRATCH = threading.local()  # this thread's reusable buffers: {(name, dtype): flat tensor}
SCRATCH_LIMIT = 64 << 20  # bytes: larger requests get fresh memory that is not kept


def scratch(name: str, shape, dtype) -> torch.Tensor:
    """A tensor of ``shape`` from this thread's buffer ``name`` (grown when too small):
    the same memory on every call, so a render's intermediate results cost no fresh pages
    (at 256 px a batch's fragments are tens of MB; freshly allocated, their page faults
    cost about as much as rasterising them). Valid until the next request of ``name`` on
    this thread: only for results that the caller never hands out. A request over
    ``SCRATCH_LIMIT`` bytes gets a fresh tensor instead, so that what a thread keeps stays
    bounded (the renderer names 14 buffers; a 256 px batch of 16 views needs 13 MB in the
    largest)."""
    size = math.prod(shape)
    if size * torch.empty(0, dtype=dtype).element_size() > SCRATCH_LIMIT:
        return torch.empty(shape, dtype=dtype)
    buffers = _SCRATCH.__dict__.setdefault("buffers", {})
    buf = buffers.get((name, dtype))
    if buf is None or buf.numel() < size:
        buf = buffers[name, dtype] = torch.empty(size, dtype=dtype)
    return buf[:size].view(shape)


def rasterize(verts_flat: torch.Tensor, faces: torch.Tensor, batch: int, height: int,
              width: int, cull_backfaces: bool, scratch_name: str | None = None,
              depth_only: bool = False):
    """(face_ids, bary, depth, mask) flat CPU tensors for validated inputs: ``verts_flat``
    (B*V, 3) floating point, ``faces`` (F, 3) int64 with indices in range; in this
    thread's buffers ``scratch_name`` (:func:`scratch`) when given, else fresh.
    ``depth_only``: face_ids and bary are None (computed neither)."""
    if verts_flat.dtype not in (torch.float32, torch.float64):
        verts_flat = verts_flat.float()  # as the PyTorch path: x * 256 must not overflow
    verts = verts_flat.detach().contiguous().numpy()
    tris = faces.contiguous().numpy()
    pixels = batch * height * width
    if scratch_name is None:
        new = lambda name, shape, dtype: torch.empty(shape, dtype=dtype)  # noqa: E731
    else:
        new = lambda name, shape, dtype: scratch(f"{scratch_name}.{name}", shape, dtype)  # noqa: E731
    if depth_only:  # the z-buffer is this thread's: nothing handed out lives in it
        face_ids = scratch("rasterize.zbuf", (pixels,), torch.int64)
        bary = torch.empty(0, 3)
    else:
        face_ids = new("face_ids", (pixels,), torch.int64)
        bary = new("bary", (pixels, 3), torch.float32)
    depth = new("depth", (pixels,), torch.float32)
    mask = new("mask", (pixels,), torch.bool)
    if pixels:
        with launching():
            rasterize_kernel(verts, tris, batch, height, width, bool(cull_backfaces),
                             _bands(batch, height), face_ids.numpy(), bary.numpy(),
                             depth.numpy(), mask.numpy(), not depth_only)
    if depth_only:
        return None, None, depth, mask
    return face_ids, bary, depth, mask


@njit(cache=True, parallel=True, nogil=True)
def interpolate_kernel(face_ids, bary, mask, faces, attrs, height, width, verts_per_image,
                       out):
    """``out[p] = sum_i attrs[corner_i] * bary[p, i]`` at covered pixels (0 elsewhere), with
    the PyTorch path's rounding: each product in the attributes' dtype, summed in corner
    order. Flat (B*H*W) fragments (``bary`` B*H*W*3), ``attrs`` (N, C), ``out`` (B*H*W*C);
    ``verts_per_image`` is 0 when the attributes are shared by the batch. Row by row, so
    that the image's first vertex is found once per row, not divided out per pixel."""
    channels = attrs.shape[1]
    values = attrs.reshape(-1)
    for row in prange(face_ids.shape[0] // width if width else 0):
        base = (row // height) * verts_per_image * channels
        p0 = row * width
        for q in range(p0 * channels, (p0 + width) * channels):
            out[_u(q)] = 0
        for p in range(p0, p0 + width):
            if not mask[_u(p)]:
                continue
            f = _u(face_ids[_u(p)])
            v0 = _u(faces[f, 0] * channels + base)
            v1 = _u(faces[f, 1] * channels + base)
            v2 = _u(faces[f, 2] * channels + base)
            w0 = attrs.dtype.type(bary[_u(3 * p)])
            w1 = attrs.dtype.type(bary[_u(3 * p + 1)])
            w2 = attrs.dtype.type(bary[_u(3 * p + 2)])
            q = _u(p * channels)
            for k in range(channels):
                val = values[v0 + _u(k)] * w0
                val += values[v1 + _u(k)] * w1
                val += values[v2 + _u(k)] * w2
                out[q + _u(k)] = val


def interpolate(face_ids, bary, mask, faces, attrs, height, width, verts_per_image):
    """(P, C) interpolated attributes of flat fragments of (B, height, width) images (CPU
    tensors; ``attrs`` (N, C) float32 or float64, ``faces`` int64 in range)."""
    out = torch.empty(face_ids.shape[0], attrs.shape[1], dtype=attrs.dtype)
    if out.numel():
        with launching():
            interpolate_kernel(face_ids.contiguous().numpy(),
                               bary.contiguous().view(-1).numpy(),
                               mask.contiguous().numpy(), faces.contiguous().numpy(),
                               attrs.detach().contiguous().numpy(), height, width,
                               verts_per_image, out.view(-1).numpy())
    return out
