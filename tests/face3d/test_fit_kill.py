"""Fault injection: kill -9 the real fitting CLI (MediaPipe) at random points of a batch,
several times in a row. After every kill each file on disk opens; a resumed run completes;
the final fits, realign_lmk and failures.txt equal those of an uninterrupted run."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from face3d.batch_fit import read_list
from face3d.fit import load_fit

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[2]
CLI = REPO / "3ddfa" / "inference.py"


@pytest.fixture(scope="module")
def batch(tmp_path_factory, example_dir):
    """12 photos of two people (the example portraits under several names, mirrored,
    cropped) and one without a face, listed in a file."""
    import skimage.data

    root = tmp_path_factory.mktemp("kill")
    photos = root / "photos"
    rel = []
    for person, name in (("astro", "astronaut.png"), ("hopper", "grace_hopper.jpg")):
        rgb = np.asarray(Image.open(example_dir / name).convert("RGB"))
        (photos / person).mkdir(parents=True)
        variants = (rgb, rgb[:, ::-1], rgb[20:], rgb[:, 20:], rgb[:-30, ::-1], rgb[10:, 10:])
        for i, img in enumerate(variants):
            ext = ".png" if i % 2 else ".jpg"
            Image.fromarray(np.ascontiguousarray(img)).save(photos / person / f"{i}{ext}")
            rel.append(f"{person}/{i}{ext}")
    Image.fromarray(skimage.data.coffee()).save(photos / "coffee.png")
    rel.insert(3, "coffee.png")
    lst = root / "list.txt"
    lst.write_text("".join(r + "\n" for r in rel))
    return photos, lst, rel


def start(photos, lst, out) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, str(CLI), "--img_list", str(lst), "--img_prefix",
                             str(photos), "--save_dir", str(out), "--quiet"], cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def fits_in(out: Path) -> list[Path]:
    return sorted(p for p in out.rglob("*.npz"))


def check_every_file_opens(out: Path):
    """Every file a reader would look at is whole: fits load, lists parse; only hidden temp
    files (``.tmp_*``, ignored by every reader and removed by the next run) may be partial."""
    for p in out.rglob("*"):
        if p.is_dir() or p.name.startswith(".tmp_"):
            continue
        if p.suffix == ".npz":
            load_fit(p)
        else:
            assert p.name in ("realign_lmk", "failures.txt"), p
            read_list(str(p))


def test_kill_9_at_random_points_then_resume_equals_uninterrupted(tmp_path, batch):
    photos, lst, rel = batch
    ref = tmp_path / "ref"
    t0 = time.monotonic()
    proc = start(photos, lst, ref)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err[-2000:]
    print(f"\nuninterrupted run: {time.monotonic() - t0:.1f} s")
    n_fits = len(fits_in(ref))
    assert n_fits == len(rel) - 1  # coffee has no face

    out = tmp_path / "out"
    rng = np.random.default_rng(14)
    # kill 1: at a random moment of start-up (no fit yet); kills 2-4: once the run has
    # written a random number of fits, plus a random fraction of the next photo
    targets = [0, *sorted(rng.choice(np.arange(1, n_fits - 1), 3, replace=False))]
    kills = []
    for target in targets:
        proc = start(photos, lst, out)
        if target == 0:
            time.sleep(float(rng.uniform(0, 2)))
        deadline = time.monotonic() + 120
        while (len(fits_in(out)) if out.exists() else 0) < target and proc.poll() is None:
            assert time.monotonic() < deadline
            time.sleep(0.005)
        time.sleep(float(rng.uniform(0, 0.2)))
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            kills.append(len(fits_in(out)) if out.exists() else 0)
        proc.communicate(timeout=60)
        if out.exists():
            check_every_file_opens(out)
    print(f"killed {len(kills)} times, with {kills} of {n_fits} fits on disk")
    assert len(kills) >= 3 and kills[-1] < n_fits

    proc = start(photos, lst, out)
    stdout, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err[-2000:]
    assert f"failed 1 of {len(rel)} images" in stdout
    assert not list(out.rglob(".tmp_*"))  # the killed runs' temp files are gone
    check_every_file_opens(out)
    assert [p.relative_to(out) for p in fits_in(out)] == [p.relative_to(ref)
                                                           for p in fits_in(ref)]
    for p in fits_in(ref):
        a, b = load_fit(p), load_fit(out / p.relative_to(ref))
        for k, v in vars(a).items():
            w = getattr(b, k)
            assert (np.array_equal(v, w) if isinstance(v, np.ndarray) else v == w), (p, k)
    for name in ("realign_lmk", "failures.txt"):
        assert (out / name).read_bytes() == (ref / name).read_bytes(), name
    shutil.rmtree(out)
