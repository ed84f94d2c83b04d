"""Training end to end on CPU with tiny networks: the CLI, everything a run writes, exact
resume, DDP replicas, Ctrl-C, clear errors for bad input, and that G actually learns.

All runs use the built-in 'example' dataset (two public-domain portraits, fitted into
datasets/example/ on first use) and one torch thread (the machines these run on are small
and shared; two threads contending for two busy cores are many times slower)."""

from __future__ import annotations

import json
import os
import signal
import socket
import struct
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import assert_same_state

import train
from data import ResumableSampler, create_dataloader, create_dataset
from models import create_model
from models.landmark_map import gaussian_blur, label_mask, landmark_map
from options.base_options import RETIRED_FLAGS
from options.train_options import TrainOptions, bf16_supported
from render.cuda_graph import CudaGraphed
from trainers.trainer import Trainer

REPO = Path(__file__).resolve().parents[1]
TINY = ["--ngf", "8", "--ndf", "8", "--n_blocks_G", "1", "--crop_size", "64",
        "--n_downsample_G", "2", "--num_D", "1", "--n_layers_D", "2", "--nThreads", "0",
        "--batchSize", "2"]
SPADE = ["--model", "rotatespade", "--spade_nhidden", "8"]


pytestmark = pytest.mark.usefixtures("one_thread")


def run_args(tmp_path, name="run", *extra):
    return TINY + ["--name", name, "--checkpoints_dir", str(tmp_path)] + list(extra)


