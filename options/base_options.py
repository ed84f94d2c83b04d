"""Command-line options shared by training and testing (SPADE / pix2pix style).

``BaseOptions().parse(argv)`` builds the parser in two passes: first the base flags, then
the flags that the chosen model, its networks and the dataset mode add for themselves
(``modify_commandline_options``). It returns a plain namespace; nothing global is mutated.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import torch

from face3d.cli import (
    ArgumentParser,
    non_negative_float,
    non_negative_int,
    positive_float,
    positive_int,
)
from face3d.fileio import atomic_write
from render.settings import RENDER_SCOPES
from render.whole_image import FACE_DEPTH

# Flags of the original's home-made multi-GPU rendering, and what replaces them here.
RETIRED_FLAGS = {
    "--gpu_ids": "use --device cuda|cpu|auto for one device and "
                 "`torchrun --nproc_per_node N train.py ...` for several GPUs",
    "--render_thread": "rendering runs inside the training step on the training device",
    "--device_count": "the number of GPUs is torchrun's --nproc_per_node",
    "--chunk_size": "torchrun's DistributedSampler splits every batch across processes",
    "--render_graph": "CUDA graphs are the default on CUDA; --no_render_graph turns them off",
}


class OptionsError(ValueError):
    """A bad option value; the message names the flag."""


RUN_GROUP = "run"


def run_group(parser: argparse.ArgumentParser):
    """The group of flags that steer a run (where it saves, how long, on which device)
    rather than what it trains: --continue_train does not compare them with the
    checkpoint's. Declaring a flag here is how it becomes one."""
    for group in parser._action_groups:
        if group.title == RUN_GROUP:
            return group
    return parser.add_argument_group(RUN_GROUP, "where and how this run executes")


def run_options(parser: argparse.ArgumentParser) -> set[str]:
    return {a.dest for a in run_group(parser)._group_actions}


