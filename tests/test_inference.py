"""test.py end to end: outputs, manifest, page, pose accuracy and bad input."""

from __future__ import annotations

import csv
import os
import sys

import numpy as np
import pytest
import torch
from PIL import Image

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from helpers import page_links, write_tiny_checkpoint  # noqa: E402

import test as rotate_cli  # noqa: E402  (the repository's test.py, not a pytest module)
from face3d.examples import materialize_examples  # noqa: E402
from models.inference import load_generator  # noqa: E402


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    folder = tmp_path_factory.mktemp("photos")
    materialize_examples(str(folder))
    os.remove(folder / "file_list.txt")
    return folder


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory):
    root = tmp_path_factory.mktemp("ckpt")
    write_tiny_checkpoint(root)
    return root


def check_outputs(out_dir, n_photos, yaws, mode, size):
    with open(os.path.join(out_dir, "manifest.csv")) as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == n_photos * len(yaws)
    assert {r["mode"] for r in rows} == {mode}
    assert sorted({float(r["yaw"]) for r in rows}) == sorted(yaws)
    for r in rows:
        path = os.path.join(out_dir, r["output"])
        img = np.asarray(Image.open(path))
        assert img.shape == (size, size, 3)
        # Not blank: the original's one-GPU bug gave constant (black) images.
        assert len(np.unique(img)) > 16 and img.max() > 40, f"{path} is blank"
    links = page_links(os.path.join(out_dir, "index.html"))
    assert links, "the page shows no images"
    for src in links:
        assert os.path.exists(os.path.join(out_dir, src)), src
    with open(os.path.join(out_dir, "rotated_landmarks.txt")) as f:
        lines = f.read().splitlines()
    assert len(lines) == len(rows)
    assert all(len(line.split()) == 1 + 136 for line in lines)
    return rows


def test_render_only_on_photos(photos, tmp_path, capsys):
    yaws = [-30.0, 0.0, 30.0]
    rc = rotate_cli.main(["--name", "none", "--checkpoints_dir", str(tmp_path / "ck"),
                          "--img", str(photos), "--results_dir", str(tmp_path / "res"),
                          "--yaw_poses", "-30", "0", "30", "--crop_size", "256", "--align",
                          "--gif", "--device", "cpu"])
    assert rc == 0
    assert "no checkpoint" in capsys.readouterr().out
    out = tmp_path / "res" / "none"
    rows = check_outputs(out, 2, yaws, "render", 256)
    assert (out / "astronaut" / "aligned.png").exists()
    assert Image.open(out / "astronaut" / "sweep.gif").n_frames > 10

    # Pose is right: re-fitting each render gives the requested yaw (within 10 degrees).
    from face3d.fitter import MediaPipeFitter
    from face3d.imageio import read_image

    with MediaPipeFitter() as fitter:
        for r in rows:
            fit = fitter.fit(read_image(out / r["output"]))
            assert abs(fit.yaw - float(r["yaw"])) < 10, (r, fit.yaw)