def child_env(**extra):
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1", **extra)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    return env


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def load(path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


def event_tags(log_dir: Path) -> dict[str, str]:
    """tag -> 'scalar' | 'image' from the tensorboard event files (TFRecord framing:
    u64 length, u32 crc, payload, u32 crc)."""
    from tensorboardX.proto import event_pb2

    tags = {}
    for path in log_dir.glob("events.out.tfevents.*"):
        data = path.read_bytes()
        pos = 0
        while pos < len(data):
            (n,) = struct.unpack("<Q", data[pos:pos + 8])
            event = event_pb2.Event.FromString(data[pos + 12:pos + 12 + n])
            pos += 16 + n
            for v in event.summary.value:
                tags[v.tag] = "image" if v.HasField("image") else "scalar"
    return tags


def assert_one_line_error(err: str, *needles: str):
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    for n in needles:
        assert n in lines[0], (n, lines[0])


# ------------------------------------------------------------------------------ end to end
@pytest.mark.parametrize("model_args", [["--model", "rotate"],
                                        SPADE + ["--train_rotate", "--label_mask"]],
                         ids=["rotate", "rotatespade"])
def test_three_iterations_write_everything(tmp_path, capsys, model_args):
    argv = run_args(tmp_path, "e2e", *model_args, "--no_vgg_loss", "--max_iters", "3",
                    "--print_freq", "1", "--display_freq", "2")
    assert train.main(argv) == 0
    out = capsys.readouterr().out
    run = tmp_path / "e2e"
    # The console names the run's folder first and leaves the options to opt.txt.
    assert out.startswith(f"run e2e: writing to {run}{os.sep}\n")
    assert "Options ---" not in out and "stopped at epoch 3, iteration 3" in out

    # options, readable and machine-readable
    assert "crop_size: 64" in (run / "opt.txt").read_text().replace("  ", "")
    saved = json.loads((run / "opt.json").read_text())
    assert saved["crop_size"] == 64 and saved["model"] == model_args[1]

    # one checkpoint holding everything
    state = load(run / "latest.pt")
    nets = {"netG", "netD"} | ({"netD_rotate"} if "--train_rotate" in model_args else set())
    assert set(state["nets"]) == nets
    assert set(state["optimizers"]) == {"G", "D"}
    assert (state["iteration"], state["epoch"], state["epoch_iter"]) == (3, 3, 1)
    assert state["options"]["model"] == model_args[1]
    assert {"torch", "numpy", "python", "ranks"} <= set(state["rng"])
    assert not list(run.glob(".tmp_*"))  # atomic writes leave no temp files

    # finite losses every iteration, in the log
    lines = (run / "loss_log.txt").read_text().splitlines()
    values = [float(tok) for line in lines if line.startswith("(epoch")
              for tok in line.split()[5::2]]
    assert len([line for line in lines if line.startswith("(epoch")]) == 3
    assert values and np.isfinite(values).all()

    # tensorboard: every loss, learning rates, speed, image grids
    tags = event_tags(run / "logs")
    losses = ["G_GAN", "G_GAN_Feat", "D_fake", "D_real"]
    if "--train_rotate" in model_args:
        losses += ["G_rotate_GAN", "D_rotate_fake", "D_rotate_real"]
    for tag in [f"loss/{k}" for k in losses] + ["lr/G", "lr/D", "speed/images_per_s",
                                                  "speed/render_s", "speed/step_s"]:
        assert tags.get(tag) == "scalar", tag
    for name in ("input", "rotated", "output", "real"):
        assert tags.get(f"images/{name}") == "image"

    # HTML page: one row per display step (iterations 1 and 2), every image on disk
    page = (run / "web" / "index.html").read_text()
    srcs = [s.split('"')[0] for s in page.split('src="')[1:]]
    assert len(srcs) == 8
    for src in srcs:
        assert (run / "web" / src).is_file(), src


@pytest.mark.slow
def test_cli_subprocess_ctrl_c_saves_and_exits_cleanly(tmp_path):
    """A real `python train.py` process (with two DataLoader workers) without an iteration
    limit; Ctrl-C -- SIGINT to the whole process group, as a terminal sends it -- after the
    first logged step must save latest.pt and exit with status 0."""
    argv = [sys.executable, str(REPO / "train.py")] + run_args(
        tmp_path, "sig", "--no_vgg_loss", "--batchSize", "1", "--print_freq", "1",
        "--save_latest_freq", "100000", "--nThreads", "2")
    proc = subprocess.Popen(argv, cwd=tmp_path, env=child_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    log = tmp_path / "sig" / "loss_log.txt"
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None:
            if log.exists() and "(epoch" in log.read_text():
                break
            time.sleep(0.2)
        assert proc.poll() is None, proc.communicate()
        os.killpg(proc.pid, signal.SIGINT)
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    assert "SIGINT: saving latest.pt" in err and "Traceback" not in err
    state = load(tmp_path / "sig" / "latest.pt")
    assert state["iteration"] >= 1
    assert f"iteration {state['iteration']};" in out


def test_stop_flag_restores_handlers_and_skips_threads():
    before = signal.getsignal(signal.SIGINT)
    with train.StopFlag() as flag:
        assert signal.getsignal(signal.SIGINT) == flag._handle
        flag._handle(signal.SIGINT, None)
        assert flag.stop
        with pytest.raises(KeyboardInterrupt):  # a second Ctrl-C aborts
            flag._handle(signal.SIGINT, None)
    assert signal.getsignal(signal.SIGINT) is before
    relaxed = train.StopFlag(abort_on_second=False)  # under torchrun
    relaxed._handle(signal.SIGTERM, None)
    relaxed._handle(signal.SIGINT, None)
    assert relaxed.stop

    import threading

    seen = {}

    def worker():
        with train.StopFlag() as f:  # must not raise outside the main thread
            seen["ok"] = not f.stop

    t = threading.Thread(target=worker)
    t.start()
    t.join()
    assert seen == {"ok": True}


# --------------------------------------------------------------------------- exact resume
RESUME = SPADE + ["--no_vgg_loss", "--batchSize", "1", "--train_rotate", "--pose_noise",
                  "--label_mask", "--niter", "1", "--niter_decay", "2", "--save_epoch_freq", "1"]


@pytest.fixture(scope="module")
def straight_run(tmp_path_factory):
    """5 iterations in one go (batch 1, two photos: two iterations per epoch)."""
    root = tmp_path_factory.mktemp("straight")
    with torch.random.fork_rng():
        assert train.main(run_args(root, "straight", *RESUME, "--max_iters", "5")) == 0
    return load(root / "straight" / "latest.pt")


@pytest.mark.parametrize("first,threads", [(2, 0), (3, 0), (3, 2)],
                         ids=["epoch-boundary", "mid-epoch", "mid-epoch-2-workers"])
def test_resume_is_exact(tmp_path, capsys, straight_run, first, threads):
    """5 iterations straight == `first` iterations, then --continue_train to 5."""
    common = RESUME + ["--nThreads", str(threads)]
    assert train.main(run_args(tmp_path, "split", *common, "--max_iters", str(first))) == 0
    assert load(tmp_path / "split" / "latest.pt")["iteration"] == first
    assert train.main(run_args(tmp_path, "split", *common, "--max_iters", "5",
                               "--continue_train")) == 0
    assert f"resumed from {tmp_path / 'split' / 'latest.pt'}" in capsys.readouterr().out
    resumed = load(tmp_path / "split" / "latest.pt")
    for key in ("nets", "optimizers", "iteration", "epoch", "epoch_iter"):
        assert_same_state(straight_run[key], resumed[key], key, exact=False)
    # the learning-rate schedule went on where it was: epoch 3 runs at half the rate
    assert (resumed["epoch"], resumed["epoch_iter"]) == (3, 1)
    lr_g = resumed["optimizers"]["G"]["param_groups"][0]["lr"]
    assert lr_g == pytest.approx(0.0002 / 2 * 0.5)
    # the epoch checkpoints of both halves are there
    assert {p.name for p in (tmp_path / "split").glob("*.pt")} == {"1.pt", "2.pt", "latest.pt"}
    # the HTML page keeps the first half's images (each run shows its first iteration)
    page = (tmp_path / "split" / "web" / "index.html").read_text()
    assert "iter00000001_real.png" in page and f"iter{first + 1:08d}_real.png" in page


FAST = ["--reuse_fake"] + (["--bf16"] if bf16_supported("cpu") else [])


def test_resume_is_exact_with_the_fast_cpu_step(tmp_path, capsys):
    """--reuse_fake (and --bf16 where the CPU has it) keep resume exact: 4 iterations
    straight == 2, then --continue_train to 4."""
    common = RESUME + FAST
    assert train.main(run_args(tmp_path, "straight", *common, "--max_iters", "4")) == 0
    assert train.main(run_args(tmp_path, "split", *common, "--max_iters", "2")) == 0
    assert train.main(run_args(tmp_path, "split", *common, "--max_iters", "4",
                               "--continue_train")) == 0
    straight, resumed = load(tmp_path / "straight" / "latest.pt"), load(
        tmp_path / "split" / "latest.pt")
    for key in ("nets", "optimizers", "iteration"):
        assert_same_state(straight[key], resumed[key], key, exact=False)
    assert resumed["options"]["reuse_fake"] and resumed["options"]["bf16"] == ("--bf16" in FAST)


@pytest.mark.parametrize("rotate", [False, True], ids=["pair", "pair+rotated"])
@pytest.mark.parametrize("reuse", [False, True], ids=["spade", "reuse_fake"])
def test_reuse_fake_saves_the_d_steps_generator_pass(rotate, reuse):
    """SPADE's step runs G again for the D step; --reuse_fake's D step scores the G step's
    own output, so G runs once per view (pair, and rotated with --train_rotate)."""
    torch.manual_seed(0)
    opt = TrainOptions().parse(TINY + SPADE + ["--no_vgg_loss"]
                               + (["--train_rotate"] if rotate else [])
                               + (["--reuse_fake"] if reuse else []))
    model = create_model(opt)
    trainer = Trainer(opt, model, torch.device("cpu"))
    pair = model.make_pair(next(iter(create_dataloader(opt))), torch.Generator().manual_seed(0))
    calls = []
    hook = model.netG.register_forward_hook(lambda *_: calls.append(torch.is_grad_enabled()))
    values, fake = trainer.step(pair)
    hook.remove()
    views = 2 if rotate else 1
    # the G step's passes need gradients; SPADE's D step adds a no-grad pass per view
    assert calls == [True] * views + ([] if reuse else [False] * views)
    assert {"D_fake", "D_real"} <= set(values) and np.isfinite(list(values.values())).all()
    assert fake.shape == pair["real"].shape and fake.dtype == torch.float32


def test_bf16_is_refused_on_a_cpu_without_it(tmp_path, capsys, monkeypatch):
    # An AVX512 CPU without AVX512-BF16 or AMX (Skylake-SP, Cascade Lake): oneDNN would run
    # bf16 there, emulated; the flag is refused.
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False)
    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: True)
    assert not bf16_supported("cpu")
    assert train.main(run_args(tmp_path, "bf16", "--no_vgg_loss", "--bf16",
                               "--device", "cpu")) == 2
    assert_one_line_error(capsys.readouterr().err, "--bf16", "no native bfloat16")
    assert not (tmp_path / "bf16").exists()
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: True)
    assert bf16_supported("cpu")


