"""Synthetic fit files for tests that need no MediaPipe (importable: pytest puts this test
folder on the path)."""

from __future__ import annotations

import numpy as np


def make_fit(seed: int = 0):
    """A plausible fit without MediaPipe: random mesh, a real rotation, 600x512 photo."""
    from face3d.fit import Fit
    from face3d.pose import euler_to_matrix
    from face3d.topology import NUM_VERTICES

    rng = np.random.default_rng(seed)
    f32 = np.float32
    return Fit(vertices=rng.uniform(100, 400, (NUM_VERTICES, 3)).astype(f32),
               iris=rng.uniform(100, 400, (10, 3)).astype(f32),
               landmarks68=rng.uniform(100, 400, (68, 2)).astype(f32),
               landmarks5=rng.uniform(100, 400, (5, 2)).astype(f32),
               rotation=euler_to_matrix(10.0, -5.0, 3.0).astype(f32), scale=120.5,
               translation=np.array([256, 300, 0], f32), yaw=10.0, pitch=-5.0, roll=3.0,
               image_size=(600, 512), residual=0.05, fitter_version="test")


class FakeFitter:
    """Stands in for MediaPipeFitter where the fitting itself is not under test: a
    deterministic fit per photo content (valid for ``load_fit``), ``NoFaceError`` for a
    flat image, instantly."""

    def __init__(self, max_side: int = 1920):
        self.max_side = max_side

    def fit(self, rgb):
        from face3d.fitter import NoFaceError

        if rgb.std() < 1:
            raise NoFaceError("no face found")
        fit = make_fit(int(rgb.astype(np.float64).mean() * 1000) % 2**31)
        fit.image_size = (int(rgb.shape[0]), int(rgb.shape[1]))
        return fit

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def use_fake_fitter(monkeypatch):
    """Make ``face3d.batch_fit`` (and everything that fits through it) use FakeFitter."""
    import face3d.fitter
    from face3d import batch_fit

    monkeypatch.setattr(face3d.fitter, "MediaPipeFitter", FakeFitter)
    monkeypatch.setattr(batch_fit, "_FITTER", None)


def write_photo(path, seed: int = 0, flat: bool = False, size: int = 48):
    """A small random (or flat: 'no face') PNG/JPEG at ``path``; returns the path."""
    import os

    from PIL import Image

    os.makedirs(os.path.dirname(os.fspath(path)) or ".", exist_ok=True)
    rng = np.random.default_rng(seed)
    a = (np.full((size, size, 3), 128, np.uint8) if flat
         else rng.integers(0, 255, (size, size, 3), dtype=np.uint8))
    Image.fromarray(a).save(path)
    return path
