"""Export a training checkpoint's generator as a shipped model: fp16 safetensors + JSON.

    python experiments/export_generator.py checkpoints/NAME/latest.pt pretrained/blend_lfw
    python experiments/export_generator.py CKPT OUT --crop_size 256 --blend_downsample

Writes OUT.safetensors (the generator's weights in fp16, no pickle) and OUT.json (its
constructor arguments, the render/input settings it was trained with, a training record).
An existing OUT is never replaced without --overwrite, so no training run or export
silently changes pretrained/. ``--crop_size`` / ``--blend_downsample`` ship a blend
generator trained with its U-Net at full resolution to run at twice the crop with the
U-Net at half resolution (the same scale the U-Net was trained at).
"""

from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from models import networks  # noqa: E402
from util.checkpoint import (  # noqa: E402
    Checkpointer,
    CheckpointError,
    export_generator,
    export_paths,
)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkpoint", help="a training checkpoint (.pt)")
    p.add_argument("out", help="output name (OUT.safetensors and OUT.json are written)")
    p.add_argument("--crop_size", type=int, default=None, help="crop size to ship with")
    p.add_argument("--blend_downsample", action="store_true",
                   help="netG blend: run the U-Net at half the crop's resolution")
    p.add_argument("--note", default="", help="free text for the JSON's training record")
    p.add_argument("--overwrite", action="store_true", help="replace an existing OUT")
    args = p.parse_args(argv)
    try:
        state = Checkpointer.load(args.checkpoint)
        if "netG" not in state["nets"]:
            raise CheckpointError(f"{args.checkpoint} holds no generator (netG)")
        spec = dict(state["net_specs"]["netG"])
        spec["args"] = dict(spec["args"])
        settings = dict(state["settings"])
        if args.blend_downsample:
            if "blend_downsample" not in spec["args"]:
                raise CheckpointError(f"--blend_downsample: netG {spec['name']!r} has no "
                                      "such argument")
            spec["args"]["blend_downsample"] = True
        if args.crop_size:
            settings["crop_size"] = args.crop_size
        net = networks.rebuild(spec)
        net.load_state_dict(state["nets"]["netG"])
    except CheckpointError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    existing = [f for f in export_paths(args.out) if os.path.exists(f)]
    if existing and not args.overwrite:
        print(f"error: {existing[0]} exists; pass --overwrite to replace it", file=sys.stderr)
        return 2
    options = state.get("options") or {}
    training = {"iteration": state.get("iteration"), "epoch": state.get("epoch"),
                "images": (state.get("iteration") or 0) * options.get("batchSize", 0),
                "trained_crop_size": state["settings"].get("crop_size"),
                "checkpoint": os.path.relpath(args.checkpoint), "note": args.note,
                "options": {k: options[k] for k in sorted(options)
                            if k not in ("checkpoints_dir", "gpu_ids")}}
    weights, meta = export_generator(net, settings, args.out, training)
    print(f"wrote {weights} ({os.path.getsize(weights) / 1e6:.2f} MB) and {meta}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