def test_learning_rate_schedule():
    opt = TrainOptions().parse(TINY + ["--model", "rotate", "--niter", "2", "--niter_decay",
                                       "4", "--no_vgg_loss"])
    trainer = Trainer(opt, create_model(opt), torch.device("cpu"))
    factors = [trainer.lr_factor(e) for e in range(1, 7)]
    assert factors == [1, 1, 1, 0.75, 0.5, 0.25]
    assert trainer.update_learning_rate(5) == pytest.approx(0.0002 / 2 * 0.5)  # TTUR: G lr/2
    assert trainer.learning_rates()["D"] == pytest.approx(0.0002 * 2 * 0.5)


# ----------------------------------------------------------------------------------- DDP
@pytest.mark.slow
def test_ddp_two_processes_keep_identical_weights(tmp_path):
    hashes = tmp_path / "hashes"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
           "--master_port", str(free_port()), str(REPO / "train.py")] + run_args(
        tmp_path, "ddp", *SPADE, "--no_vgg_loss", "--batchSize", "1", "--max_iters", "3",
        "--train_rotate")
    res = subprocess.run(cmd, cwd=tmp_path, env=child_env(**{train.HASH_ENV: str(hashes)}),
                         capture_output=True, text=True, timeout=240)
    assert res.returncode == 0, res.stderr[-3000:]
    r0 = json.loads((hashes / "rank0.json").read_text())
    r1 = json.loads((hashes / "rank1.json").read_text())
    assert r0["iteration"] == r1["iteration"] == 3
    assert set(r0) == {"iteration", "netG", "netD", "netD_rotate"}
    assert r0 == r1
    assert "2 process(es) on cpu" in res.stdout
    assert res.stdout.count("run ddp: writing to") == 1  # only rank 0 prints / logs
    assert res.stderr.count("train: 100%") == 1 and "Traceback" not in res.stderr  # one bar
    state = load(tmp_path / "ddp" / "latest.pt")
    assert state["iteration"] == 3 and len(state["rng"]["ranks"]) == 2
    assert len(list((tmp_path / "ddp" / "logs").iterdir())) == 1


def test_resumable_sampler_shards_and_skips():
    data = list(range(7))
    shards = [list(ResumableSampler(data, 2, r, shuffle=True, seed=3)) for r in range(2)]
    assert len(shards[0]) == len(shards[1]) == 4  # padded to equal length
    assert set(shards[0] + shards[1]) == set(data)
    s = ResumableSampler(data, 2, 1, shuffle=True, seed=3)
    s.set_start(2)
    assert list(s) == shards[1][2:] and len(s) == 2
    s.set_epoch(1)
    s.set_start(0)
    assert list(s) != shards[1]  # reshuffled per epoch


# ------------------------------------------------------------------------------ bad input
@pytest.mark.parametrize("args,needles", [
    (["--dataset", "nosuch"], ["unknown --dataset 'nosuch'", "example", "lfw", "--dataroot"]),
    (["--dataset", "example,nosuch"], ["unknown --dataset 'nosuch'"]),
    (["--dataroot", "/nonexistent/photos"], ["image folder not found", "/nonexistent/photos"]),
    (["--model", "pix2pix"], ["unknown --model 'pix2pix'", "rotate, rotatespade"]),
    (["--netG", "unet"], ["unknown --netG 'unet'", "rotate, rotatespade"]),
    (["--gpu_ids", "0,1"], ["--gpu_ids is no longer used", "torchrun", "--device"]),
    (["--render_thread", "2"], ["--render_thread is no longer used"]),
    (["--crop_size", "66"], ["--crop_size 66 must be divisible"]),
], ids=["dataset", "dataset-list", "dataroot", "model", "netG", "gpu_ids", "render_thread",
        "crop"])
def test_bad_input_exits_2_with_one_line(tmp_path, capsys, args, needles):
    assert train.main(run_args(tmp_path, "bad", "--no_vgg_loss", *args)) == 2
    assert_one_line_error(capsys.readouterr().err, *needles)


