"""Fault injection: a training run killed with SIGKILL (kill -9: no handler runs, no file is
closed) at random points, several times, and resumed with --continue_train each time.

After every kill each checkpoint on disk loads (weights_only) and every image on the HTML
page opens; the next run removes the temp files of interrupted writes; the last run
reaches the target iteration, and its nets and optimisers equal those of an uninterrupted
run of the same length, bit for bit (checkpoints hold every RNG state)."""

from __future__ import annotations

import contextlib
import os
import random
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from helpers import assert_same_state
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
TARGET = 12
KILLS = 3
# The tiny CPU recipe (experiments/train_tiny_cpu.sh), saving latest.pt every iteration and
# an epoch checkpoint every other epoch (one iteration per epoch on the two example photos),
# so most kills land in or near a save.
FLAGS = ["--max_iters", str(TARGET), "--save_latest_freq", "1", "--save_epoch_freq", "2",
         "--print_freq", "1", "--display_freq", "3"]

pytestmark = pytest.mark.slow


def tiny_run(root: Path, name: str, *extra: str) -> subprocess.Popen:
    cmd = ["bash", str(REPO / "experiments" / "train_tiny_cpu.sh"), *FLAGS, "--name", name,
           "--checkpoints_dir", str(root), *extra]
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, start_new_session=True)


def finish(proc: subprocess.Popen) -> str:
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, out[-3000:]
    return out


def logged_iterations(run: Path) -> int:
    log = run / "loss_log.txt"
    return log.read_text().count("(epoch") if log.exists() else 0


def load(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


def check_files_on_disk(run: Path) -> int:
    """Every checkpoint loads and every image the page shows opens; returns the iteration
    of latest.pt (0 when none was saved yet)."""
    for path in run.glob("*.pt"):
        state = load(path)
        assert {"nets", "optimizers", "rng", "iteration"} <= set(state), path
        assert 1 <= state["iteration"] <= TARGET
    page = run / "web" / "index.html"
    if page.exists():
        for src in (s.split('"')[0] for s in page.read_text().split('src="')[1:]):
            with Image.open(run / "web" / src) as im:
                im.load()
    latest = run / "latest.pt"
    return load(latest)["iteration"] if latest.exists() else 0


def test_kill_9_at_random_points_then_resume_equals_a_straight_run(tmp_path):
    finish(tiny_run(tmp_path, "straight"))
    straight = load(tmp_path / "straight" / "latest.pt")
    assert straight["iteration"] == TARGET

    run = tmp_path / "killed"
    rng = random.Random(1234)
    killed_at = []
    while len(killed_at) < KILLS:
        resume = ["--continue_train"] if (run / "latest.pt").exists() else []
        before = logged_iterations(run)
        proc = tiny_run(tmp_path, "killed", *resume)
        deadline = time.monotonic() + 240
        # Once this run trains (its first loss line is logged), kill it within the next
        # ~2 iterations: mid-step, mid-save or mid-image, wherever that falls.
        while logged_iterations(run) == before and proc.poll() is None:
            assert time.monotonic() < deadline, "the run did not start training"
            time.sleep(0.05)
        time.sleep(rng.uniform(0.0, 0.6))
        with contextlib.suppress(ProcessLookupError):  # (it may have just finished)
            os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        if proc.returncode != -signal.SIGKILL:  # it finished before the kill: start over
            assert proc.returncode == 0
            for p in run.glob("*.pt"):
                p.unlink()
            continue
        killed_at.append(check_files_on_disk(run))
    assert len(killed_at) == KILLS

    # And one write killed for certain mid-file, as kill -9 leaves it: a temp file beside
    # latest.pt (which stays whole), for the next run to remove.
    half_write = ("import os, sys\nfrom face3d.fileio import atomic_write\n"
                  "writer = atomic_write(sys.argv[1], 'wb')\nf = writer.__enter__()\n"
                  "f.write(b'half a checkpoint'); f.flush(); os.kill(os.getpid(), 9)\n")
    subprocess.run([sys.executable, "-c", half_write, str(run / "latest.pt")], cwd=REPO)
    assert list(run.glob(".tmp_latest.pt*")) and check_files_on_disk(run) == killed_at[-1]

    out = finish(tiny_run(tmp_path, "killed", "--continue_train"))
    # (more than one when the last kill also landed in a write)
    removed = re.search(r"removed (\d+) temp file\(s\)", out)
    assert removed and int(removed[1]) >= 1, out
    assert "resumed from" in out and "Traceback" not in out
    assert check_files_on_disk(run) == TARGET
    assert not list(run.rglob(".tmp_*"))  # the temp files of killed writes are cleaned up
    resumed = load(run / "latest.pt")
    for key in ("nets", "optimizers", "iteration", "epoch", "epoch_iter"):
        assert_same_state(straight[key], resumed[key], f"{key} (kills at {killed_at})")
    print(f"killed at latest.pt iterations {killed_at}", file=sys.stderr)
