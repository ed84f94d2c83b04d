"""util.checkpoint.Checkpointer and face3d.fileio.atomic_write: what a checkpoint holds, that
the networks are rebuilt from the file alone, that a checkpoint from before format 2 still
loads (or is refused in one line saying how to convert it), and that writes are atomic with
the permissions a plain open() gives."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

from face3d.fileio import atomic_write
from models import create_model
from options.test_options import TestOptions
from options.train_options import TrainOptions
from trainers.trainer import Trainer
from util.checkpoint import Checkpointer, CheckpointError, rng_state, save_checkpoint

TINY = ["--ngf", "8", "--ndf", "8", "--n_blocks_G", "1", "--crop_size", "64",
        "--n_downsample_G", "2", "--num_D", "1", "--n_layers_D", "2", "--spade_nhidden", "8",
        "--no_vgg_loss", "--model", "rotatespade", "--train_rotate", "--heatmap_size", "2.5",
        "--erode_kernel", "7", "--symmetric_fill"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny model, its trainer and a format-2 checkpoint of them."""
    torch.manual_seed(0)
    opt = TrainOptions().parse(TINY)
    model = create_model(opt)
    trainer = Trainer(opt, model, torch.device("cpu"))
    folder = tmp_path_factory.mktemp("run")
    path = Checkpointer(str(folder)).save(
        "latest", trainer.nets(), trainer.optimizers, settings=model.settings(),
        options=vars(opt), iteration=7, epoch=2, epoch_iter=1, rng=rng_state())
    return opt, model, trainer, Path(path)