def test_every_retired_flag_names_its_replacement(tmp_path, capsys):
    for flag in RETIRED_FLAGS:
        assert train.main(run_args(tmp_path, "x", f"{flag}=1")) == 2
        assert_one_line_error(capsys.readouterr().err, flag, RETIRED_FLAGS[flag])


def test_missing_vgg_weights(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    assert train.main(run_args(tmp_path, "vgg", "--max_iters", "1")) == 2
    assert_one_line_error(capsys.readouterr().err, "vgg19-dcbb9e9d.pth",
                          str(tmp_path / "torch_home"), "--no_vgg_loss", "--vgg_weights")
    assert train.main(run_args(tmp_path, "vgg", "--vgg_weights", str(tmp_path / "no.pth"))) == 2
    assert_one_line_error(capsys.readouterr().err, str(tmp_path / "no.pth"), "--no_vgg_loss")


@pytest.fixture(scope="session")
def vgg_weights(tmp_path_factory) -> Path:
    """Random weights (80 MB, written once per session) laid out by torchvision's own VGG19
    code, not ours: its 'features' stack, plus a classifier entry as in the real file."""
    from torchvision.models.vgg import cfgs, make_layers

    from models.networks.architecture import vgg19_weights_filename

    torch.manual_seed(1234)
    state = {f"features.{k}": v for k, v in make_layers(cfgs["E"]).state_dict().items()}
    state["classifier.6.bias"] = torch.zeros(1000)
    path = tmp_path_factory.mktemp("vgg") / vgg19_weights_filename()
    torch.save(state, path)
    return path


def test_vgg_weights_are_the_ones_the_loss_uses(vgg_weights):
    """--vgg_weights is really loaded: the model's perceptual-loss net holds exactly the
    file's tensors, every one up to relu5_1 (features 0-29; the later convs and the
    classifier are not used by the loss)."""
    opt = TrainOptions().parse(TINY + ["--model", "rotate", "--vgg_weights", str(vgg_weights)])
    vgg = create_model(opt).criterion_vgg.vgg
    held = {}
    for key, value in vgg.state_dict().items():
        _, _, layer, param = key.split(".")  # slices.<slice>.<index in features>.<param>
        held[f"features.{layer}.{param}"] = value
    saved = load(vgg_weights)
    assert set(held) == {k for k in saved
                         if k.startswith("features.") and int(k.split(".")[1]) < 30}
    for key, value in held.items():
        assert torch.equal(value, saved[key]), key


def test_vgg_loss_trains_with_weights_file(tmp_path, capsys, vgg_weights):
    argv = run_args(tmp_path, "vgg", "--model", "rotate", "--vgg_weights", str(vgg_weights),
                    "--max_iters", "1")
    assert train.main(argv) == 0
    line = (tmp_path / "vgg" / "loss_log.txt").read_text().splitlines()[-1]
    assert "G_VGG:" in line
    assert np.isfinite(float(line.split("G_VGG:")[1].split()[0]))


def test_corrupt_checkpoint(tmp_path, capsys):
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "latest.pt").write_bytes(b"not a checkpoint at all")
    assert train.main(run_args(tmp_path, "bad", "--model", "rotate", "--no_vgg_loss",
                               "--continue_train")) == 2
    assert_one_line_error(capsys.readouterr().err, "--continue_train",
                          str(tmp_path / "bad" / "latest.pt"))


def test_missing_checkpoint(tmp_path, capsys):
    assert train.main(run_args(tmp_path, "none", "--model", "rotate", "--no_vgg_loss",
                               "--continue_train", "--which_epoch", "7")) == 2
    assert_one_line_error(capsys.readouterr().err, "checkpoint not found",
                          str(tmp_path / "none" / "7.pt"))


def test_mismatched_checkpoint_names_the_keys(tmp_path, capsys):
    base = ["--model", "rotate", "--no_vgg_loss", "--max_iters", "1"]
    assert train.main(run_args(tmp_path, "m", *base)) == 0
    capsys.readouterr()
    # --continue_train adopts the saved architecture, so damage the file's weights instead.
    path = tmp_path / "m" / "latest.pt"
    state = load(path)
    first = next(k for k, v in state["nets"]["netG"].items() if v.dim() == 4)
    original = state["nets"]["netG"][first]
    state["nets"]["netG"][first] = torch.zeros(1, 1, 1, 1)
    torch.save(state, path)
    assert train.main(run_args(tmp_path, "m", *base, "--continue_train")) == 2
    err = capsys.readouterr().err
    assert_one_line_error(err, "netG does not match this model", "different shapes", first,
                          " vs ", "--ngf")
    state["nets"]["netG"][first] = original
    torch.save(state, path)
    # trained without --train_rotate, resumed with it
    assert train.main(run_args(tmp_path, "m", *base, "--train_rotate", "--continue_train")) == 2
    assert_one_line_error(capsys.readouterr().err, "has no netD_rotate", "--train_rotate")


# --------------------------------------------------------------------------------- options
def test_every_flag_has_help_and_original_names_exist():
    options = TrainOptions()
    options.parse(TINY + SPADE)
    actions = [a for a in options.parser._actions if a.dest != "help"]
    missing = [a.dest for a in actions if not a.help]
    assert not missing
    dests = {a.dest for a in actions}
    original = {
        "name", "model", "netG", "ngf", "ndf", "norm_G", "norm_D", "label_nc", "crop_size",
        "batchSize", "lr", "beta1", "beta2", "no_TTUR", "niter", "niter_decay",
        "D_steps_per_G", "gan_mode", "lambda_feat", "lambda_vgg", "no_vgg_loss",
        "no_ganFeat_loss", "train_rotate", "lambda_D", "lambda_rotate_D", "heatmap_size",
        "no_gaussian_landmark", "label_mask", "erode_kernel", "pose_noise", "large_pose",
        "continue_train", "which_epoch", "checkpoints_dir", "dataset", "dataset_mode",
        "nThreads", "display_freq", "print_freq", "save_latest_freq", "save_epoch_freq"}
    assert original - dests == set()


