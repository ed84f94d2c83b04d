"""Test-time options: the base flags plus what test.py needs."""

from __future__ import annotations

from options.base_options import BaseOptions, OptionsError


def _angle(text: str) -> float:
    value = float(text)
    if not -90.0 <= value <= 90.0:
        raise OptionsError(f"angle {value:g} is outside [-90, 90] degrees")
    return value


class TestOptions(BaseOptions):
    """Rotate faces with a trained model, or render them only when there is no checkpoint."""

    is_train = False
    prog = "test.py"

    def initialize(self, parser):
        p = super().initialize(parser)
        p.add_argument("--img", nargs="+", default=None,
                       help="photos or folders to rotate directly (fitted on the fly) instead "
                            "of --dataset")
        p.add_argument("--yaw_poses", nargs="+", type=str, default=["-60", "-30", "0", "30", "60"],
                       help="target yaws in degrees, in [-90, 90] (> 0 turns the face toward "
                            "the image's right)")
        p.add_argument("--pitch_poses", nargs="+", type=str, default=None,
                       help="target pitches in degrees (> 0 looks up); every yaw is combined "
                            "with every pitch. Default: keep each photo's own pitch")
        p.add_argument("--results_dir", default="./results", help="outputs go to DIR/NAME/")
        p.add_argument("--list_start", type=int, default=0,
                       help="first photo of the dataset list to process")
        p.add_argument("--list_end", type=int, default=None,
                       help="one past the last photo of the dataset list to process")
        p.add_argument("--align", action="store_true", help="also save each aligned input crop")
        p.add_argument("--gif", action="store_true",
                       help="also save an animated yaw sweep (-60..60) per face")
        p.add_argument("--render_only", action="store_true",
                       help="write the rotated renders even if a checkpoint exists")
        p.add_argument("--bf16", action="store_true",
                       help="run the generator under bfloat16 autocast (CUDA)")
        return p

    def validate(self, opt):
        super().validate(opt)
        opt.yaw_poses = [_angle(v) for v in opt.yaw_poses]
        opt.pitch_poses = None if opt.pitch_poses is None else [_angle(v) for v in opt.pitch_poses]
        if opt.list_start < 0 or (opt.list_end is not None and opt.list_end <= opt.list_start):
            raise OptionsError("--list_start/--list_end must satisfy 0 <= start < end")
