"""Fixtures of the render tests: real fitted faces (skip without mediapipe) and meshes."""

from __future__ import annotations

from pathlib import Path

import pytest
from fitted_faces import LFW, LFW_NAMES, fit_and_align

from render.renderer import FaceMesh


@pytest.fixture(scope="session")
def faces(fitter):
    """name -> Face for the two built-in examples and the LFW samples that are present
    (``fitter``, the top conftest's MediaPipe fitter, skips without mediapipe)."""
    from face3d.examples import example_images
    from face3d.imageio import read_image

    out = {}
    for name, rgb in example_images().items():
        out[Path(name).stem] = fit_and_align(fitter, Path(name).stem, rgb)
    for person in LFW_NAMES:
        path = LFW / person / f"{person}_0001.jpg"
        if path.is_file():
            out[person] = fit_and_align(fitter, person, read_image(path))
    return out


@pytest.fixture(scope="session")
def mesh():
    return FaceMesh.mediapipe()


@pytest.fixture(scope="session")
def astronaut(faces):
    return faces["astronaut"]
