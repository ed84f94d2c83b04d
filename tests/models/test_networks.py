"""Tests for models.networks: tiny widths and 64 px so the file runs in seconds on 2 CPUs."""

from __future__ import annotations

import argparse
import math
import os

import pytest
import torch
from torch import nn

from models import networks
from models.networks.architecture import vgg19_features, vgg19_weights_filename
from models.networks.normalization import NORM_KINDS, get_norm_layer

torch.set_num_threads(2)

ALL_NORMS = [p + k for p in ("", "spectral") for k in NORM_KINDS]


def make_opt(**overrides) -> argparse.Namespace:
    """Namespace as the options module would produce it, with tiny defaults."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--netG", default="rotate")
    parser.add_argument("--label_nc", type=int, default=5)
    parser.add_argument("--crop_size", type=int, default=64)
    networks.modify_commandline_options(parser, is_train=True)
    opt = parser.parse_args([])
    opt.ngf, opt.ndf, opt.n_blocks_G, opt.spade_nhidden = 8, 8, 2, 16
    for k, v in overrides.items():
        setattr(opt, k, v)
    return opt


def images(b=2, size=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(b, 3, size, size, generator=g) * 2 - 1


def landmarks(b=2, size=64, seed=1, label_nc=5):
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(b, label_nc, size, size, generator=g) > 0.9).float()


# ---------------------------------------------------------------- generators


@pytest.mark.parametrize("netG", ["rotate", "rotatespade"])
@pytest.mark.parametrize("size", [64, 128])
def test_generator_shapes_and_range(netG, size):
    G = networks.define_G(make_opt(netG=netG, crop_size=size))
    out = G(images(size=size), landmarks(size=size))
    assert out.shape == (2, 3, size, size)
    assert out.min() >= -1 and out.max() <= 1 and torch.isfinite(out).all()


def test_rotatespade_depends_on_seg_rotate_does_not():
    x = images()
    seg_a, seg_b = landmarks(seed=1), landmarks(seed=2)
    # eval(): in train mode each spectral-norm forward refines u/v, changing the output.
    spade = networks.define_G(make_opt(netG="rotatespade")).eval()
    with torch.no_grad():
        assert (spade(x, seg_a) - spade(x, seg_b)).abs().max() > 1e-6
    plain = networks.define_G(make_opt(netG="rotate")).eval()
    with torch.no_grad():
        ref = plain(x)
        assert torch.equal(ref, plain(x, seg_a)) and torch.equal(ref, plain(x, seg_b))


def test_rotatespade_requires_seg():
    G = networks.define_G(make_opt(netG="rotatespade"))
    with pytest.raises(ValueError, match="seg"):
        G(images(), None)


def test_generator_size_checks():
    with pytest.raises(ValueError, match="crop_size"):
        networks.define_G(make_opt(crop_size=100))
    G = networks.define_G(make_opt())
    with pytest.raises(ValueError, match="divisible"):
        G(images(size=60))


@pytest.mark.parametrize("netG", ["rotate", "rotatespade"])
def test_one_step_reduces_l1(netG):
    torch.manual_seed(0)
    G = networks.define_G(make_opt(netG=netG))
    # A learnable target (a flat colour): random noise is not, so one step could overshoot.
    x, seg = images(seed=0), landmarks()
    target = torch.tensor([0.5, -0.3, 0.2]).view(1, 3, 1, 1).expand(2, 3, 64, 64)
    opt = torch.optim.Adam(G.parameters(), lr=1e-4)
    loss = (G(x, seg) - target).abs().mean()
    opt.zero_grad()
    loss.backward()
    assert all(p.grad is not None for p in G.parameters())
    opt.step()
    with torch.no_grad():
        after = (G(x, seg) - target).abs().mean()
    assert after < loss.item()


# ------------------------------------------------------------ discriminator


def test_multiscale_discriminator_outputs():
    opt = make_opt(num_D=3, n_layers_D=4)
    D = networks.define_D(opt, input_nc=6 + opt.label_nc)
    out = D(torch.randn(2, 6 + opt.label_nc, 64, 64))
    assert len(out) == 3
    for scale in out:
        assert len(scale) == opt.n_layers_D + 1  # n_layers_D features, then the logits
        assert scale[-1].shape[:2] == (2, 1)
    # 4x4 convs with padding 2: stride-2 layers give floor(s/2)+1, stride-1 layers s+1.
    assert out[0][-1].shape[-2:] == (11, 11)
    assert out[1][-1].shape[-2:] == (7, 7)
    # First layer has no norm; the others are spectral-normalised convs.
    first, second = D.discriminators[0].layers[0], D.discriminators[0].layers[1]
    assert not hasattr(first[0], "weight_orig") and hasattr(second[0][0], "weight_orig")


def test_define_d_input_nc_from_opt():
    D = networks.define_D(make_opt(input_nc=6))
    assert D(torch.randn(1, 6, 64, 64))[0][-1].shape[1] == 1
    with pytest.raises(ValueError, match="input_nc"):
        networks.define_D(make_opt())


# ---------------------------------------------------------- registries/flags


def test_registry_errors_list_valid_names():
    expected = "unknown --netG 'foo'; choose one of: rotate, rotatespade"
    with pytest.raises(ValueError, match=expected):
        networks.define_G(make_opt(netG="foo"))
    with pytest.raises(ValueError, match="choose one of: multiscale"):
        networks.define_D(make_opt(netD="foo"), input_nc=6)
    with pytest.raises(ValueError, match="n_layer"):
        networks.define_D(make_opt(netD_subarch="foo"), input_nc=6)
    with pytest.raises(ValueError, match="xavier"):
        networks.define_G(make_opt(init_type="foo"))
    with pytest.raises(ValueError, match="rotatespade"):
        networks.modify_commandline_options(argparse.ArgumentParser(), True, "foo")


def test_flags_have_help_and_tolerate_predefined():
    parser = argparse.ArgumentParser()
    networks.modify_commandline_options(parser, True, "rotatespade", "multiscale")
    # Adding the same flags again (as with --netG unset: every generator's) is fine.
    networks.modify_commandline_options(parser, True, None, None)
    dests = {a.dest: a for a in parser._actions if a.dest != "help"}
    for flag in ("ngf", "n_downsample_G", "n_blocks_G", "norm_G", "init_type", "init_variance",
                 "ndf", "norm_D", "num_D", "n_layers_D", "netD", "netD_subarch", "vgg_weights"):
        assert flag in dests and dests[flag].help, flag
    test_parser = argparse.ArgumentParser()
    networks.modify_commandline_options(test_parser, False, "rotate")
    test_dests = {a.dest for a in test_parser._actions}
    assert "ngf" in test_dests and "ndf" not in test_dests and "vgg_weights" not in test_dests


def test_a_flag_defined_twice_differently_is_an_error():
    parser = argparse.ArgumentParser()
    parser.add_argument("--ngf", type=int, default=32, help="ngf of another module")
    with pytest.raises(ValueError, match=r"--ngf is defined twice, differently: default 32 vs "
                                         r"64; help 'ngf of another module' vs"):
        networks.modify_commandline_options(parser, False, "rotate")


@pytest.mark.parametrize("init_type", networks.INIT_TYPES)
def test_init_types(init_type):
    G = networks.define_G(make_opt(init_type=init_type))
    assert torch.isfinite(G(images())).all()


# ------------------------------------------------------------ normalisation


@pytest.mark.parametrize("norm", ALL_NORMS)
def test_norm_strings_build_and_run(norm):
    layer = get_norm_layer(norm)(nn.Conv2d(3, 4, 3, padding=1))
    assert layer(torch.randn(2, 3, 8, 8)).shape == (2, 4, 8, 8)
    conv = layer[0] if isinstance(layer, nn.Sequential) else layer
    assert hasattr(conv, "weight_orig") == norm.startswith("spectral")
    D = networks.define_D(make_opt(norm_D=norm, num_D=1), input_nc=6)
    assert D(torch.randn(2, 6, 64, 64))[0][-1].shape[1] == 1


def test_unknown_norm():
    with pytest.raises(ValueError, match="spectralinstance"):
        get_norm_layer("spectralgroup")


def test_spectral_norm_bounds_sigma():
    G = networks.define_G(make_opt())
    conv = G.encoder[1][0]
    sigma = torch.linalg.matrix_norm(conv.weight.flatten(1), ord=2)
    assert sigma == pytest.approx(1.0, abs=0.05)


def test_syncbatchnorm_conversion():
    G = networks.define_G(make_opt(netG="rotatespade", norm_G="spectralbatch"))
    G = nn.SyncBatchNorm.convert_sync_batchnorm(G)
    assert any(isinstance(m, nn.SyncBatchNorm) for m in G.modules())
    # Outside a process group SyncBatchNorm behaves as BatchNorm.
    assert G(images(), landmarks()).shape == (2, 3, 64, 64)


def test_cpu_autocast_bf16():
    opt = make_opt(netG="rotatespade")
    G, D = networks.define_G(opt), networks.define_D(opt, input_nc=6)
    gan = networks.GANLoss("hinge")
    with torch.autocast("cpu", dtype=torch.bfloat16):
        fake = G(images(), landmarks())
        pred = D(torch.cat([images(), fake], 1))
        loss = gan(pred, True, for_discriminator=False)
    assert loss.dtype == torch.float32 and torch.isfinite(loss)
    loss.backward()


# --------------------------------------------------------------------- losses


def test_hinge_loss_hand_computed():
    gan = networks.GANLoss("hinge")
    pred = [[torch.zeros(1, 4, 3, 3), torch.full((2, 1, 5, 5), 2.0)]]
    assert gan(pred, True, for_discriminator=True).item() == pytest.approx(0.0)
    assert gan(pred, False, for_discriminator=True).item() == pytest.approx(3.0)
    assert gan(pred, True, for_discriminator=False).item() == pytest.approx(-2.0)
    # Averaged over scales: logits 2 and 0 -> real losses 0 and 1.
    two_scales = pred + [[torch.zeros(2, 1, 3, 3)]]
    assert gan(two_scales, True, for_discriminator=True).item() == pytest.approx(0.5)


def test_other_gan_modes_hand_computed():
    x = torch.zeros(2, 1, 4, 4)
    assert networks.GANLoss("original")(x, True).item() == pytest.approx(math.log(2))
    assert networks.GANLoss("ls")(x + 2, True).item() == pytest.approx(1.0)
    assert networks.GANLoss("ls")(x + 2, False).item() == pytest.approx(4.0)
    assert networks.GANLoss("w")(x + 2, True).item() == pytest.approx(-2.0)
    assert networks.GANLoss("w")(x + 2, False).item() == pytest.approx(2.0)
    with pytest.raises(ValueError, match="hinge"):
        networks.GANLoss("foo")


def test_feature_matching():
    real = [[torch.randn(2, 4, 8, 8, requires_grad=True), torch.randn(2, 1, 4, 4)]
            for _ in range(2)]
    same = [[f.detach().clone() for f in scale] for scale in real]
    assert networks.feature_matching_loss(same, real).item() == 0.0
    fake = [[(f.detach() + 1).requires_grad_() for f in scale] for scale in real]
    loss = networks.feature_matching_loss(fake, real, lambda_feat=10.0)
    assert loss.item() == pytest.approx(10.0)  # |diff| = 1 on every feature
    loss.backward()
    assert fake[0][0].grad is not None and fake[0][0].grad.abs().sum() > 0
    assert fake[0][-1].grad is None  # logits are not matched
    assert real[0][0].grad is None
    # Layers add up (as in pix2pixHD / SPADE), scales average.
    two = [[torch.zeros(1, 2, 4, 4), torch.zeros(1, 2, 2, 2), torch.zeros(1, 1, 2, 2)]]
    ones = [[t + 1 for t in scale] for scale in two]
    assert networks.feature_matching_loss(ones, two, lambda_feat=1.0).item() == pytest.approx(2.0)


# ------------------------------------------------------------------------ VGG


@pytest.fixture(scope="module")
def vgg_file(tmp_path_factory):
    """A random-weights VGG19 file in torchvision's key layout (classifier stub included)."""
    torch.manual_seed(0)
    state = {f"features.{k}": v for k, v in vgg19_features().state_dict().items()}
    state["classifier.6.bias"] = torch.zeros(10)
    path = tmp_path_factory.mktemp("vgg") / vgg19_weights_filename()
    torch.save(state, path)
    return path


