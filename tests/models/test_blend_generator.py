"""netG 'blend': shapes, mask range, the blend itself, how the model feeds it, the shipped
file format (fp16 safetensors + JSON) and --init_generator."""

from __future__ import annotations

import json
import os

import pytest
import torch

import train
from models import create_model
from models.networks import GENERATORS, define_G, rebuild
from models.networks.blend_generator import BlendGenerator
from options.train_options import TrainOptions
from util.checkpoint import (
    PRETRAINED,
    CheckpointError,
    export_generator,
    load_generator_file,
)

BLEND = ["--netG", "blend", "--ngf", "8", "--n_blocks_G", "1", "--n_downsample_G", "2",
         "--crop_size", "64", "--ndf", "8", "--num_D", "1", "--n_layers_D", "2",
         "--nThreads", "0", "--batchSize", "2", "--no_vgg_loss", "--device", "cpu"]


pytestmark = pytest.mark.usefixtures("one_thread")


def tiny(**kw) -> BlendGenerator:
    args = dict(ngf=8, n_downsample_G=2, n_blocks_G=1) | kw
    return BlendGenerator.from_args(args)


def inputs(b=2, size=32, label_nc=0, seed=0):
    g = torch.Generator().manual_seed(seed)
    image = torch.rand(b, 3, size, size, generator=g) * 2 - 1
    masks = (torch.rand(b, 2, size, size, generator=g) > 0.7).float()
    seg = torch.rand(b, label_nc, size, size, generator=g) if label_nc else None
    return image, seg, masks


@pytest.mark.parametrize("downsample", [True, False])
@pytest.mark.parametrize("label_nc", [0, 5])
def test_shapes_and_mask_range(downsample, label_nc):
    net = tiny(blend_downsample=downsample, label_nc=label_nc)
    image, seg, masks = inputs(label_nc=label_nc)
    with torch.no_grad():
        out, mask = net(image, seg, masks=masks, return_mask=True)
    assert out.shape == image.shape and mask.shape == (2, 1, 32, 32)
    assert float(mask.min()) >= 0 and float(mask.max()) <= 1
    assert float(out.abs().max()) <= 1
    assert net.uses_landmarks == (label_nc > 0)


def test_mask_starts_at_the_hidden_and_stretched_prior():
    # Before training the mask is the union of the two masks, softened (no net output).
    net = tiny(blend_downsample=False)
    torch.nn.init.zeros_(net.head.weight)
    torch.nn.init.zeros_(net.head.bias)
    image, _, masks = inputs()
    _, mask = net(image, masks=masks, return_mask=True)
    prior = masks.amax(1, keepdim=True)
    assert torch.allclose(mask, torch.sigmoid(6 * prior - 4))


@pytest.mark.parametrize("downsample", [True, False])
def test_output_is_the_render_where_the_mask_is_zero(downsample):
    net = tiny(blend_downsample=downsample)
    image, _, masks = inputs(seed=1)
    with torch.no_grad():
        net.head.bias[3] = -1e4  # mask channel -> 0 everywhere
    with torch.no_grad():
        out, mask = net(image, masks=masks, return_mask=True)
    assert float(mask.max()) == 0
    assert torch.equal(out, image)  # bit-exact: the full-resolution pixels pass through
    with torch.no_grad():
        net.head.bias[3] = 1e4  # mask -> 1: the generated image, not the render
    out = net(image, masks=masks)
    assert not torch.allclose(out, image, atol=0.1)


@pytest.mark.parametrize("downsample", [True, False])
def test_keep_seen_leaves_every_seen_pixel_to_the_render(downsample):
    """keep_seen: outside the hidden/stretched masks widened by SEEN_MARGIN px the output is
    the render bit for bit, even with the net's mask at 1 everywhere; inside it, the net's."""
    from models.networks.blend_generator import SEEN_MARGIN

    net = tiny(blend_downsample=downsample, keep_seen=True)
    image, _, _ = inputs(seed=2)
    masks = torch.zeros(2, 2, 32, 32)
    masks[0, 0, 8:12, 8:12] = 1  # hidden
    masks[1, 1, 20:24, 4:30] = 1  # stretched
    with torch.no_grad():
        net.head.bias[3] = 1e4  # the net would repaint every pixel
        out, mask = net(image, masks=masks, return_mask=True)
    region = torch.nn.functional.max_pool2d(masks.amax(1, keepdim=True), 2 * SEEN_MARGIN + 1,
                                            1, SEEN_MARGIN) > 0
    assert torch.equal(out[~region.expand_as(out)], image[~region.expand_as(image)])
    assert torch.equal(mask[~region], torch.zeros_like(mask[~region]))
    assert float(mask[region].min()) > 0.99
    assert not torch.allclose(out[region.expand_as(out)], image[region.expand_as(image)],
                              atol=0.1)