# ------------------------------------------------------------------------------------ data
def test_comma_separated_datasets_concatenate(monkeypatch):
    from data import registry
    from util.registry import Registry

    extended = Registry("dataset", flag="--dataset")
    again = ("example_again", registry.DATASETS.get("example"))
    for name, entry in [*registry.DATASETS.items(), again]:
        extended.register(name, entry)
    monkeypatch.setattr(registry, "DATASETS", extended)
    opt = TrainOptions().parse(TINY + SPADE + ["--dataset", "example, example_again,example",
                                               "--no_vgg_loss"])
    dataset = create_dataset(opt)
    assert len(dataset) == 4  # repeats dropped, the two names concatenated
    batch = next(iter(create_dataloader(opt)))
    assert batch["image"].shape == (2, 3, 64, 64)


def test_dataroot_folder_is_fitted_on_first_use(tmp_path, capsys):
    from face3d.examples import materialize_examples

    photos = tmp_path / "photos"
    materialize_examples(str(photos / "sub"))
    (photos / "sub" / "file_list.txt").unlink()
    argv = run_args(tmp_path, "adhoc", "--model", "rotate", "--no_vgg_loss", "--dataroot",
                    str(photos), "--max_iters", "1")
    assert train.main(argv) == 0
    assert "fitting 2 photos" in capsys.readouterr().out
    assert (photos / "fits" / "realign_lmk").is_file()
    assert train.main(argv + ["--name", "again"]) == 0  # the fits are reused
    assert "fitting" not in capsys.readouterr().out
    empty = tmp_path / "empty"
    empty.mkdir()
    assert train.main(run_args(tmp_path, "e", "--model", "rotate", "--no_vgg_loss",
                               "--dataroot", str(empty))) == 2
    assert_one_line_error(capsys.readouterr().err, "no photos", str(empty))

    # A photo that breaks after preparation is skipped with one line; the run goes on.
    opt = TrainOptions().parse(TINY + ["--dataroot", str(photos), "--no_vgg_loss"])
    dataset = create_dataset(opt)
    (photos / dataset.relpaths[0]).write_bytes(b"broken")
    item = dataset[0]
    assert item["path"] == dataset.relpaths[1]
    err = capsys.readouterr().err
    assert "skipping " + dataset.relpaths[0] in err and len(err.strip().splitlines()) == 1


def test_lfw_works_out_of_the_box(lfw_dir):
    opt = TrainOptions().parse(TINY + SPADE + ["--dataset", "lfw", "--max_dataset_size", "2",
                                               "--no_vgg_loss"])
    dataset = create_dataset(opt)
    assert len(dataset) <= 2 and len(dataset) >= 1
    item = dataset[0]
    assert item["image"].shape == (3, 64, 64) and "/" in item["path"]


def test_label_mask_region():
    lm = torch.zeros(1, 68, 2)
    lm[0, 7:10] = torch.tensor([[20.0, 50], [32, 54], [44, 50]])   # chin
    lm[0, 31:36] = torch.tensor([[26.0, 36], [29, 37], [32, 38], [35, 37], [38, 36]])
    lm[0, :7] = lm[0, 10:31] = lm[0, 36:] = 5.0
    m = label_mask(lm, 64, radius=3.0)[0, 0]
    assert m.shape == (64, 64) and m.dtype == torch.bool
    assert m[54, 32] and m[38, 32] and m[52, 32]
    assert not m[45, 32] and not m[10, 10] and not m[60, 5]
    assert label_mask(lm, 64, radius=6.0).sum() > m.sum()


@pytest.mark.parametrize("shape,sigma", [((2, 5, 64, 48), 3.0), ((1, 2, 40, 40), 1.5),
                                         ((1, 1, 30, 31), 0.7), ((1, 1, 9, 7), 3.0),
                                         ((1, 1, 1, 5), 2.0)])
def test_gaussian_blur_matches_opencv(shape, sigma):
    """The GPU path of the landmark maps blurs as OpenCV does on the CPU, including kernels
    wider than the image (reflect-101 border)."""
    import cv2

    x = torch.rand(shape, generator=torch.Generator().manual_seed(0))
    ref = np.stack([[cv2.GaussianBlur(c.numpy(), (0, 0), sigma) for c in im] for im in x])
    assert np.abs(gaussian_blur(x, sigma).numpy() - ref).max() < 1e-6


def _face_landmarks(size):
    t = np.linspace(0, 1, 68)
    return torch.from_numpy(np.stack([0.2 + 0.6 * t, 0.5 + 0.3 * np.sin(6 * t)], 1)
                            * size).float()[None]


def test_landmark_map_parts_and_blur():
    lm = _face_landmarks(64)
    maps = landmark_map(lm, 64)
    assert maps.shape == (1, 5, 64, 64) and maps.dtype == torch.float32
    assert torch.allclose(maps.amax(dim=(2, 3)), torch.ones(1, 5))
    x, y = lm[0, 8].round().long().tolist()   # a jaw point: in the jaw channel only
    assert maps[0, 0, y, x] > 0.5 and maps[0, 4, y, x] < 0.01
    hard = landmark_map(lm, 64, gaussian=False)
    assert (hard > 0).sum() < (maps > 0.01).sum() / 3          # the blur widens the curves
    merged = landmark_map(lm, 64, label_nc=1, gaussian=False)
    assert merged.shape == (1, 1, 64, 64)
    assert torch.equal(merged[0, 0] > 0, (hard[0] > 0).any(0))
    with pytest.raises(ValueError, match="label_nc"):
        landmark_map(lm, 64, label_nc=3)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA not available")
