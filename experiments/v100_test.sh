#!/usr/bin/env bash
# The main job: rotate the built-in example faces to -60, -30, 0, 30, 60 degrees of yaw.
# Works on CPU or on one GPU (--device auto). The generator that repairs the renders is
# checkpoints/$NAME/latest.pt when it exists, else the shipped model
# (pretrained/blend_lfw.safetensors); test.py prints which one it used. Without either (or
# with --render_only) the rotated renders themselves are written (mode=render). Extra
# arguments are passed to test.py, e.g.  bash experiments/v100_test.sh --img my_photos/
# --name my_model. The training scripts never train into this name (experiments/train.sh
# trains into train_$DATASET, train_tiny_cpu.sh into tiny_cpu), so the main job keeps the
# shipped model until you name your own: --name train_example.
set -euo pipefail
cd "$(dirname "$0")/.."
NAME=${NAME:-rotatespade_example}
python test.py --name "$NAME" --model rotatespade --dataset example \
    --yaw_poses -60 -30 0 30 60 --results_dir ./results --align --gif --device auto "$@"
