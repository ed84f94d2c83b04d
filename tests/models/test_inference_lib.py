"""The inference library: data/photos.py (finding photos, reading them with their fits) and
models/inference.py (rotating faces to poses, running the generator at inference)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from data.photos import LazyFitter, Photo, find_photos, load_photo, photos_in, sample
from models.inference import face_tensors, inference_context, pose_name, repair, rotate
from render.renderer import FaceMesh, rotated_view
from render.settings import RenderSettings

# ------------------------------------------------------------------------------ photos


def test_photos_in_files_and_folders(example_dir, tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "a.png").write_bytes((example_dir / "astronaut.png").read_bytes())
    (tmp_path / "notes.txt").write_text("not a photo")
    found = photos_in([tmp_path, example_dir / "grace_hopper.jpg", "missing.jpg"])
    assert found == [Photo("sub/a.png", str(tmp_path / "sub" / "a.png"), None),
                     Photo("grace_hopper.jpg", str(example_dir / "grace_hopper.jpg"), None),
                     Photo("missing.jpg", "missing.jpg", None)]  # reported when read
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no input photos"):
        find_photos(img=[tmp_path / "empty"])


def test_dataset_photos_with_and_without_a_fitting_pass():
    listed = find_photos(dataset="example")
    assert [p.rel for p in listed] == ["astronaut.png", "grace_hopper.jpg"]
    fitted = find_photos(dataset="example", fit_first=True)
    assert [p.rel for p in fitted] == [p.rel for p in listed]
    assert all(p.fit_path and p.fit_path.endswith(".npz") for p in fitted)
    assert find_photos(dataset="example", start=1) == listed[1:]
    with pytest.raises(ValueError, match="no input photos"):
        find_photos(dataset="example", start=5)
    with pytest.raises(ValueError, match="unknown --dataset 'nope'"):
        find_photos(dataset="nope")


def test_sample_is_seeded():
    items = list(range(100))
    assert sample(items, 10, 0) == sample(items, 10, 0) != sample(items, 10, 1)
    assert sorted(sample(items, 100, 0)) == items
    assert sample(items, 0, 0) == items


def test_load_photo_uses_the_fit_file_else_fits(example_dir, fitter):
    (photo,) = [p for p in find_photos(dataset="example", fit_first=True)
                if p.rel == "astronaut.png"]
    never = LazyFitter()
    _, from_file = load_photo(photo, never)
    assert never._fitter is None  # a fit file: MediaPipe is not even built
    rgb, fitted = load_photo(Photo("astronaut.png", str(example_dir / "astronaut.png"), None),
                             LazyFitter(fitter))
    assert rgb.shape == (512, 512, 3)
    assert abs(fitted.yaw - from_file.yaw) < 1.0
    assert LazyFitter(fitter).try_fit(np.zeros((64, 64, 3), np.uint8)) is None


# ------------------------------------------------------------------------------ rotate


@pytest.fixture(scope="module")
def faces(example_photos, fitter):
    """The two example photos aligned at 64 px, as one batch."""
    from face3d.align import align

    batch = []
    for rgb in example_photos.values():
        crop, fit, _ = align(rgb, fitter.fit(rgb), 64)
        batch.append(face_tensors(crop, fit, "cpu"))
    return {k: torch.cat([f[k] for f in batch]) for k in batch[0]}


def test_rotate_renders_every_face_at_every_pose(faces):
    mesh, settings = FaceMesh.mediapipe(), RenderSettings(erode_kernel=3)
    poses = [(-30.0, None), (20.0, 5.0)]
    views = rotate(faces, poses, mesh, settings)
    assert views["image"].shape == (4, 3, 64, 64) and views["landmarks"].shape == (4, 68, 2)
    assert torch.equal(views["output"], views["image"])  # no generator: the render
    # face by face; a pose's None pitch is the face's own
    for i in range(2):
        for j, (yaw, pitch) in enumerate(poses):
            alone = rotated_view(
                *[faces[k][i:i + 1] for k in ("image", "vertices", "rotation", "scale",
                                              "translation")],
                torch.tensor([yaw]), faces["pitch"][i:i + 1] if pitch is None
                else torch.tensor([pitch]), mesh, settings)
            assert torch.equal(views["image"][2 * i + j], alone["image"][0])
    # batches change the speed, not the result
    chunked = rotate(faces, poses, mesh, settings, batch_size=3)
    assert all(torch.equal(chunked[k], views[k]) for k in views)
    assert pose_name(-30.0, None) == "yaw-30" and pose_name(20.0, 5.0) == "yaw+20_pitch+5"


class Recorder(torch.nn.Module):
    """A stand-in model: records what inference is asked for, returns the input + 1."""

    def __init__(self):
        super().__init__()
        self.calls = []
        self.netG = torch.nn.Linear(1, 1)

    def forward(self, data, mode):
        self.calls.append((mode, data["input"].shape[0], data.get("source_yaw")))
        return data["input"] + 1


def test_repair_batches_and_passes_the_source_yaw(faces):
    model = Recorder()
    views = rotate(faces, [(0.0, None), (30.0, None)], FaceMesh.mediapipe(),
                   RenderSettings(), model, batch_size=3)
    assert torch.equal(views["output"], views["image"] + 1)
    assert [(m, n) for m, n, _ in model.calls] == [("inference", 3), ("inference", 1)]
    yaws = torch.cat([y for _, _, y in model.calls])
    assert torch.equal(yaws, faces["yaw"].repeat_interleave(2))  # each view's own source
    model.calls.clear()
    out = repair(model, views["image"], views["landmarks"], batch_size=2)
    assert out.dtype == torch.float32 and [n for _, n, _ in model.calls] == [2, 2]
    assert model.calls[0][2] is None


def test_inference_context_unwraps_and_restores():
    model = Recorder()
    inner = model.netG
    wrapped = torch.nn.Module()
    wrapped.module = inner  # what DDP looks like from outside
    model.netG = wrapped
    inner.train()
    with inference_context(model):
        assert model.netG is inner and not inner.training
    assert model.netG is wrapped and inner.training
    with pytest.raises(RuntimeError), inference_context(model):
        raise RuntimeError("a failing evaluation")
    assert model.netG is wrapped and inner.training
