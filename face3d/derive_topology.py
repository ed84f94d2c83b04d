"""Derive the mesh topology data file once: ``python -m face3d.derive_topology [--lfw DIR]``.

What it does, from MediaPipe's own edge list and real fits:
1. triangles: the 3-cliques of ``FACEMESH_TESSELATION``, minus the two cliques that are
   not faces (every edge of theirs is shared by three cliques), oriented consistently;
2. canonical: the generalised-Procrustes mean of MediaPipe fits of many photos (the LFW
   folder when present, else the built-in examples), made exactly left-right symmetric,
   in the average camera view (so pitch 0 = how people usually face a camera);
3. mirror: the left-right vertex pairing, an optimal assignment between the mean shape
   and its reflection;
4. landmarks68: the iBUG 68-point subset (a fixed table of MediaPipe indices, checked
   here for left-right consistency against the mirror pairing).
"""

from __future__ import annotations

import argparse
import glob
import itertools
import os
from collections import defaultdict

import numpy as np
from scipy.optimize import linear_sum_assignment

from face3d.pose import similarity_align
from face3d.topology import ASSET, NUM_VERTICES

# iBUG 68 -> MediaPipe vertex; jaw 0-16, brows 17-26, nose 27-35, eyes 36-47, mouth 48-67.
# "Left/right" as in iBUG: point 0 and eye 36-41 are on the image's left.
IBUG68 = [
    127, 234, 132, 58, 172, 150, 176, 148, 152, 377, 400, 379, 397, 288, 361, 454, 356,
    70, 63, 105, 66, 107, 336, 296, 334, 293, 300,
    168, 197, 5, 4, 75, 97, 2, 326, 305,
    33, 160, 158, 133, 153, 144, 362, 385, 387, 263, 373, 380,
    61, 39, 37, 0, 267, 269, 291, 405, 314, 17, 84, 181,
    78, 82, 13, 312, 308, 317, 14, 87,
]
# iBUG's own left-right symmetry, used to check the table against the derived pairing.
IBUG_MIRROR = (list(range(16, -1, -1)) + list(range(26, 16, -1)) + [27, 28, 29, 30]
               + [35, 34, 33, 32, 31] + [45, 44, 43, 42, 47, 46, 39, 38, 37, 36, 41, 40]
               + [54, 53, 52, 51, 50, 49, 48, 59, 58, 57, 56, 55]
               + [64, 63, 62, 61, 60, 67, 66, 65])


def tessellation_triangles() -> np.ndarray:
    from mediapipe.python.solutions.face_mesh_connections import FACEMESH_TESSELATION

    edges = {tuple(sorted(e)) for e in FACEMESH_TESSELATION}
    nbrs = defaultdict(set)
    for a, b in edges:
        nbrs[a].add(b)
        nbrs[b].add(a)
    cliques = {tuple(sorted((a, b, c))) for a, b in edges for c in nbrs[a] & nbrs[b]}
    use = defaultdict(int)
    for t in cliques:
        for e in itertools.combinations(t, 2):
            use[e] += 1
    faces = [t for t in sorted(cliques)
             if not all(use[e] >= 3 for e in itertools.combinations(t, 2))]
    return orient_consistently(np.array(faces, dtype=np.int64))


def orient_consistently(tris: np.ndarray) -> np.ndarray:
    """Flip triangles so neighbours traverse their shared edge in opposite directions."""
    tris = tris.copy()
    by_edge = defaultdict(list)
    for i, t in enumerate(tris):
        for e in itertools.combinations(sorted(t), 2):
            by_edge[e].append(i)
    assert all(len(v) <= 2 for v in by_edge.values()), "tessellation is not a manifold"
    done = np.zeros(len(tris), bool)
    for seed in range(len(tris)):
        if done[seed]:
            continue
        done[seed] = True
        stack = [seed]
        while stack:
            i = stack.pop()
            directed = {(tris[i][k], tris[i][(k + 1) % 3]) for k in range(3)}
            for e in itertools.combinations(sorted(tris[i]), 2):
                for j in by_edge[e]:
                    if done[j]:
                        continue
                    dj = {(tris[j][k], tris[j][(k + 1) % 3]) for k in range(3)}
                    if directed & dj:  # same direction on the shared edge: flip j
                        tris[j] = tris[j][[0, 2, 1]]
                    done[j] = True
                    stack.append(j)
    return tris