def test_generator_mode_with_checkpoint(tiny_checkpoint, tmp_path, capsys):
    rc = rotate_cli.main(["--name", "tiny", "--checkpoints_dir", str(tiny_checkpoint),
                          "--dataset", "example", "--results_dir", str(tmp_path),
                          "--yaw_poses", "-30", "30", "--device", "cpu",
                          "--ngf", "16"])  # conflicts with the checkpoint: warned, ignored
    assert rc == 0
    captured = capsys.readouterr()
    assert "generator from" in captured.out
    assert "--ngf 16 conflicts with the checkpoint's ngf=8" in captured.err
    rows = check_outputs(tmp_path / "tiny", 2, [-30.0, 30.0], "generator", 64)
    page = (tmp_path / "tiny" / "index.html").read_text()
    assert "output (top), the render it was given (below)" in page  # as laid out
    assert "beside" not in page
    # Each output is the checkpoint's generator applied to the render beside it, not the
    # render itself: far from the render, and what G gives for that (8-bit) render.
    from models.inference import repair
    from options.test_options import TestOptions
    from util.visualizer import to_uint8

    options = TestOptions()
    opt = options.parse(["--name", "tiny", "--checkpoints_dir", str(tiny_checkpoint)])
    model, _ = load_generator(opt, options.parser, torch.device("cpu"))
    for r in rows:
        out_path = tmp_path / "tiny" / r["output"]
        render = np.asarray(Image.open(str(out_path).replace(".png", "_render.png")), np.float32)
        output = np.asarray(Image.open(out_path), np.float32)
        assert np.abs(output - render).mean() > 20, "generator mode wrote the render"
        landmarks = next(line.split()[1:] for line in
                         (tmp_path / "tiny" / "rotated_landmarks.txt").read_text().splitlines()
                         if line.split()[0] == r["output"])
        again = repair(model, torch.from_numpy(render).permute(2, 0, 1)[None] / 127.5 - 1,
                       torch.tensor([float(v) for v in landmarks]).reshape(1, 68, 2))
        assert np.abs(to_uint8(again)[0].astype(np.float32) - output).mean() < 2.0


def test_bad_photos_are_listed_and_the_run_continues(photos, tmp_path):
    import skimage.data

    folder = tmp_path / "mixed"
    folder.mkdir()
    Image.open(photos / "astronaut.png").save(folder / "good.png")
    (folder / "broken.jpg").write_bytes(b"not an image")
    Image.fromarray(skimage.data.coffee()).save(folder / "coffee.png")
    rc = rotate_cli.main(["--name", "x", "--checkpoints_dir", str(tmp_path / "ck"),
                          "--img", str(folder), "--results_dir", str(tmp_path / "res"),
                          "--yaw_poses", "0", "--crop_size", "64", "--device", "cpu"])
    assert rc == 0
    failures = (tmp_path / "res" / "x" / "failures.txt").read_text().splitlines()
    reasons = dict(line.split("\t") for line in failures)
    assert set(reasons) == {"broken.jpg", "coffee.png"}
    assert "not an image" in reasons["broken.jpg"]
    assert "no face" in reasons["coffee.png"]


@pytest.mark.parametrize("args, message", [
    (["--yaw_poses", "120"], "outside [-90, 90]"),
    (["--gpu_ids", "0"], "--gpu_ids is no longer used"),
    (["--model", "nope"], "choose one of: rotate, rotatespade"),
])
def test_bad_options(args, message, tmp_path, capsys):
    # a bad value is refused while parsing (SystemExit 2) or when checked (return 2)
    try:
        rc = rotate_cli.main(["--name", "x", "--checkpoints_dir", str(tmp_path)] + args)
    except SystemExit as e:
        rc = e.code
    assert rc == 2
    assert message in capsys.readouterr().err


def test_empty_input_exits_nonzero(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    rc = rotate_cli.main(["--name", "x", "--checkpoints_dir", str(tmp_path),
                          "--img", str(tmp_path / "empty")])
    assert rc == 2
    assert "no input photos" in capsys.readouterr().err


def test_corrupt_and_mismatched_checkpoints(tiny_checkpoint, tmp_path, capsys):
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "latest.pt").write_bytes(b"\x00garbage")
    rc = rotate_cli.main(["--name", "bad", "--checkpoints_dir", str(tmp_path), "--img", "x.jpg"])
    assert rc == 2
    assert "corrupt or unreadable checkpoint" in capsys.readouterr().err

    state = torch.load(tiny_checkpoint / "tiny" / "latest.pt", weights_only=True)
    weights = state["nets"]["netG"]
    first = next(iter(weights))
    weights["renamed.weight"] = weights.pop(first)
    (tmp_path / "mismatch").mkdir()
    torch.save(state, tmp_path / "mismatch" / "latest.pt")
    rc = rotate_cli.main(["--name", "mismatch", "--checkpoints_dir", str(tmp_path),
                          "--img", "x.jpg", "--device", "cpu"])
    assert rc == 2
    err = capsys.readouterr().err
    assert "does not match this model" in err and first in err and "renamed.weight" in err