class BaseOptions:
    is_train = False
    prog = None  # the command, as shown in --help and errors (None: argparse's guess)

    def initialize(self, parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
        p = parser
        run = run_group(p)
        run.add_argument("--name", default="rotate_example",
                         help="experiment name: checkpoints are read from (train.py: written "
                              "to) <checkpoints_dir>/<name>; test.py and evaluate.py also name "
                              "their results folder after it")
        p.add_argument("--model", default="rotatespade",
                       help="model: rotate (pix2pixHD-style G) or rotatespade (SPADE G "
                            "conditioned on landmark maps, the authors' released model)")
        p.add_argument("--netG", default=None,
                       help="generator architecture: rotate, rotatespade (the paper's) or "
                            "blend (the shipped one's U-Net that repairs the render); default: "
                            "the --model's own")
        p.add_argument("--label_nc", type=int, default=5, choices=(1, 5),
                       help="channels of the landmark map that conditions rotatespade: 5 (one "
                            "per facial part) or 1 (all parts in one)")
        p.add_argument("--crop_size", type=positive_int, default=256,
                       help="side of the aligned face crop in pixels")
        p.add_argument("--batchSize", type=positive_int, default=4,
                       help="photos per batch (per process); test.py: views rendered and "
                            "repaired at a time")
        run.add_argument("--checkpoints_dir", default="./checkpoints",
                         help="where runs are saved")
        run.add_argument("--which_epoch", default="latest",
                         help="checkpoint to load: latest or an epoch number")
        p.add_argument("--dataset", default="example",
                       help="comma-separated registry names (data/registry.py), e.g. lfw or "
                            "example,lfw")
        p.add_argument("--dataroot", default=None,
                       help="a folder of photos to use instead of --dataset (fitted on "
                            "first use into DIR/fits)")
        p.add_argument("--dataset_mode", default="allface", help="dataset class: allface")
        p.add_argument("--serial_batches", action="store_true",
                       help="training: take photos in list order instead of shuffling")
        run.add_argument("--nThreads", type=non_negative_int, default=2,
                         help="DataLoader worker processes (also fitting workers on first use)")
        run.add_argument("--device", default="auto",
                         help="auto (cuda when available, else cpu), cpu, cuda or cuda:N; "
                              "under torchrun each process takes cuda:LOCAL_RANK")
        p.add_argument("--seed", type=int, default=0,
                       help="random seed (each DDP rank adds its rank)")
        p.add_argument("--heatmap_size", type=positive_float, default=3.0,
                       help="width (Gaussian sigma, px) of the landmark heatmaps")
        p.add_argument("--no_gaussian_landmark", action="store_true",
                       help="draw landmark curves as hard 1-px lines instead of heatmaps")
        p.add_argument("--label_mask", action="store_true",
                       help="as the original's --label_mask: blank (set to 0) the generator's "
                            "input render within 3*--heatmap_size px of the target pose's "
                            "chin and lower-nose landmark curves, which tells G where they "
                            "are; in training on a random half of the photos, at test time "
                            "unless the source face is near-frontal (|yaw| < 14.6 degrees)")
        p.add_argument("--erode_kernel", type=non_negative_int, default=19,
                       help="erode the rendered face mask by this many pixels (odd) so the "
                            "blurry mesh border does not leak into the input")
        p.add_argument("--background", default="avg", choices=("avg", "grey"),
                       help="fill outside the face: the face's mean colour (avg) or grey")
        p.add_argument("--symmetric_fill", action="store_true",
                       help="colour texels hidden in the source view from their mirror-"
                            "symmetric point when that one was visible")
        p.add_argument("--render_scope", default="image", choices=RENDER_SCOPES,
                       help="image: rotate the whole crop (face, head, hair, neck; the "
                            "background stays), with masks of hidden and stretched pixels; "
                            "face: the face mesh alone on the --background fill, as the "
                            "original. A checkpoint's own scope wins at test time (one saved "
                            "before this option: face)")
        p.add_argument("--face_depth", type=positive_float, default=FACE_DEPTH,
                       help="with --render_scope image: scale the face's depth about its "
                            "centre by this (the calibrated value; a checkpoint's own wins at "
                            "test time, one saved before this option: 0.8)")
        p.add_argument("--pose_noise", action="store_true",
                       help="training: also jitter the target pitch (by up to --pitch_noise "
                            "degrees)")
        p.add_argument("--pitch_noise", type=non_negative_float, default=28.65,
                       help="training: pitch jitter in degrees with --pose_noise (28.65 "
                            "degrees is the original's 0.5 rad)")
        p.add_argument("--large_pose", action="store_true",
                       help="training: turn the faces by 55-60 degrees instead of 20-55")
        return p

    def gather(self, argv: list[str] | None) -> argparse.Namespace:
        argv = sys.argv[1:] if argv is None else list(argv)
        for flag, why in RETIRED_FLAGS.items():
            if any(a == flag or a.startswith(flag + "=") for a in argv):
                raise OptionsError(f"{flag} is no longer used: {why}")
        # No -h until every flag is known: --help then lists the model's and networks' too.
        parser = ArgumentParser(
            prog=self.prog, description=self.__doc__,
            formatter_class=argparse.ArgumentDefaultsHelpFormatter, add_help=False)
        parser = self.initialize(parser)
        known, _ = parser.parse_known_args(argv)

        from data import DATASET_MODES
        from models import MODELS

        model_cls = MODELS.get(known.model)
        parser = model_cls.modify_commandline_options(parser, self.is_train)
        known, _ = parser.parse_known_args(argv)
        from models import networks

        networks.modify_commandline_options(parser, self.is_train, known.netG,
                                            getattr(known, "netD", None))
        DATASET_MODES.get(known.dataset_mode).modify_commandline_options(parser, self.is_train)
        parser.add_argument("-h", "--help", action="help",
                            help="show this help message (with the flags of the chosen --model "
                                 "and --netG) and exit")
        self.parser = parser
        return parser.parse_args(argv)

    def parse(self, argv: list[str] | None = None) -> argparse.Namespace:
        opt = self.gather(argv)
        opt.is_train = self.is_train
        self.validate(opt)
        return opt

    def validate(self, opt):
        # Value ranges are checked by the flags' types (face3d.cli) as they are parsed;
        # what needs several flags, or a path, is checked here.
        if opt.crop_size < 32:
            raise OptionsError(f"--crop_size must be at least 32, got {opt.crop_size}")
        check_name(opt.name)
        resolve_device(opt.device)


def check_name(name: str) -> None:
    """--name names a folder under --checkpoints_dir / --results_dir: it must stay inside."""
    parts = name.replace("\\", "/").split("/")
    if (not name.strip() or os.path.isabs(name) or ".." in parts
            or all(p.strip() in ("", ".") for p in parts)):  # ".", "./.", ".//": the base
        raise OptionsError(f"--name {name!r}: give a folder name (no absolute path, no '..', "
                           "not empty), e.g. --name my_run")


def resolve_device(name: str, local_rank: int | None = None) -> torch.device:
    """``auto`` -> cuda (cuda:LOCAL_RANK under torchrun) when available, else cpu."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        dev = torch.device(name)
    except RuntimeError:
        raise OptionsError(f"--device {name!r}: use auto, cpu, cuda or cuda:N") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise OptionsError(f"--device {name}: CUDA is not available on this machine")
        if dev.index is None and local_rank is not None:
            dev = torch.device("cuda", local_rank)
    return dev


def options_text(opt: argparse.Namespace, parser: argparse.ArgumentParser | None = None) -> str:
    lines = ["----------------- Options ---------------"]
    for k, v in sorted(vars(opt).items()):
        default = parser.get_default(k) if parser is not None else None
        note = f"\t[default: {default}]" if parser is not None and v != default else ""
        lines.append(f"{k:>25}: {v!s:<30}{note}")
    lines.append("----------------- End -------------------")
    return "\n".join(lines)


def save_options(opt: argparse.Namespace, folder: str, parser=None) -> None:
    """The resolved options as opt.txt (readable) and opt.json (machine-readable)."""
    with atomic_write(os.path.join(folder, "opt.txt")) as f:
        f.write(options_text(opt, parser) + "\n")
    with atomic_write(os.path.join(folder, "opt.json")) as f:
        json.dump(vars(opt), f, indent=1, sort_keys=True, default=str)
