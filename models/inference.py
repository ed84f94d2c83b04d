"""The inference library: load a generator for a run, and turn aligned photos into outputs
at target poses. test.py, evaluate.py, training's quick evaluation and the contact sheet
all go through here, so "how a face is rotated at test time" has one home."""

from __future__ import annotations

import argparse
import os
import sys

from util.checkpoint import (
    CheckpointError,
    adopt_options,
    checkpoint_path,
    load_checkpoint,
    load_net,
)

# Options that describe the run, not the trained network: never taken from a checkpoint.
# (How the generator's input is rendered -- erode_kernel, background, symmetric_fill,
# label_mask -- is taken from it, so inference feeds G what it was trained on.)
_RUN_OPTIONS = {"name", "checkpoints_dir", "which_epoch", "device", "batchSize", "nThreads",
                "dataset", "dataroot", "dataset_mode", "seed", "serial_batches", "is_train",
                "max_dataset_size"}


def load_generator(opt, parser: argparse.ArgumentParser, device):
    """(model or None, message). A checkpoint's own architecture options win over the
    command line, with a warning for each conflict the user typed."""
    path = checkpoint_path(opt)
    if opt.render_only:
        return None, "--render_only: writing rotated renders (mode=render)"
    if not os.path.exists(path):
        return None, (f"no checkpoint at {path}: writing rotated renders without a generator "
                      "(mode=render)")
    state = load_checkpoint(path)
    saved = state.get("options", {})
    for warning in adopt_options(opt, saved, parser, [k for k in saved if k not in _RUN_OPTIONS]):
        print(f"warning: {warning}", file=sys.stderr)
    from models import create_model

    opt.is_train = False
    model = create_model(opt)
    if "netG" not in state["nets"]:
        raise CheckpointError(f"{path} holds no generator (netG)")
    load_net(model.netG, state["nets"]["netG"], "netG", path)
    model.eval().to(device)
    model.checkpoint_iteration = state.get("iteration")
    return model, f"generator from {path} (iteration {state.get('iteration', '?')})"
