#!/usr/bin/env bash
# Train Rotate-and-Render on one device: with a GPU rotatespade (the authors' released
# model: SPADE generator conditioned on landmark maps) with the original's loss weights and
# render settings; without one the blend generator's CPU recipe (below).
#
#   bash experiments/train.sh                      # the built-in example photos
#   DATASET=lfw bash experiments/train.sh          # LFW from ../shared/data/lfw (fitted on
#                                                  # first use; MAX_DATASET_SIZE=N to limit)
#   bash experiments/train.sh --continue_train     # extra flags go to train.py
#
# Checkpoints, opt.txt, tensorboard logs (logs/) and the HTML page (web/index.html) go to
# checkpoints/$NAME/ (default train_$DATASET, e.g. checkpoints/train_example/; the first
# lines train.py prints say where each goes). The name is not the main job's
# (rotatespade_example, which experiments/v100_test.sh and test.py read), so trying
# training never replaces the generator the main job uses; rotate faces with your model by
# naming it: bash experiments/v100_test.sh --name train_example. Running this script again
# on a run that has checkpoints stops with an error: add --continue_train to resume it, or
# set another NAME=.
# With a GPU: the full 256-px rotatespade. Without one: the CPU recipe, the blend generator
# (models/networks/blend_generator.py: a small U-Net that repairs only the hidden and
# stretched parts of the render) on 128-px crops with one thin discriminator and no rotated
# step, D learning from the G step's own output (--reuse_fake) and, on CPUs with native
# bfloat16, under bf16 autocast: many times the throughput of the 128-px rotatespade this
# script used to train on a CPU (benchmarks/train.py --config cpu_spade128 cpu128; README
# "Pretrained model").
# Its U-Net runs at the full 128 px here, so the weights also run on 256-px crops with the
# U-Net at half resolution (experiments/export_generator.py --crop_size 256
# --blend_downsample). CPU_RECIPE=spade trains the old reduced rotatespade instead.
# The VGG19 perceptual loss needs torchvision's vgg19-dcbb9e9d.pth in torch hub's cache
# (or VGG_WEIGHTS=path); when it is absent the run goes on without that loss (--no_vgg_loss).
#
# Several GPUs: one process per GPU with DDP (--batchSize is per process), e.g.
#   torchrun --nproc_per_node 4 train.py --name rotatespade_lfw --dataset lfw \
#       --model rotatespade --batchSize 4 --nThreads 4 --norm_G spectralsyncbatch \
#       --norm_D spectralsyncbatch ...(the flags below)
# Several machines: torchrun --nnodes 2 --node_rank R --master_addr HOST --master_port 29500
#   --nproc_per_node 8 train.py ... (same flags on every node).
set -euo pipefail
cd "$(dirname "$0")/.."

DATASET=${DATASET:-example}
NAME=${NAME:-train_${DATASET//,/_}}

# The original's losses and render settings (the rotated step with its own discriminator).
PAPER=(--model rotatespade --label_nc 5 --heatmap_size 2.5 --no_gaussian_landmark
       --train_rotate --lambda_rotate_D 0.001 --lambda_vgg 10)
if [ "$(python -c 'import torch; print(torch.cuda.is_available())')" = "True" ]; then
    DEVICE=(--device cuda --batchSize 4 --nThreads 4 "${PAPER[@]}")
elif [ "${CPU_RECIPE:-blend}" = "spade" ]; then
    echo "no GPU: training a reduced 128-px rotatespade on CPU" >&2
    DEVICE=(--device cpu --batchSize 2 --nThreads 2 --crop_size 128 --ngf 32 --ndf 32
            --n_blocks_G 4 --spade_nhidden 64 "${PAPER[@]}")
else
    echo "no GPU: training the blend generator at 128 px on CPU (CPU_RECIPE=spade: rotatespade)" >&2
    DEVICE=(--device cpu --batchSize 8 --nThreads 1 --crop_size 128 --model rotate
            --netG blend --ngf 16 --n_downsample_G 4 --n_blocks_G 2 --no_blend_downsample
            --num_D 1 --n_layers_D 3 --ndf 16 --lambda_l1 10 --reuse_fake)
    # bfloat16 autocast where the CPU has native bf16 (AVX512-BF16 or AMX): about 2x the
    # convolutions; elsewhere it would be emulated and slower, so float32.
    if python -c "import sys; from options.train_options import bf16_supported
sys.exit(not bf16_supported('cpu'))"; then
        DEVICE+=(--bf16)
    fi
    NO_VGG=1  # the perceptual loss would cost more than the whole step
fi

if [ "$DATASET" = "example" ]; then
    # Two photos: one step per epoch, so count in hundreds of epochs.
    SCHEDULE=(--niter 300 --niter_decay 300 --print_freq 10 --display_freq 50
              --save_epoch_freq 100 --save_latest_freq 50)
else
    SCHEDULE=(--niter 20 --niter_decay 20 --print_freq 100 --display_freq 1000
              --save_epoch_freq 1 --save_latest_freq 2000)
fi
if [ -n "${MAX_DATASET_SIZE:-}" ]; then
    SCHEDULE+=(--max_dataset_size "$MAX_DATASET_SIZE")
fi

if [ -n "${NO_VGG:-}" ]; then
    LOSSES=(--no_vgg_loss)
elif VGG=$(python -c "
import sys
from models.networks.architecture import MissingWeightsError, find_vgg19_weights
try:
    print(find_vgg19_weights(sys.argv[1] or None))
except MissingWeightsError as e:
    sys.exit(str(e))" "${VGG_WEIGHTS:-}"); then
    LOSSES=(--vgg_weights "$VGG")
else
    echo "training without the VGG loss (--no_vgg_loss)" >&2
    LOSSES=(--no_vgg_loss)
fi

python train.py --name "$NAME" --dataset "$DATASET" --erode_kernel 15 --pose_noise \
    --lambda_D 0.75 --lambda_feat 10 "${DEVICE[@]}" "${SCHEDULE[@]}" "${LOSSES[@]}" "$@"
