"""Train Rotate-and-Render.

    python train.py --name NAME --model rotatespade --dataset lfw ...        # one device
    torchrun --nproc_per_node 4 train.py --name NAME ...                     # DDP

Run ``python train.py --help`` for every flag; experiments/train.sh has working settings.
"""

from __future__ import annotations

import os
import random
import signal
import sys
import time

import numpy as np
import torch
import torch.distributed as dist
from tqdm import tqdm

from data import DatasetError, create_dataloader
from models import create_model
from models.networks import MissingWeightsError
from options.base_options import OptionsError, options_text, resolve_device, save_options
from options.train_options import TrainOptions
from trainers.trainer import Trainer
from util.checkpoint import CheckpointError, checkpoint_path, load_checkpoint, save_checkpoint
from util.visualizer import Visualizer


def pose_seed(seed: int, rank: int, iteration: int) -> int:
    """Target poses of an iteration depend only on (seed, rank, iteration): resume-exact."""
    return (seed * 1000 + rank) * 100_000_000 + iteration


class StopFlag:
    """First Ctrl-C: finish the step, save latest, exit. Second: stop at once."""

    def __init__(self):
        self.stop = False
        signal.signal(signal.SIGINT, self._handle)

    def _handle(self, *_):
        if self.stop:
            raise KeyboardInterrupt
        self.stop = True
        print("\ninterrupted: saving latest.pt after this step (Ctrl-C again to abort)",
              file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    options = TrainOptions()
    try:
        opt = options.parse(argv)
    except (OptionsError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = resolve_device(opt.device, local_rank if world > 1 else None)
    if world > 1:
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    is_main = rank == 0
    torch.manual_seed(opt.seed + rank)
    random.seed(opt.seed + rank)
    run_dir = os.path.join(opt.checkpoints_dir, opt.name)
    try:
        return train(opt, options.parser, device, rank, world, is_main, run_dir)
    except (DatasetError, CheckpointError, MissingWeightsError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    finally:
        if world > 1 and dist.is_initialized():
            dist.destroy_process_group()


def train(opt, parser, device, rank, world, is_main, run_dir) -> int:
    if is_main:
        print(options_text(opt, parser))
        save_options(opt, run_dir, parser)
    # Rank 0 fits any photos without fits first; the others then find them on disk.
    if is_main:
        loader = create_dataloader(opt, rank, world)
    if world > 1:
        dist.barrier()
    if not is_main:
        loader = create_dataloader(opt, rank, world)
    sampler = loader.sampler
    model = create_model(opt)
    trainer = Trainer(opt, model, device, distributed=world > 1)
    n_params = sum(p.numel() for p in model.netG.parameters())
    iteration, epoch, epoch_iter = 0, 1, 0
    if opt.continue_train:
        path = checkpoint_path(opt)
        state = load_checkpoint(path)
        trainer.load_state_dict(state, path)
        iteration, epoch, epoch_iter = state["iteration"], state["epoch"], state["epoch_iter"]
        torch.set_rng_state(state["rng"]["torch"])
        if is_main:
            print(f"resumed from {path}: epoch {epoch}, iteration {iteration}")
    vis = Visualizer(opt, run_dir) if is_main else None
    if is_main:
        print(f"{len(loader.dataset)} photos, {world} process(es) on {device}, "
              f"G has {n_params / 1e6:.1f}M parameters")

    def save(which: str, epoch_now: int, epoch_iter_now: int):
        if not is_main:
            return
        state = trainer.state_dict()
        state.update(iteration=iteration, epoch=epoch_now, epoch_iter=epoch_iter_now,
                     options={k: v for k, v in vars(opt).items()
                              if isinstance(v, (int, float, str, bool, type(None)))},
                     rng={"torch": torch.get_rng_state()})
        save_checkpoint(state, os.path.join(run_dir, f"{which}.pt"))

    stop = StopFlag()
    total_epochs = opt.niter + opt.niter_decay
    finished = False
    while epoch <= total_epochs and not finished:
        sampler.set_epoch(epoch)
        sampler.set_start(epoch_iter * opt.batchSize)
        lr = trainer.update_learning_rate(epoch)
        bar = tqdm(loader, desc=f"epoch {epoch}/{total_epochs}", disable=not is_main,
                   initial=epoch_iter, total=epoch_iter + len(loader), dynamic_ncols=True)
        tick = time.perf_counter()
        for batch in bar:
            generator = torch.Generator().manual_seed(pose_seed(opt.seed, rank, iteration))
            pair = model.make_pair(batch, generator)
            losses, fake = trainer.step(pair)
            iteration += 1
            epoch_iter += 1
            if is_main:
                now = time.perf_counter()
                ips = opt.batchSize * world / max(now - tick, 1e-9)
                tick = now
                if not all(np.isfinite(v) for v in losses.values()):
                    print(f"warning: non-finite loss at iteration {iteration}: {losses}",
                          file=sys.stderr)
                if iteration % opt.print_freq == 0 or iteration == 1:
                    bar.set_postfix({k: f"{v:.3f}" for k, v in losses.items()})
                    vis.loss_line(epoch, iteration, losses)
                    vis.scalars({**{f"loss/{k}": v for k, v in losses.items()},
                                 "lr": lr, "images_per_s": ips}, iteration)
                if iteration % opt.display_freq == 0 or iteration == 1:
                    vis.images({"input": pair["input"], "rotated": pair["rotated"],
                                "output": fake, "real": pair["real"]}, epoch, iteration)
            if iteration % opt.save_latest_freq == 0:
                save("latest", epoch, epoch_iter)
            if (opt.max_iters and iteration >= opt.max_iters) or stop.stop:
                save("latest", epoch, epoch_iter)
                finished = True
                break
        else:
            epoch_iter = 0
            if epoch % opt.save_epoch_freq == 0 or epoch == total_epochs:
                save(str(epoch), epoch + 1, 0)
            save("latest", epoch + 1, 0)
            epoch += 1
    if is_main:
        vis.close()
        print(f"stopped at epoch {epoch}, iteration {iteration}; checkpoints in {run_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
