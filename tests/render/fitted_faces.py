"""Real fitted faces for the render tests: the built-in examples (astronaut, Grace Hopper)
and, when ../shared/data/lfw exists, a few LFW photos, aligned to a 256 crop. The fixtures
that build them are in this folder's conftest.py."""

from __future__ import annotations

from pathlib import Path

import torch

CROP = 256
LFW = Path(__file__).resolve().parents[3] / "shared" / "data" / "lfw"
LFW_NAMES = ["AJ_Cook", "Chelsea_Clinton", "Garry_Kasparov", "John_Darby", "Martin_Bandier"]
NOSE_TIP = 4  # MediaPipe mesh vertex at the tip of the nose


class Face:
    """One aligned photo and its fit as batch-of-one tensors."""

    def __init__(self, name, crop, fit):
        self.name = name
        self.fit = fit
        self.crop = crop
        self.image = torch.from_numpy(crop).permute(2, 0, 1)[None].float() / 127.5 - 1
        self.vertices = torch.from_numpy(fit.vertices)[None]
        self.rotation = torch.from_numpy(fit.rotation)[None]
        self.scale = torch.tensor([fit.scale], dtype=torch.float32)
        self.translation = torch.from_numpy(fit.translation)[None]
        self.yaw = torch.tensor([fit.yaw], dtype=torch.float32)
        self.pitch = torch.tensor([fit.pitch], dtype=torch.float32)

    @property
    def pose(self):
        return self.vertices, self.rotation, self.scale, self.translation


def fit_and_align(fitter, name, rgb) -> Face:
    from face3d.align import align

    crop, fit, _ = align(rgb, fitter.fit(rgb), CROP)
    return Face(name, crop, fit)


def batch_of(faces_) -> dict:
    cat = lambda name: torch.cat([getattr(f, name) for f in faces_])  # noqa: E731
    return dict(image=cat("image"), vertices=cat("vertices"), rotation=cat("rotation"),
                scale=cat("scale"), translation=cat("translation"), yaw=cat("yaw"),
                pitch=cat("pitch"))
