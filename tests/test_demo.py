"""The web demo's logic (util/demo_logic.py, what demo.py's Gradio handlers call), without a
browser and without Gradio: images of the right size, the generator changing the render
where the masks say, one-line messages for bad uploads, one fit per photo."""

from __future__ import annotations

import os
import sys

import numpy as np
import pytest
from PIL import Image

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from data.photos import LazyFitter  # noqa: E402
from util.checkpoint import PRETRAINED, CheckpointError  # noqa: E402
from util.demo_logic import HIDDEN, STRETCHED, Demo, Prepared, load_model  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")


class CountingFitter:
    """The session's MediaPipe fitter, counting its fits."""

    def __init__(self, fitter):
        self.fitter, self.calls = fitter, 0

    def fit(self, rgb):
        self.calls += 1
        return self.fitter.fit(rgb)


@pytest.fixture(scope="module")
def counting(fitter):
    return CountingFitter(fitter)


@pytest.fixture(scope="module")
def demo(counting):
    if not os.path.exists(PRETRAINED):
        pytest.skip(f"shipped generator not found: {PRETRAINED}")
    model, settings, description = load_model(checkpoint=PRETRAINED)
    assert model is not None and "blend_lfw" in description
    return Demo(model, settings, fitter=LazyFitter(counting), description=description)


@pytest.fixture(scope="module")
def astronaut(demo, example_dir):
    state = demo.prepare(str(example_dir / "astronaut.png"))
    assert isinstance(state, Prepared), state
    return state


def test_a_photo_gives_images_of_the_crop_size(demo, astronaut):
    assert astronaut.name == "astronaut.png" and astronaut.crop.shape == (256, 256, 3)
    frame = demo.frame(astronaut, 30, 0)
    for key in ("output", "render", "masks"):
        assert frame[key].shape == (256, 256, 3) and frame[key].dtype == np.uint8, key
    assert len(np.unique(frame["output"])) > 64, "the output is blank"
    assert 0 < frame["stretched"] < 0.5
    assert frame["hidden"] >= 0


def test_the_output_differs_from_the_render_where_the_masks_say(demo, astronaut):
    frame = demo.frame(astronaut, -45, 0)
    masked = ((frame["masks"] == HIDDEN).all(-1) | (frame["masks"] == STRETCHED).all(-1))
    assert 0.05 < masked.mean() < 0.6
    diff = np.abs(frame["output"].astype(int) - frame["render"]).mean(-1)
    # The blend generator keeps the render where it was seen and repaints the rest
    # (measured: 3.6 levels inside the masks, 0.6 outside).
    assert diff[masked].mean() > 2.0
    assert diff[masked].mean() > 3 * diff[~masked].mean()


def test_a_pose_change_renders_without_refitting(demo, astronaut, example_dir, counting):
    before = counting.calls
    a = demo.frame(astronaut, 10, 0)["output"]
    b = demo.frame(astronaut, -30, 10)["output"]
    assert np.abs(a.astype(int) - b).mean() > 5, "the slider did not turn the face"
    again = demo.prepare(str(example_dir / "astronaut.png"))  # the same photo uploaded again
    assert isinstance(again, Prepared)
    assert counting.calls == before
    np.testing.assert_array_equal(demo.frame(again, 10, 0)["output"], a)


def test_a_photo_without_a_face_gives_one_line(demo, tmp_path):
    path = tmp_path / "wall.png"
    Image.fromarray(np.full((200, 240, 3), 128, np.uint8)).save(path)
    assert demo.prepare(str(path)) == "wall.png: no face found"


@pytest.mark.parametrize("name, content, reason", [
    ("notes.jpg", b"not a photo at all", "not an image (unrecognised format)"),
    ("empty.png", b"", "empty file"),
])
def test_an_unreadable_file_gives_one_line(demo, tmp_path, name, content, reason):
    path = tmp_path / name
    path.write_bytes(content)
    message = demo.prepare(str(path))
    assert message == f"{name}: not a readable image: {reason}"
    assert str(tmp_path) not in message  # not the upload's temporary path


def test_examples_and_sweep_gif(demo, tmp_path):
    state = demo.prepare_example("Grace Hopper")
    assert isinstance(state, Prepared) and state.name == "grace_hopper.jpg"
    path = demo.sweep_gif(state, str(tmp_path / "sweep.gif"), yaws=(-30, 0, 30))
    with Image.open(path) as gif:
        assert gif.format == "GIF" and gif.size == (256, 256)
        assert gif.n_frames == 4  # -30, 0, 30 and back to 0
    assert os.listdir(tmp_path) == ["sweep.gif"]  # written atomically: no temp file left


def test_model_choice(tmp_path):
    with pytest.raises(CheckpointError, match="checkpoint not found: .*nothing.pt"):
        load_model(checkpoint=str(tmp_path / "nothing.pt"))
    with pytest.raises(CheckpointError, match=r"no_run.latest\.pt"):
        load_model(name="no_run", checkpoints_dir=str(tmp_path))
    # conftest empties RR_PRETRAINED: no generator, renders with the symmetry fill
    model, settings, description = load_model()
    assert model is None and settings.symmetric_fill and "no generator" in description


def test_demo_flags(capsys):
    import demo as demo_cli  # the repository's demo.py; it imports Gradio only in main()

    with pytest.raises(SystemExit) as e:
        demo_cli.parse_args(["--help"])
    assert e.value.code == 0
    text = capsys.readouterr().out
    for flag in ("--host", "--port", "--share", "--device", "--threads", "--checkpoint", "--name",
                 "--checkpoints_dir", "--which_epoch"):
        assert flag in text
    args = demo_cli.parse_args([])
    assert (args.host, args.port, args.share, args.device, args.threads) == (
        "127.0.0.1", 7860, False, "cpu", 1)
    with pytest.raises(SystemExit):
        demo_cli.parse_args(["--checkpoint", "a.pt", "--name", "b"])