def test_landmark_map_cuda_matches_cpu():
    lm = _face_landmarks(256).expand(3, -1, -1)
    cpu = landmark_map(lm, 256)
    cuda = landmark_map(lm.cuda(), 256)
    assert cuda.device.type == "cuda"
    assert (cuda.cpu() - cpu).abs().max() < 1e-5


# -------------------------------------------------------------------------------- learning
def test_generator_learns_a_fixed_batch():
    """On one fixed batch, G's L1 to the real photos halves within a few hundred Adam steps
    (no GAN, no VGG: the model's own generator loss with --lambda_l1 1 --lambda_D 0)."""
    torch.manual_seed(0)
    opt = TrainOptions().parse(TINY + ["--model", "rotate", "--lambda_l1", "1", "--lambda_D",
                                       "0", "--no_ganFeat_loss", "--no_vgg_loss",
                                       "--serial_batches"])
    model = create_model(opt)
    pair = model.make_pair(next(iter(create_dataloader(opt))), torch.Generator().manual_seed(0))
    optimizer = torch.optim.Adam(model.netG.parameters(), lr=2e-3, betas=(0.5, 0.999))
    history = []
    for _ in range(400):
        optimizer.zero_grad()
        losses, _ = model(pair, "generator")
        assert set(losses) == {"G_GAN", "G_L1"} and losses["G_GAN"].detach().item() == 0.0
        losses["G_L1"].backward()
        optimizer.step()
        history.append(losses["G_L1"].detach().item())
        if history[-1] < 0.5 * history[0]:
            break
    assert history[-1] < 0.5 * history[0], (history[0], history[-1], len(history))


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(
    not torch.cuda.is_available(), reason="CUDA not available"))])
def test_render_graph_gives_the_same_pairs(device):
    """On CUDA the pair render is replayed as a CUDA graph unless --no_render_graph: the
    pairs must be exactly those of the eager render, call after call.

    On the CPU there is no graph: the flag is ignored and both models render eagerly (that
    is checked), so there the equality shows only what resume relies on -- two separately
    built models give the same pairs for the same batch and pose seed. Other seeds must give
    other pairs, or the comparison could not fail."""
    base = TINY + ["--model", "rotatespade", "--serial_batches", "--no_vgg_loss", "--device",
                   device]
    batch = next(iter(create_dataloader(TrainOptions().parse(base))))
    pairs = {}
    for flag in (["--no_render_graph"], []):
        opt = TrainOptions().parse(base + flag)
        assert opt.no_render_graph == bool(flag)
        model = create_model(opt).to(device)
        renderer = model._pair_renderer(torch.device(device))
        assert isinstance(renderer, CudaGraphed) == (device == "cuda" and not flag)
        pairs[not flag] = [model.make_pair(batch, torch.Generator().manual_seed(k))
                           for k in range(3)]
    assert model.mesh_on(torch.device(device)) is model.mesh_on(torch.device(device))
    assert model.mesh.triangles.device.type == device
    for eager, graphed in zip(pairs[False], pairs[True]):
        for k, v in eager.items():
            if isinstance(v, torch.Tensor):
                assert torch.equal(v, graphed[k]), k
    for k in ("rotated", "input"):
        assert not torch.equal(pairs[False][0][k], pairs[False][1][k]), k


def test_eval_freq_logs_held_out_scores(tmp_path):
    argv = run_args(tmp_path, "ev", "--model", "rotate", "--no_vgg_loss", "--max_iters", "2",
                    "--eval_freq", "2", "--eval_photos", "example", "--eval_size", "2")
    assert train.main(argv) == 0
    tags = event_tags(tmp_path / "ev" / "logs")
    for key in ("eval/recon_psnr_mask", "eval/recon_psnr_mask_input", "eval/pose_err"):
        assert tags.get(key) == "scalar", sorted(tags)


def test_continue_train_takes_the_architecture_from_the_checkpoint(tmp_path, capsys):
    argv = run_args(tmp_path, "arch", "--model", "rotate", "--no_vgg_loss", "--max_iters", "1")
    assert train.main(argv) == 0
    # Resume with the architecture flags left out (and one contradicted): the checkpoint wins.
    resume = ["--name", "arch", "--checkpoints_dir", str(tmp_path), "--continue_train",
              "--no_vgg_loss", "--max_iters", "2", "--nThreads", "0", "--batchSize", "2",
              "--ngf", "16"]
    assert train.main(resume) == 0
    captured = capsys.readouterr()
    assert "--ngf 16 conflicts with the checkpoint's ngf=8; using the checkpoint's" in captured.err
    assert load(tmp_path / "arch" / "latest.pt")["iteration"] == 2


