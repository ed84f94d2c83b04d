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
