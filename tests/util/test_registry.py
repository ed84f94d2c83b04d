"""util.registry.Registry and the registries built on it: unknown names fail in one line
naming the flag and the valid choices, duplicates are errors, and a new generator needs only
its own file (the README's "Adding a generator")."""

from __future__ import annotations

import argparse

import pytest
import torch
from torch import nn

from data.registry import DATASET_MODES, DATASETS, get_dataset
from models import MODELS, networks
from models.registry import GENERATORS, BuiltFromArgs
from util.registry import Registry


def test_register_get_and_names():
    reg = Registry("colour", flag="--colour")

    @reg.register("red")
    class Red:
        pass

    assert reg.register("blue", 3) == 3
    assert reg.get("red") is Red and reg.get("blue") == 3
    assert list(reg) == ["red", "blue"] and len(reg) == 2 and "red" in reg
    assert reg.name_of(Red) == "red" and reg.name_of(object) is None


def test_unknown_name_is_one_line_naming_flag_and_choices():
    reg = Registry("colour", flag="--colour", hint="or add yours to colours.py")
    reg.register("red", 1)
    reg.register("blue", 2)
    with pytest.raises(ValueError) as err:
        reg.get("green")
    assert str(err.value) == ("unknown --colour 'green'; choose one of: red, blue "
                              "(or add yours to colours.py)")


def test_duplicate_registration_is_an_error():
    reg = Registry("colour", flag="--colour")
    reg.register("red", 1)
    with pytest.raises(ValueError, match="colour 'red' is registered twice"):
        reg.register("red", 2)
    with pytest.raises(ValueError, match="registered twice"):
        reg.register("red")(type("Other", (), {}))
    assert reg.get("red") == 1  # the first entry is untouched


def test_the_project_registries():
    assert list(MODELS) == ["rotate", "rotatespade"]
    assert list(networks.GENERATORS) == ["rotate", "rotatespade", "blend"]
    assert list(networks.DISCRIMINATORS) == ["multiscale"]
    assert list(DATASET_MODES) == ["allface"]
    assert {"example", "lfw", "rr_example"} <= set(DATASETS)
    with pytest.raises(ValueError, match=r"unknown --model 'x'; choose one of: rotate, "
                                         r"rotatespade$"):
        MODELS.get("x")
    with pytest.raises(ValueError, match=r"unknown --dataset_mode 'x'; choose one of: allface"):
        DATASET_MODES.get("x")
    with pytest.raises(ValueError, match=r"unknown --dataset 'x'; .*data/registry.py"):
        get_dataset("x")
    # registering a name twice fails loudly instead of shadowing the first
    with pytest.raises(ValueError, match="generator 'rotate' is registered twice"):
        GENERATORS.register("rotate", nn.Identity)


def test_generators_declare_whether_they_read_landmarks():
    """RotateModel asks the generator, not its class: any generator that reads ``seg`` gets
    the landmark map, whichever --model."""
    from models.rotate_model import RotateModel

    for name in ("rotate", "rotatespade"):  # fixed by the class
        assert isinstance(GENERATORS.get(name).uses_landmarks, bool), name
    assert RotateModel.conditioned_on_landmarks(GENERATORS.get("rotatespade"))
    assert not RotateModel.conditioned_on_landmarks(GENERATORS.get("rotate"))
    # blend reads the map when it was built to (its label_nc): the instance says
    blend = GENERATORS.get("blend")
    args = dict(ngf=8, n_downsample_G=2, n_blocks_G=1, norm_G="instance",
                blend_downsample=False)
    assert RotateModel.conditioned_on_landmarks(blend(label_nc=5, **args))
    assert not RotateModel.conditioned_on_landmarks(blend(label_nc=0, **args))


def test_a_new_generator_is_one_class_and_one_register_line(monkeypatch):
    """What the README's "Adding a generator" promises: the decorator is all it takes for
    --netG, its flags, define_G and checkpoints (rebuilt from the saved arguments)."""
    # Registered into a copy, so the rest of the session sees the registry unchanged.
    monkeypatch.setattr(GENERATORS, "_entries", dict(GENERATORS._entries))

    @GENERATORS.register("tiny")
    class TinyGenerator(BuiltFromArgs, nn.Module):
        uses_landmarks = False

        def __init__(self, width: int = 4):
            super().__init__()
            self.net = nn.Sequential(nn.Conv2d(3, width, 3, padding=1), nn.Tanh(),
                                     nn.Conv2d(width, 3, 3, padding=1), nn.Tanh())

        @classmethod
        def args_from_opt(cls, opt):
            return dict(width=opt.tiny_width)

        @staticmethod
        def modify_commandline_options(parser, is_train):
            networks.add_flag(parser, "--tiny_width", type=int, default=4, help="width")
            return parser

        def forward(self, image, seg=None):
            return self.net(image)

    parser = argparse.ArgumentParser()
    for flag, default in (("--netG", "tiny"), ("--crop_size", 32), ("--label_nc", 5)):
        parser.add_argument(flag, default=default)
    networks.modify_commandline_options(parser, False, "tiny")
    opt = parser.parse_args(["--tiny_width", "6"])
    net = networks.define_G(opt)
    assert isinstance(net, TinyGenerator) and net.init_args == {"width": 6}
    spec = networks.net_spec(net)
    assert spec == {"kind": "generator", "name": "tiny", "args": {"width": 6}}
    again = networks.rebuild(spec)
    again.load_state_dict(net.state_dict())
    x = torch.rand(1, 3, 32, 32)
    assert torch.equal(again(x), net(x))
