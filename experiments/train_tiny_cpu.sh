#!/usr/bin/env bash
# A tiny rotatespade (64 px, 8 channels) trained for 200 steps on the built-in example
# photos: a whole training run -- rendering, G/D steps, checkpoints, tensorboard, HTML page --
# in about a minute on two CPU cores. For trying things, not for results.
#
#   bash experiments/train_tiny_cpu.sh                    # checkpoints/tiny_cpu/
#   bash experiments/train_tiny_cpu.sh --max_iters 20     # extra flags go to train.py
#   bash experiments/train_tiny_cpu.sh --continue_train --max_iters 400
#   NAME=tiny2 bash experiments/train_tiny_cpu.sh         # a second run beside the first
#
# A run that has checkpoints is never replaced: run the script again with --continue_train,
# or another NAME. tensorboard --logdir checkpoints/tiny_cpu/logs shows its losses and
# images.
set -euo pipefail
cd "$(dirname "$0")/.."
NAME=${NAME:-tiny_cpu}
# Networks this small run fastest on one thread (more threads only contend for the cores).
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
python train.py --name "$NAME" --model rotatespade --dataset example --device cpu \
    --crop_size 64 --ngf 8 --ndf 8 --n_blocks_G 1 --n_downsample_G 2 --spade_nhidden 8 \
    --num_D 1 --n_layers_D 2 --batchSize 2 --nThreads 0 --no_vgg_loss \
    --niter 100000 --max_iters 200 --print_freq 10 --display_freq 50 --save_latest_freq 100 \
    --save_epoch_freq 100 "$@"