def border_loops(tris: np.ndarray) -> list[list[int]]:
    count = defaultdict(int)
    for t in tris:
        for e in itertools.combinations(sorted(t), 2):
            count[e] += 1
    nb = defaultdict(list)
    for (a, b), c in count.items():
        if c == 1:
            nb[a].append(b)
            nb[b].append(a)
    loops, seen = [], set()
    for start in sorted(nb):
        if start in seen:
            continue
        loop, prev, cur = [start], None, start
        seen.add(start)
        while True:
            nxt = [v for v in nb[cur] if v != prev][0]
            if nxt == start:
                break
            loop.append(nxt)
            seen.add(nxt)
            prev, cur = cur, nxt
        loops.append(loop)
    return sorted(loops, key=len, reverse=True)


def signed_area2(xy: np.ndarray, tris: np.ndarray) -> np.ndarray:
    """Doubled signed area per triangle in y-down pixels (< 0: counter-clockwise on screen)."""
    a, b, c = (xy[tris[:, k]] for k in range(3))
    return (b[:, 0] - a[:, 0]) * (c[:, 1] - a[:, 1]) - (b[:, 1] - a[:, 1]) * (c[:, 0] - a[:, 0])


def fill_hole(loop: list[int], xy: np.ndarray) -> list[tuple[int, int, int]]:
    """Ear-clipping triangulation of one hole (an eye or the mouth) in the frontal view, so
    the eyes and the inside of the mouth are rendered too (the texture comes from the photo)."""
    poly = list(loop)
    pts = xy[poly]
    area = 0.5 * np.sum(pts[:, 0] * np.roll(pts[:, 1], -1) - np.roll(pts[:, 0], -1) * pts[:, 1])
    if area < 0:
        poly.reverse()

    def cross(o, a, b):
        return (a[0] - o[0]) * (b[1] - o[1]) - (a[1] - o[1]) * (b[0] - o[0])

    tris = []
    while len(poly) > 3:
        n = len(poly)
        for i in range(n):
            a, b, c = poly[i - 1], poly[i], poly[(i + 1) % n]
            if cross(xy[a], xy[b], xy[c]) <= 0:
                continue  # reflex corner
            others = [v for v in poly if v not in (a, b, c)]
            if any(cross(xy[a], xy[b], xy[v]) > 0 and cross(xy[b], xy[c], xy[v]) > 0
                   and cross(xy[c], xy[a], xy[v]) > 0 for v in others):
                continue  # another vertex inside: not an ear
            tris.append((a, b, c))
            poly.pop(i)
            break
        else:
            raise RuntimeError("ear clipping failed: hole outline is not a simple polygon")
    tris.append(tuple(poly))
    return tris


def collect_shapes(lfw: str | None, limit: int) -> list[np.ndarray]:
    from face3d.examples import example_images
    from face3d.fitter import MediaPipeFitter
    from face3d.imageio import read_image

    images = list(example_images().values())
    if lfw and os.path.isdir(lfw):
        paths = sorted(glob.glob(os.path.join(lfw, "*", "*.jpg")))
        rng = np.random.default_rng(0)
        images += [read_image(p) for p in rng.choice(paths, min(limit, len(paths)), replace=False)]
    shapes = []
    with MediaPipeFitter() as fitter:
        for rgb in images:
            faces = fitter.detect(rgb)
            if faces:
                shapes.append(faces[0][:NUM_VERTICES])
    return shapes


def procrustes_mean(shapes: list[np.ndarray]) -> np.ndarray:
    norm = []
    for s in shapes:
        c = s - s.mean(0)
        norm.append(c / np.sqrt((c**2).sum(1).mean()))
    plain = np.mean(norm, 0)  # no rotation: the average camera view
    mean = norm[0]
    for _ in range(10):
        aligned = []
        for s in norm:
            R, sc, t = similarity_align(s, mean)
            aligned.append(sc * s @ R.T + t)
        mean = np.mean(aligned, 0)
        mean /= np.sqrt(((mean - mean.mean(0)) ** 2).sum(1).mean())
    R, sc, t = similarity_align(mean, plain)
    return sc * mean @ R.T + t