def test_keep_seen_is_on_for_new_runs_and_off_for_old_options():
    opt = TrainOptions().parse(BLEND + ["--model", "rotate"])
    assert BlendGenerator.args_from_opt(opt)["keep_seen"]
    opt = TrainOptions().parse(BLEND + ["--model", "rotate", "--blend_repaints_seen"])
    assert not BlendGenerator.args_from_opt(opt)["keep_seen"]
    del opt.blend_repaints_seen  # a checkpoint's options from before the flag
    assert not BlendGenerator.args_from_opt(opt)["keep_seen"]


def test_refuses_missing_masks_and_odd_sizes():
    net = tiny()
    image, _, masks = inputs()
    with pytest.raises(ValueError, match="needs masks"):
        net(image)
    with pytest.raises(ValueError, match="divisible by 8"):
        net(image[..., :28, :28], masks=masks[..., :28, :28])
    opt = TrainOptions().parse(BLEND + ["--crop_size", "68"])
    with pytest.raises(ValueError, match="divisible by 8"):
        define_G(opt)


def read_json(path):
    with open(path) as f:
        return json.load(f)


def _pair(model):
    from torch.utils.data import default_collate

    from data import create_dataset

    ds = create_dataset(model.opt)
    batch = default_collate([ds[0], ds[1]])
    return model.make_pair(batch, torch.Generator().manual_seed(0))


def test_model_feeds_the_pair_masks_only_to_blend():
    opt = TrainOptions().parse(BLEND + ["--model", "rotate", "--dataset", "example"])
    model = create_model(opt)
    assert model.uses_masks
    pair = _pair(model)
    model.netG.eval()  # spectral norm's power iteration would change G between calls
    _, fake = model(pair, "generator")
    masks = torch.cat([pair["hidden_b"], pair["stretched"]], 1)
    assert torch.equal(fake, model.netG(pair["input"], None, masks=masks))
    out = model({"input": pair["input"], "landmarks": pair["landmarks_a"], "masks": masks},
                "inference")
    assert torch.equal(out, fake)
    with pytest.raises(ValueError, match="needs data\\['masks'\\]"):
        model({"input": pair["input"], "landmarks": pair["landmarks_a"]}, "inference")
    # The original generators are called as before (no masks argument).
    for name in ("rotate", "rotatespade"):
        spade = ["--spade_nhidden", "8"] if name == "rotatespade" else []
        opt = TrainOptions().parse(BLEND[2:] + ["--netG", name, "--model", "rotatespade",
                                                "--dataset", "example", *spade])
        model = create_model(opt)
        model.netG.eval()
        pair = _pair(model)
        assert not model.uses_masks and model.pair_masks(pair) is None
        _, fake = model(pair, "generator")
        assert torch.equal(fake, model.netG(pair["input"], pair["seg"]))


# ------------------------------------------------------------------- the shipped format
def exported(tmp_path, **kw):
    net = tiny(**kw)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    settings = {"model": "rotate", "crop_size": 32, "render_scope": "image"}
    weights, meta = export_generator(net, settings, str(tmp_path / "g"), {"iteration": 7})
    return net, weights, meta


def test_export_round_trip_in_fp16(tmp_path):
    net, weights, meta = exported(tmp_path)
    from safetensors.torch import load_file

    stored = load_file(weights)
    assert {v.dtype for v in stored.values() if v.is_floating_point()} == {torch.float16}
    record = read_json(meta)
    assert record["netG"]["name"] == "blend" and record["netG"]["args"]["ngf"] == 8
    loaded, trained_with, iteration = load_generator_file(weights)
    assert iteration == 7 and trained_with["netG"] == "blend" and trained_with["crop_size"] == 32
    assert not loaded.training
    image, _, masks = inputs()
    with torch.no_grad():
        a, b = net.eval()(image, masks=masks), loaded(image, masks=masks)
    assert (a - b).abs().max() < 2e-2  # fp16 weights
    assert load_generator_file(meta)[2] == 7  # the JSON names the model too


