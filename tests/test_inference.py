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

from helpers import page_links  # noqa: E402

import test as rotate_cli  # noqa: E402  (the repository's test.py, not a pytest module)
from face3d.examples import materialize_examples  # noqa: E402

TINY = ["--ngf", "8", "--n_blocks_G", "1", "--n_downsample_G", "2", "--spade_nhidden", "8",
        "--crop_size", "64", "--device", "cpu", "--model", "rotatespade"]


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    folder = tmp_path_factory.mktemp("photos")
    materialize_examples(str(folder))
    os.remove(folder / "file_list.txt")
    return folder


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory):
    """A generator checkpoint in train.py's layout, made by the real model code."""
    from models import create_model
    from options.train_options import TrainOptions
    from trainers.trainer import Trainer
    from util.checkpoint import save_checkpoint

    root = tmp_path_factory.mktemp("ckpt")
    opt = TrainOptions().parse(TINY + ["--name", "tiny", "--checkpoints_dir", str(root),
                                       "--no_vgg_loss", "--ndf", "8", "--num_D", "1",
                                       "--n_layers_D", "2"])
    trainer = Trainer(opt, create_model(opt), torch.device("cpu"))
    state = trainer.state_dict()
    state.update(iteration=0, epoch=1, epoch_iter=0,
                 options={k: v for k, v in vars(opt).items()
                          if isinstance(v, (int, float, str, bool, type(None)))},
                 rng={"torch": torch.get_rng_state()})
    save_checkpoint(state, str(root / "tiny" / "latest.pt"))
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
    render = tmp_path / "tiny" / rows[0]["output"].replace(".png", "_render.png")
    assert render.exists()


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
    rc = rotate_cli.main(["--name", "x", "--checkpoints_dir", str(tmp_path)] + args)
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
