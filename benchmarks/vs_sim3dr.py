"""Our rasteriser against Sim3DR (3DDFA_V2's C++ rasteriser), side by side in one process.

The astronaut photo fitted with MediaPipe and aligned to a SIZE crop (benchmarks/render.py's
``mediapipe_face``), turned to a spread of yaws, on two meshes: the MediaPipe face mesh and,
when render/ has it, the whole-image mesh. Per-image milliseconds (median of ``--repeats``
interleaved runs: every candidate runs once per round, so load drifts hit all alike) at
batch 1 and 8, with 1 and 2 threads, for

* ``fragments``: triangle ids + barycentrics + depth (Sim3DR's ``rasterize_triangles``;
  our ``rasterize``);
* ``per-vertex``: an image of interpolated per-vertex colours (Sim3DR's ``rasterize``; our
  ``rasterize`` + ``interpolate``);
* ``render``: ``render_textured`` of the photo at its pose onto the turned mesh (both
  views rasterised, visibility, per-pixel texture: the issue's "per-pixel textured
  render"); its Sim3DR column is Sim3DR's per-vertex job on the same mesh and poses, timed
  in the same rounds (the closest job it has: it makes one image of vertex colours);
* ``textured``: ``rotated_view`` (the same, plus what a view returns: the face mask and
  its erosion, the background colour and the composite, the landmarks);
* ``cached``: the same from a ``source_view`` prepared once per photo (the source view's
  raster and fill reused: what a pose sweep pays per pose);
* ``pair``: ``training_pair`` (a -> b -> a);

for the PyTorch path (strategy compact) and the compiled kernels (numba: the rasteriser and,
for the textured jobs, render/texture_numba.py), with the ratios; for the textured jobs also
"raster-only" (numba rasteriser, per-pixel work in PyTorch: the CPU default before the
texture kernel).
Sim3DR is single-threaded and is timed when it is importable (build it: see the README);
it then also reports how many pixels both cover and on how many they pick the same
triangle. ``--startup`` also times the kernels' first-call compilation (fresh numba cache)
and a later process's start (cache warm), in subprocesses. The end prints a markdown table
of the headline figures (batch 8, the most threads given) to paste.

    python benchmarks/vs_sim3dr.py [--size 256] [--repeats 15] [--startup] [--clock cpu]
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from unittest import mock

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from render import rasterizer, renderer, whole_image  # noqa: E402
from render.rasterizer import interpolate, rasterize  # noqa: E402
from render.renderer import (  # noqa: E402
    FaceMesh,
    render_textured,
    rotate_vertices,
    rotated_view,
    source_view,
    training_pair,
)
from render.settings import RenderSettings  # noqa: E402


def _render_bench():
    """benchmarks/render.py as a module (its name would shadow the render package)."""
    spec = importlib.util.spec_from_file_location("bench_render", ROOT / "benchmarks" / "render.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def import_sim3dr():
    """Sim3DR's compiled extension, or None. Found on PYTHONPATH as ``Sim3DR_Cython`` (the
    3DDFA_V2/Sim3DR folder) or through the ``Sim3DR`` package (the 3DDFA_V2 folder)."""
    try:
        import Sim3DR_Cython

        return Sim3DR_Cython
    except ImportError:
        pass
    try:
        import Sim3DR  # noqa: F401  (its _init_paths puts Sim3DR_Cython on the path)
        import Sim3DR_Cython

        return Sim3DR_Cython
    except ImportError:
        return None


class Sim3DR:
    """Sim3DR's two rasterisers on our vertices: its pixel (x, y) is sampled at (x, y), ours
    at the centre (x + 0.5, y + 0.5), and larger z is nearer there, so x, y move by -0.5 and
    z flips sign. Buffers are made fresh per call, as its Python wrapper does."""

    def __init__(self, module, faces, size):
        self.m, self.size = module, size
        self.faces = np.ascontiguousarray(faces.numpy().astype(np.int32))

    def vertices(self, verts):
        v = verts.numpy().astype(np.float32)
        v[..., :2] -= 0.5
        v[..., 2] *= -1
        return [np.ascontiguousarray(x) for x in v]

    def fragments(self, verts_np):
        s, out = self.size, []
        for v in verts_np:
            depth = np.full((s, s), -1e8, np.float32)
            tri = np.full((s, s), -1, np.int32)
            bary = np.zeros((s * s, 3), np.float32)
            self.m.rasterize_triangles(v, self.faces, depth, tri, bary, len(self.faces), s, s)
            out.append(tri)
        return out

    def per_vertex(self, verts_np, colours):
        s, out = self.size, []
        for v in verts_np:
            image = np.zeros((s, s, 3), np.uint8)
            depth = np.full((s, s), -1e8, np.float32)
            self.m.rasterize(image, v, self.faces, colours, depth, len(self.faces), s, s, 3)
            out.append(image)
        return out


CLOCKS = {"wall": time.perf_counter, "cpu": time.process_time}


def median_ms(fns: dict, repeats: int, per: int, clock: str = "wall") -> dict:
    """name -> median ms per image of each ``fns[name]()``, interleaved rounds, on the
    wall clock or in CPU time of this process (all its threads: with 1 thread about the
    idle wall time, even on a machine busy with other work)."""
    now = CLOCKS[clock]
    for fn in fns.values():  # warm-up (and compilation)
        fn()
        fn()
    times = {k: [] for k in fns}
    for _ in range(repeats):
        for k, fn in fns.items():
            t0 = now()
            fn()
            times[k].append(now() - t0)
    return {k: 1e3 * statistics.median(v) / per for k, v in times.items()}


def with_strategy(strategy, fn, fused: bool = True):
    """``fn`` with the rasteriser's default strategy replaced (as the renderer sees it);
    ``fused=False`` keeps the textured render's per-pixel work in PyTorch even with numba
    (the CPU default before render/texture_numba.py: the "raster-only" column)."""
    def run():
        with contextlib.ExitStack() as stack:
            stack.enter_context(mock.patch.object(rasterizer, "default_strategy",
                                                  lambda device: strategy))
            if not fused:
                stack.enter_context(mock.patch.object(renderer, "_fused",
                                                      lambda *a: False))
            return fn()
    return run


def candidates(job, mesh_name, face, mesh, batch, size, sim):
    """name -> callable for one job and mesh at one batch size."""
    image, verts, rotation, scale, translation, yaw, pitch = face
    rep = lambda t: t.expand(batch, *t.shape[1:]).contiguous()  # noqa: E731
    img, v, R, s, t = (rep(x) for x in (image, verts, rotation, scale, translation))
    yaws = torch.tensor(np.linspace(-60, 60, batch).tolist() if batch > 1 else [30.0])
    pitches = pitch.expand(batch)
    whole = mesh_name == "whole-image"
    settings = RenderSettings(render_scope="image" if whole else "face")
    if whole:
        drawn = mesh.whole_image()
        src = whole_image.extend_vertices(v, R, s, t, size, drawn.whole)
        dst = whole_image.rotate_whole(src, R, s, t, yaws, pitches, drawn.whole)
    else:
        drawn, src, dst = mesh, v, rotate_vertices(v, R, s, t, yaws, pitches)
    tri = drawn.triangles
    colours = torch.rand(dst.shape[1], 3, generator=torch.Generator().manual_seed(0))
    out = {}
    textured = job in ("render", "textured", "cached", "pair")
    for label in ("torch", "numba") + (("raster-only",) if textured else ()):
        strategy = "compact" if label == "torch" else "numba"
        fused = label != "raster-only"
        if job == "fragments":
            out[label] = lambda st=strategy: rasterize(dst, tri, size, size, strategy=st)
        elif job == "per-vertex":
            out[label] = lambda st=strategy: interpolate(
                rasterize(dst, tri, size, size, strategy=st), tri, colours, strategy=st)
        elif job == "render":
            out[label] = with_strategy(strategy, lambda: render_textured(
                img, src, dst, drawn), fused)
        elif job == "textured":
            out[label] = with_strategy(strategy, lambda: rotated_view(
                img, v, R, s, t, yaws, pitches, mesh, settings), fused)
        elif job == "cached":
            source = with_strategy(strategy, lambda: source_view(img, v, R, s, t, mesh,
                                                                 settings))()
            out[label] = with_strategy(strategy, lambda src=source: src.rotated_view(
                yaws, pitches, settings), fused)
        elif job == "pair":
            out[label] = with_strategy(strategy, lambda: training_pair(
                img, v, R, s, t, yaws + 30, pitches, mesh, settings), fused)
    if sim is not None and job in ("fragments", "per-vertex", "render"):
        # (for "render", Sim3DR's per-vertex job on the same mesh and poses: the issue's
        # yardstick for a textured render, timed in the same rounds)
        s3 = Sim3DR(sim, tri, size)
        sim_v = s3.vertices(dst)
        c = np.ascontiguousarray(colours.numpy())
        out["sim3dr"] = ((lambda: s3.fragments(sim_v)) if job == "fragments"
                         else (lambda: s3.per_vertex(sim_v, c)))
    return out, (dst, tri)


def agreement(sim, dst, tri, size) -> str:
    """Pixels covered by both (of those covered by either) and the same triangle there."""
    ours = rasterize(dst, tri, size, size)
    theirs = torch.from_numpy(np.stack(Sim3DR(sim, tri, size).fragments(
        Sim3DR(sim, tri, size).vertices(dst)))).long()
    a, b = ours.mask, theirs >= 0
    both = a & b
    same = (ours.face_ids == theirs) & both
    share = lambda n, d: 100 * int(n.sum()) / max(int(d.sum()), 1)  # noqa: E731
    return (f"covered by both {share(both, a | b):.3f} % of the pixels either covers, the "
            f"same triangle on {share(same, both):.2f} %")


def startup_times() -> str:
    """First-call compile time (fresh numba cache) and a warm process's start, measured in
    subprocesses: import of the rasteriser, one call of each kernel on a small mesh (the
    textured render also runs the one-off grid_sample probe)."""
    code = ("import time; t0 = time.perf_counter(); import torch; "
            "from render.rasterizer import rasterize, interpolate; "
            "from render.renderer import FaceMesh, render_textured; t1 = time.perf_counter(); "
            "v = torch.rand(1, 30, 3) * 32; f = torch.randint(0, 30, (40, 3)); "
            "fr = rasterize(v, f, 32, 32, strategy='numba'); t2 = time.perf_counter(); "
            "interpolate(fr, f, v, strategy='numba'); t3 = time.perf_counter(); "
            "render_textured(torch.rand(1, 3, 32, 32), v, v, FaceMesh(f)); "
            "t4 = time.perf_counter(); "
            "print(f'{t1 - t0:.2f} {t2 - t1:.2f} {t3 - t2:.2f} {t4 - t3:.2f}')")
    lines = []
    with tempfile.TemporaryDirectory() as cache:
        env = dict(os.environ, NUMBA_CACHE_DIR=cache, PYTHONPATH=str(ROOT))
        env.pop(rasterizer.ENV_VAR, None)
        for label in ("fresh cache (compiles)", "warm cache (a later process)"):
            t0 = time.perf_counter()
            run = subprocess.run([sys.executable, "-c", code], env=env, cwd=str(ROOT),
                                 capture_output=True, text=True, check=True)
            total = time.perf_counter() - t0
            imp, ras, interp, tex = run.stdout.split()
            lines.append(f"  {label:30s}: import torch + renderer {imp} s, first rasterize "
                         f"{ras} s, first interpolate {interp} s, first textured render "
                         f"{tex} s; process {total:.1f} s")
    return "\n".join(lines)


def _ms(ms: dict, key: str, width: int = 0) -> str:
    return f"{ms[key]:{width}.2f}" if key in ms else f"{'-':>{width}s}"


def summary(results: dict, batch: int, threads: int) -> str:
    """The headline figures as markdown tables: ms per image at ``batch``, ``threads``; and
    numba against Sim3DR at every batch and thread count measured (for "render", against
    Sim3DR's per-vertex job)."""
    lines = [f"\n| batch {batch}, {threads} threads, ms per image | torch | numba raster only "
             "| numba | torch/numba | Sim3DR |", "| --- | --- | --- | --- | --- | --- |"]
    for (mesh_name, job, b, thr), ms in results.items():
        if (b, thr) != (batch, threads):
            continue
        lines.append(f"| {mesh_name} {job} | {ms['torch']:.2f} | {_ms(ms, 'raster-only')} | "
                     f"{ms['numba']:.2f} | {ms['torch'] / ms['numba']:.1f}x | "
                     f"{_ms(ms, 'sim3dr')} |")
    pairs = sorted({(b, thr) for (_, _, b, thr) in results})
    rows = {}
    for (mesh_name, job, b, thr), ms in results.items():
        if "sim3dr" in ms:
            rows.setdefault((mesh_name, job), {})[b, thr] = (
                f"{ms['numba']:.2f} / {ms['sim3dr']:.2f} = {ms['numba'] / ms['sim3dr']:.2f}")
    if rows:
        lines += ["", "| numba / Sim3DR, ms per image | "
                  + " | ".join(f"batch {b}, {thr} thr" for b, thr in pairs) + " |",
                  "| --- |" + " --- |" * len(pairs)]
        for (mesh_name, job), cells in rows.items():
            lines.append(f"| {mesh_name} {job} | "
                         + " | ".join(cells.get(k, "-") for k in pairs) + " |")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--repeats", type=int, default=15, help="interleaved rounds (>= 5)")
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    jobs = ["fragments", "per-vertex", "render", "textured", "cached", "pair"]
    ap.add_argument("--jobs", nargs="+", default=jobs, choices=jobs)
    ap.add_argument("--meshes", nargs="+", default=["face", "whole-image"],
                    choices=["face", "whole-image"])
    ap.add_argument("--clock", choices=sorted(CLOCKS), default="wall",
                    help="wall time (default), or CPU time of this process: on a loaded "
                         "machine, with --threads 1, close to what an idle one measures")
    ap.add_argument("--startup", action="store_true",
                    help="also time numba's first compilation and a cached start")
    args = ap.parse_args(argv)
    if args.repeats < 5:
        ap.error("--repeats must be at least 5")
    bench = _render_bench()
    sim = import_sim3dr()
    numba_ok = rasterizer.numba_available()
    print(f"torch {torch.__version__}, CPU {bench.cpu_model()} ({os.cpu_count()} cores)"
          f"{bench._load()}")
    print(f"{args.size}x{args.size}, ms per image ({args.clock} clock), median of "
          f"{args.repeats} interleaved rounds;"
          f" Sim3DR {'found' if sim else 'not importable (see the README to build it)'};"
          f" numba {'available' if numba_ok else 'NOT importable: numba rows are torch'}")
    if args.startup and numba_ok:
        print("numba kernel start-up:\n" + startup_times())
    face = bench.mediapipe_face(args.size)
    mesh = FaceMesh.mediapipe()
    meshes = [m for m in args.meshes if m == "face" or getattr(mesh, "whole", None) is not None]
    results = {}
    for mesh_name in meshes:
        drawn = mesh.whole_image() if mesh_name == "whole-image" else mesh
        print(f"\n{mesh_name} mesh ({drawn.triangles.shape[0]} triangles):")
        print(f"{'job':11s} {'batch':>5s} {'thr':>3s} {'sim3dr':>8s} {'torch':>8s} "
              f"{'ras-only':>8s} {'numba':>8s} {'torch/numba':>11s} {'numba/sim3dr':>12s}")
        for job in args.jobs:
            for batch in args.batches:
                for threads in args.threads:
                    torch.set_num_threads(threads)
                    fns, (dst, tri) = candidates(job, mesh_name, face, mesh, batch, args.size,
                                                 sim)
                    ms = median_ms(fns, args.repeats, batch, args.clock)
                    results[mesh_name, job, batch, threads] = ms
                    sim_ms = ms.get("sim3dr")
                    ratio = f"{ms['numba'] / sim_ms:12.2f}" if sim_ms else f"{'-':>12s}"
                    print(f"{job:11s} {batch:5d} {threads:3d} {_ms(ms, 'sim3dr', 8)} "
                          f"{ms['torch']:8.2f} {_ms(ms, 'raster-only', 8)} "
                          f"{ms['numba']:8.2f} {ms['torch'] / ms['numba']:11.1f} {ratio}",
                          flush=True)
        if sim is not None:
            print("  agreement with Sim3DR (8 views): " + agreement(sim, dst, tri, args.size))
    print(summary(results, max(args.batches), max(args.threads)))
    print(f"\n(at the end{bench._load()}: figures are only comparable on an idle machine)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
