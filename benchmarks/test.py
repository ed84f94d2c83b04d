"""Seconds per output image of test.py's pipeline, end to end from a JPEG on disk.

    python benchmarks/test.py [--device cpu|cuda] [--photos 10] [--poses 5]

Stages per photo: decode + fit (MediaPipe) + align, then per pose: rotate + render, the
generator's forward pass (timed on its own) and PNG writing. Reported for render-only, the
default generator (ngf 64) and --ngf 32, with random weights (timing only), and the shipped
generator (pretrained/, its own weights and render settings). With CUDA it also
times batch-16 bf16-autocast generator throughput.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from data.photos import find_photos  # noqa: E402
from face3d.align import align  # noqa: E402
from face3d.imageio import read_image  # noqa: E402
from models.inference import face_tensors, repair, rotate  # noqa: E402
from options.test_options import TestOptions  # noqa: E402
from render.renderer import FaceMesh  # noqa: E402
from render.settings import RenderSettings  # noqa: E402
from util.checkpoint import pretrained_path  # noqa: E402
from util.visualizer import to_uint8  # noqa: E402


def photos(n: int) -> list[str]:
    """Every 97th LFW photo (a spread of people), or the built-in examples without LFW."""
    try:
        found = find_photos(dataset="lfw")[::97][:n]
    except ValueError:  # LFW is not next to the repository
        found = find_photos(dataset="example")
    return [p.path for p in found]


def make_generator(ngf: int, device, crop: int):
    from models import create_model

    opt = TestOptions().parse(["--ngf", str(ngf), "--crop_size", str(crop), "--device",
                               str(device)])
    return create_model(opt).eval().to(device)


def shipped_model(path: str, device, crop: int):
    """The shipped generator as test.py loads it (its own render settings and crop)."""
    from models import create_model
    from util.checkpoint import adopt_options, load_generator_file

    netG, trained_with, _ = load_generator_file(path, device)
    if trained_with.get("crop_size") != crop:
        raise SystemExit(f"error: {path} runs at {trained_with.get('crop_size')} px; pass "
                         f"--crop_size {trained_with.get('crop_size')}")
    options = TestOptions()
    opt = options.parse(["--device", str(device)])
    adopt_options(opt, trained_with, options.parser)
    return create_model(opt, {"netG": netG}).eval().to(device)


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def run(paths, model, device, n_poses, crop, fitter, mesh, out_dir):
    from PIL import Image

    # test.py's render settings (its defaults; renders alone use the symmetry-aware fill)
    settings = RenderSettings.from_options(TestOptions().parse([])).replace(
        symmetric_fill=model is None)
    yaws = [(-60 + 120 * i / max(1, n_poses - 1), None) for i in range(n_poses)]
    per_image, gen_time, no_fit = [], [], []
    for path in paths:
        sync(device)
        t0 = time.perf_counter()
        rgb = read_image(path)
        t_fit = time.perf_counter()
        fit = fitter.fit(rgb)
        fit_s = time.perf_counter() - t_fit
        crop_rgb, fit_c, _ = align(rgb, fit, crop)
        face = face_tensors(crop_rgb, fit_c, device)
        view = rotate(face, yaws, mesh, settings)
        out = view["image"]
        g = 0.0
        if model is not None:  # repaired here, not in rotate, to time the generator alone
            sync(device)
            tg = time.perf_counter()
            out = repair(model, out, view["landmarks"], face["yaw"].expand(n_poses),
                         masks=model.view_masks(view))
            sync(device)
            g = time.perf_counter() - tg
        for k, a in enumerate(to_uint8(out)):
            Image.fromarray(a).save(os.path.join(out_dir, f"{k}.png"))
        sync(device)
        per_image.append((time.perf_counter() - t0) / n_poses)
        gen_time.append(g / n_poses)
        no_fit.append(per_image[-1] - fit_s / n_poses)
    return statistics.median(per_image), statistics.median(gen_time), statistics.median(no_fit)


def main():
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--photos", type=int, default=10, help="photos to time (median over them)")
    p.add_argument("--poses", type=int, default=5, help="output poses per photo")
    p.add_argument("--crop_size", type=int, default=256)
    p.add_argument("--generator_only", action="store_true",
                   help="CUDA only: time just the batch-16 bf16 generator (no MediaPipe needed)")
    args = p.parse_args()
    device = torch.device(args.device)
    cpu = platform.processor() or platform.machine()
    if os.path.exists("/proc/cpuinfo"):
        with open("/proc/cpuinfo") as f:
            cpu = next((ln.split(":")[1].strip() for ln in f if ln.startswith("model name")), cpu)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} CPUs "
          f"({cpu}), device {device}"
          + (f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else ""))
    if not args.generator_only:
        pipeline(args, device)
    if device.type == "cuda":
        generator_throughput(args, device)


def pipeline(args, device):
    paths = photos(args.photos)
    mesh = FaceMesh.mediapipe(device)
    from face3d.fitter import MediaPipeFitter

    with MediaPipeFitter() as fitter, tempfile.TemporaryDirectory() as out:
        run(paths[:1], None, device, args.poses, args.crop_size, fitter, mesh, out)  # warm-up
        print(f"{len(paths)} photos x {args.poses} poses, {args.crop_size} px, median per "
              "output image:")
        rows = [("render only", None), ("generator ngf 64 (default)", 64),
                ("generator ngf 32", 32)]
        shipped = pretrained_path()
        if shipped:
            rows.append((f"shipped {os.path.basename(shipped)}", shipped))
        for label, ngf in rows:
            model = (None if ngf is None else shipped_model(ngf, device, args.crop_size)
                     if isinstance(ngf, str) else make_generator(ngf, device, args.crop_size))
            if model is not None:
                run(paths[:1], model, device, args.poses, args.crop_size, fitter, mesh, out)
            total, gen, no_fit = run(paths, model, device, args.poses, args.crop_size, fitter,
                                     mesh, out)
            print(f"  {label:28s} {total:.4f} s/image  (generator forward {gen:.4f} s, "
                  f"everything else {total - gen:.4f} s; without the fit {no_fit:.4f} s)")


def generator_throughput(args, device):
    model = make_generator(64, device, args.crop_size)
    x = torch.randn(16, 3, args.crop_size, args.crop_size, device=device)
    lmk = torch.rand(16, 68, 2, device=device) * args.crop_size
    times = []
    with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16):
        for i in range(8):
            sync(device)
            t0 = time.perf_counter()
            model({"input": x, "landmarks": lmk}, "inference")
            sync(device)
            if i >= 3:
                times.append(time.perf_counter() - t0)
    print(f"  generator ngf 64, batch 16, bf16 autocast: {16 / statistics.median(times):.0f} "
          "output images/s (forward incl. landmark maps)")

if __name__ == "__main__":
    main()
