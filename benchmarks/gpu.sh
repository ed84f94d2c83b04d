#!/usr/bin/env bash
# The GPU figures quoted in the README, in one go (a few minutes on one H100); `gpu.sh render`
# runs only the CUDA render tests and the render benchmark (about a minute). Needs the example
# dataset fitted once on a machine with mediapipe (bash experiments/v100_test.sh), and on a
# GPU box without internet the wheels of tensorboardX and dominate; from a session with the
# device tool: run("python3 -m pip install -q --no-index --find-links .whl tensorboardX dominate;
# bash benchmarks/gpu.sh render", carry=["datasets", ".whl"]) after
# `pip download --no-deps -d .whl tensorboardX dominate protobuf packaging`.
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
$PY -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name())"
$PY -m pytest -q -p no:cacheprovider tests/test_rasterizer.py tests/test_render.py tests/test_training.py -k cuda
$PY benchmarks/render.py --device cuda --no-bfm
[ "${1:-all}" = render ] && exit 0
$PY benchmarks/test.py --device cuda --generator_only
$PY benchmarks/train.py --config default --device cuda --batch 8 --iters 10
$PY benchmarks/train.py --config default --device cuda --batch 8 --iters 10 -- --no_render_graph
