"""Tests of render/rasterizer.py: coverage rule, z-buffer, barycentrics, edge cases.

Every test runs with each strategy (compact, the PyTorch CPU path; dense, the GPU's; numba,
the compiled CPU kernel), selected through ``default_strategy``, except those marked
``@strategies_given``, which pick strategies themselves and run once; they come at the end.
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
import textwrap

import pytest
import torch

from render import rasterizer
from render.rasterizer import (
    STRATEGIES,
    Fragments,
    SizingPlan,
    interpolate,
    rasterize,
    rasterize_depth,
)
from util.op_count import OpCounter

FIELDS = ("face_ids", "bary", "depth", "mask")


def strategies_given(test):
    """Mark a test that names its strategies: it runs once, with the defaults untouched."""
    test.strategies_given = True
    return test


def pytest_generate_tests(metafunc):
    if not getattr(metafunc.function, "strategies_given", False):
        metafunc.parametrize("strategy", STRATEGIES, indirect=True)


@pytest.fixture(autouse=True)
def strategy(request, monkeypatch):
    name = getattr(request, "param", None)
    if name is not None:
        monkeypatch.setattr(rasterizer, "default_strategy", lambda device: name)
    return name


# ----------------------------------------------------------------------------------- helpers
def reference_raster(verts, faces, height, width, cull_backfaces=False):
    """Brute-force rasteriser written independently of the module, pixel by pixel.

    Same specification: x, y snapped to 1/256 px (round half to even), a pixel is covered
    when its centre is inside by the top-left rule, smallest depth wins, ties -> lowest face.
    Returns (face_ids, depth, count) as nested lists; count is how many faces claim a pixel.
    """
    verts = [tuple(v) for v in verts.tolist()]
    face_ids = [[-1] * width for _ in range(height)]
    depth = [[0.0] * width for _ in range(height)]
    count = [[0] * width for _ in range(height)]
    best = [[math.inf] * width for _ in range(height)]
    for f, tri in enumerate(faces.tolist()):
        pts = [verts[i] for i in tri]
        if not all(math.isfinite(c) for p in pts for c in p):
            continue
        if any(abs(c) > 2**20 for p in pts for c in p[:2]):
            continue
        xs = [round(p[0] * 256) for p in pts]
        ys = [round(p[1] * 256) for p in pts]
        area2 = (xs[1] - xs[0]) * (ys[2] - ys[0]) - (ys[1] - ys[0]) * (xs[2] - xs[0])
        if area2 == 0 or (cull_backfaces and area2 > 0):
            continue
        # Orient clockwise on screen (positive area): inside is then "all edges >= 0".
        order = [0, 1, 2] if area2 > 0 else [0, 2, 1]
        for i in range(height):
            for j in range(width):
                px, py = 256 * j + 128, 256 * i + 128
                inside = True
                for k in range(3):
                    a, b = order[k], order[(k + 1) % 3]
                    dx, dy = xs[b] - xs[a], ys[b] - ys[a]
                    w = dx * (py - ys[a]) - dy * (px - xs[a])
                    top_left = dy < 0 or (dy == 0 and dx > 0)
                    if w < 0 or (w == 0 and not top_left):
                        inside = False
                        break
                if not inside:
                    continue
                count[i][j] += 1
                w = [(xs[(v + 2) % 3] - xs[(v + 1) % 3]) * (py - ys[(v + 1) % 3])
                     - (ys[(v + 2) % 3] - ys[(v + 1) % 3]) * (px - xs[(v + 1) % 3])
                     for v in range(3)]
                z = sum(w[v] * pts[v][2] for v in range(3)) / area2
                if z < best[i][j]:
                    best[i][j], face_ids[i][j], depth[i][j] = z, f, z
    return face_ids, depth, count


def random_mesh(gen, num_verts, num_faces, height, width, margin=3.0, lattice=None):
    """Random vertices (some outside the image) and faces; optionally on a lattice."""
    lo = torch.tensor([-margin, -margin, 0.0])
    span = torch.tensor([width + 2 * margin, height + 2 * margin, 1.0])
    verts = torch.rand(num_verts, 3, generator=gen) * span + lo
    if lattice:
        verts[:, :2] = torch.round(verts[:, :2] * lattice) / lattice
    faces = torch.stack([torch.randperm(num_verts, generator=gen)[:3]
                         for _ in range(num_faces)])
    return verts, faces


def flat_faces(verts, faces, depths):
    """Unshare vertices so that every face gets its own constant depth."""
    v = verts[faces.reshape(-1)].clone()
    v[:, 2] = torch.as_tensor(depths, dtype=v.dtype).repeat_interleave(3)
    return v, torch.arange(v.shape[0]).view(-1, 3)


def centre_inside_rect(height, width, x0, y0, x1, y1):
    """Pixels whose centre c satisfies x0 <= cx < x1, y0 <= cy < y1 (top-left rule)."""
    c_x = torch.arange(width) + 0.5
    c_y = torch.arange(height) + 0.5
    return ((c_y[:, None] >= y0) & (c_y[:, None] < y1)) & ((c_x >= x0) & (c_x < x1))


def claims(verts, faces, height, width, **kw):
    """Per-pixel (covered, claimed-by-several) using two renders with opposite depth orders.

    A pixel claimed by two or more faces shows the lowest face in one render and the highest
    in the other; a pixel claimed by one face shows it in both.
    """
    n = faces.shape[0]
    va, fa = flat_faces(verts, faces, torch.arange(n, dtype=torch.float32))
    vb, fb = flat_faces(verts, faces, -torch.arange(n, dtype=torch.float32))
    a = rasterize(va, fa, height, width, **kw)
    b = rasterize(vb, fb, height, width, **kw)
    assert torch.equal(a.mask, b.mask)
    return a.mask[0], (a.face_ids != b.face_ids)[0]


# ------------------------------------------------------------------------- coverage rule
@pytest.mark.parametrize("rect", [
    (2.3, 1.7, 9.8, 7.1),   # generic corners
    (2.5, 1.5, 9.5, 7.5),   # edges exactly through pixel centres
    (2.0, 1.0, 10.0, 7.0),  # edges on pixel boundaries
    (-3.5, -2.5, 5.5, 20.0),  # partly outside the image
])
@pytest.mark.parametrize("diagonal", [0, 1])
@pytest.mark.parametrize("flip", [False, True])
def test_square_of_two_triangles_covers_each_pixel_once(rect, diagonal, flip):
    x0, y0, x1, y1 = rect
    verts = torch.tensor([[x0, y0, 1.0], [x1, y0, 1.0], [x1, y1, 1.0], [x0, y1, 1.0]])
    faces = torch.tensor([[0, 1, 2], [0, 2, 3]] if diagonal == 0 else [[0, 1, 3], [1, 2, 3]])
    if flip:
        faces = faces[:, [0, 2, 1]]
    height, width = 12, 13
    expected = centre_inside_rect(height, width, x0, y0, x1, y1)
    counts = sum(rasterize(verts, faces[i:i + 1], height, width).mask[0].int() for i in range(2))
    assert torch.equal(counts, expected.int())
    frags = rasterize(verts, faces, height, width)
    assert torch.equal(frags.mask[0], expected)


def jittered_grid(seed=0, n=71, lo=8.0, hi=248.0):
    """A valid tiling of the square [lo, hi]^2 by 2 n^2 triangles (10,082 for n = 71) of
    random winding, half its interior vertices on the half-pixel lattice; z = 0."""
    gen = torch.Generator().manual_seed(seed)
    g = torch.linspace(lo, hi, n + 1)
    gy, gx = torch.meshgrid(g, g, indexing="ij")
    cell = (hi - lo) / n
    # Jitter (<= 0.15 cell per coordinate, plus the snapping below) small enough that no
    # triangle can fold over: the mesh is a valid tiling of the square.
    jitter = (torch.rand(n + 1, n + 1, 2, generator=gen) - 0.5) * 0.3 * cell
    interior = torch.zeros(n + 1, n + 1, dtype=torch.bool)
    interior[1:-1, 1:-1] = True
    xy = torch.stack([gx, gy], -1) + jitter * interior[..., None]
    # Put half the interior vertices on the half-pixel lattice, so that many vertices and
    # edges pass exactly through pixel centres.
    snap = interior & (torch.rand(n + 1, n + 1, generator=gen) < 0.5)
    xy[snap] = torch.round(xy[snap] * 2) / 2
    verts = torch.cat([xy.reshape(-1, 2), torch.zeros((n + 1) ** 2, 1)], 1)
    i, j = torch.meshgrid(torch.arange(n), torch.arange(n), indexing="ij")
    a = (i * (n + 1) + j).reshape(-1)
    b, c, d = a + 1, a + n + 1, a + n + 2
    main_diag = torch.rand(n * n, generator=gen) < 0.5
    t1 = torch.where(main_diag[:, None], torch.stack([a, b, d], 1), torch.stack([a, b, c], 1))
    t2 = torch.where(main_diag[:, None], torch.stack([a, d, c], 1), torch.stack([b, d, c], 1))
    faces = torch.cat([t1, t2])
    tri = verts[faces]
    d1, d2 = tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]
    assert (d1[:, 0] * d2[:, 1] - d1[:, 1] * d2[:, 0] > 0.1).all()  # one consistent winding
    # Random winding: with culling off both orientations must tile the same way.
    swap = torch.rand(faces.shape[0], generator=gen) < 0.5
    faces[swap] = faces[swap][:, [0, 2, 1]]
    return verts, faces


def test_jittered_grid_of_10k_triangles_has_no_cracks_and_no_overlaps():
    lo, hi = 8.0, 248.0  # region boundary on pixel boundaries: no centre lies on it
    verts, faces = jittered_grid(0, 71, lo, hi)
    assert faces.shape[0] >= 10_000

    covered, multiple = claims(verts, faces, 256, 256)
    expected = centre_inside_rect(256, 256, lo, lo, hi, hi)
    assert torch.equal(covered, expected), f"{int((expected & ~covered).sum())} cracks"
    assert not multiple.any(), f"{int(multiple.sum())} pixels drawn twice"


def test_closed_fan_around_a_pixel_centre_covers_it_once():
    # 8 triangles around a vertex that sits exactly on a pixel centre, with spokes along
    # rows, columns and diagonals through pixel centres.
    c = (5.5, 5.5)
    ring = [(c[0] + 3 * math.cos(a), c[1] + 3 * math.sin(a))
            for a in [k * math.pi / 4 for k in range(8)]]
    ring = [(round(x * 2) / 2, round(y * 2) / 2) for x, y in ring]
    verts = torch.tensor([[*c, 0.0]] + [[x, y, 0.0] for x, y in ring])
    faces = torch.tensor([[0, 1 + k, 1 + (k + 1) % 8] for k in range(8)])
    covered, multiple = claims(verts, faces, 12, 12)
    assert covered[5, 5] and not multiple.any()
    assert reference_raster(*flat_faces(verts, faces, torch.arange(8.0)), 12, 12)[2][5][5] == 1


# ------------------------------------------------------------------------- reference check
@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("cull", [False, True])
def test_matches_bruteforce_reference_exactly(seed, cull):
    gen = torch.Generator().manual_seed(seed)
    height, width = 11, 14
    verts, faces = random_mesh(gen, 9, 12, height, width,
                               lattice=[None, 2, 4][seed % 3])
    # Distinct constant depths per face make the expected winner unambiguous.
    depths = torch.randperm(12, generator=gen).float() - 5.0
    verts, faces = flat_faces(verts, faces, depths)
    ref_ids, ref_depth, _ = reference_raster(verts, faces, height, width, cull)
    frags = rasterize(verts, faces, height, width, cull_backfaces=cull)
    assert torch.equal(frags.face_ids[0], torch.tensor(ref_ids))
    assert torch.equal(frags.depth[0], torch.tensor(ref_depth))
    assert torch.equal(frags.mask[0], torch.tensor(ref_ids) >= 0)


@pytest.mark.parametrize("seed", range(4))
def test_matches_reference_with_sloped_depths(seed):
    gen = torch.Generator().manual_seed(100 + seed)
    height, width = 12, 10
    verts, faces = random_mesh(gen, 12, 10, height, width, lattice=4 if seed % 2 else None)
    verts[:, 2] = torch.rand(12, generator=gen) * 4 - 2
    ref_ids, ref_depth, _ = reference_raster(verts, faces, height, width)
    frags = rasterize(verts, faces, height, width)
    ref_ids = torch.tensor(ref_ids)
    ref_depth = torch.tensor(ref_depth, dtype=torch.float32)
    assert torch.equal(frags.mask[0], ref_ids >= 0)
    torch.testing.assert_close(frags.depth[0], ref_depth, atol=1e-5, rtol=1e-5)
    assert torch.equal(frags.face_ids[0], ref_ids)


# ------------------------------------------------------------------------------- z-buffer
def test_nearer_triangle_wins_regardless_of_order():
    big = [[0.0, 0.0], [16.0, 0.0], [0.0, 16.0]]
    small = [[2.0, 2.0], [8.0, 2.0], [2.0, 8.0]]
    for near, far in [(-3.0, -1.0), (1.0, 2.0), (-0.5, 0.5)]:
        verts = torch.tensor([[*p, far] for p in big] + [[*p, near] for p in small])
        for faces, small_id in [([[0, 1, 2], [3, 4, 5]], 1), ([[3, 4, 5], [0, 1, 2]], 0)]:
            frags = rasterize(verts, torch.tensor(faces), 16, 16)
            assert frags.face_ids[0, 4, 4] == small_id
            assert frags.depth[0, 4, 4] == near
            assert frags.face_ids[0, 12, 1] == 1 - small_id
            assert frags.depth[0, 12, 1] == far


def test_exact_depth_ties_go_to_the_lowest_face_index():
    tri = [[1.0, 1.0], [9.0, 1.0], [1.0, 9.0]]
    for z_a, z_b in [(0.7, 0.7), (-0.0, 0.0), (0.0, -0.0), (-2.5, -2.5)]:
        verts = torch.tensor([[*p, z_a] for p in tri] + [[*p, z_b] for p in tri])
        for faces in ([[0, 1, 2], [3, 4, 5]], [[3, 5, 4], [1, 2, 0]], [[4, 5, 3], [0, 1, 2]]):
            frags = rasterize(verts, torch.tensor(faces), 10, 10)
            assert frags.mask[0].sum() > 0
            assert (frags.face_ids[0][frags.mask[0]] == 0).all()
    # The same face twice: the first copy wins.
    verts = torch.tensor([[*p, 1.0] for p in tri])
    frags = rasterize(verts, torch.tensor([[2, 0, 1], [1, 2, 0], [0, 1, 2]]), 10, 10)
    assert (frags.face_ids[0][frags.mask[0]] == 0).all()


def test_batch_images_are_independent():
    gen = torch.Generator().manual_seed(3)
    verts, faces = random_mesh(gen, 20, 30, 16, 16)
    batch = torch.stack([verts, verts.flip(0), verts * 0.5])
    frags = rasterize(batch, faces, 16, 16)
    for b in range(3):
        single = rasterize(batch[b], faces, 16, 16)
        for name in ("face_ids", "bary", "depth", "mask"):
            assert torch.equal(getattr(frags, name)[b], getattr(single, name)[0]), name


# --------------------------------------------------------------------------- barycentrics
def test_barycentrics_sum_to_one_and_reproduce_pixel_centres():
    gen = torch.Generator().manual_seed(1)
    height, width = 40, 48
    verts, faces = random_mesh(gen, 30, 40, height, width, lattice=256)
    verts[:, 2] = torch.rand(30, generator=gen) * 10
    frags = rasterize(verts, faces, height, width)
    m = frags.mask[0]
    assert m.sum() > 500
    bary = frags.bary[0][m]
    torch.testing.assert_close(bary.sum(-1), torch.ones(len(bary)), atol=1e-6, rtol=0)
    assert (bary >= 0).all() and (bary <= 1).all()
    assert (frags.bary[0][~m] == 0).all() and (frags.depth[0][~m] == 0).all()
    xy = interpolate(frags, faces, verts[:, :2])[0]
    rows, cols = torch.meshgrid(torch.arange(height), torch.arange(width), indexing="ij")
    centres = torch.stack([cols + 0.5, rows + 0.5], -1).float()
    torch.testing.assert_close(xy[m], centres[m], atol=1e-4, rtol=0)
    assert (xy[~m] == 0).all()
    z = interpolate(frags, faces, verts[None, :, 2:])[0, ..., 0]
    torch.testing.assert_close(z[m], frags.depth[0][m], atol=1e-5, rtol=1e-5)


def test_interpolate_shapes_and_dtypes():
    verts = torch.tensor([[1.0, 1.0, 0.0], [7.0, 1.0, 0.0], [1.0, 7.0, 0.0]])
    faces = torch.tensor([[0, 1, 2]])
    frags = rasterize(torch.stack([verts, verts + 1]), faces, 8, 9)
    colours = torch.eye(3, dtype=torch.float64)
    out = interpolate(frags, faces, colours)  # (V, C) is shared by the batch
    assert out.shape == (2, 8, 9, 3) and out.dtype == torch.float64
    torch.testing.assert_close(out.sum(-1), frags.mask.double(), atol=1e-6, rtol=0)
    per_image = interpolate(frags, faces, torch.stack([colours, 2 * colours]).float())
    assert per_image.dtype == torch.float32
    torch.testing.assert_close(per_image[1], 2 * out[1].float())
    assert interpolate(frags, faces, torch.zeros(3, 0)).shape == (2, 8, 9, 0)


# ----------------------------------------------------------------------- culling, winding
def test_backface_culling_policy():
    # Counter-clockwise on screen (y down): A2 = (x1-x0)(y2-y0) - (y1-y0)(x2-x0) < 0: front.
    ccw = torch.tensor([[1.0, 1.0, 0.0], [1.0, 7.0, 0.0], [7.0, 1.0, 0.0]])
    faces = torch.tensor([[0, 1, 2]])
    cw_faces = faces[:, [0, 2, 1]]
    front = rasterize(ccw, faces, 8, 8, cull_backfaces=True)
    back = rasterize(ccw, cw_faces, 8, 8, cull_backfaces=True)
    assert front.mask.sum() > 0 and back.mask.sum() == 0
    both = rasterize(ccw, cw_faces, 8, 8)
    assert torch.equal(both.mask, front.mask)
    # Barycentrics follow the face's own vertex order, whatever the winding.
    torch.testing.assert_close(both.bary[front.mask][:, [0, 2, 1]], front.bary[front.mask])


def test_culling_keeps_the_nearest_front_face():
    # A closed box seen from the front: with culling only the front-facing side is drawn,
    # without it the z-buffer must find the same surface.
    from itertools import product
    corners = torch.tensor(list(product([2.0, 14.0], repeat=3)))  # x, y, z
    quads = [(0, 1, 3, 2), (4, 6, 7, 5), (0, 4, 5, 1), (2, 3, 7, 6), (0, 2, 6, 4), (1, 5, 7, 3)]
    faces = []
    for a, b, c, d in quads:
        faces += [[a, b, c], [a, c, d]]
    faces = torch.tensor(faces)
    # Orient every face with its normal pointing out of the box (right-hand rule).
    centre = corners.mean(0)
    tri = corners[faces]
    normal = torch.linalg.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    inward = ((tri.mean(1) - centre) * normal).sum(1) < 0
    faces[inward] = faces[inward][:, [0, 2, 1]]
    culled = rasterize(corners, faces, 16, 16, cull_backfaces=True)
    full = rasterize(corners, faces, 16, 16)
    assert culled.mask.sum() == 144  # the 12 x 12 square, drawn once
    assert torch.equal(culled.mask, full.mask)
    assert (culled.depth[culled.mask] == 2.0).all()
    assert torch.equal(culled.face_ids, full.face_ids)


def test_degenerate_triangles_draw_nothing():
    verts = torch.tensor([[1.0, 1.0, 0.0], [5.0, 5.0, 0.0], [9.0, 9.0, 0.0], [1.0, 1.0, 0.0],
                          [1.0 + 1e-4, 1.0, 0.0]])
    faces = torch.tensor([[0, 1, 2], [0, 3, 1], [0, 0, 0], [0, 4, 3]])
    assert rasterize(verts, faces, 10, 10).mask.sum() == 0


# ------------------------------------------------------------------ chunking, huge triangles
@pytest.mark.parametrize("chunk", [1, 7, 100, 5000])
def test_chunking_does_not_change_the_result(chunk):
    gen = torch.Generator().manual_seed(5)
    verts, faces = random_mesh(gen, 12, 14, 20, 24, margin=10.0, lattice=2)
    verts = torch.stack([verts, verts.flip(0)])
    verts[..., 2] = torch.rand(2, 12, generator=gen)
    ref = rasterize(verts, faces, 20, 24)
    got = rasterize(verts, faces, 20, 24, max_chunk_pixels=chunk)
    for name in ("face_ids", "bary", "depth", "mask"):
        assert torch.equal(getattr(got, name), getattr(ref, name)), name


def test_triangle_far_larger_than_the_image():
    verts = torch.tensor([[-5000.0, -3000.0, 1.0], [40000.0, -2000.0, 2.0],
                          [-3000.0, 30000.0, 3.0], [10.0, 10.0, 0.0]])
    faces = torch.tensor([[0, 1, 2], [3, 3, 3]])
    frags = rasterize(verts, faces, 48, 64)
    assert frags.mask.all() and (frags.face_ids == 0).all()
    torch.testing.assert_close(frags.bary.sum(-1), torch.ones(1, 48, 64))
    chunked = rasterize(verts, faces, 48, 64, max_chunk_pixels=100)
    assert torch.equal(chunked.face_ids, frags.face_ids)
    assert torch.equal(chunked.depth, frags.depth)
    assert torch.equal(chunked.bary, frags.bary)


def test_huge_triangle_on_a_large_image_is_chunked():
    # Covers the whole 1024 x 1024 image (1M fragments) in chunks of 16k fragments; half
    # of the image by a diagonal through pixel centres checks the fill rule at scale.
    size = 1024
    verts = torch.tensor([[0.5, 0.5, 0.0], [size + 0.5, 0.5, 0.0], [0.5, size + 0.5, 0.0],
                          [size + 0.5, size + 0.5, 0.0]])
    faces = torch.tensor([[0, 1, 2], [1, 3, 2]])
    frags = rasterize(verts, faces, size, size, max_chunk_pixels=1 << 14)
    rows, cols = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    # Centre (j + .5, i + .5) is in face 0 when i + j < size (the diagonal's pixel centres
    # belong to face 1: for face 0 that edge is a right edge).
    expected = torch.where(rows + cols < size, 0, 1)
    assert torch.equal(frags.face_ids[0], expected)


# ---------------------------------------------------------------------------- edge cases
def test_vertices_outside_the_image():
    verts = torch.tensor([[-20.0, -20.0, 0.0], [-5.0, -20.0, 0.0], [-20.0, -5.0, 0.0],
                          [-10.0, 4.0, 0.0], [30.0, 4.0, 0.0], [5.0, 40.0, 0.0]])
    faces = torch.tensor([[0, 1, 2], [3, 4, 5]])
    frags = rasterize(verts, faces, 16, 16)
    ref_ids, _, _ = reference_raster(verts, faces, 16, 16)
    assert torch.equal(frags.face_ids[0], torch.tensor(ref_ids))
    assert not (frags.face_ids == 0).any() and (frags.face_ids == 1).sum() > 50


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf, 2.0**21])
def test_nonfinite_or_out_of_range_vertices_skip_their_triangles(bad):
    gen = torch.Generator().manual_seed(7)
    verts, faces = random_mesh(gen, 10, 12, 16, 16)
    ok = rasterize(verts, faces[~(faces == 4).any(1)], 16, 16)
    for coord in range(3 if math.isnan(bad) or math.isinf(bad) else 2):
        broken = verts.clone()
        broken[4, coord] = bad
        frags = rasterize(broken, faces, 16, 16)
        keep = torch.nonzero(~(faces == 4).any(1)).squeeze(1)
        remapped = torch.where(ok.face_ids >= 0, keep[ok.face_ids.clamp_min(0)], -1)
        assert torch.equal(frags.face_ids, remapped)
        assert torch.equal(frags.bary, ok.bary) and torch.equal(frags.depth, ok.depth)


def test_extreme_depths_are_ordered_and_never_nan():
    big = 3.0e38
    verts = torch.tensor([[0.0, 0.0, big], [16.0, 0.3, -big], [0.2, 16.0, big],
                          [0.0, 0.0, 1.0], [16.0, 0.0, 1.0], [0.0, 16.0, 1.0]])
    faces = torch.tensor([[0, 1, 2], [3, 4, 5]])
    frags = rasterize(verts, faces, 16, 16)
    assert not frags.depth.isnan().any() and frags.mask.sum() > 100
    # Inside triangle 1 (depth 1) the winner is never farther than 1.
    inside_1 = rasterize(verts, faces[1:], 16, 16).mask
    assert (frags.depth[inside_1] <= 1.0).all()
    assert (frags.depth[frags.face_ids == 1] == 1.0).all()


def test_default_chunk_size():
    from render.rasterizer import default_max_chunk_pixels

    assert default_max_chunk_pixels("cpu") >= 1 << 20
    gen = torch.Generator().manual_seed(2)
    verts, faces = random_mesh(gen, 10, 12, 16, 16)
    a = rasterize(verts, faces, 16, 16)
    b = rasterize(verts, faces, 16, 16, max_chunk_pixels=default_max_chunk_pixels("cpu"))
    assert torch.equal(a.face_ids, b.face_ids) and torch.equal(a.bary, b.bary)


def test_empty_inputs():
    verts = torch.rand(2, 5, 3) * 8
    faces = torch.tensor([[0, 1, 2], [2, 3, 4]])
    empty_faces = rasterize(verts, torch.zeros(0, 3, dtype=torch.int64), 6, 7)
    assert empty_faces.face_ids.shape == (2, 6, 7) and (empty_faces.face_ids == -1).all()
    assert empty_faces.bary.shape == (2, 6, 7, 3) and not empty_faces.mask.any()
    no_images = rasterize(torch.zeros(0, 5, 3), faces, 6, 7)
    assert no_images.face_ids.shape == (0, 6, 7) and no_images.bary.shape == (0, 6, 7, 3)
    assert interpolate(no_images, faces, torch.zeros(0, 5, 2)).shape == (0, 6, 7, 2)
    no_pixels = rasterize(verts, faces, 0, 7)
    assert no_pixels.mask.shape == (2, 0, 7)
    no_verts = rasterize(torch.zeros(0, 3), torch.zeros(0, 3, dtype=torch.long), 3, 3)
    assert no_verts.mask.shape == (1, 3, 3) and not no_verts.mask.any()
    single = rasterize(verts[0], faces, 6, 7)  # (V, 3) is one image
    assert isinstance(single, Fragments) and single.face_ids.shape == (1, 6, 7)
    assert single.face_ids.dtype == torch.int64 and single.bary.dtype == torch.float32
    assert single.depth.dtype == torch.float32 and single.mask.dtype == torch.bool


def test_other_vertex_and_face_dtypes():
    gen = torch.Generator().manual_seed(11)
    verts, faces = random_mesh(gen, 10, 12, 16, 16, lattice=4)
    verts[:, 2] = torch.round(verts[:, 2] * 8) / 8  # exact in float16 too
    ref = rasterize(verts, faces, 16, 16)
    for v, f in [(verts.double(), faces), (verts.half(), faces.int()), (verts, faces.short())]:
        frags = rasterize(v, f, 16, 16)
        assert torch.equal(frags.face_ids, ref.face_ids)
    x = verts.clone().requires_grad_(True)
    assert torch.equal(rasterize(x, faces, 16, 16).face_ids, ref.face_ids)


@pytest.mark.parametrize("call, match", [
    (lambda v, f: rasterize(v[..., :2], f, 8, 8), "shape"),
    (lambda v, f: rasterize(v[None, None], f, 8, 8), "shape"),
    (lambda v, f: rasterize(v.long(), f, 8, 8), "float"),
    (lambda v, f: rasterize(v, f[:, :2], 8, 8), "faces must have shape"),
    (lambda v, f: rasterize(v, f.float(), 8, 8), "integer"),
    (lambda v, f: rasterize(v, f + 3, 8, 8), "out of range"),
    (lambda v, f: rasterize(v, f - 1, 8, 8), "out of range"),
    (lambda v, f: rasterize(v, f, -1, 8), "height"),
    (lambda v, f: rasterize(v, f, 8, 8.0), "width"),
    (lambda v, f: rasterize(v, f, 8, 8, max_chunk_pixels=0), "max_chunk_pixels"),
    (lambda v, f: rasterize(v, f, 8, 8, strategy="fast"), "strategy must be one of"),
    (lambda v, f: interpolate(rasterize(v, f, 8, 8), f, v, strategy=""), "strategy"),
    (lambda v, f: rasterize(v.tolist(), f, 8, 8), "torch.Tensor"),
    (lambda v, f: interpolate(rasterize(v, f, 8, 8), f, torch.zeros(2, 3, 1)), "vertex_attrs"),
    (lambda v, f: interpolate(rasterize(v, f, 8, 8), f, torch.zeros(3, 1, dtype=torch.long)),
     "float"),
    (lambda v, f: interpolate(rasterize(v, f, 8, 8), f, torch.zeros(2, 1)), "vertex_attrs"),
])
def test_bad_input_raises_value_error(call, match):
    verts = torch.tensor([[1.0, 1.0, 0.0], [6.0, 1.0, 0.0], [1.0, 6.0, 0.0]])
    faces = torch.tensor([[0, 1, 2]])
    with pytest.raises(ValueError, match=match):
        call(verts, faces)


def test_rasterize_depth_checks_its_input_as_rasterize_does(strategy):
    """Bad input to rasterize_depth gets rasterize's one-line errors, whatever the strategy;
    an empty mesh covers nothing."""
    verts, faces = torch.rand(1, 5, 3) * 8, torch.tensor([[0, 1, 9]])
    with pytest.raises(ValueError, match="faces index out of range"):
        rasterize_depth(verts, faces, 8, 8)
    with pytest.raises(ValueError, match=r"vertices must have shape \(B, V, 3\)"):
        rasterize_depth(verts[..., :2], faces, 8, 8)
    depth, mask = rasterize_depth(verts, faces[:0], 8, 6)
    assert depth.shape == mask.shape == (1, 8, 6)
    assert not mask.any() and not depth.any()


# ---------------------------------------------------------------------------------- device
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_matches_cpu():
    gen = torch.Generator().manual_seed(21)
    cases = []
    for seed in range(3):
        verts, faces = random_mesh(gen, 300, 600, 96, 128, margin=20.0,
                                   lattice=[None, 2, 256][seed])
        verts[:, 2] = torch.rand(300, generator=gen) * 50 - 25
        cases.append((torch.stack([verts, verts.flip(0)]), faces, 96, 128))
    big = torch.tensor([[-900.0, -500.0, 1.0], [3000.0, 10.0, 2.0], [20.0, 4000.0, 0.5]])
    cases.append((big, torch.tensor([[0, 1, 2]]), 512, 640))
    for verts, faces, height, width in cases:
        for kw in ({}, {"cull_backfaces": True}, {"max_chunk_pixels": 4096}):
            cpu = rasterize(verts, faces, height, width, **kw)
            gpu = rasterize(verts.cuda(), faces.cuda(), height, width, **kw)
            other = "compact" if rasterizer.default_strategy("cuda") == "dense" else "dense"
            assert torch.equal(rasterize(verts.cuda(), faces.cuda(), height, width,
                                         strategy=other, **kw).face_ids, gpu.face_ids)
            assert gpu.face_ids.is_cuda
            assert torch.equal(gpu.face_ids.cpu(), cpu.face_ids)
            assert torch.equal(gpu.mask.cpu(), cpu.mask)
            torch.testing.assert_close(gpu.depth.cpu(), cpu.depth, rtol=0, atol=0)
            torch.testing.assert_close(gpu.bary.cpu(), cpu.bary, rtol=1e-6, atol=1e-7)
            attrs = verts[..., :2] if verts.ndim == 3 else verts[None, :, :2]
            torch.testing.assert_close(
                interpolate(gpu, faces.cuda(), attrs.cuda()).cpu(),
                interpolate(cpu, faces, attrs), rtol=1e-6, atol=1e-5)


# ------------------------------------------------------------------- strategies and plans
def sloped_mesh(seed, batch=2, num_verts=200, num_faces=400, height=40, width=56):
    gen = torch.Generator().manual_seed(seed)
    verts = []
    for _ in range(batch):
        v, faces = random_mesh(gen, num_verts, num_faces, height, width, margin=8.0)
        v[:, 2] = torch.rand(num_verts, generator=gen) * 20 - 10
        verts.append(v)
    gen = torch.Generator().manual_seed(seed)  # same faces for every image
    faces = random_mesh(gen, num_verts, num_faces, height, width)[1]
    return torch.stack(verts), faces, height, width


def assert_same_fragments(a, b):
    """Bit for bit: floats are compared as their bits, so NaNs and -0.0 count too."""
    for name in FIELDS:
        x, y = getattr(a, name), getattr(b, name)
        if x.is_floating_point():
            x, y = x.view(torch.int32), y.view(torch.int32)
        assert x.dtype == y.dtype and torch.equal(x, y), name


@strategies_given
@pytest.mark.parametrize("kw", [{}, {"cull_backfaces": True}, {"max_chunk_pixels": 300},
                                {"max_chunk_pixels": 5000, "cull_backfaces": True}])
def test_strategies_give_identical_fragments(kw):
    for seed in range(3):
        verts, faces, height, width = sloped_mesh(seed)
        compact = rasterize(verts, faces, height, width, strategy="compact", **kw)
        attrs = torch.randn(verts.shape[0], verts.shape[1], 5)
        chunk = kw.get("max_chunk_pixels")
        expected = interpolate(compact, faces, attrs, max_chunk_pixels=chunk,
                               strategy="compact")
        for other in ("dense", "numba"):
            assert_same_fragments(
                compact, rasterize(verts, faces, height, width, strategy=other, **kw))
            assert torch.equal(expected, interpolate(compact, faces, attrs, strategy=other,
                                                     max_chunk_pixels=chunk))


@strategies_given
def test_dense_strategy_syncs_once_per_rasterize_and_never_to_interpolate():
    verts, faces, height, width = sloped_mesh(4)
    rasterize(verts, faces, height, width)  # the faces' range check happens once
    with OpCounter() as counter:
        frags = rasterize(verts, faces, height, width, strategy="dense")
    assert counter.syncs == 1
    interpolate(frags, faces, verts)
    with OpCounter() as counter:
        interpolate(frags, faces, verts, strategy="dense")
    assert counter.syncs == 0


@strategies_given
def test_face_range_check_sees_in_place_changes():
    verts, faces, height, width = sloped_mesh(5)
    faces = faces.clone()
    rasterize(verts, faces, height, width)
    faces[3, 1] = verts.shape[1]  # the cached check must not hide this
    with pytest.raises(ValueError, match="out of range"):
        rasterize(verts, faces, height, width)
    with pytest.raises(ValueError, match="out of range"):
        interpolate(rasterize(verts, faces[:3], height, width), faces, verts)


@strategies_given
def test_sizing_plan_replays_without_syncs_and_reports_overflow():
    verts, faces, height, width = sloped_mesh(6)
    expected = rasterize(verts, faces, height, width, strategy="compact")
    plan = SizingPlan(headroom=1.25)
    with plan.recording():
        recorded = rasterize(verts, faces, height, width, strategy="dense")
    assert_same_fragments(recorded, expected)
    assert len(plan.sizes) == 1
    with OpCounter() as counter, plan.replay():
        replayed = rasterize(verts, faces, height, width, strategy="dense")
        flag = plan.overflowed()
    assert counter.syncs == 0
    assert_same_fragments(replayed, expected)
    assert not bool(flag)
    # Slightly different geometry fits in the headroom and is still exact.
    nudged = verts * 0.97 + 0.4
    with plan.replay():
        got = rasterize(nudged, faces, height, width, strategy="dense")
        assert not bool(plan.overflowed())
    assert_same_fragments(got, rasterize(nudged, faces, height, width, strategy="compact"))
    # Much bigger triangles need more room than recorded: the flag says so.
    grown = verts.clone()
    grown[..., :2] = (verts[..., :2] - 20) * 3 + 20
    with plan.replay():
        rasterize(grown, faces, height, width, strategy="dense")
        assert bool(plan.overflowed())
    with pytest.raises(RuntimeError, match="more rasteriser steps"), plan.replay():
        rasterize(verts, faces, height, width, strategy="dense")
        rasterize(verts, faces, height, width, strategy="dense")


@strategies_given
def test_sizing_plan_replays_work_spread_over_several_chunks():
    verts, faces, height, width = sloped_mesh(7, batch=1, num_verts=30, num_faces=20)
    expected = rasterize(verts, faces, height, width, strategy="compact")
    plan = SizingPlan()
    chunk = 2000
    with plan.recording():
        got = rasterize(verts, faces, height, width, strategy="dense", max_chunk_pixels=chunk)
    assert_same_fragments(got, expected)
    assert plan.sizes[0][0] > 2 * chunk // 8  # spans of several chunks
    with OpCounter() as counter, plan.replay():
        got = rasterize(verts, faces, height, width, strategy="dense", max_chunk_pixels=chunk)
        flag = plan.overflowed()
    assert counter.syncs == 0 and not bool(flag)
    assert_same_fragments(got, expected)
    with pytest.raises(ValueError, match="headroom"):
        SizingPlan(headroom=0.5)


@strategies_given
def test_sizing_plan_has_one_step_per_chunk_of_images():
    n = 30  # a grid of 1-px cells: tiny triangles, about one span each
    ys, xs = torch.meshgrid(torch.arange(n + 1.0), torch.arange(n + 1.0), indexing="ij")
    grid = torch.stack([xs.flatten() * 0.97 + 0.3, ys.flatten() * 0.97 + 0.2,
                        (xs * ys).flatten() / n], 1)
    idx = torch.arange((n + 1) ** 2).view(n + 1, n + 1)
    a, b, c, d = idx[:-1, :-1], idx[:-1, 1:], idx[1:, :-1], idx[1:, 1:]
    faces = torch.cat([torch.stack([a, b, c], -1).view(-1, 3),
                       torch.stack([b, d, c], -1).view(-1, 3)])
    verts = torch.stack([grid, grid.flip(0), grid * 0.8 + 2])
    chunk = 16 * faces.shape[0] - 8  # one image per chunk
    expected = rasterize(verts, faces, n, n, strategy="compact")
    plan = SizingPlan()
    with plan.recording():
        rasterize(verts, faces, n, n, strategy="dense", max_chunk_pixels=chunk)
    assert len(plan.sizes) == 3
    with plan.replay():
        got = rasterize(verts, faces, n, n, strategy="dense", max_chunk_pixels=chunk)
        assert not bool(plan.overflowed())
    assert_same_fragments(got, expected)
    assert expected.mask.float().mean() > 0.8


# ------------------------------------------------------------ the compiled kernel (numba)
needs_numba = pytest.mark.skipif(not rasterizer.numba_available(), reason="numba not installed")


def assert_numba_matches_torch(verts, faces, height, width, attrs=None, **kw):
    """The numba strategy's fragments (and interpolation) equal the PyTorch CPU path's."""
    torch_path = rasterize(verts, faces, height, width, strategy="compact", **kw)
    compiled = rasterize(verts, faces, height, width, strategy="numba", **kw)
    assert_same_fragments(torch_path, compiled)
    # the depth-only kernel (the source view of a textured render) gives the same two
    depth, mask = rasterize_depth(verts, faces, height, width, strategy="numba",
                                  cull_backfaces=kw.get("cull_backfaces", False))
    assert torch.equal(mask, torch_path.mask)
    assert torch.equal(depth.view(torch.int32), torch_path.depth.view(torch.int32))
    if attrs is not None:
        assert torch.equal(interpolate(torch_path, faces, attrs, strategy="compact"),
                           interpolate(torch_path, faces, attrs, strategy="numba"))
    return compiled


def hand_made_meshes():
    """(name, verts, faces, height, width): the meshes of the tests above, and slivers."""
    gen = torch.Generator().manual_seed(40)
    for seed in range(4):
        yield (f"sloped {seed}", *sloped_mesh(seed, batch=1 + seed % 3))
    for lattice in (None, 2, 4, 256):
        v, f = random_mesh(gen, 40, 60, 20, 24, margin=6.0, lattice=lattice)
        v[:, 2] = torch.randint(-3, 4, (40,), generator=gen).float()  # exact depth ties
        yield f"lattice {lattice}", v, f, 20, 24
    square = torch.tensor([[2.5, 1.5, 1.0], [9.5, 1.5, 1.0], [9.5, 7.5, 2.0], [2.5, 7.5, 0.0]])
    yield "square", square, torch.tensor([[0, 1, 2], [0, 2, 3], [0, 3, 2]]), 12, 13
    c = 5.5
    ring = [(round((c + 3 * math.cos(k * math.pi / 4)) * 2) / 2,
             round((c + 3 * math.sin(k * math.pi / 4)) * 2) / 2) for k in range(8)]
    fan = torch.tensor([[c, c, 0.0]] + [[x, y, 0.1 * i] for i, (x, y) in enumerate(ring)])
    yield "fan", fan, torch.tensor([[0, 1 + k, 1 + (k + 1) % 8] for k in range(8)]), 12, 12
    # Slivers a few 1/256 px wide, long thin triangles, a huge one clipped to the image.
    sliver = torch.tensor([[0.0, 0.0, 0.0], [60.0, 40.0, 5.0], [60.01, 40.0, -5.0],
                           [-900.0, -500.0, 1.0], [3000.0, 10.0, 2.0], [20.0, 4000.0, 0.5],
                           [1.0, 30.0, 3.0], [63.0, 30.004, 3.0], [1.0, 30.008, 3.0]])
    yield "slivers", sliver, torch.tensor([[0, 1, 2], [3, 4, 5], [6, 7, 8]]), 48, 64


@needs_numba
@strategies_given
@pytest.mark.parametrize("kw", [{}, {"cull_backfaces": True}])
def test_numba_matches_torch_on_hand_made_meshes(kw):
    for name, verts, faces, height, width in hand_made_meshes():
        attrs = torch.randn(*verts.shape[:-1], 3)
        frags = assert_numba_matches_torch(verts, faces, height, width, attrs, **kw)
        assert frags.mask.any() or kw, name
        assert_numba_matches_torch(verts.double(), faces, height, width, attrs.double(), **kw)


@needs_numba
@strategies_given
def test_numba_matches_torch_on_the_10k_grid():
    verts, faces = jittered_grid(1)
    gen = torch.Generator().manual_seed(5)
    verts[:, 2] = torch.rand(verts.shape[0], generator=gen) * 40 - 20  # a bumpy surface
    turned = verts.clone()
    turned[:, :2] = (verts[:, :2] - 128) @ torch.tensor([[0.8, -0.6], [0.6, 0.8]]) * 1.3 + 120
    frags = assert_numba_matches_torch(torch.stack([verts, turned]), faces, 256, 256,
                                       torch.randn(verts.shape[0], 2))
    assert frags.mask[1].float().mean() > 0.9


@needs_numba
@strategies_given
def test_numba_matches_torch_on_real_fits(faces, mesh):
    """The astronaut and Grace Hopper (and the LFW samples when present) turned to 7 yaws,
    shifted half out of the crop too; both windings and culled."""
    from fitted_faces import CROP, batch_of

    from render.renderer import rotate_vertices

    yaws = torch.tensor([-75.0, -50.0, -25.0, 0.0, 25.0, 50.0, 75.0])
    n = len(yaws)
    for face in faces.values():
        b = batch_of([face] * n)
        views = rotate_vertices(b["vertices"], b["rotation"], b["scale"], b["translation"],
                                yaws, b["pitch"])
        shifted = views + torch.tensor([0.45 * CROP, -0.3 * CROP, 0.0])
        colours = torch.rand(views.shape[1], 3)
        for kw in ({}, {"cull_backfaces": True}):
            for v in (views, shifted):
                frags = assert_numba_matches_torch(v, mesh.triangles, CROP, CROP, colours,
                                                   **kw)
                assert frags.mask.sum() > 1000 * n


@needs_numba
@strategies_given
def test_numba_edge_cases_give_the_torch_paths_results():
    """Documented results, the same as the PyTorch path's: an empty mesh or image draws
    nothing; zero-area triangles draw nothing; vertices outside the image are clipped;
    triangles with a NaN/inf vertex or |x|, |y| > 2**20 are skipped; a depth plane that
    overflows float64 (float64 z near 1e308) gives the same NaN/inf depths."""
    gen = torch.Generator().manual_seed(9)
    verts, faces = random_mesh(gen, 12, 16, 16, 16, margin=10.0)
    tri = torch.tensor([[0, 1, 2]])
    for v, f, h, w in [
        (verts, torch.zeros(0, 3, dtype=torch.long), 16, 16),
        (torch.zeros(0, 12, 3), faces, 16, 16),
        (verts, faces, 0, 16), (verts, faces, 16, 0),
        (torch.zeros(0, 3), torch.zeros(0, 3, dtype=torch.long), 3, 3),
    ]:
        frags = assert_numba_matches_torch(v, f, h, w)
        assert not frags.mask.any() and (frags.face_ids == -1).all()
    degenerate = torch.tensor([[1.0, 1.0, 0.0], [9.0, 9.0, 0.0], [5.0, 5.0, 0.0],
                               [3.0, 3.0, 1.0], [3.001, 3.001, 1.0]])
    frags = assert_numba_matches_torch(degenerate, torch.tensor([[0, 1, 2], [3, 3, 3],
                                                                 [0, 1, 1], [3, 4, 0]]), 12, 12)
    assert not frags.mask.any()
    outside = torch.tensor([[-20.0, -20.0, 0.0], [-5.0, -20.0, 0.0], [-20.0, -5.0, 0.0],
                            [-10.0, 4.0, 0.0], [30.0, 4.0, 0.0], [5.0, 40.0, 0.0]])
    frags = assert_numba_matches_torch(outside, torch.tensor([[0, 1, 2], [3, 4, 5]]), 16, 16)
    assert (frags.face_ids == 1).sum() > 50 and not (frags.face_ids == 0).any()
    for bad in (math.nan, math.inf, -math.inf, 2.0**21):
        for coord in range(3):
            broken = verts.clone()
            broken[4, coord] = bad
            assert_numba_matches_torch(broken, faces, 16, 16, cull_backfaces=coord == 1)
    huge = torch.tensor([[0.0, 0.0, 1e308], [16.0, 0.3, -1e308], [0.2, 16.0, 1e308]],
                        dtype=torch.float64)
    frags = assert_numba_matches_torch(huge, tri, 16, 16)
    assert frags.mask.sum() > 100 and not frags.depth[frags.mask].isfinite().all()
    big = torch.tensor([[0.0, 0.0, 3e38], [16.0, 0.3, -3e38], [0.2, 16.0, 3e38]])
    frags = assert_numba_matches_torch(big, tri, 16, 16)
    assert not frags.depth.isnan().any()
    half = verts.half()
    assert_numba_matches_torch(half, faces, 16, 16, torch.randn(12, 2).half())
    assert_numba_matches_torch(verts.requires_grad_(True), faces.int(), 16, 16)


@needs_numba
@strategies_given
@pytest.mark.parametrize("batch", [1, 3])
def test_numba_tiles_and_threads_do_not_change_the_result(batch):
    from render import rasterizer_numba

    verts, faces, height, width = sloped_mesh(11, batch=batch, height=37)
    expected = rasterize(verts, faces, height, width, strategy="compact")
    threads = torch.get_num_threads()
    try:
        for n in (1, 2):
            torch.set_num_threads(n)
            assert_same_fragments(
                expected, rasterize(verts, faces, height, width, strategy="numba"))
    finally:
        torch.set_num_threads(threads)
    v = verts.reshape(-1, 3).numpy()
    for bands in (1, 2, 5, 36, 37, 80):  # more bands than rows: some are empty
        out = [torch.empty(batch * height * width, dtype=torch.int64),
               torch.empty(batch * height * width, 3), torch.empty(batch * height * width),
               torch.empty(batch * height * width, dtype=torch.bool)]
        for fragments in (True, False):  # False: depth and mask only (rasterize_depth)
            if not fragments:  # what the first run left must not pass for this one's work
                out[0].fill_(0)  # (key 0 would win every z-test of a row not reset)
                out[2].fill_(float("nan"))
                out[3].fill_(True)
            rasterizer_numba.rasterize_kernel(v, faces.numpy(), batch, height, width, False,
                                              bands, *(t.numpy() for t in out), fragments)
            got = Fragments(*(t.view(batch, height, width, -1).squeeze(-1) for t in out))
            if fragments:
                assert_same_fragments(expected, got)
            assert torch.equal(got.mask, expected.mask)
            assert torch.equal(got.depth.view(torch.int32), expected.depth.view(torch.int32))


def _rasterize_sloped(seed, threads=None):
    if threads:  # as DataLoader workers do: torch's own OpenMP would hang in a forked child
        torch.set_num_threads(threads)
    verts, faces, height, width = sloped_mesh(seed)
    # numpy, not a tensor: a pool returns tensors through torch's shared-memory file
    # descriptors, which can hang a forked worker (not what this test is about)
    return rasterize(verts, faces, height, width, strategy="numba").face_ids.numpy()


@needs_numba
@strategies_given
def test_numba_kernel_runs_in_forked_children():
    """DataLoader workers are forked after the parent has rendered: numba's threading layer
    must survive that (its OpenMP layer would kill the child)."""
    import multiprocessing

    parent = _rasterize_sloped(12)
    with multiprocessing.get_context("fork").Pool(1) as pool:
        child = pool.apply_async(_rasterize_sloped, (12, 1)).get(timeout=120)
    assert (parent == child).all()


@needs_numba
@strategies_given
@pytest.mark.parametrize("layer", [None, "workqueue"])
def test_numba_kernel_is_safe_from_several_threads(layer):
    """Renders from several Python threads at once, with the default threading layer (tbb,
    installed with the requirements) and with numba's built-in workqueue, which aborts the
    process on concurrent entry unless calls are serialised: in a subprocess, so that a
    regression fails this test instead of killing the test run."""
    script = textwrap.dedent("""
        import threading, torch
        from render import rasterizer_numba
        from render.rasterizer import rasterize, rasterize_depth
        verts = torch.rand(4, 200, 3) * 64
        faces = torch.randint(0, 200, (400, 3))
        expected = rasterize(verts, faces, 64, 64, strategy="compact")
        bad = []
        def work():
            for _ in range(30):
                got = rasterize(verts, faces, 64, 64, strategy="numba").face_ids
                depth, mask = rasterize_depth(verts, faces, 64, 64, strategy="numba")
                bad.append(not (torch.equal(got, expected.face_ids)
                                and torch.equal(depth, expected.depth)
                                and torch.equal(mask, expected.mask)))
        threads = [threading.Thread(target=work) for _ in range(3)]
        [t.start() for t in threads]
        [t.join() for t in threads]
        print("mismatches", sum(bad), "of", len(bad), "layer", rasterizer_numba.threading_layer())
    """)
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_THREADING_LAYER"}
    if layer is not None:
        env["NUMBA_THREADING_LAYER"] = layer
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         timeout=120, env=env,
                         cwd=str(rasterizer.__file__).rsplit("/render/", 1)[0])
    assert run.returncode == 0, run.stderr[-2000:]
    assert "mismatches 0 of 90" in run.stdout
    used = run.stdout.split("layer ")[-1].strip()
    assert used == layer if layer else used in _default_layers()


def _default_layers():
    """The layers numba may pick by default: tbb wherever the tbb package is installed (the
    requirements install it on Linux x86_64; rasterizer_numba loads its library, which the
    loader does not find from a venv); without it workqueue on Linux, where GNU OpenMP
    kills forked workers, and omp (fork-safe there) or workqueue elsewhere."""
    from render import rasterizer_numba

    if rasterizer_numba.tbb_library() is not None:
        return {"tbb"}
    return {"workqueue"} if sys.platform.startswith("linux") else {"omp", "workqueue"}


@needs_numba
@strategies_given
def test_default_threading_layer_is_fork_safe():
    """The requirements' tbb is what the kernels run on (a parallel loop starts in
    microseconds, against about 0.1 ms with workqueue), from the package's own library;
    GNU OpenMP never."""
    from render import rasterizer_numba

    if "NUMBA_THREADING_LAYER" in os.environ:
        pytest.skip("NUMBA_THREADING_LAYER chooses the layer in this run")
    rasterize(*sloped_mesh(3)[:2], 32, 32, strategy="numba")
    assert rasterizer_numba.threading_layer() in _default_layers()
    if rasterizer_numba.tbb_library() is not None and sys.platform.startswith("linux"):
        with open("/proc/self/maps") as maps:
            mapped = {os.path.realpath(line.split()[-1]) for line in maps
                      if "/libtbb.so" in line}
        assert mapped == {rasterizer_numba.tbb_library()}


@strategies_given
def test_without_numba_the_torch_path_runs(monkeypatch):
    """numba not importable: the default on the CPU is compact and strategy="numba" falls
    back to it, with no error."""
    import render

    monkeypatch.setitem(sys.modules, "numba", None)  # makes `import numba` fail
    monkeypatch.delitem(sys.modules, "render.rasterizer_numba", raising=False)
    monkeypatch.delattr(render, "rasterizer_numba", raising=False)
    monkeypatch.setattr(rasterizer, "_NUMBA", [])
    assert not rasterizer.numba_available()
    assert rasterizer.default_strategy("cpu") == "compact"
    verts, faces, height, width = sloped_mesh(13)
    expected = rasterize(verts, faces, height, width, strategy="compact")
    with OpCounter() as counter:  # the PyTorch path runs (the kernel would be one call)
        got = rasterize(verts, faces, height, width, strategy="numba")
    assert counter.ops > 50
    assert_same_fragments(expected, got)
    attrs = torch.randn(verts.shape[1], 2)
    assert torch.equal(interpolate(got, faces, attrs, strategy="numba"),
                       interpolate(got, faces, attrs, strategy="compact"))


@strategies_given
def test_environment_variable_picks_the_cpu_default(monkeypatch):
    monkeypatch.setenv(rasterizer.ENV_VAR, "torch")
    assert rasterizer.default_strategy("cpu") == "compact"
    assert rasterizer.default_strategy("cuda") == "dense"
    monkeypatch.setenv(rasterizer.ENV_VAR, "numba")
    assert rasterizer.default_strategy("cpu") == (
        "numba" if rasterizer.numba_available() else "compact")
    assert rasterizer.default_strategy("cuda") == "dense"
    monkeypatch.delenv(rasterizer.ENV_VAR)
    assert rasterizer.default_strategy("cpu") == (
        "numba" if rasterizer.numba_available() else "compact")
    monkeypatch.setenv(rasterizer.ENV_VAR, "")  # set but empty, as `RR_RASTERIZER= cmd`
    assert rasterizer.default_strategy("cpu") == (
        "numba" if rasterizer.numba_available() else "compact")
    monkeypatch.setenv(rasterizer.ENV_VAR, "fast")
    with pytest.raises(ValueError, match="RR_RASTERIZER must be torch or numba"):
        rasterize(torch.zeros(3, 3), torch.tensor([[0, 1, 2]]), 4, 4)
    with pytest.raises(ValueError, match="CPU tensors only"):
        rasterizer._check_strategy("rasterize", "numba", "cuda")
