"""evaluation/quick.py: the trainer's quick evaluation gives the figures it documents
(recomputed here from the renderer and the fitter), uses the generator, and its batch of
photos comes from paths, folders or a dataset."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from helpers import TINY_G
from PIL import Image

from evaluation.quick import load_eval_batch, quick_eval
from util import metrics

YAWS = (-30.0, 30.0)


class Passthrough(torch.nn.Module):
    """A generator that returns the render it is given."""

    def forward(self, image, seg):
        return image


@pytest.fixture(scope="module")
def model():
    from models import create_model
    from options.train_options import TrainOptions

    torch.manual_seed(0)
    opt = TrainOptions().parse(TINY_G + ["--crop_size", "128", "--name", "q", "--no_vgg_loss",
                                         "--ndf", "8", "--num_D", "1", "--n_layers_D", "2"])
    return create_model(opt).train()


@pytest.fixture(scope="module")
def batch(example_dir):
    return load_eval_batch([str(example_dir / "astronaut.png"),
                            str(example_dir / "grace_hopper.jpg")], n=2, crop_size=128)


def expected_figures(model, batch, fitter) -> dict:
    """quick_eval's figures for a generator that returns its input, computed from the
    renderer, the fitter and the metrics directly."""
    from face3d.fitter import NoFaceError
    from render.renderer import FaceMesh, rotated_view, sample_target_poses, training_pair
    from render.settings import RenderSettings
    from util.visualizer import to_uint8

    opt, mesh = model.opt, FaceMesh.mediapipe()
    settings = RenderSettings.from_options(opt)
    face = [batch[k] for k in ("image", "vertices", "rotation", "scale", "translation")]
    yaw_b, pitch_b = sample_target_poses(batch["yaw"], batch["pitch"],
                                         torch.Generator().manual_seed(0), opt.pose_noise,
                                         opt.large_pose, opt.pitch_noise)
    pair = training_pair(*face, yaw_b, pitch_b, mesh, settings)
    scores = [(metrics.l1(i, r, m), metrics.psnr(i, r, m), metrics.ssim(i, r, m))
              for i, r, m in zip(to_uint8(pair["input"]), to_uint8(pair["real"]),
                                 pair["mask"][:, 0].numpy() > 0.5)]
    out = dict(zip(("eval/recon_l1_mask", "eval/recon_psnr_mask", "eval/recon_ssim_mask"),
                   np.mean(scores, 0)))
    out["eval/recon_psnr_mask_input"] = out["eval/recon_psnr_mask"]
    errors = []  # NaN where the fitter finds no face in the render
    for y in YAWS:
        view = rotated_view(*face, torch.full((2,), y), batch["pitch"], mesh, settings)
        err = []
        for im in to_uint8(view["image"]):
            try:
                err.append(abs(fitter.fit(np.ascontiguousarray(im)).yaw - y))
            except NoFaceError:
                err.append(math.nan)
        out[f"eval/pose_err_yaw{y:+g}"] = np.nanmean(err) if not np.isnan(err).all() else math.nan
        out[f"eval/pose_found_yaw{y:+g}"] = float(np.isfinite(err).mean())
        errors += err
    out["eval/pose_err"] = np.nanmean(errors)
    out["eval/pose_found"] = float(np.isfinite(errors).mean())
    return out


def test_quick_eval_figures(model, batch, fitter, monkeypatch):
    """With a generator that returns its input, every figure is the render's own."""
    assert batch["image"].shape == (2, 3, 128, 128) and len(batch["path"]) == 2
    monkeypatch.setattr(model, "netG", Passthrough())
    out = quick_eval(model, batch, torch.device("cpu"), yaws=YAWS, fitter=fitter)
    expected = expected_figures(model, batch, fitter)
    assert set(out) == set(expected)
    for k, v in expected.items():
        assert out[k] == pytest.approx(v, rel=1e-9, abs=1e-9, nan_ok=True), k
    assert 15.0 < out["eval/recon_psnr_mask"] < 35.0
    assert out["eval/pose_found"] > 0.5 and out["eval/pose_err"] < 15.0


def test_quick_eval_uses_the_generator(model, batch, fitter):
    out = quick_eval(model, batch, torch.device("cpu"), yaws=YAWS, fitter=fitter)
    assert model.netG.training  # the mode it had is restored
    assert all(isinstance(v, float) for v in out.values())
    # an untrained G's output is far from the photo, further than its input render
    assert out["eval/recon_psnr_mask"] < out["eval/recon_psnr_mask_input"] - 3.0
    assert out["eval/recon_psnr_mask_input"] == pytest.approx(
        expected_figures(model, batch, fitter)["eval/recon_psnr_mask_input"], rel=1e-9)
    # deterministic: the same batch gives the same figures
    again = quick_eval(model, batch, torch.device("cpu"), yaws=YAWS, fitter=fitter)
    assert {k: v for k, v in again.items() if math.isfinite(v)} == {
        k: v for k, v in out.items() if math.isfinite(v)}


def test_load_eval_batch_sources(example_dir, tmp_path):
    import skimage.data

    from_files = load_eval_batch([str(example_dir / "astronaut.png"),
                                  str(example_dir / "grace_hopper.jpg")], n=2, crop_size=64)
    folder = tmp_path / "photos"
    folder.mkdir()
    for name in ("astronaut.png", "grace_hopper.jpg"):
        (folder / name).write_bytes((example_dir / name).read_bytes())
    Image.fromarray(skimage.data.coffee()).save(folder / "coffee.png")  # no face: skipped
    from_folder = load_eval_batch(str(folder), n=3, crop_size=64)
    assert sorted(from_folder["path"]) == sorted(from_files["path"])
    assert from_folder["image"].shape == (2, 3, 64, 64)
    from_dataset = load_eval_batch("example", n=1, crop_size=64)
    assert from_dataset["image"].shape == (1, 3, 64, 64)
    assert from_dataset["path"][0] in from_files["path"]
    with pytest.raises(ValueError, match="no usable face"):
        load_eval_batch([str(folder / "coffee.png")], n=1, crop_size=64)
