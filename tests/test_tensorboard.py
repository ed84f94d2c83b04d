"""`tensorboard --logdir <run>/logs` (the command train.py prints) serves a training run's
scalars and image grids: a tiny run is trained, the real tensorboard command is started on
a free port, and its HTTP API is asked for the run's tags, values and images."""

from __future__ import annotations

import io
import json
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request

import numpy as np
import pytest
from PIL import Image

import train

pytestmark = [pytest.mark.usefixtures("one_thread"), pytest.mark.slow]

TINY = ["--model", "rotate", "--ngf", "8", "--ndf", "8", "--n_blocks_G", "1", "--crop_size", "64",
        "--n_downsample_G", "2", "--num_D", "1", "--n_layers_D", "2", "--nThreads", "0",
        "--batchSize", "2", "--no_vgg_loss", "--max_iters", "2", "--print_freq", "1",
        "--display_freq", "1"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get(port: int, route: str, **query) -> bytes:
    url = f"http://127.0.0.1:{port}{route}"
    if query:
        url += "?" + urllib.parse.urlencode(query)
    with urllib.request.urlopen(url, timeout=10) as r:
        return r.read()


@pytest.fixture
def served_run(tmp_path):
    """(port, tensorboard's name of the run) for a 2-iteration run served by tensorboard."""
    command = shutil.which("tensorboard")
    if command is None:
        pytest.skip("the tensorboard command is not installed (pip install -r requirements.txt)")
    assert train.main(TINY + ["--name", "tb", "--checkpoints_dir", str(tmp_path)]) == 0
    port = free_port()
    proc = subprocess.Popen([command, "--logdir", str(tmp_path / "tb" / "logs"), "--port",
                             str(port), "--host", "127.0.0.1"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 90
        while True:  # until it listens and has read the event file
            try:
                runs = json.loads(get(port, "/data/runs"))
                if runs:
                    break
            except (urllib.error.URLError, ConnectionError):
                pass
            assert proc.poll() is None, proc.communicate()[0][-2000:]
            assert time.monotonic() < deadline, "tensorboard did not serve the run in 90 s"
            time.sleep(0.3)
        assert runs == ["."]  # the logdir itself is the run
        yield port, runs[0]
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def test_tensorboard_serves_the_runs_scalars_and_images(served_run):
    port, run = served_run
    scalars = json.loads(get(port, "/data/plugin/scalars/tags"))[run]
    for tag in ("loss/G_GAN", "loss/G_GAN_Feat", "loss/D_fake", "loss/D_real", "lr/G", "lr/D",
                "speed/images_per_s"):
        assert tag in scalars, sorted(scalars)
    # one value per iteration (--print_freq 1), at steps 1 and 2; the G learning rate is
    # lr/2 (TTUR)
    points = json.loads(get(port, "/data/plugin/scalars/scalars", run=run, tag="lr/G"))
    assert [p[1] for p in points] == [1, 2]
    assert points[0][2] == pytest.approx(0.0001)
    losses = json.loads(get(port, "/data/plugin/scalars/scalars", run=run, tag="loss/D_real"))
    assert len(losses) == 2 and all(np.isfinite(p[2]) for p in losses)

    images = json.loads(get(port, "/data/plugin/images/tags"))[run]
    assert {f"images/{n}" for n in ("input", "rotated", "output", "real")} <= set(images)
    shown = json.loads(get(port, "/data/plugin/images/images", run=run, tag="images/output"))
    assert [s["step"] for s in shown] == [1, 2]  # --display_freq 1
    blob = get(port, "/data/plugin/images/individualImage" + "?" + shown[-1]["query"])
    grid = Image.open(io.BytesIO(blob))
    # the batch of two 64-px crops side by side with a 2-px gap
    assert grid.format == "PNG" and grid.size == (64 * 2 + 2, 64)
