"""``--render_scope``: the whole-image render is the default for renders and new runs; a
checkpoint keeps the scope it was trained with, and one saved before the option renders
faces, as it always did."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers import write_tiny_checkpoint
from PIL import Image

import test as rotate_cli  # the repository's test.py
from face3d.examples import materialize_examples
from models.inference import load_generator
from options.test_options import TestOptions
from options.train_options import TrainOptions
from render.settings import RenderSettings


def test_default_scope_is_image_and_face_is_selectable():
    assert RenderSettings.from_options(TestOptions().parse([])).render_scope == "image"
    assert RenderSettings.from_options(TrainOptions().parse([])).render_scope == "image"
    face = TestOptions().parse(["--render_scope", "face"])
    assert RenderSettings.from_options(face).render_scope == "face"
    with pytest.raises(ValueError, match="render_scope"):
        RenderSettings(render_scope="head")


def _load(root, extra=()):
    options = TestOptions()
    opt = options.parse(["--name", "tiny", "--checkpoints_dir", str(root), *extra])
    model, message = load_generator(opt, options.parser, torch.device("cpu"))
    assert model is not None, message
    return opt, model


def test_checkpoint_records_its_scope(tmp_path):
    write_tiny_checkpoint(tmp_path, extra=["--render_scope", "face"])
    opt, model = _load(tmp_path)  # the command line's default is 'image'
    assert opt.render_scope == "face"
    assert model.settings()["render_scope"] == "face"
    write_tiny_checkpoint(tmp_path / "b")
    assert _load(tmp_path / "b")[0].render_scope == "image"


def test_checkpoint_from_before_the_option_renders_faces(tmp_path):
    path = write_tiny_checkpoint(tmp_path, extra=["--render_scope", "image"])
    state = torch.load(path, weights_only=True)
    del state["settings"]["render_scope"]  # as written before the option existed
    torch.save(state, path)
    opt, _ = _load(tmp_path)
    assert opt.render_scope == "face"


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    folder = tmp_path_factory.mktemp("photos")
    materialize_examples(str(folder))
    return folder


def _corner_spread(path) -> float:
    """Colour spread over the crop's four 16-px corners: 0 on the flat background fill."""
    img = np.asarray(Image.open(path), np.float32)
    corners = np.concatenate([img[:16, :16], img[:16, -16:], img[-16:, :16], img[-16:, -16:]])
    return float(corners.reshape(-1, 3).std(0).max())


def test_test_py_renders_the_whole_photo_by_default(photos, tmp_path):
    common = ["--name", "none", "--checkpoints_dir", str(tmp_path / "ck"), "--img",
              str(photos / "grace_hopper.jpg"), "--yaw_poses", "30", "--device", "cpu",
              "--crop_size", "128"]
    assert rotate_cli.main([*common, "--results_dir", str(tmp_path / "img")]) == 0
    assert rotate_cli.main([*common, "--results_dir", str(tmp_path / "face"),
                            "--render_scope", "face"]) == 0
    whole = _corner_spread(tmp_path / "img" / "none" / "grace_hopper" / "yaw+30.png")
    face = _corner_spread(tmp_path / "face" / "none" / "grace_hopper" / "yaw+30.png")
    print(f"\ncorner colour spread: whole image {whole:.1f}, face only {face:.1f}")
    assert face < 1.0 < 10.0 < whole  # the flag and the stars of the photo's background
