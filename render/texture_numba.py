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

Threads and the threading layer are rasterizer_numba's (``launching``); compiled code is
cached on disk (``cache=True``).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from llvmlite import ir
from numba import njit, prange, types
from numba.core import cgutils
from numba.extending import intrinsic

from render.rasterizer_numba import _u, launching
from render.rasterizer_numba import scratch as _scratch

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
def _point(verts, c0, c1, c2, w0, w1, w2, k):
    """Coordinate k of the barycentric combination of three vertices (flat (N*3,) float32
    ``verts``, rows c0, c1, c2), products rounded and summed in corner order."""
    val = verts[_u(c0 * 3 + k)] * w0
    val += verts[_u(c1 * 3 + k)] * w1
    val += verts[_u(c2 * 3 + k)] * w2
    return val


@njit(inline="always")
def _seen(x, y, z, src_mask, src_depth, base, height, width):
    """Is the point (source-view x, y and z less the tolerance) in front of or at the
    source's depth at one of the 4 pixels around it? ``base``: the flat index of the
    image's first pixel in ``src_mask`` / ``src_depth``."""
    x0 = _floor_to_int(x - np.float32(0.5))
    y0 = _floor_to_int(y - np.float32(0.5))
    for dy in range(2):
        r = min(max(y0 + dy, 0), height - 1)
        for dx in range(2):
            p = _u(base + r * width + min(max(x0 + dx, 0), width - 1))
            if src_mask[p] and z <= src_depth[p]:
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
def _taps(x, y, height, width, fused):
    """The bilinear lookup at pixel coordinates (x, y): its north-west tap's row and
    column and the weights of the nw, ne, sw and se taps (those beyond the last row or
    column read as 0)."""
    ix = _unnormalise(x, width, fused)
    iy = _unnormalise(y, height, fused)
    x_w = np.floor(ix)
    y_n = np.floor(iy)
    w = ix - x_w
    e = np.float32(1.0) - w
    n = iy - y_n
    s = np.float32(1.0) - n
    return np.int64(y_n), np.int64(x_w), s * e, s * w, n * e, n * w


@njit(inline="always")
def _tap_sum(v_nw, v_ne, v_sw, v_se, nw, ne, sw, se, fused):
    """grid_sample's sum of the four taps, in its order."""
    val = v_nw * nw
    val = _mul_add(v_ne, ne, val, fused)
    val = _mul_add(v_sw, sw, val, fused)
    return _mul_add(v_se, se, val, fused)