def _one_line(e) -> str:
    msg = str(e.value)
    assert "\n" not in msg
    return msg


def test_refuses_a_wrong_shape_or_missing_tensor(tmp_path):
    from safetensors.torch import load_file, save_file

    _, weights, meta = exported(tmp_path)
    good = load_file(weights)
    key = "head.weight"
    save_file(dict(good, **{key: torch.zeros(2, 2, dtype=torch.float16)}), weights)
    with pytest.raises(CheckpointError) as e:
        load_generator_file(weights)
    assert "different shapes: head.weight (2, 2)" in _one_line(e)
    save_file({k: v for k, v in good.items() if k != key}, weights)
    with pytest.raises(CheckpointError) as e:
        load_generator_file(weights)
    assert "missing keys: head.weight" in _one_line(e)
    os.remove(meta)
    with pytest.raises(CheckpointError) as e:
        load_generator_file(weights)
    assert "g.json not found" in _one_line(e)


def test_refuses_an_unknown_architecture(tmp_path):
    _, weights, meta = exported(tmp_path)
    record = read_json(meta)
    record["netG"]["args"]["width"] = 3
    with open(meta, "w") as f:
        json.dump(record, f)
    with pytest.raises(CheckpointError) as e:
        load_generator_file(weights)
    assert "cannot rebuild its netG" in _one_line(e)


@pytest.mark.skipif(not os.path.exists(PRETRAINED), reason="no shipped generator yet")
def test_shipped_generator_loads_and_is_small():
    weights, meta = PRETRAINED, PRETRAINED.replace(".safetensors", ".json")
    assert os.path.getsize(weights) <= 25e6
    net, trained_with, _ = load_generator_file(weights)
    assert type(net) is GENERATORS.get(trained_with["netG"])
    spec = read_json(meta)["netG"]
    assert type(rebuild(spec)) is type(net)
    size = trained_with["crop_size"]
    image, _, masks = inputs(b=1, size=size)
    assert net(image, masks=masks).shape == (1, 3, size, size)