# ------------------------------------------------------------------ console on one screen
@pytest.mark.slow
def test_tiny_recipe_console_fits_one_screen(tmp_path):
    """experiments/train_tiny_cpu.sh for 6 iterations: where the files go first, one
    progress bar over the iterations (with the losses), no options table, no loss lines."""
    cmd = ["bash", str(REPO / "experiments" / "train_tiny_cpu.sh"), "--max_iters", "6",
           "--checkpoints_dir", str(tmp_path), "--name", "tiny"]
    res = subprocess.run(cmd, env=child_env(), capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    run = tmp_path / "tiny"
    out_lines = res.stdout.splitlines()
    assert out_lines[0] == f"run tiny: writing to {run}{os.sep}"
    header = "\n".join(out_lines[:7])
    for needle in ("opt.txt", "latest.pt", "loss_log.txt", f"tensorboard --logdir {run / 'logs'}",
                   "index.html"):
        assert needle in header, (needle, header)
    assert out_lines[-1] == f"stopped at epoch 6, iteration 6; checkpoints in {run}"
    console = res.stdout + res.stderr
    assert len(console.splitlines()) <= 25, console
    assert "Options ---" not in console and "(epoch" not in console
    # One bar: every redraw (separated by \r) is the same 'train' bar counting to 6.
    frames = [f for f in res.stderr.replace("\r", "\n").splitlines() if "it/s" in f or "s/it" in f
              or "?it" in f]
    assert frames and all(f.startswith("train:") for f in frames), frames
    assert "6/6" in frames[-1] and "G_GAN=" in frames[-1] and "epoch=6" in frames[-1]
    assert (run / "opt.txt").is_file() and "(epoch 1, iter 1)" in (run / "loss_log.txt").read_text()


# ------------------------------------------------------------ runs never overwrite runs
@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    """A 2-iteration run to copy: (folder, argv that made it, minus --checkpoints_dir)."""
    root = tmp_path_factory.mktemp("finished")
    argv = TINY + SPADE + ["--no_vgg_loss", "--max_iters", "2", "--name", "done"]
    with torch.random.fork_rng():
        assert train.main(argv + ["--checkpoints_dir", str(root)]) == 0
    return root / "done", argv


def copy_run(finished_run, tmp_path):
    import shutil

    src, argv = finished_run
    shutil.copytree(src, tmp_path / "done")
    return tmp_path / "done", argv + ["--checkpoints_dir", str(tmp_path)]


def snapshot(run: Path) -> dict[str, bytes]:
    return {str(p.relative_to(run)): p.read_bytes() for p in sorted(run.rglob("*"))
            if p.is_file()}


def test_reusing_a_name_with_checkpoints_is_refused(tmp_path, capsys, finished_run):
    run, argv = copy_run(finished_run, tmp_path)
    before = snapshot(run)
    assert train.main(argv + ["--max_iters", "1"]) == 2
    captured = capsys.readouterr()
    assert_one_line_error(captured.err, "run 'done'", str(run), "latest.pt", "--continue_train",
                          "new --name")
    assert captured.out == ""  # nothing but the error: no header for a run that never ran
    assert snapshot(run) == before  # iteration 2 stays iteration 2, every file as it was
    assert load(run / "latest.pt")["iteration"] == 2
    # A folder without checkpoints (a run that failed before its first save) is reused.
    for p in run.glob("*.pt"):
        p.unlink()
    assert train.main(argv + ["--max_iters", "1"]) == 0


@pytest.mark.parametrize("extra,needles", [
    (["--dataset", "exampel"], ["unknown --dataset 'exampel'"]),
    (["--train_rotate"], ["has no netD_rotate", "--train_rotate"]),
    (["--which_epoch", "7"], ["checkpoint not found", "7.pt"]),
    (["--dataroot", "/nonexistent/photos"], ["/nonexistent/photos"]),
], ids=["dataset-typo", "incompatible", "which-epoch", "dataroot"])
def test_failed_continue_train_leaves_the_run_as_it_was(tmp_path, capsys, finished_run, extra,
                                                        needles):
    """A --continue_train that fails its checks writes nothing: opt.json, opt.txt, the logs
    and the checkpoints stay byte for byte what they were."""
    run, argv = copy_run(finished_run, tmp_path)
    before = snapshot(run)
    assert train.main(argv + ["--continue_train", "--max_iters", "3"] + extra) == 2
    captured = capsys.readouterr()
    assert_one_line_error(captured.err, *needles)
    assert captured.out == ""
    assert snapshot(run) == before


def test_continue_train_rewrites_opt_json_once_it_runs(tmp_path, capsys, finished_run):
    run, argv = copy_run(finished_run, tmp_path)
    assert train.main(argv + ["--continue_train", "--max_iters", "3", "--print_freq", "7"]) == 0
    assert json.loads((run / "opt.json").read_text())["print_freq"] == 7
    out = capsys.readouterr().out
    assert out.startswith("run done: writing to") and "resumed from" in out


@pytest.mark.parametrize("where", ["pretrained-dir", "pretrained-name", "symlink"])
def test_training_never_writes_under_pretrained(tmp_path, capsys, where):
    shipped = REPO / "pretrained"
    before = sorted(p.name for p in shipped.iterdir()) if shipped.is_dir() else []
    if where == "pretrained-dir":
        args = ["--checkpoints_dir", str(shipped), "--name", "x"]
    elif where == "pretrained-name":
        args = ["--checkpoints_dir", str(REPO), "--name", "pretrained"]
    else:  # a folder that is the shipped one under another name
        (tmp_path / "link").symlink_to(shipped, target_is_directory=True)
        args = ["--checkpoints_dir", str(tmp_path / "link"), "--name", "x"]
    argv = TINY + ["--model", "rotate", "--no_vgg_loss", "--max_iters", "1"] + args
    assert train.main(argv) == 2
    assert_one_line_error(capsys.readouterr().err, "shipped model's folder", "--checkpoints_dir")
    after = sorted(p.name for p in shipped.iterdir()) if shipped.is_dir() else []
    assert after == before


# ------------------------------------------------------------------ bad files, one line
class _RunsCode:
    """Unpickling this touches a file: the payload a refused checkpoint must never run."""

    marker = ""

    def __reduce__(self):
        return (Path.touch, (Path(self.marker),))


def _bad_file(kind: str, path: Path, good: Path) -> None:
    import io

    if kind == "empty":
        path.write_bytes(b"")
    elif kind == "junk":
        path.write_bytes(np.random.default_rng(0).bytes(3000))
    elif kind == "text":
        path.write_text("not a checkpoint at all\n")
    elif kind == "truncated":
        data = good.read_bytes()
        path.write_bytes(data[:len(data) // 2])
    elif kind == "folder":
        path.mkdir()
    elif kind == "pickle":
        payload = _RunsCode()
        payload.marker = str(path.parent / "PAYLOAD_RAN")
        buf = io.BytesIO()
        torch.save({"nets": {"netG": payload}}, buf)
        path.write_bytes(buf.getvalue())
    elif kind == "pickle-os-system":  # the classic payload: a blocked module, not a class
        buf = io.BytesIO()
        torch.save({"nets": _Shell(f"touch {path.parent / 'PAYLOAD_RAN'}")}, buf)
        path.write_bytes(buf.getvalue())


class _Shell:
    def __init__(self, command: str):
        self.command = command

    def __reduce__(self):
        return (os.system, (self.command,))


BAD_FILES = ["empty", "junk", "text", "truncated", "folder", "pickle", "pickle-os-system"]


@pytest.mark.parametrize("kind", BAD_FILES)
@pytest.mark.parametrize("flag", ["--continue_train", "--init_generator"])
def test_bad_checkpoint_files_give_one_line(tmp_path, capsys, finished_run, flag, kind):
    good, argv = finished_run
    argv = argv[:-2] + ["--name", "new", "--checkpoints_dir", str(tmp_path), "--max_iters", "3"]
    if flag == "--continue_train":
        (tmp_path / "new").mkdir()
        bad = tmp_path / "new" / "latest.pt"
        argv.append(flag)
    else:
        bad = tmp_path / "gen.pt"
        argv += [flag, str(bad)]
    _bad_file(kind, bad, good / "latest.pt")
    assert train.main(argv) == 2
    err = capsys.readouterr().err
    assert_one_line_error(err, str(bad))
    assert "weights_only=False" not in err and "weights_only` set to `False" not in err
    if kind.startswith("pickle"):
        assert "refused for safety" in err
        assert not (tmp_path / "new" / "PAYLOAD_RAN").exists()
        assert not (tmp_path / "PAYLOAD_RAN").exists()
    if kind == "empty":
        assert "empty" in err
    if flag == "--init_generator":
        assert not (tmp_path / "new").exists()  # a run that never started leaves no folder


@pytest.mark.parametrize("kind", ["junk", "empty", "zip-not-torch"])
def test_unreadable_vgg_weights_give_one_line(tmp_path, capsys, kind):
    import zipfile

    path = tmp_path / "vgg19-dcbb9e9d.pth"
    if kind == "junk":
        path.write_bytes(np.random.default_rng(1).bytes(5000))
    elif kind == "empty":
        path.write_bytes(b"")
    else:  # gets past any check of the file's zip container
        with zipfile.ZipFile(path, "w") as z:
            z.writestr("archive/data.pkl", b"junk")
    argv = run_args(tmp_path, "vgg", "--model", "rotate", "--vgg_weights", str(path),
                    "--max_iters", "1", "--checkpoints_dir", str(tmp_path / "new" / "deep"))
    assert train.main(argv) == 2
    assert_one_line_error(capsys.readouterr().err, "--vgg_weights", str(path))
    assert not (tmp_path / "new").exists()  # no folder (nor its parents) for a run that never ran


@pytest.mark.parametrize("kind", ["file", "below-a-file", "run-folder-is-a-file", "unwritable"])
def test_unusable_checkpoints_dir_gives_one_line(tmp_path, capsys, kind):
    (tmp_path / "afile").write_text("x")
    name = "run"
    if kind == "file":
        where, needles = tmp_path / "afile", ["--checkpoints_dir", "is a file"]
    elif kind == "below-a-file":
        where, needles = tmp_path / "afile" / "sub", ["cannot write the run folder"]
    elif kind == "run-folder-is-a-file":
        where, name, needles = tmp_path, "afile", ["run folder", "is a file"]
    else:
        where, needles = Path("/sys/rr_checkpoints"), ["cannot write the run folder"]
        try:  # /sys refuses new folders, even to root
            where.mkdir()
        except OSError:
            pass
        else:
            where.rmdir()
            pytest.skip("no unwritable folder to try on this machine")
    argv = TINY + ["--model", "rotate", "--no_vgg_loss", "--max_iters", "1",
                   "--checkpoints_dir", str(where), "--name", name]
    assert train.main(argv) == 2
    assert_one_line_error(capsys.readouterr().err, str(where), *needles)


def test_bar_counts_to_the_last_epoch_and_non_finite_losses_warn_sparingly(tmp_path, capsys,
                                                                           monkeypatch):
    """Without --max_iters the bar's total is the end of the last epoch (2 epochs of 2
    batches); a loss that goes NaN every iteration warns once per --print_freq, not every
    iteration."""
    real_step = Trainer.step

    def nan_step(self, pair):
        losses, fake = real_step(self, pair)
        return dict(losses, G_GAN=float("nan")), fake

    monkeypatch.setattr(Trainer, "step", nan_step)
    argv = run_args(tmp_path, "nan", "--model", "rotate", "--no_vgg_loss", "--batchSize", "1",
                    "--niter", "2", "--print_freq", "2")
    assert train.main(argv) == 0
    err = capsys.readouterr().err
    frames = err.replace("\r", "\n").splitlines()
    assert any(f.startswith("train: 100%") and "4/4" in f for f in frames), err
    warnings = [f for f in frames if f.startswith("warning: non-finite loss")]
    assert [w.split(":")[1] for w in warnings] == [" non-finite loss at iteration 1",
                                                   " non-finite loss at iteration 3"]