@njit(inline="always")
def _area2(verts, faces, f, vb):
    """|Twice the screen area| of face f, in float64 (whole_image.signed_areas's order)."""
    a = (vb + faces[f, 0]) * 3
    b = (vb + faces[f, 1]) * 3
    c = (vb + faces[f, 2]) * 3
    ax = np.float64(verts[a])
    ay = np.float64(verts[a + 1])
    bx = np.float64(verts[b])
    by = np.float64(verts[b + 1])
    cx = np.float64(verts[c])
    cy = np.float64(verts[c + 1])
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
                   batch, channels, height, width, out_image, out_hidden, out_filled,
                   out_outside, out_stretched, out_coverage):
    """Fill ``out_image`` (B*C*H*W) and the (B*H*W) float32 masks ``out_hidden``,
    ``out_filled``, ``out_outside``, ``out_stretched``, ``out_coverage`` (the target
    fragments' mask as 0/1) for one textured render; see
    :func:`texture_view`. Every array is flat (C order): the target fragments (B*H*W,
    ``dst_bary`` B*H*W*3), the source view's mask and depth (B*H*W), ``verts`` and
    ``dst_verts`` (B*V*3), ``image`` (B*C*H*W), ``vertex_colours`` (B*V*C), so that each
    lookup is one add away from its image's base. ``still`` (F,) bool or empty, ``mirror``
    (V,) int64 or empty (no symmetric fill), ``vertex_colours`` empty (per-pixel texture),
    ``dst_verts`` empty (no stretched mask: ``out_stretched`` is not touched)."""
    num_verts = verts.shape[0] // (3 * batch) if batch else 0
    pixels = height * width
    num_faces = faces.shape[0]
    has_still = still.shape[0] > 0
    fill = mirror.shape[0] > 0
    per_vertex = vertex_colours.shape[0] > 0
    stretch = dst_verts.shape[0] > 0
    grown = np.zeros(batch * num_faces if stretch else 0, np.bool_)
    if stretch:
        for bf in prange(batch * num_faces):
            b = bf // num_faces
            f = bf - b * num_faces
            grown[bf] = _stretched_face(_area2(verts, faces, f, b * num_verts),
                                        _area2(dst_verts, faces, f, b * num_verts), factor)
    for row in prange(batch * height):
        b = row // height
        vb = b * num_verts
        t = tol[b]
        base = b * pixels  # this image's first pixel in the (B*H*W) arrays
        cbase = base * channels  # and in the (B*C*H*W) ones
        p0 = row * width  # the row's first pixel (flat, over the batch)
        q0 = cbase + (p0 - base)  # ... in the image's first channel
        # the row's outputs start at 0 (filled at memory speed); covered pixels set theirs.
        # (Plain loops: slice assignments make array views, whose reference counting
        # cost more than the fill.)
        for i in range(p0, p0 + width):
            out_hidden[_u(i)] = 0.0
            out_filled[_u(i)] = 0.0
            out_outside[_u(i)] = 0.0
            out_coverage[_u(i)] = 0.0
        if stretch:
            for i in range(p0, p0 + width):
                out_stretched[_u(i)] = 0.0
        for k in range(channels):
            for i in range(q0 + k * pixels, q0 + k * pixels + width):
                out_image[_u(i)] = 0.0
        # (indices known >= 0 as unsigned, _u: no negative-index fix-up per access)
        for pix in range(p0, p0 + width):
            p = _u(pix)
            if not dst_mask[p]:
                continue
            out_coverage[p] = 1.0
            f = _u(dst_ids[p])
            q = q0 + (pix - p0)
            if stretch and grown[_u(b * num_faces) + f]:
                out_stretched[p] = 1.0
            if has_still and still[f]:
                for k in range(channels):
                    out_image[_u(q + k * pixels)] = image[_u(q + k * pixels)]
                continue
            c0 = faces[f, 0]
            c1 = faces[f, 1]
            c2 = faces[f, 2]
            w0 = dst_bary[_u(3 * pix)]
            w1 = dst_bary[_u(3 * pix + 1)]
            w2 = dst_bary[_u(3 * pix + 2)]
            x = _point(verts, vb + c0, vb + c1, vb + c2, w0, w1, w2, 0)
            y = _point(verts, vb + c0, vb + c1, vb + c2, w0, w1, w2, 1)
            z = _point(verts, vb + c0, vb + c1, vb + c2, w0, w1, w2, 2)
            outside = _outside(x, y, height, width)
            hidden = not (outside or _seen(x, y, z - t, src_mask, src_depth, base, height,
                                           width))
            if hidden:
                out_hidden[p] = 1.0
            if outside:
                out_outside[p] = 1.0
                if stretch:
                    out_stretched[p] = 1.0
            filled = False
            tx = ty = np.float32(0.0)
            if fill and hidden:
                m0 = vb + mirror[_u(c0)]
                m1 = vb + mirror[_u(c1)]
                m2 = vb + mirror[_u(c2)]
                tx = _point(verts, m0, m1, m2, w0, w1, w2, 0)
                ty = _point(verts, m0, m1, m2, w0, w1, w2, 1)
                tz = _point(verts, m0, m1, m2, w0, w1, w2, 2)
                filled = (_seen(tx, ty, tz - t, src_mask, src_depth, base, height, width)
                          and not _outside(tx, ty, height, width))
            if filled:
                out_filled[p] = 1.0
                x = tx
                y = ty
            elif per_vertex:
                for k in range(channels):
                    out_image[_u(q + k * pixels)] = _colour(vertex_colours, channels, vb + c0,
                                                            vb + c1, vb + c2, w0, w1, w2, k)
                continue
            r, c, nw, ne, sw, se = _taps(x, y, height, width, fused)
            east = c + 1 < width
            south = r + 1 < height
            tap = _u(cbase + r * width + c)
            for k in range(channels):
                out_image[_u(q + k * pixels)] = _tap_sum(
                    image[tap], image[tap + _u(1)] if east else np.float32(0.0),
                    image[tap + _u(width)] if south else np.float32(0.0),
                    image[tap + _u(width + 1)] if east and south else np.float32(0.0),
                    nw, ne, sw, se, fused)
                tap += _u(pixels)