def check_vgg_loss(loss_fn):
    assert not any(p.requires_grad for p in loss_fn.parameters())
    real, fake = images(1, seed=5), images(1, seed=6).requires_grad_()
    assert loss_fn(real, real).item() == 0.0
    loss = loss_fn(fake, real)
    assert loss.item() > 0
    loss.backward()
    assert fake.grad.abs().sum() > 0


def test_vgg_loss_from_explicit_path(vgg_file):
    check_vgg_loss(networks.VGGLoss(vgg_weights=str(vgg_file)))


def test_vgg_loss_from_hub_cache(vgg_file, tmp_path, monkeypatch):
    (tmp_path / "checkpoints").mkdir()
    os.symlink(vgg_file, tmp_path / "checkpoints" / vgg_file.name)
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    loss_fn = networks.VGGLoss()
    loss_fn.train()
    assert not loss_fn.vgg.training
    check_vgg_loss(loss_fn)


def test_vgg_missing_weights(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    with pytest.raises(networks.MissingWeightsError) as err:
        networks.VGGLoss()
    msg = str(err.value)
    assert isinstance(err.value, FileNotFoundError)
    assert vgg19_weights_filename() in msg and "--no_vgg_loss" in msg and str(tmp_path) in msg
    with pytest.raises(networks.MissingWeightsError, match="nope.pth"):
        networks.VGGLoss(vgg_weights=str(tmp_path / "nope.pth"))


def test_vgg_wrong_keys(tmp_path):
    path = tmp_path / "bad.pth"
    torch.save({"features.0.weight": torch.zeros(64, 3, 3, 3), "head.weight": torch.zeros(1)},
               path)
    with pytest.raises(ValueError, match="features.0.bias") as err:
        networks.VGGLoss(vgg_weights=str(path))
    assert "head.weight" in str(err.value)
