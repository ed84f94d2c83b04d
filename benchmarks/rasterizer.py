"""Throughput of render/rasterizer.py: rasterize + a 2-channel interpolate.

Prints images/s at 256x256 for batch 1, 8 and 32 on two synthetic meshes:
``face``  ~470 vertices / ~880 triangles, a hemisphere over the central 60% of the image
          (triangles ~2-15 px across, like a 3DMM face mesh), and
``dense`` ~53k vertices / ~106k triangles over the same region (triangles ~1 px).

    python benchmarks/rasterizer.py [--device cuda] [--threads 2] [--size 256] [--repeats 7]
        [--strategy compact|dense|numba]
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from render import rasterizer  # noqa: E402
from render.rasterizer import STRATEGIES, interpolate, rasterize  # noqa: E402


def grid_faces(n: int) -> torch.Tensor:
    """Two triangles per cell of an n x n vertex grid (row-major vertex ids)."""
    i, j = torch.meshgrid(torch.arange(n - 1), torch.arange(n - 1), indexing="ij")
    a = (i * n + j).reshape(-1)
    b, c, d = a + 1, a + n, a + n + 1
    return torch.cat([torch.stack([a, c, b], 1), torch.stack([b, c, d], 1)])


def hemisphere_mesh(n: int, size: int, batch: int, seed: int = 0):
    """n x n grid on a hemisphere facing the camera, one random small pose per image.

    Returns (vertices (batch, n*n, 3) in pixels with z nearer = smaller, faces).
    """
    g = torch.Generator().manual_seed(seed)
    u, v = torch.meshgrid(torch.linspace(-1, 1, n), torch.linspace(-1, 1, n), indexing="xy")
    # Square-to-disc map, then lift onto the unit hemisphere bulging towards the camera.
    x = u * torch.sqrt(1 - v * v / 2)
    y = v * torch.sqrt(1 - u * u / 2)
    z = -torch.sqrt((1 - x * x - y * y).clamp_min(0))
    pts = torch.stack([x, y, z], -1).reshape(-1, 3)
    out = []
    for _ in range(batch):
        yaw, pitch = (torch.rand(2, generator=g) - 0.5) * 0.6
        cy, sy, cp, sp = math.cos(yaw), math.sin(yaw), math.cos(pitch), math.sin(pitch)
        rot = torch.tensor([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]]) @ torch.tensor(
            [[1, 0, 0], [0, cp, -sp], [0, sp, cp]])
        p = pts @ rot.T * (0.3 * size)  # radius 30% of the image: the central 60%
        p[:, :2] += size / 2
        out.append(p)
    return torch.stack(out), grid_faces(n)


def bench(verts, faces, size, repeats, device):
    attrs = verts[..., :2].contiguous()

    def step():
        frags = rasterize(verts, faces, size, size)
        return interpolate(frags, faces, attrs)

    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    for _ in range(2):
        step()
    sync()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        step()
        sync()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 8, 32])
    ap.add_argument("--threads", type=int, default=None,
                    help="torch.set_num_threads (default: torch's choice)")
    ap.add_argument("--meshes", nargs="+", default=["face", "dense"], choices=["face", "dense"])
    ap.add_argument("--strategy", choices=STRATEGIES, default=None,
                    help="rasteriser strategy (default: the device's, default_strategy)")
    args = ap.parse_args()
    device = torch.device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.strategy:  # rasterize and interpolate both read the default
        rasterizer.default_strategy = lambda device: args.strategy
    print(f"device={device} threads={torch.get_num_threads()} torch={torch.__version__} "
          f"size={args.size} strategy={rasterizer.default_strategy(device)}")
    grid = {"face": 22, "dense": 231}
    for name in args.meshes:
        for batch in args.batches:
            verts, faces = hemisphere_mesh(grid[name], args.size, batch)
            verts, faces = verts.to(device), faces.to(device)
            sec = bench(verts, faces, args.size, args.repeats, device)
            print(f"{name:5s} V={verts.shape[1]:6d} F={faces.shape[0]:6d} batch={batch:3d}: "
                  f"{sec * 1e3:8.2f} ms/batch  {batch / sec:9.1f} images/s", flush=True)


if __name__ == "__main__":
    main()