@njit(inline="always")
def _colour(colours, channels, c0, c1, c2, w0, w1, w2, k):
    """Channel k of the barycentric combination of three rows of (N*C,) ``colours``."""
    val = colours[_u(c0 * channels + k)] * w0
    val += colours[_u(c1 * channels + k)] * w1
    val += colours[_u(c2 * channels + k)] * w2
    return val


@njit(cache=True, nogil=True)
def _bilinear_kernel(image, xy, fused, out):
    """out[:, :, p] = bilinear samples of image (1, C, H, W) at the pixel coordinates xy[p]."""
    channels, height, width = image.shape[1], image.shape[2], image.shape[3]
    for p in range(xy.shape[0]):
        r, c, nw, ne, sw, se = _taps(xy[p, 0], xy[p, 1], height, width, fused)
        east = c + 1 < width
        south = r + 1 < height
        for k in range(channels):
            out[0, k, p] = _tap_sum(
                image[0, k, r, c], image[0, k, r, c + 1] if east else np.float32(0.0),
                image[0, k, r + 1, c] if south else np.float32(0.0),
                image[0, k, r + 1, c + 1] if east and south else np.float32(0.0),
                nw, ne, sw, se, fused)


@njit(cache=True, nogil=True)
def _erode_image(holes, r, height, width, out):
    """out (one image, H*W) = 1 where the (2r+1)-pixel square around a pixel, clipped to
    the image, holds no hole (``holes``: H*W flags), else 0: ``renderer.erode`` exactly
    (its window sums are exact integers; here they are integer counts). A row pass flags
    the pixels with a hole within r columns, then a column pass slides a count of flagged
    rows within r rows. (Rows are slices indexed from 0, so that the loops vectorise:
    numba's negative-index support would stop that.)"""
    near = np.empty(height * width, np.uint8)  # a hole within r columns
    run = np.empty(width + 1, np.int32)  # holes before each column of the row
    for row in range(height):
        holes_row = holes[row * width:(row + 1) * width]
        near_row = near[row * width:(row + 1) * width]
        run[0] = 0
        for c in range(width):
            run[c + 1] = run[c] + holes_row[c]
        for c in range(width):
            near_row[c] = run[min(c + r + 1, width)] - run[max(c - r, 0)] > 0
    count = np.zeros(width, np.int32)  # flagged rows within r rows of the current one
    for row in range(min(r, height - 1) + 1):
        near_row = near[row * width:(row + 1) * width]
        for c in range(width):
            count[c] += near_row[c]
    for row in range(height):
        out_row = out[row * width:(row + 1) * width]
        for c in range(width):
            out_row[c] = 1.0 if count[c] == 0 else 0.0
        if row + r + 1 < height:
            enter = near[(row + r + 1) * width:(row + r + 2) * width]
            for c in range(width):
                count[c] += enter[c]
        if row - r >= 0:
            leave = near[(row - r) * width:(row - r + 1) * width]
            for c in range(width):
                count[c] -= leave[c]


@njit(cache=True, parallel=True, nogil=True)
def erode_kernel(mask, batch, height, width, r, out):
    """``renderer.erode`` of the flat (B*H*W) float ``mask`` by a (2r+1) square into
    ``out``: holes are pixels <= 0 (NaN is not one)."""
    for b in prange(batch):
        _erode_mask(mask, b * height * width, r, height, width, out)


@njit(cache=True, nogil=True)
def _erode_mask(mask, base, r, height, width, out):
    """One image of :func:`erode_kernel`."""
    pixels = height * width
    values = mask[base:base + pixels]
    holes = np.empty(pixels, np.uint8)
    for i in range(pixels):
        holes[i] = values[i] <= 0
    _erode_image(holes, r, height, width, out[base:base + pixels])


@njit(cache=True, parallel=True, nogil=True)
def face_mask_kernel(face_ids, mask, face_triangles, batch, height, width, r, out):
    """``erode(renderer._face_region(...))`` of flat (B*H*W) fragments by a (2r+1) square
    (r = 0: the face region itself) into ``out``: holes are pixels not covered by one of
    the face's own triangles [0, face_triangles)."""
    for b in prange(batch):
        _face_mask_image(face_ids, mask, face_triangles, b * height * width, r, height,
                         width, out)


