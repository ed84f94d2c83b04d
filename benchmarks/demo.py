"""How fast the web demo (demo.py) answers, on a 256-px photo, with the shipped generator.

    python benchmarks/demo.py [--runs 20] [--threads 1] [--device cpu] [--img PHOTO]

* first upload: what an upload costs before the first picture, i.e. decode + MediaPipe fit
  + align + the first frame (demo.py warms up when it starts: MediaPipe's graphs and one
  frame of the built-in example; that start-up is reported separately);
* slider change: ``Demo.frame`` alone (render + generator + the masks picture), the fit
  excluded as in the app, median and 90th percentile over ``--runs`` poses; and the same
  plus encoding the three PNGs Gradio sends;
* through the app (``--http``, needs requirements-demo.txt): ``python demo.py`` started on a
  free port and driven by gradio_client as the page drives it: the upload, then each
  slider change's whole round trip (queue, handler, PNGs, local HTTP).

The photo is the built-in astronaut (or ``--img``) scaled to 256 px on its longer side. The
target is < 1 s per slider change on 2 CPU cores; the load average is printed before and
after, since other jobs on the machine slow every figure.
"""

from __future__ import annotations

import argparse
import io
import os
import statistics
import sys
import tempfile
import time

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from util.checkpoint import PRETRAINED  # noqa: E402
from util.demo_logic import Demo, load_model  # noqa: E402


def photo_256(path: str | None) -> str:
    """The photo scaled to 256 px on its longer side, written as a JPEG (an upload)."""
    if path:
        from face3d.imageio import read_image

        rgb = read_image(path)
    else:
        from face3d.examples import example_images

        rgb = example_images()["astronaut.png"]
    im = Image.fromarray(rgb)
    im.thumbnail((256, 256), Image.LANCZOS)
    out = os.path.join(tempfile.mkdtemp(prefix="rr_bench_"), "photo_256.jpg")
    im.save(out, quality=95)
    return out


def png_bytes(images) -> int:
    total = 0
    for a in images:
        buf = io.BytesIO()
        Image.fromarray(a).save(buf, format="PNG")
        total += buf.tell()
    return total


def through_http(path: str, poses, args) -> tuple[float, list[float]]:
    """(upload seconds, slider round trips) of ``python demo.py`` on a free port."""
    import socket
    import subprocess

    from gradio_client import Client, handle_file

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    proc = subprocess.Popen([sys.executable, "demo.py", "--port", str(port), "--threads",
                             str(args.threads), "--device", args.device, "--checkpoint",
                             args.checkpoint], cwd=repo, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    try:
        for line in proc.stdout:  # "open http://..." once it serves
            if line.startswith(("open ", "error")):
                break
        if proc.poll() is not None or not line.startswith("open "):
            raise SystemExit(f"error: demo.py did not start: {line.strip()}")
        client = Client(f"http://127.0.0.1:{port}/", verbose=False)
        t = time.perf_counter()
        client.predict(handle_file(path), 30, 0, api_name="/upload")
        upload = time.perf_counter() - t
        for yaw, pitch in poses[:3]:
            client.predict(yaw, pitch, api_name="/frame")
        times = []
        for yaw, pitch in poses:
            t = time.perf_counter()
            client.predict(yaw, pitch, api_name="/frame")
            times.append(time.perf_counter() - t)
        return upload, times
    finally:
        proc.terminate()
        proc.wait(30)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python benchmarks/demo.py", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=20, help="slider changes to time")
    ap.add_argument("--threads", type=int, default=1,
                    help="torch threads (default %(default)s, as demo.py)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--img", help="a photo (default: the built-in astronaut)")
    ap.add_argument("--checkpoint", default=PRETRAINED, help="the generator (default: shipped)")
    ap.add_argument("--http", action="store_true",
                    help="also time the running app through its HTTP API (gradio_client)")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    load0 = os.getloadavg()
    print(f"torch {torch.__version__}, {args.threads} threads, {os.cpu_count()} CPUs, "
          f"load average {load0[0]:.2f} / {load0[1]:.2f} / {load0[2]:.2f} (1/5/15 min)")

    t = time.perf_counter()
    model, settings, description = load_model(checkpoint=args.checkpoint, device=args.device)
    demo = Demo(model, settings, args.device, description=description)
    loaded = time.perf_counter() - t
    t = time.perf_counter()
    demo.warm_up()
    warm = time.perf_counter() - t
    path = photo_256(args.img)
    print(f"model: {description}; loaded in {loaded:.2f} s, warm-up {warm:.2f} s")

    t = time.perf_counter()
    state = demo.prepare(path)
    if isinstance(state, str):
        print(f"error: {state}", file=sys.stderr)
        return 1
    fitted = time.perf_counter() - t
    demo.frame(state, 30, 0)
    first = time.perf_counter() - t
    print(f"photo {Image.open(path).size[0]}x{Image.open(path).size[1]} -> crop "
          f"{demo.crop_size} px")
    print(f"first upload: {first:.3f} s (fit + align {fitted:.3f} s, first frame "
          f"{first - fitted:.3f} s)")

    rng = np.random.default_rng(0)
    poses = [(float(y), float(p)) for y, p in zip(rng.integers(-75, 76, args.runs),
                                                     rng.integers(-20, 21, args.runs))]
    for yaw, pitch in poses[:3]:  # warm-up: first calls of each shape are slower
        demo.frame(state, yaw, pitch)
    frame_s, with_png_s = [], []
    for yaw, pitch in poses:
        t = time.perf_counter()
        f = demo.frame(state, yaw, pitch)
        frame_s.append(time.perf_counter() - t)
        png_bytes([f["output"], f["render"], f["masks"]])
        with_png_s.append(time.perf_counter() - t)

    def stats(xs):
        q = statistics.quantiles(xs, n=10)[-1] if len(xs) > 1 else xs[0]
        return f"median {statistics.median(xs):.3f} s, p90 {q:.3f} s, max {max(xs):.3f} s"

    print(f"slider change ({args.runs} poses, yaw -75..75, pitch -20..20):")
    print(f"  Demo.frame:           {stats(frame_s)}")
    print(f"  + the 3 PNGs encoded: {stats(with_png_s)}")
    median = statistics.median(with_png_s)
    if args.http:
        del demo, model  # the app loads its own
        upload_s, round_trips = through_http(path, poses, args)
        print(f"through the app (python demo.py --threads {args.threads}, gradio_client): "
              f"upload {upload_s:.3f} s; slider change {stats(round_trips)}")
        median = statistics.median(round_trips)
    print(f"target < 1 s per slider change: {'met' if median < 1 else 'MISSED'} "
          f"({median:.3f} s)")
    load1 = os.getloadavg()
    print(f"load average at the end {load1[0]:.2f} / {load1[1]:.2f} / {load1[2]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
