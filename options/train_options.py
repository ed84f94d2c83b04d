"""Training options: the base flags plus optimisation, losses and logging."""

from __future__ import annotations

import os
import zipfile

from face3d.cli import (
    non_negative_float,
    non_negative_int,
    positive_int,
    unit_interval,
)
from options.base_options import BaseOptions, OptionsError, run_group


class TrainOptions(BaseOptions):
    """Train the Rotate-and-Render GAN (python train.py, or torchrun ... train.py)."""

    is_train = True
    prog = "train.py"

    def initialize(self, parser):
        p = super().initialize(parser)
        run = run_group(p)
        run.add_argument("--continue_train", action="store_true",
                         help="resume from <checkpoints_dir>/<name>/<which_epoch>.pt exactly")
        run.add_argument("--init_generator", default=None, metavar="FILE",
                         help="start G from these weights (a shipped .safetensors with its "
                              ".json, e.g. pretrained/blend_lfw.safetensors, or a .pt "
                              "checkpoint) and fresh discriminators; its architecture and "
                              "render settings are adopted. With --continue_train the run's "
                              "own checkpoint wins when it exists")
        p.add_argument("--niter", type=non_negative_int, default=50,
                       help="epochs at the initial learning rate")
        p.add_argument("--niter_decay", type=non_negative_int, default=0,
                       help="epochs over which the learning rate decays linearly to zero")
        run.add_argument("--max_iters", type=positive_int, default=None,
                         help="stop after this many iterations in total (short trials, tests)")
        p.add_argument("--lr", type=non_negative_float, default=0.0002,
                       help="initial learning rate (0 keeps the weights as they start)")
        p.add_argument("--beta1", type=unit_interval, default=0.0, help="Adam beta1")
        p.add_argument("--beta2", type=unit_interval, default=0.9, help="Adam beta2")
        p.add_argument("--no_TTUR", action="store_true",
                       help="same learning rate for G and D (default: TTUR, G lr/2, D lr*2)")
        p.add_argument("--D_steps_per_G", type=positive_int, default=1,
                       help="discriminator steps per generator step")
        p.add_argument("--reuse_fake", action="store_true",
                       help="the D step learns from the G step's output (pix2pixHD's scheme: "
                            "G's output from before its update) instead of running G again "
                            "(SPADE's); saves a G forward per iteration, about a fifth of a "
                            "CPU step")
        p.add_argument("--bf16", action="store_true",
                       help="run G and D under bfloat16 autocast (losses, optimiser and "
                            "weights stay float32): about 2x faster convolutions on GPUs from "
                            "Ampere on and CPUs with native bf16 (AVX512-BF16 or AMX; refused "
                            "elsewhere, where it is emulated and slower)")
        p.add_argument("--gan_mode", default="hinge", choices=("hinge", "ls", "original", "w"),
                       help="adversarial loss")
        p.add_argument("--lambda_feat", type=non_negative_float, default=10.0,
                       help="weight of the discriminator feature-matching loss")
        p.add_argument("--lambda_vgg", type=non_negative_float, default=10.0,
                       help="weight of the VGG19 perceptual loss")
        p.add_argument("--lambda_D", type=non_negative_float, default=1.0,
                       help="weight of the adversarial loss of the reconstruction")
        p.add_argument("--lambda_rotate_D", type=non_negative_float, default=0.1,
                       help="weight of the adversarial loss of the rotated render "
                            "(with --train_rotate)")
        p.add_argument("--lambda_l1", type=non_negative_float, default=0.0,
                       help="weight of an optional L1 loss to the real photo")
        p.add_argument("--no_vgg_loss", action="store_true",
                       help="train without the VGG19 perceptual loss (needs no weights)")
        p.add_argument("--no_ganFeat_loss", action="store_true",
                       help="train without the discriminator feature-matching loss")
        p.add_argument("--train_rotate", action="store_true",
                       help="also train G on the rotated render (no ground truth) against a "
                            "second discriminator")
        run.add_argument("--display_freq", type=positive_int, default=500,
                         help="iterations between image grids (tensorboard + HTML page)")
        run.add_argument("--print_freq", type=positive_int, default=50,
                         help="iterations between loss lines / tensorboard scalars")
        run.add_argument("--save_latest_freq", type=positive_int, default=2000,
                         help="iterations between saves of latest.pt")
        run.add_argument("--save_epoch_freq", type=positive_int, default=5,
                         help="epochs between saves of <epoch>.pt")
        run.add_argument("--no_html", action="store_true", help="do not write the HTML page")
        p.add_argument("--eval_freq", type=non_negative_int, default=0,
                       help="every N iterations, score a fixed held-out set (reconstruction "
                            "PSNR/SSIM/L1 vs the render baseline, pose error of rotations) "
                            "into tensorboard's eval/ scalars; 0 = off")
        p.add_argument("--eval_photos", default="example",
                       help="the held-out set for --eval_freq: a registry name or a folder "
                            "(keep it out of the training data)")
        p.add_argument("--eval_size", type=positive_int, default=32,
                       help="photos in the --eval_freq set")
        return p

    def validate(self, opt):
        super().validate(opt)
        if opt.niter + opt.niter_decay < 1:
            raise OptionsError("--niter + --niter_decay must be at least 1 epoch")
        if opt.bf16 and not bf16_supported(opt.device):
            raise OptionsError(f"--bf16: --device {opt.device} has no native bfloat16 (a CPU "
                               "with AVX512-BF16 or AMX, or a GPU from Ampere on); train "
                               "without --bf16")
        if getattr(opt, "vgg_weights", None) and not opt.no_vgg_loss:
            check_vgg_weights(opt.vgg_weights)


def bf16_supported(device: str) -> bool:
    """Whether bfloat16 autocast is fast on ``device`` (a --device value): a CUDA GPU with
    native bf16 (Ampere and later), or a CPU with AVX512-BF16 or AMX tiles. Elsewhere bf16 is
    emulated, slower than float32. (oneDNN's own ``_is_mkldnn_bf16_supported`` is not the
    test: it says yes on any CPU with AVX512BW/VL/DQ, where bf16 is emulated.)"""
    import torch

    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda"):
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported(
            including_emulation=False)
    if device != "cpu":
        return False
    native = (getattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)()
              or getattr(torch.cpu, "_is_amx_tile_supported", lambda: False)())
    return bool(native and torch.backends.mkldnn.is_available())


def check_vgg_weights(path: str) -> None:
    """A --vgg_weights file that is missing or cannot be a torch.save file is refused when
    the options are parsed, not when the loss is built (whether its tensors are VGG19's is
    checked when it is loaded: models/networks/architecture.py)."""
    skip = "; or train without the VGG loss: --no_vgg_loss"
    if os.path.isdir(path):
        raise OptionsError(f"--vgg_weights {path}: is a folder; give the file "
                           f"vgg19-dcbb9e9d.pth{skip}")
    if not os.path.isfile(path):
        raise OptionsError(f"--vgg_weights {path}: file not found{skip}")
    # torch.save writes a zip archive since torch 1.6; before that (torchvision's 2017
    # vgg19-dcbb9e9d.pth among them) a pickle stream, which opens with protocol 2's b"\x80\x02"
    with open(path, "rb") as f:
        legacy = f.read(2) == b"\x80\x02"
    if os.path.getsize(path) == 0 or not (legacy or zipfile.is_zipfile(path)):
        raise OptionsError(f"--vgg_weights {path}: not a PyTorch weights file (torch.save's "
                           f"zip or legacy format); expected torchvision's "
                           f"vgg19-dcbb9e9d.pth{skip}")