@njit(cache=True, nogil=True)
def _face_mask_image(face_ids, mask, face_triangles, base, r, height, width, out):
    """One image of :func:`face_mask_kernel`."""
    pixels = height * width
    covered = mask[base:base + pixels]
    ids = face_ids[base:base + pixels]
    holes = np.empty(pixels, np.uint8)
    for i in range(pixels):
        holes[i] = not covered[i] or ids[i] >= face_triangles
    _erode_image(holes, r, height, width, out[base:base + pixels])


def erode(mask: torch.Tensor, kernel: int) -> torch.Tensor:
    """``renderer.erode`` (kernel > 1) of a (B, 1, H, W) float32/float64 CPU mask."""
    H, W = mask.shape[-2:]
    out = torch.empty(mask.shape, dtype=mask.dtype)
    if out.numel():
        with launching():
            erode_kernel(mask.detach().reshape(-1).contiguous().numpy(), out.numel() // (H * W),
                         H, W,
                         (kernel | 1) // 2, out.view(-1).numpy())
    return out


def face_mask(fragments, face_triangles: int, kernel: int, dtype) -> torch.Tensor:
    """(B, 1, H, W) ``erode(renderer._face_region(fragments, ...), kernel)`` in ``dtype``
    (float32 or float64) for CPU fragments, in one pass."""
    B, H, W = fragments.face_ids.shape
    out = torch.empty(B, 1, H, W, dtype=dtype)
    if out.numel():
        with launching():
            face_mask_kernel(fragments.face_ids.reshape(-1).contiguous().numpy(),
                             fragments.mask.reshape(-1).contiguous().numpy(),
                             int(face_triangles), B, H, W,
                             (kernel | 1) // 2 if kernel > 1 else 0, out.view(-1).numpy())
    return out


@njit(inline="always")
def _lerp(start, end, weight, fused):
    """``torch.lerp`` of float32 scalars as its vectorised CPU kernel computes it (down to
    the sign of zero): ``start + weight * diff`` for small weights, else
    ``end + (weight - 1) * diff``, each one multiply-add (fused or not: ``lerp_fuses``)."""
    small = abs(weight) < 0.5  # (selects, not branches: the loop vectorises)
    coeff = weight if small else weight - np.float32(1.0)
    return _mul_add(coeff, end - start, start if small else end, fused)


@njit(cache=True, nogil=True)
def _composite_plane(image, mask, background, m0, q0, pixels, fused, out):
    # Slices indexed from 0: numba's support for negative indices (index + length when
    # negative) would otherwise stop the loop from vectorising, six times slower.
    src = image[q0:q0 + pixels]
    weight = mask[m0:m0 + pixels]
    dst = out[q0:q0 + pixels]
    for i in range(pixels):
        dst[i] = _lerp(background, src[i], weight[i], fused)


@njit(cache=True, parallel=True, nogil=True)
def composite_kernel(image, mask, background, batch, channels, pixels, fused, out):
    """out = torch.lerp(background, image, mask) for flat float32 image (B*C*H*W), mask
    (B*H*W, shared by the channels) and background (B*C, one value per plane)."""
    for plane in prange(batch * channels):
        _composite_plane(image, mask, background[plane], (plane // channels) * pixels,
                         plane * pixels, pixels, fused, out)


_LERP: list = []  # [fused] once probed, or [None]: neither rounding reproduces torch.lerp


def lerp_fuses():
    """Does this PyTorch's CPU ``torch.lerp`` round its multiply-add once (True) or twice
    (False), as :func:`composite_kernel` can reproduce; None when neither matches it
    exactly (then :func:`composite` is not to be used). Probed once per process on
    random weights, broadcast as ``renderer.composite`` does, in an odd size."""
    if not _LERP:
        g = torch.Generator().manual_seed(0)
        image = torch.rand(2, 3, 37, 53, generator=g) * 2 - 1
        mask = torch.rand(2, 1, 37, 53, generator=g) * 1.2 - 0.1
        background = torch.rand(2, 3, 1, 1, generator=g) * 2 - 1
        ref = torch.lerp(background.expand_as(image), image, mask)
        found = None
        for fused in (True, False):
            if torch.equal(_composite(image, mask, background, fused), ref):
                found = fused
                break
        _LERP.append(found)
    return _LERP[0]


def _composite(image, mask, background, fused):
    B, C, H, W = image.shape
    out = torch.empty(B, C, H, W, dtype=torch.float32)
    if out.numel():
        with launching():
            composite_kernel(image.reshape(-1).contiguous().numpy(),
                             mask.reshape(-1).contiguous().numpy(),
                             background.reshape(-1).contiguous().numpy(), B, C, H * W,
                             fused, out.view(-1).numpy())
    return out


def composite(image, mask, background) -> torch.Tensor:
    """``torch.lerp(background.expand_as(image), image, mask)`` bit for bit, compiled:
    float32 CPU image (B, C, H, W), mask (B, 1, H, W), background (B, C, 1, 1); only
    where :func:`lerp_fuses` is not None."""
    return _composite(image, mask, background, lerp_fuses())


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


def texture_view(dst, src_depth, src_mask, faces, src_vertices, src_image, tol, still=None,
                 mirror=None, vertex_colours=None, dst_vertices=None, stretch_factor=2.0,
                 scratch: str | None = None) -> dict:
    """The target view's fragments ``dst`` textured from ``src_image`` (B, C, H, W) float32,
    whose view of the same mesh is ``src_vertices`` (B, V, 3) float32, with depth and
    coverage ``src_depth``, ``src_mask`` (B, H, W) (``rasterizer.rasterize_depth``, or
    fragments' fields). Returns float32 image (B, C, H, W) and hidden, filled, outside,
    stretched (None without ``dst_vertices``), coverage (``dst.mask`` as 0/1) (B, 1, H, W).

    ``faces`` (F, 3) int64 in range; ``tol`` (B,) the z-test slack; ``still`` (F,) bool:
    triangles whose pixels are copied from ``src_image`` (None: none); ``mirror`` (V,) the
    mirror vertex of each vertex, for the symmetric fill (None: no fill);
    ``vertex_colours`` (B, V, C): interpolate these instead of sampling per pixel;
    ``dst_vertices`` (B, V, 3): the target view's vertices, for the stretched mask (pixels
    of triangles whose screen area grew more than ``stretch_factor`` times from the source
    view, or whose surface lies outside the source image).
    Uncovered pixels are 0 everywhere; copied ones have hidden, filled and outside 0.
    ``scratch``: image and outside go to this thread's reusable buffers of that name
    (``rasterizer_numba.scratch``: for a caller that hands neither out).
    """
    B, C, H, W = src_image.shape
    if scratch is None:
        image = torch.empty(B, C, H, W, dtype=torch.float32)
        outside = torch.empty(B, 1, H, W, dtype=torch.float32)
    else:
        image = _scratch(f"{scratch}.image", (B, C, H, W), torch.float32)
        outside = _scratch(f"{scratch}.outside", (B, 1, H, W), torch.float32)
    plane = lambda: torch.empty(B, 1, H, W, dtype=torch.float32)  # noqa: E731
    stretched = None if dst_vertices is None else plane()
    masks = (plane(), plane(), outside, torch.empty(0) if stretched is None else stretched,
             plane())
    if stretched is not None and not dst_vertices.numel():
        stretched.zero_()  # (the kernel takes empty vertices for "no stretched mask")
    if image.numel():
        flat = lambda t: t.detach().reshape(-1).contiguous().numpy()  # noqa: E731
        colours = (np.zeros(0, np.float32) if vertex_colours is None
                   else flat(vertex_colours.float()))
        args = (flat(dst.face_ids), flat(dst.bary), flat(dst.mask),
                faces.contiguous().numpy(),
                np.zeros(0, np.bool_) if still is None else still.contiguous().numpy(),
                (np.zeros(0, np.int64) if mirror is None
                 else mirror.to(torch.int64).contiguous().numpy()),
                flat(src_vertices), flat(src_mask), flat(src_depth), flat(tol.float()),
                flat(src_image), colours, grid_sample_fuses(),
                np.zeros(0, np.float32) if dst_vertices is None else flat(dst_vertices.float()),
                float(stretch_factor), B, C, H, W, image.view(-1).numpy(),
                *(m.view(-1).numpy() for m in masks))
        with launching():
            texture_kernel(*args)
    else:
        for m in masks:
            m.zero_()
    return dict(image=image, hidden=masks[0], filled=masks[1], outside=masks[2],
                stretched=stretched, coverage=masks[4])
