#!/usr/bin/env bash
# The main job: rotate the built-in example faces to -60, -30, 0, 30, 60 degrees of yaw.
# Works on CPU or on one GPU (--device auto). With a trained checkpoint in
# checkpoints/$NAME/latest.pt the generator repairs the renders; without one the rotated
# renders themselves are written (mode=render). Extra arguments are passed to test.py,
# e.g.  bash experiments/v100_test.sh --img my_photos/ --name my_model
set -euo pipefail
cd "$(dirname "$0")/.."
NAME=${NAME:-rotatespade_example}
python test.py --name "$NAME" --model rotatespade --dataset example \
    --yaw_poses -60 -30 0 30 60 --results_dir ./results --align --gif --device auto "$@"
