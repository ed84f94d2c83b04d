"""The per-pixel texturing of render/renderer.py compiled for the CPU with numba, in one pass.

``render_textured``'s PyTorch path does, for every pixel its target view covers, about 40
whole-array operations: interpolate where the pixel's surface point was in the source view,
test that point against the source view's depth buffer, sample the photo there with
``grid_sample``, flag it outside the crop, optionally look up its mirror twin, and scatter
all of it back into images. :func:`texture_view` does the same per pixel in one loop, with
no temporaries, writing the final (B, C, H, W) image and masks directly.

Same arithmetic, operation by operation:

* the source point is ``v0 * w0 + v1 * w1 + v2 * w2`` in float32, products rounded and
  summed in corner order (``renderer._Covered.at``);
* *outside*: ``x < 0 or x > W or y < 0 or y > H``;
* *visible*: at any of the 4 pixels around ``(x - 0.5, y - 0.5)`` (floored, converted to
  int64 the way x86 does, NaN and overflow to INT64_MIN, then clamped into the image),
  the source is covered and ``z - tol <= depth`` (``renderer._visible_in``);
* the texture lookup is ``grid_sample``'s bilinear CPU kernel with border padding and
  ``align_corners=False``: the grid ``x / W * 2 - 1``, unnormalised as
  ``(g + 1) * (W / 2) - 0.5``, clipped into ``[0, W - 1]`` (NaN to 0), floored, and the four
  taps summed as ``nw + ne + sw + se``, taps beyond the last row/column read as 0.

Every discrete result (coverage, hidden, filled, outside, stretched, which pixels are
copied) is therefore identical to the PyTorch path's. The colours are too: ``grid_sample``'s
AVX2/AVX512 builds are compiled with floating-point contraction, so their unnormalisation
and tap sum round as fused multiply-adds; the kernel does the same with LLVM's exact
``fma`` (or plain operations, whichever reproduces the build, found once per process by
``grid_sample_fuses``). On a build that neither reproduces (``grid_sample_exact()``
False; none seen), colours differ by at most ``colour_tolerance(H, W)`` (6e-5 at 256 px:
one rounding of the texture coordinate times the steepest step of a [-1, 1] image);
the tests check whichever holds.

Threads and the lock are rasterizer_numba's (its ``workqueue`` threading layer may not be
entered by two threads at once); compiled code is cached on disk (``cache=True``).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from llvmlite import ir
from numba import njit, prange, types
from numba.core import cgutils
from numba.extending import intrinsic

from render.rasterizer_numba import _LOCK, _use_torch_threads

_INT64_MIN = -(1 << 63)
_TWO63 = float(1 << 63)


@intrinsic
def _fma_f32(typingctx, a, b, c):
    """a * b + c rounded once (LLVM's fma), for float32 arguments."""
    if not (a == types.float32 and b == types.float32 and c == types.float32):
        return None

    def codegen(context, builder, sig, args):
        fnty = ir.FunctionType(ir.FloatType(), [ir.FloatType()] * 3)
        return builder.call(cgutils.get_or_insert_function(builder.module, fnty,
                                                           "llvm.fma.f32"), args)

    return types.float32(types.float32, types.float32, types.float32), codegen


@njit(inline="always")
def _mul_add(a, b, c, fused):
    """a * b + c, rounded once (``fused``) or twice, as the grid_sample build does."""
    if fused:
        return _fma_f32(a, b, c)
    return a * b + c


@njit(inline="always")
def _floor_to_int(v):
    """``torch.floor(v).long()`` on x86: NaN and values beyond int64 give INT64_MIN."""
    f = np.floor(v)
    if not (f > -_TWO63 and f < _TWO63):
        return np.int64(_INT64_MIN)
    return np.int64(f)


@njit(inline="always")
def _point(verts, vb, c0, c1, c2, w0, w1, w2, k):
    """Coordinate k of the barycentric combination of three vertices (float32, in order)."""
    val = verts[vb + c0, k] * w0
    val += verts[vb + c1, k] * w1
    val += verts[vb + c2, k] * w2
    return val


@njit(inline="always")
def _seen(x, y, z, src_mask, src_depth, b, height, width):
    """Is the point (source-view x, y and z less the tolerance) in front of or at the
    source's depth at one of the 4 pixels around it?"""
    x0 = _floor_to_int(x - np.float32(0.5))
    y0 = _floor_to_int(y - np.float32(0.5))
    for dy in range(2):
        r = min(max(y0 + dy, 0), height - 1)
        for dx in range(2):
            c = min(max(x0 + dx, 0), width - 1)
            p = r * width + c
            if src_mask[b, p] and z <= src_depth[b, p]:
                return True
    return False


@njit(inline="always")
def _outside(x, y, height, width):
    return x < 0 or x > width or y < 0 or y > height


@njit(inline="always")
def _unnormalise(v, size, fused):
    """grid_sample's source coordinate of pixel coordinate v (border, not aligned)."""
    g = v / np.float32(size) * np.float32(2.0) - np.float32(1.0)
    u = _mul_add(g + np.float32(1.0), np.float32(size / 2), np.float32(-0.5), fused)
    if not u > 0:  # NaN and negatives
        u = np.float32(0.0)
    return min(u, np.float32(size - 1))


@njit(inline="always")
def _bilinear(image, b, x, y, out, p, height, width, fused):
    """out[b, :, p] = the bilinear sample of image[b] at pixel coordinates (x, y)."""
    ix = _unnormalise(x, width, fused)
    iy = _unnormalise(y, height, fused)
    x_w = np.floor(ix)
    y_n = np.floor(iy)
    w = ix - x_w
    e = np.float32(1.0) - w
    n = iy - y_n
    s = np.float32(1.0) - n
    nw = s * e
    ne = s * w
    sw = n * e
    se = n * w
    c = np.int64(x_w)
    r = np.int64(y_n)
    east = c + 1 < width
    south = r + 1 < height
    for k in range(image.shape[1]):
        v_nw = image[b, k, r, c]
        v_ne = image[b, k, r, c + 1] if east else np.float32(0.0)
        v_sw = image[b, k, r + 1, c] if south else np.float32(0.0)
        v_se = image[b, k, r + 1, c + 1] if east and south else np.float32(0.0)
        val = v_nw * nw
        val = _mul_add(v_ne, ne, val, fused)
        val = _mul_add(v_sw, sw, val, fused)
        out[b, k, p] = _mul_add(v_se, se, val, fused)


@njit(inline="always")
def _area2(verts, vb, faces, f):
    """|Twice the screen area| of face f, in float64 (whole_image.signed_areas's order)."""
    ax = np.float64(verts[vb + faces[f, 0], 0])
    ay = np.float64(verts[vb + faces[f, 0], 1])
    bx = np.float64(verts[vb + faces[f, 1], 0])
    by = np.float64(verts[vb + faces[f, 1], 1])
    cx = np.float64(verts[vb + faces[f, 2], 0])
    cy = np.float64(verts[vb + faces[f, 2], 1])
    return abs((bx - ax) * (cy - ay) - (by - ay) * (cx - ax))


@njit(inline="always")
def _stretched_face(a_src, a_dst, factor):
    """whole_image.stretch_ratio(...) > factor for one face's two areas."""
    if a_src > 1e-9:
        return a_dst / max(a_src, 1e-9) > factor
    return (np.inf if a_dst > 1e-9 else 1.0) > factor


@njit(cache=True, parallel=True, nogil=True)
def texture_kernel(dst_ids, dst_bary, dst_mask, faces, still, mirror, verts, src_mask,
                   src_depth, tol, image, vertex_colours, fused, dst_verts, factor,
                   out_image, out_hidden, out_filled, out_outside, out_stretched):
    """Fill ``out_image`` (B, C, H*W) and the (B, H*W) float32 masks ``out_hidden``,
    ``out_filled``, ``out_outside``, ``out_stretched`` for one textured render; see
    :func:`texture_view`. ``still`` (F,) bool or empty, ``mirror`` (V,) int64 or empty (no
    symmetric fill), ``vertex_colours`` (B*V, C) float32 or empty (per-pixel texture),
    ``dst_verts`` (B*V, 3) or empty (no stretched mask)."""
    batch = dst_ids.shape[0]
    pixels = dst_ids.shape[1]
    height = image.shape[2]
    width = image.shape[3]
    channels = image.shape[1]
    num_verts = verts.shape[0] // batch if batch else 0
    num_faces = faces.shape[0]
    has_still = still.shape[0] > 0
    fill = mirror.shape[0] > 0
    per_vertex = vertex_colours.shape[0] > 0
    stretch = dst_verts.shape[0] > 0
    grown = np.zeros((batch, num_faces if stretch else 0), np.bool_)
    if stretch:
        for bf in prange(batch * num_faces):
            b = bf // num_faces
            f = bf - b * num_faces
            grown[b, f] = _stretched_face(_area2(verts, b * num_verts, faces, f),
                                          _area2(dst_verts, b * num_verts, faces, f), factor)
    for row in prange(batch * height):
        b = row // height
        vb = b * num_verts
        t = tol[b]
        p0 = row * width - b * pixels
        # the row's outputs start at 0 (filled at memory speed); covered pixels set theirs
        out_hidden[b, p0:p0 + width] = 0.0
        out_filled[b, p0:p0 + width] = 0.0
        out_outside[b, p0:p0 + width] = 0.0
        out_stretched[b, p0:p0 + width] = 0.0
        for k in range(channels):
            out_image[b, k, p0:p0 + width] = 0.0
        for p in range(p0, p0 + width):
            if not dst_mask[b, p]:
                continue
            f = dst_ids[b, p]
            if stretch and grown[b, f]:
                out_stretched[b, p] = 1.0
            if has_still and still[f]:
                for k in range(channels):
                    out_image[b, k, p] = image[b, k, p // width, p % width]
                continue
            c0 = faces[f, 0]
            c1 = faces[f, 1]
            c2 = faces[f, 2]
            w0 = dst_bary[b, p, 0]
            w1 = dst_bary[b, p, 1]
            w2 = dst_bary[b, p, 2]
            x = _point(verts, vb, c0, c1, c2, w0, w1, w2, 0)
            y = _point(verts, vb, c0, c1, c2, w0, w1, w2, 1)
            z = _point(verts, vb, c0, c1, c2, w0, w1, w2, 2)
            outside = _outside(x, y, height, width)
            hidden = not (outside or _seen(x, y, z - t, src_mask, src_depth, b, height,
                                           width))
            if hidden:
                out_hidden[b, p] = 1.0
            if outside:
                out_outside[b, p] = 1.0
                out_stretched[b, p] = 1.0
            filled = False
            tx = ty = np.float32(0.0)
            if fill and hidden:
                m0 = mirror[c0]
                m1 = mirror[c1]
                m2 = mirror[c2]
                tx = _point(verts, vb, m0, m1, m2, w0, w1, w2, 0)
                ty = _point(verts, vb, m0, m1, m2, w0, w1, w2, 1)
                tz = _point(verts, vb, m0, m1, m2, w0, w1, w2, 2)
                filled = (_seen(tx, ty, tz - t, src_mask, src_depth, b, height, width)
                          and not _outside(tx, ty, height, width))
            if filled:
                out_filled[b, p] = 1.0
                _bilinear(image, b, tx, ty, out_image, p, height, width, fused)
            elif per_vertex:
                for k in range(channels):
                    out_image[b, k, p] = _point(vertex_colours, vb, c0, c1, c2, w0, w1, w2, k)
            else:
                _bilinear(image, b, x, y, out_image, p, height, width, fused)


@njit(cache=True, nogil=True)
def _bilinear_kernel(image, xy, fused, out):
    """out[:, :, p] = bilinear samples of image (1, C, H, W) at the pixel coordinates xy[p]."""
    for p in range(xy.shape[0]):
        _bilinear(image, 0, xy[p, 0], xy[p, 1], out, p, image.shape[2], image.shape[3], fused)


_PROBE: list = []  # [(fused, exact)] once probed


def _probe() -> tuple[bool, bool]:
    """Does this PyTorch's CPU ``grid_sample`` round its multiply-adds once (FMA: the AVX2
    and AVX512 builds are compiled with contraction) or twice, and does the kernel then
    reproduce it exactly? Found once per process by sampling a random image of a size
    that is no power of two (where the two differ) at 4,096 random points both ways; the
    way with fewer differences wins."""
    if not _PROBE:
        g = torch.Generator().manual_seed(0)
        image = torch.rand(1, 3, 37, 53, generator=g) * 2 - 1
        xy = (torch.rand(4096, 2, generator=g) * 1.2 - 0.1) * torch.tensor([53.0, 37.0])
        grid = torch.stack([xy[:, 0] / 53 * 2 - 1, xy[:, 1] / 37 * 2 - 1], -1)
        ref = F.grid_sample(image, grid.view(1, 1, -1, 2), mode="bilinear",
                            padding_mode="border", align_corners=False).view(1, 3, -1)
        misses = []
        for fused in (True, False):
            out = torch.empty(1, 3, xy.shape[0])
            _bilinear_kernel(image.numpy(), xy.numpy(), fused, out.numpy())
            misses.append(int((out != ref).sum()))
        _PROBE.append((misses[0] <= misses[1], min(misses) == 0))
    return _PROBE[0]


def grid_sample_fuses() -> bool:
    """Whether the kernel's lookup rounds like an FMA build of ``grid_sample`` (probed)."""
    return _probe()[0]


def grid_sample_exact() -> bool:
    """Whether the kernel's colours are ``grid_sample``'s bit for bit on this build."""
    return _probe()[1]


def colour_tolerance(height: int, width: int) -> float:
    """The largest colour difference from the PyTorch path on a build that
    ``grid_sample_exact`` says is not reproduced exactly: a texture coordinate one float32
    rounding apart, times the steepest step between neighbouring pixels of a [-1, 1]
    image (2), plus a few roundings of the [-1, 1] sum."""
    return 2.0 * float(np.spacing(np.float32(max(height, width)))) + 1e-6


def supported(image: torch.Tensor, src_vertices: torch.Tensor) -> bool:
    """Whether :func:`texture_view` takes these inputs: float32 CPU tensors without grad."""
    return (image.device.type == "cpu" and src_vertices.device.type == "cpu"
            and image.dtype == torch.float32 and src_vertices.dtype == torch.float32
            and not image.requires_grad and not src_vertices.requires_grad)


def texture_view(dst, src, faces, src_vertices, src_image, tol, still=None, mirror=None,
                 vertex_colours=None, dst_vertices=None, stretch_factor=2.0) -> dict:
    """The target view's fragments ``dst`` textured from ``src_image`` (B, C, H, W) float32,
    whose view of the same mesh is ``src_vertices`` (B, V, 3) float32 with fragments
    ``src``. Returns float32 image (B, C, H, W) and hidden, filled, outside, stretched
    (B, 1, H, W).

    ``faces`` (F, 3) int64 in range; ``tol`` (B,) the z-test slack; ``still`` (F,) bool:
    triangles whose pixels are copied from ``src_image`` (None: none); ``mirror`` (V,) the
    mirror vertex of each vertex, for the symmetric fill (None: no fill);
    ``vertex_colours`` (B, V, C): interpolate these instead of sampling per pixel;
    ``dst_vertices`` (B, V, 3): the target view's vertices, for the stretched mask (pixels
    of triangles whose screen area grew more than ``stretch_factor`` times from the source
    view, or whose surface lies outside the source image; None: all 0).
    Uncovered pixels are 0 everywhere; copied ones have hidden, filled and outside 0.
    """
    B, C, H, W = src_image.shape
    pixels = H * W
    image = torch.empty(B, C, H, W, dtype=torch.float32)
    masks = torch.empty(4, B, 1, H, W, dtype=torch.float32)
    if image.numel():
        empty_bool = np.zeros(0, np.bool_)
        empty_long = np.zeros(0, np.int64)
        vertices = lambda v: v.detach().reshape(-1, 3).contiguous().numpy()  # noqa: E731
        colours = (np.zeros((0, C), np.float32) if vertex_colours is None
                   else vertex_colours.detach().float().reshape(-1, C).contiguous().numpy())
        flat = lambda t: t.reshape(B, pixels).contiguous().numpy()  # noqa: E731
        plane = lambda i: masks[i].view(B, pixels).numpy()  # noqa: E731
        args = (flat(dst.face_ids), dst.bary.reshape(B, pixels, 3).contiguous().numpy(),
                flat(dst.mask), faces.contiguous().numpy(),
                empty_bool if still is None else still.contiguous().numpy(),
                empty_long if mirror is None else mirror.to(torch.int64).contiguous().numpy(),
                vertices(src_vertices), flat(src.mask), flat(src.depth),
                tol.detach().float().contiguous().numpy(),
                src_image.detach().contiguous().numpy(), colours, grid_sample_fuses(),
                np.zeros((0, 3), np.float32) if dst_vertices is None else
                vertices(dst_vertices.float()), float(stretch_factor),
                image.view(B, C, pixels).numpy(), plane(0), plane(1), plane(2), plane(3))
        _use_torch_threads()
        with _LOCK:
            texture_kernel(*args)
    else:
        masks.zero_()
    return dict(image=image, hidden=masks[0], filled=masks[1], outside=masks[2],
                stretched=masks[3])
