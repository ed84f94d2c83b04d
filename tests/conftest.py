"""Shared fixtures. Heavy imports (MediaPipe) happen inside the fixtures that need them, so
test files that do not use them pay nothing."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
# Runs without a checkpoint write renders here, as they did before a generator shipped
# (pretrained/); tests of the shipped model set RR_PRETRAINED themselves.
os.environ["RR_PRETRAINED"] = ""
# Real photos live next to the repository, never inside it (see ../shared/data/README.md).
LFW = Path(__file__).resolve().parents[2] / "shared" / "data" / "lfw"


@pytest.fixture(scope="module")
def one_thread():
    """One torch thread for a module (``pytestmark = pytest.mark.usefixtures(...)``): the
    machines the suite runs on are small and shared, and two threads contending for two
    busy cores are many times slower with tiny networks."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="session")
def fitter():
    """One MediaPipe fitter for the whole session (building its graph takes ~1 s)."""
    pytest.importorskip("mediapipe", reason="mediapipe not installed")
    from face3d.fitter import MediaPipeFitter

    with MediaPipeFitter() as f:
        yield f


@pytest.fixture(scope="session")
def example_dir(tmp_path_factory) -> Path:
    """The built-in example photos (astronaut.png, grace_hopper.jpg) and file_list.txt,
    written to a temporary folder."""
    from face3d.examples import materialize_examples

    folder = tmp_path_factory.mktemp("examples")
    materialize_examples(str(folder))
    return folder


@pytest.fixture(scope="session")
def example_photos(example_dir) -> dict:
    """name -> HxWx3 uint8 RGB, read back from ``example_dir`` exactly as the CLI reads them."""
    from face3d.imageio import read_image

    return {p.name: read_image(p) for p in sorted(example_dir.iterdir())
            if p.suffix in (".png", ".jpg")}


@pytest.fixture(scope="session")
def lfw_dir() -> Path:
    if not LFW.is_dir():
        pytest.skip(f"LFW photos not found at {LFW} (shared test data is not in a fresh clone)")
    return LFW


@pytest.fixture(scope="session")
def lfw_paths(lfw_dir) -> list[Path]:
    """Every LFW photo, sorted (a stable order for seeded samples)."""
    paths = sorted(lfw_dir.glob("*/*.jpg"))
    if not paths:
        pytest.skip(f"no LFW photos under {lfw_dir}")
    return paths


@pytest.fixture(scope="session")
def lfw_sample(lfw_paths):
    """``lfw_sample(n, seed)``: ``n`` LFW photos drawn without replacement with a fixed seed."""
    import numpy as np

    def sample(n: int, seed: int) -> list[Path]:
        rng = np.random.default_rng(seed)
        idx = rng.choice(len(lfw_paths), min(n, len(lfw_paths)), replace=False)
        return [lfw_paths[i] for i in idx]

    return sample
