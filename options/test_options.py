"""Test-time options: the base flags plus what test.py needs."""

from __future__ import annotations

import argparse

from face3d.cli import angle, non_negative_int, positive_int
from options.base_options import BaseOptions, OptionsError

# What experiments/v100_test.sh and the README's quick start name the run.
TEST_NAME = "rotatespade_example"


class TestOptions(BaseOptions):
    """Rotate faces with a trained model, or render them only when there is no checkpoint."""

    is_train = False
    prog = "test.py"

    def initialize(self, parser):
        p = super().initialize(parser)
        p.set_defaults(name=TEST_NAME)
        p.add_argument("--img", nargs="+", default=None,
                       help="photos or folders to rotate directly (fitted on the fly) instead "
                            "of --dataset; outputs are named by each photo's path relative "
                            "to the folder the inputs have in common")
        p.add_argument("--yaw_poses", nargs="+", type=angle,
                       default=[-60.0, -30.0, 0.0, 30.0, 60.0],
                       help="target yaws in degrees, in [-90, 90] (> 0 turns the face toward "
                            "the image's right)")
        p.add_argument("--pitch_poses", nargs="+", type=angle, default=None,
                       help="target pitches in degrees, in [-90, 90] (> 0 looks up); every "
                            "yaw is combined with every pitch. Default: keep each photo's own "
                            "pitch")
        p.add_argument("--results_dir", default="./results",
                       help="outputs go to DIR/NAME/ (never inside pretrained/)")
        p.add_argument("--overwrite", action="store_true",
                       help="replace the outputs of an earlier run with other settings in "
                            "the output folder (test.py: DIR/NAME/; evaluate.py: --out); "
                            "without it such a run is refused. The same command again "
                            "always redoes its own run")
        p.add_argument("--list_start", type=non_negative_int, default=0,
                       help="first photo of the dataset list to process")
        p.add_argument("--list_end", type=positive_int, default=None,
                       help="one past the last photo of the dataset list to process "
                            "(default: the end of the list)")
        p.add_argument("--align", action="store_true", help="also save each aligned input crop")
        p.add_argument("--gif", action="store_true",
                       help="also save an animated yaw sweep (-60..60) per face")
        p.add_argument("--render_only", action="store_true",
                       help="write the rotated renders even if a checkpoint exists")
        p.add_argument("--bf16", action="store_true",
                       help="run the generator under bfloat16 autocast (CUDA; ignored on "
                            "the CPU)")
        return p

    def validate(self, opt):
        super().validate(opt)
        # set_defaults (evaluate.py) and library callers may give the angles as text
        opt.yaw_poses = [_angle(v, "--yaw_poses") for v in opt.yaw_poses]
        opt.pitch_poses = (None if opt.pitch_poses is None
                           else [_angle(v, "--pitch_poses") for v in opt.pitch_poses])
        if opt.list_end is not None and opt.list_end <= opt.list_start:
            raise OptionsError("--list_start/--list_end must satisfy 0 <= start < end")


def _angle(value, flag: str) -> float:
    try:
        return angle(str(value))
    except argparse.ArgumentTypeError as e:
        raise OptionsError(f"{flag}: {e}") from None