# -------------------------------------------------------------------------- training
def _export_main():
    import importlib.util

    path = os.path.join(os.path.dirname(train.__file__), "experiments", "export_generator.py")
    spec = importlib.util.spec_from_file_location("export_generator", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main


def test_tiny_blend_run_and_init_generator(tmp_path, capsys):
    from safetensors.torch import load_file

    root = str(tmp_path)
    common = BLEND + ["--model", "rotate", "--dataset", "example", "--checkpoints_dir", root,
                      "--print_freq", "1", "--display_freq", "10", "--no_html"]
    assert train.main(common + ["--name", "a", "--max_iters", "2"]) == 0
    state = torch.load(os.path.join(root, "a", "latest.pt"), weights_only=True)
    assert state["net_specs"]["netG"]["name"] == "blend" and state["iteration"] == 2
    export = _export_main()

    out = os.path.join(root, "shipped")
    assert export([os.path.join(root, "a", "latest.pt"), out]) == 0
    assert export([os.path.join(root, "a", "latest.pt"), out]) == 2  # never replaced silently
    assert "exists; pass --overwrite" in capsys.readouterr().err
    # A new run from the shipped weights: lr 0, so G's weights stay the file's exactly.
    argv = common + ["--name", "b", "--max_iters", "1", "--lr", "0", "--ngf", "16",
                     "--init_generator", out + ".safetensors"]
    assert train.main(argv) == 0
    text = capsys.readouterr()
    assert "generator initialised from" in text.out and "discriminators are new" in text.out
    assert "--ngf 16 conflicts" in text.err  # the file's architecture wins, with a warning
    b = torch.load(os.path.join(root, "b", "latest.pt"), weights_only=True)
    shipped = load_file(out + ".safetensors")
    # (spectral norm's power-iteration vectors weight_u/_v move with every forward)
    params = [k for k in shipped if not k.endswith(("_u", "_v"))]
    assert params and all(torch.equal(b["nets"]["netG"][k].half(), shipped[k]) for k in params)
    # --continue_train with its own checkpoint: that one wins over --init_generator.
    argv = common + ["--name", "b", "--max_iters", "2", "--continue_train",
                     "--init_generator", out + ".safetensors"]
    assert train.main(argv) == 0
    assert "--init_generator" in capsys.readouterr().out
    # --continue_train without a checkpoint yet: starts from --init_generator.
    argv = common + ["--name", "c", "--max_iters", "1", "--continue_train",
                     "--init_generator", out + ".safetensors"]
    assert train.main(argv) == 0
    assert "starting G from" in capsys.readouterr().out


def test_a_files_keep_seen_is_adopted_as_its_option(tmp_path, capsys):
    """What a loaded file's net is shows in the run's options: a file without keep_seen
    (v4's) means --blend_repaints_seen, and a --blend_repaints_seen the file contradicts is
    reported and overridden."""
    from models.networks import spec_options

    assert spec_options({"kind": "generator", "name": "blend", "args": {}}) == {
        "netG": "blend", "no_blend_downsample": False, "blend_repaints_seen": True}
    net = tiny(keep_seen=True, blend_downsample=False)
    out = str(tmp_path / "keep")
    export_generator(net, {"crop_size": 64}, out, {})
    options = TrainOptions()
    opt = options.parse(BLEND + ["--model", "rotate", "--blend_repaints_seen"])
    _, trained_with, _ = load_generator_file(out + ".safetensors")
    from util.checkpoint import adopt_options

    warnings = adopt_options(opt, trained_with, options.parser)
    assert not opt.blend_repaints_seen and opt.no_blend_downsample
    assert any("--blend_repaints_seen True conflicts" in w for w in warnings)


def test_inference_feeds_the_view_masks():
    from torch.utils.data import default_collate

    from data import create_dataset
    from models.inference import rotate
    from render.settings import RenderSettings

    opt = TrainOptions().parse(BLEND + ["--model", "rotate", "--dataset", "example"])
    model = create_model(opt).eval()
    faces = default_collate([create_dataset(opt)[0]])
    views = rotate(faces, [(30.0, None)], model.mesh, RenderSettings.from_options(opt), model)
    masks = torch.cat([views["hidden"], views["stretched"]], 1)
    assert float(masks.amax()) > 0  # a turn to 30 degrees has hidden or stretched pixels
    with torch.no_grad():
        assert torch.equal(views["output"], model.netG(views["image"], None, masks=masks))


def test_runs_without_a_checkpoint_use_the_shipped_model(tmp_path, monkeypatch):
    from helpers import write_tiny_checkpoint

    from models.inference import load_generator
    from options.test_options import TestOptions

    _, weights, _ = exported(tmp_path)
    options = TestOptions()
    argv = ["--checkpoints_dir", str(tmp_path / "ck"), "--device", "cpu"]
    monkeypatch.setenv("RR_PRETRAINED", "")
    model, message = load_generator(options.parse(argv), options.parser, "cpu")
    assert model is None and "mode=render" in message
    monkeypatch.setenv("RR_PRETRAINED", weights)
    opt = options.parse(argv)
    model, message = load_generator(opt, options.parser, "cpu")
    assert model.generator_file == weights and "the shipped model" in message
    assert type(model.netG) is BlendGenerator and opt.crop_size == 32 and opt.model == "rotate"
    # a checkpoint of the user's, named by --name, wins
    write_tiny_checkpoint(tmp_path / "ck", "mine")
    opt = options.parse(argv + ["--name", "mine"])
    model, message = load_generator(opt, options.parser, "cpu")
    assert model.generator_file.endswith(os.path.join("mine", "latest.pt"))
    assert "shipped" not in message
    assert load_generator(options.parse(argv + ["--render_only"]), options.parser,
                          "cpu")[0] is None


def test_training_never_writes_into_the_shipped_folder(capsys):
    folder = os.path.dirname(PRETRAINED)
    assert train.main(BLEND + ["--model", "rotate", "--dataset", "example",
                               "--checkpoints_dir", folder, "--name", "x"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "shipped model's folder" in err and "\n" not in err
    assert not os.path.exists(os.path.join(folder, "x"))