def symmetrize(shape: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rotate so the symmetry plane is x = 0 (minimal rotation), pair vertices, average."""
    s = shape - shape.mean(0)
    for _ in range(5):
        refl = s * [-1, 1, 1]
        d = ((refl[:, None] - s[None]) ** 2).sum(-1)
        _, mirror = linear_sum_assignment(d)
        diff = s - s[mirror]
        n = np.linalg.svd(diff[np.linalg.norm(diff, axis=1) > 1e-9], full_matrices=False)[2][0]
        n *= np.sign(n[0])
        # minimal rotation taking n onto +x (Rodrigues)
        v, c = np.cross(n, [1, 0, 0]), n[0]
        vx = np.array([[0, -v[2], v[1]], [v[2], 0, -v[0]], [-v[1], v[0], 0]])
        Rm = np.eye(3) + vx + vx @ vx / (1 + c)
        s = s @ Rm.T
        s[:, 0] -= ((s + s[mirror]) / 2)[:, 0].mean()
    sym = (s + s[mirror] * [-1, 1, 1]) / 2
    return sym, mirror


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    here = os.path.dirname(os.path.abspath(__file__))
    p.add_argument("--lfw", default=os.path.join(here, "..", "..", "shared", "data", "lfw"),
                   help="folder of LFW photos used to build the mean face (default: %(default)s)")
    p.add_argument("--num_photos", type=int, default=400, help="photos to average")
    p.add_argument("--out", default=ASSET, help="output .npz (default: %(default)s)")
    args = p.parse_args()

    tris = tessellation_triangles()
    loops = border_loops(tris)
    print(f"{len(tris)} triangles; border loops of {[len(lp) for lp in loops]} vertices")

    shapes = collect_shapes(args.lfw, args.num_photos)
    print(f"mean face from {len(shapes)} fitted photos")
    mean, mirror = symmetrize(procrustes_mean(shapes))
    assert np.array_equal(mirror[mirror], np.arange(NUM_VERTICES)), "pairing is not an involution"
    print(f"{int((mirror == np.arange(NUM_VERTICES)).sum())} midline vertices")

    lmk = np.array(IBUG68)
    bad = [i for i in range(68) if mirror[lmk[i]] != lmk[IBUG_MIRROR[i]]]
    print(f"iBUG table: {68 - len(bad)}/68 points consistent with the mirror pairing"
          + (f"; inconsistent: {bad}" if bad else ""))

    # Frame: eye centres 1 apart; origin at the head's centre (see topology.py).
    from face3d.topology import landmarks5_from_68

    eyes = landmarks5_from_68(mean[lmk])[:2]
    mean = mean / np.linalg.norm(eyes[1] - eyes[0])
    oval = np.array(loops[0])
    mean -= [0.0, mean[:, 1].mean(), mean[oval, 2].mean()]

    # Close the eyes and the mouth (the three inner borders).
    fills = [t for loop in loops[1:] for t in fill_hole(loop, mean[:, :2])]
    fills = np.array(fills, dtype=np.int64)
    print(f"{len(fills)} triangles close the eyes and mouth")

    # Wind triangles so that camera-facing ones have NEGATIVE doubled signed area
    # (x1-x0)(y2-y0) - (y1-y0)(x2-x0) in y-down pixels: counter-clockwise on screen, normal
    # (v1-v0) x (v2-v0) toward the camera; the rasteriser's front-facing convention.
    area = signed_area2(mean[:, :2], tris)
    if (area < 0).mean() < 0.5:
        tris, area = tris[:, [0, 2, 1]], -area
    print(f"{(area < 0).mean():.3f} of triangles face the camera in the canonical view")
    back = signed_area2(mean[:, :2], fills) > 0
    fills[back] = fills[back][:, [0, 2, 1]]

    np.savez_compressed(args.out, triangles=tris.astype(np.int32),
                        fill_triangles=fills.astype(np.int32),
                        canonical=mean.astype(np.float32), mirror=mirror.astype(np.int32),
                        landmarks68=lmk.astype(np.int32), face_oval=oval.astype(np.int32))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