def raw(path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


def old_format(opt, trainer) -> dict:
    """A checkpoint as train.py wrote it before format 2: no format, net_specs or settings."""
    state = trainer.state_dict()
    state.update(iteration=3, epoch=1, epoch_iter=3, rng={"torch": torch.get_rng_state()},
                 options={k: v for k, v in vars(opt).items()
                          if isinstance(v, (int, float, str, bool, type(None)))})
    return state


# ---------------------------------------------------------------------------- contents
def test_checkpoint_holds_the_networks_constructor_arguments(trained):
    opt, model, _, path = trained
    state = raw(path)
    assert state["format"] == 2 and set(state["nets"]) == {"netG", "netD", "netD_rotate"}
    assert state["net_specs"]["netG"] == {
        "kind": "generator", "name": "rotatespade",
        "args": dict(label_nc=5, ngf=8, n_downsample_G=2, n_blocks_G=1,
                     norm_G="spectralinstance", spade_nhidden=8)}
    assert state["net_specs"]["netD"]["args"]["input_nc"] == 3 + 3 + 5  # + the landmark map
    assert state["settings"]["crop_size"] == 64 and state["settings"]["heatmap_size"] == 2.5
    assert state["settings"]["erode_kernel"] == 7 and state["settings"]["symmetric_fill"]
    assert (state["iteration"], state["epoch"], state["epoch_iter"]) == (7, 2, 1)
    assert set(state["optimizers"]) == {"G", "D"} and state["options"]["ngf"] == 8


def test_nets_are_rebuilt_from_the_file_not_the_options(trained, tmp_path):
    """The saved options are only a record: damaging them changes nothing that is rebuilt."""
    opt, model, _, path = trained
    state = raw(path)
    state["options"].update(ngf=64, netG="rotate", n_blocks_G=9)
    save_checkpoint(state, str(tmp_path / "latest.pt"))
    nets = Checkpointer.rebuild_nets(Checkpointer.load(str(tmp_path / "latest.pt")),
                                     str(tmp_path / "latest.pt"))
    for name, net in nets.items():
        mine = getattr(model, name).state_dict()
        assert {k: v.shape for k, v in net.state_dict().items()} == {
            k: v.shape for k, v in mine.items()}, name
    netG, trained_with, iteration = Checkpointer.load_generator(str(tmp_path / "latest.pt"),
                                                                "cpu")
    assert iteration == 7 and not netG.training
    for k, v in model.netG.state_dict().items():
        assert torch.equal(netG.state_dict()[k], v), k
    assert trained_with["netG"] == "rotatespade" and trained_with["ngf"] == 8
    assert trained_with["erode_kernel"] == 7 and trained_with["label_nc"] == 5


def test_inference_options_take_what_the_generator_was_trained_with(trained, capsys):
    """test.py / evaluate.py's loader: architecture, crop size, landmark-map and render
    settings come from the file; what the user typed that contradicts it gets a warning."""
    from models.inference import load_generator

    _, model, _, path = trained
    options = TestOptions()
    opt = options.parse(["--name", path.parent.name, "--checkpoints_dir", str(path.parent.parent),
                         "--model", "rotate", "--erode_kernel", "3"])
    loaded, message = load_generator(opt, options.parser, torch.device("cpu"))
    err = capsys.readouterr().err
    assert "--erode_kernel 3 conflicts with the checkpoint's erode_kernel=7" in err
    assert "--model rotate conflicts" in err
    assert (opt.model, opt.netG, opt.crop_size, opt.erode_kernel) == ("rotatespade",
                                                                      "rotatespade", 64, 7)
    assert opt.heatmap_size == 2.5 and opt.symmetric_fill and opt.batchSize == 4
    assert loaded.uses_landmarks and "iteration 7" in message
    x = torch.rand(1, 3, 64, 64) * 2 - 1
    seg = loaded.seg(torch.rand(1, 68, 2) * 64, 64)
    with torch.no_grad():
        model.netG.eval()
        assert torch.equal(loaded.netG(x, seg), model.netG(x, seg))


# ------------------------------------------------------------------------ older formats
def test_a_checkpoint_from_before_format_2_still_loads(trained, tmp_path):
    """Rebuilt from its saved options, as the code of its time did: the same architecture
    and settings that format 2 records."""
    opt, model, trainer, path = trained
    old = tmp_path / "old.pt"
    save_checkpoint(old_format(opt, trainer), str(old))
    assert "format" not in raw(old) and "net_specs" not in raw(old)
    upgraded, new = Checkpointer.load(str(old)), raw(path)
    assert upgraded["net_specs"] == new["net_specs"]
    assert upgraded["settings"] == new["settings"]
    netG, trained_with, iteration = Checkpointer.load_generator(str(old), "cpu")
    assert iteration == 3 and trained_with["crop_size"] == 64
    for k, v in model.netG.state_dict().items():
        assert torch.equal(netG.state_dict()[k], v), k
    # and a run resumes from it: the trainer takes its nets and optimisers
    nets = Checkpointer.rebuild_nets(upgraded, str(old))
    Trainer(opt, create_model(opt, nets), torch.device("cpu")).load_state_dict(upgraded,
                                                                             str(old))


def test_an_old_checkpoint_that_cannot_be_rebuilt_says_how_to_convert_it(trained, tmp_path):
    opt, _, trainer, _ = trained
    state = old_format(opt, trainer)
    del state["options"]["spade_nhidden"]
    save_checkpoint(state, str(tmp_path / "old.pt"))
    with pytest.raises(CheckpointError) as err:
        Checkpointer.load(str(tmp_path / "old.pt"))
    msg = str(err.value)
    assert "\n" not in msg and "lack 'spade_nhidden'" in msg
    assert "state['options']['spade_nhidden'] = VALUE" in msg and "torch.save" in msg


def test_a_newer_format_is_refused(trained, tmp_path):
    state = raw(trained[3])
    state["format"] = 3
    save_checkpoint(state, str(tmp_path / "new.pt"))
    with pytest.raises(CheckpointError, match="format 3; this version reads up to 2"):
        Checkpointer.load(str(tmp_path / "new.pt"))


# ------------------------------------------------------------------------ atomic writes
def test_an_interrupted_checkpoint_write_keeps_the_previous_file(trained, tmp_path,
                                                                monkeypatch):
    """torch.save dying half-way (disk full, Ctrl-C) must leave the last good checkpoint
    in place and no temp file: a save that wrote in place would leave a truncated file."""
    opt, model, trainer, _ = trained
    checkpointer = Checkpointer(str(tmp_path))

    def save(iteration):
        return checkpointer.save("latest", trainer.nets(), trainer.optimizers,
                                 settings=model.settings(), options=vars(opt),
                                 iteration=iteration, epoch=1, epoch_iter=0, rng=rng_state())

    path = save(1)
    before = Path(path).read_bytes()
    real_save = torch.save

    for error in (OSError("No space left on device"), KeyboardInterrupt()):
        def dies_half_way(obj, f, *args, error=error, **kwargs):
            real_save(obj, f, *args, **kwargs)
            f.truncate(f.tell() // 2)  # half of it reached the disk
            raise error

        monkeypatch.setattr(torch, "save", dies_half_way)
        with pytest.raises(type(error)):
            save(2)
        monkeypatch.setattr(torch, "save", real_save)
        assert Path(path).read_bytes() == before
        assert Checkpointer.load(path)["iteration"] == 1
        assert sorted(os.listdir(tmp_path)) == ["latest.pt"]  # no temp file left behind


def test_atomic_write_replaces_only_on_success(tmp_path):
    target = tmp_path / "sub" / "list.txt"
    with atomic_write(target) as f:
        f.write("one\n")
    with pytest.raises(RuntimeError), atomic_write(target) as f:
        f.write("two\n")
        raise RuntimeError("interrupted")
    assert target.read_text() == "one\n" and os.listdir(target.parent) == ["list.txt"]


@pytest.mark.parametrize("umask", [0o022, 0o027, 0o077], ids=["022", "027", "077"])
def test_written_files_get_the_mode_a_plain_open_gives(trained, tmp_path, umask):
    """One permission policy: checkpoints, fit files, options and lists all come out as
    open(path, "w") would make them (0o666 less the umask), not mkstemp's private 0o600."""
    from face3d.fit import Fit
    from options.base_options import save_options

    opt, model, trainer, _ = trained
    previous = os.umask(umask)
    try:
        with open(tmp_path / "plain.txt", "w") as f:
            f.write("x")
        with atomic_write(tmp_path / "list.txt") as f:
            f.write("x")
        ckpt = Checkpointer(str(tmp_path)).save(
            "latest", trainer.nets(), trainer.optimizers, settings=model.settings(),
            options=vars(opt), iteration=1, epoch=1, epoch_iter=0, rng=rng_state())
        fit = Fit(vertices=np.zeros((468, 3)), iris=np.zeros((10, 3)),
                  landmarks68=np.zeros((68, 2)), landmarks5=np.zeros((5, 2)),
                  rotation=np.eye(3), scale=1.0, translation=np.zeros(3), yaw=0.0, pitch=0.0,
                  roll=0.0, image_size=(64, 64))
        fit.save(tmp_path / "fits" / "a.npz")
        save_options(opt, str(tmp_path / "opts"))
    finally:
        os.umask(previous)
    expected = os.stat(tmp_path / "plain.txt").st_mode & 0o777
    assert expected == 0o666 & ~umask
    for written in (tmp_path / "list.txt", Path(ckpt), tmp_path / "fits" / "a.npz",
                    tmp_path / "opts" / "opt.txt", tmp_path / "opts" / "opt.json"):
        assert os.stat(written).st_mode & 0o777 == expected, written


@pytest.mark.parametrize("make, needle", [
    (lambda p: p.write_bytes(b""), "is empty (0 bytes)"),
    (lambda p: p.mkdir(), "is a folder"),
    (lambda p: p.write_bytes(b"\x00garbage"), "corrupt or unreadable checkpoint"),
    (lambda p: torch.save(torch.zeros(3), p), "not a Rotate-and-Render checkpoint"),
])
def test_damaged_checkpoints_give_one_line(make, needle, tmp_path):
    from util.checkpoint import load_checkpoint

    path = tmp_path / "latest.pt"
    make(path)
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(str(path))
    message = str(info.value)
    assert needle in message and str(path) in message and "\n" not in message
    assert "weights_only" not in message  # never torch's advice to turn the check off


def test_a_pickled_object_is_refused_for_safety(tmp_path):
    """A checkpoint holding an arbitrary Python object is not loaded, and the message says
    why instead of echoing torch's hint to load it with weights_only=False."""
    import argparse

    from util.checkpoint import load_checkpoint

    class Payload:  # what a malicious file does: call a function when unpickled
        def __reduce__(self):
            return os.system, ("echo this must not run",)

    path = tmp_path / "latest.pt"
    for payload, name in [(argparse.Namespace(lr=1), "argparse.Namespace"),
                          (Payload(), "system")]:
        torch.save({"nets": {}, "opt": payload}, path)
        with pytest.raises(CheckpointError) as info:
            load_checkpoint(str(path))
        message = str(info.value)
        assert "refused for safety" in message and name in message
        assert "weights_only" not in message and "\n" not in message


def test_nothing_is_inside_pretrained_but_pretrained(tmp_path):
    from util.checkpoint import PRETRAINED, inside_pretrained

    folder = os.path.dirname(PRETRAINED)
    assert inside_pretrained(folder) and inside_pretrained(os.path.join(folder, "x", "y.png"))
    assert inside_pretrained(os.path.join(folder, "..", "pretrained"))
    assert not inside_pretrained(folder + "_copy") and not inside_pretrained(str(tmp_path))
    link = tmp_path / "link"
    link.symlink_to(folder)
    assert inside_pretrained(str(link / "out"))  # through a symlink too
