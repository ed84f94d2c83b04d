"""Train Rotate-and-Render.

    python train.py --name NAME --model rotatespade --dataset lfw ...        # one device
    torchrun --nproc_per_node 4 train.py --name NAME ...                     # DDP

Run ``python train.py --help`` for every flag; experiments/train.sh has working settings.

Everything a run writes goes to ``<checkpoints_dir>/<name>/``: opt.txt and opt.json (the
resolved options), latest.pt and <epoch>.pt (checkpoints), logs/ (tensorboard), web/ (HTML
page of image grids), loss_log.txt; the first lines of the console say so. The console
then shows one progress bar over the run's iterations (ETA, current losses); the loss
lines go to loss_log.txt and tensorboard. Ctrl-C (or SIGTERM) finishes the current step,
saves latest.pt and exits with status 0; a second Ctrl-C aborts at once.

Everything is checked before anything is written: bad options, datasets, checkpoints,
missing weights or an unwritable folder end the run with one ``error:`` line and status 2,
and a failed ``--continue_train`` leaves the run's files as they were. A run never replaces
the checkpoints of another: a ``--name`` that holds checkpoints needs ``--continue_train``.

Debugging aid: with ``RR_WEIGHTS_HASH_DIR=DIR`` in the environment every process writes
``DIR/rank<R>.json`` (SHA-256 of each net's weights) when it finishes, so DDP runs can be
checked for identical replicas.
"""

from __future__ import annotations

import contextlib
import datetime
import hashlib
import json
import os
import pickle
import random
import re
import signal
import sys
import tempfile
import threading
import time

import numpy as np
import torch
import torch.distributed as dist
from tqdm import tqdm

from data import DatasetError, create_dataloader, create_dataset
from data.registry import dataset_names, get_dataset
from face3d.fileio import remove_stale_temps
from models import create_model
from models.networks import MissingWeightsError
from models.networks.architecture import find_vgg19_weights, vgg19_weights_filename
from models.rotate_model import _unwrap
from options.base_options import (
    OptionsError,
    resolve_device,
    run_options,
    save_options,
)
from options.train_options import TrainOptions
from trainers.trainer import Trainer
from util.checkpoint import (
    PRETRAINED,
    Checkpointer,
    CheckpointError,
    adopt_options,
    checkpoint_path,
    inside_pretrained,
    load_generator_file,
    rng_state,
    set_rng_state,
)
from util.visualizer import Visualizer

HASH_ENV = "RR_WEIGHTS_HASH_DIR"


def pose_seed(seed: int, rank: int, iteration: int) -> int:
    """Target poses of an iteration depend only on (seed, rank, iteration): resume-exact."""
    return (seed * 1000 + rank) * 100_000_000 + iteration


class StopFlag(contextlib.AbstractContextManager):
    """First Ctrl-C / SIGTERM: finish the step, save latest, exit. Second: stop at once,
    except under torchrun, whose agent passes the terminal's Ctrl-C on to the workers a
    second time (it kills them itself if they take too long).

    Handlers can only be installed from the main thread; elsewhere (a library calling
    ``main`` from a worker thread) the flag stays unset and Ctrl-C behaves as usual. The
    previous handlers are restored on exit, so ``main(argv)`` can be called in-process."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self, abort_on_second: bool = True):
        self.stop = False
        self.abort_on_second = abort_on_second
        self._previous = {}

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for s in self.SIGNALS:
                self._previous[s] = signal.signal(s, self._handle)
        return self

    def __exit__(self, *exc):
        for s, handler in self._previous.items():
            signal.signal(s, handler)
        self._previous.clear()
        return False

    def _handle(self, signum, _frame):
        if self.stop:
            if self.abort_on_second:
                raise KeyboardInterrupt
            return
        self.stop = True
        name = signal.Signals(signum).name
        print(f"\n{name}: saving latest.pt after this step (Ctrl-C again to abort)",
              file=sys.stderr, flush=True)


def any_rank(flag: bool, world: int, device: torch.device) -> bool:
    """True if ``flag`` is true on any process (all processes must call this together)."""
    if world == 1:
        return flag
    t = torch.tensor([1.0 if flag else 0.0], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item() > 0)


def weights_digest(model, names) -> dict[str, str]:
    out = {}
    for n in names:
        h = hashlib.sha256()
        for k, v in sorted(_unwrap(getattr(model, n)).state_dict().items()):
            h.update(k.encode())
            h.update(v.detach().cpu().contiguous().numpy().tobytes())
        out[n] = h.hexdigest()
    return out


def remove_empty(folders: list[str]) -> None:
    """rmdir each of ``folders`` (deepest first) that is still empty."""
    for folder in folders:
        with contextlib.suppress(OSError):
            os.rmdir(folder)


def read_checkpoint(load, path: str, flag: str):
    """``load(path)`` (a checkpoint or generator reader) with every way a file can be bad
    as one CheckpointError line that names ``flag`` and the file."""
    try:
        return load(path)
    except CheckpointError as e:
        raise CheckpointError(f"{flag}: {_explained(e, path)}") from None
    except Exception as e:  # a reader's own failure on a damaged file: still one line
        raise CheckpointError(f"{flag}: cannot read {path} ({type(e).__name__}: "
                              f"{_first_line(e)})") from None


def _first_line(e: BaseException) -> str:
    lines = str(e).strip().splitlines()
    return lines[0][:200] if lines else "no message"


def load_failure(e: BaseException) -> str:
    """Why torch.load refused a file, in a few words. Its weights_only refusal says to load
    the file unsafely; say instead what it means: a pickle that would run code, or a file
    that is no checkpoint at all."""
    text = str(e)
    blocked = re.search(r"GLOBAL ([\w.]+)", text)
    if isinstance(e, pickle.UnpicklingError) and blocked:
        return (f"refused for safety: it is a pickle that calls {blocked[1]}, which loading "
                "would run (files are read with weights_only=True: tensors and plain values)")
    if "Weights only load failed" in text:
        return "not a PyTorch weights file (damaged, truncated or another kind of file)"
    return f"{type(e).__name__}: {_first_line(e)}"


def _explained(e: CheckpointError, path: str) -> str:
    """The reader's message (util.checkpoint already says when a pickle is refused for
    safety), naming the file."""
    text = str(e)
    return text if path in text else f"{path}: {text}"


def create_model_checked(opt, nets):
    """create_model, with a VGG weights file that cannot be read as one error line (the
    perceptual loss reads it while the model is built)."""
    try:
        return create_model(opt, nets)
    except (MissingWeightsError, ValueError):
        raise
    except Exception:
        if opt.no_vgg_loss:
            raise
        path = find_vgg19_weights(opt.vgg_weights)
        given = " (--vgg_weights)" if opt.vgg_weights else ""
        if os.path.getsize(path) == 0:
            raise MissingWeightsError(f"VGG19 weights {path}{given} are empty (0 bytes): an "
                                      "interrupted copy?") from None
        try:
            torch.load(path, map_location="cpu", weights_only=True)
        except Exception as load_error:  # the file is the cause: say so in one line
            raise MissingWeightsError(
                f"VGG19 weights {path}{given} cannot be read ({load_failure(load_error)}); use "
                f"torchvision's {vgg19_weights_filename()} or train with --no_vgg_loss"
            ) from None
        raise


def main(argv: list[str] | None = None) -> int:
    options = TrainOptions()
    try:
        opt = options.parse(argv)
        world = int(os.environ.get("WORLD_SIZE", "1"))
        rank = int(os.environ.get("RANK", "0"))
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        device = resolve_device(opt.device, local_rank if world > 1 else None)
    except (OptionsError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if world > 1:
        if device.type == "cuda":
            torch.cuda.set_device(device)
        # Rank 0 may fit a whole dataset on first use while the others wait at a barrier.
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo",
                                timeout=datetime.timedelta(hours=6))
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    torch.manual_seed(opt.seed + rank)
    np.random.seed(opt.seed + rank)  # noqa: NPY002 (the global generator, for any library)
    random.seed(opt.seed + rank)
    try:
        run = Run(opt, options.parser, device, rank, world)
        return run.train()
    except (DatasetError, CheckpointError, MissingWeightsError, OptionsError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("aborted: the last saved latest.pt is kept", file=sys.stderr)
        return 130
    finally:
        if world > 1 and dist.is_initialized():
            dist.destroy_process_group()


class Run:
    """One training run: set up on construction (everything checked before anything is
    written), ``train()`` loops."""

    def __init__(self, opt, parser, device, rank, world):
        self.opt, self.device, self.rank, self.world = opt, device, rank, world
        self.parser = parser
        self.is_main = rank == 0
        self.run_dir = os.path.join(opt.checkpoints_dir, opt.name)
        # Messages of the set-up, printed after the header that says where the run writes
        # (nothing is printed for a run that fails its checks but the one error line).
        self.notes: list[tuple[str, bool]] = []
        if inside_pretrained(self.run_dir):  # (through symlinks too)
            shipped = os.path.dirname(PRETRAINED)
            raise OptionsError(f"{self.run_dir} is inside {os.path.relpath(shipped)}, the shipped "
                               "model's folder: pick another --checkpoints_dir (export a "
                               "generator there with experiments/export_generator.py)")
        made = self._check_run_dir() if self.is_main else []
        try:
            self._set_up()
        except BaseException:
            remove_empty(made)  # leave no empty folder behind for a run that never started
            raise

    def _set_up(self):
        opt, parser = self.opt, self.parser
        self.checkpointer = Checkpointer(self.run_dir)
        self.resume_state, nets = None, None
        if opt.continue_train and opt.init_generator and not os.path.exists(checkpoint_path(opt)):
            self.note(f"no checkpoint at {checkpoint_path(opt)} to continue: starting G from "
                      f"{opt.init_generator}")
            opt.continue_train = False
        if not opt.continue_train:
            self._refuse_to_replace()
        if opt.continue_train:
            path = checkpoint_path(opt)
            self.resume_state = read_checkpoint(Checkpointer.load, path, "--continue_train")
            # The nets are rebuilt from the file; opt takes the values they were made with
            # too, so opt.txt and the model's own use of them (landmark maps, crop size) agree.
            for warning in adopt_options(opt, Checkpointer.trained_with(self.resume_state),
                                         parser):
                self.note(f"warning: {warning}", err=True)
            nets = Checkpointer.rebuild_nets(self.resume_state, path)
            if opt.init_generator:
                self.note(f"note: resuming {path}; --init_generator {opt.init_generator} is "
                          "ignored")
        elif opt.init_generator:
            nets = {"netG": self._initial_generator(opt.init_generator)}
        try:
            # Model first: bad architecture options and missing VGG weights fail in seconds,
            # before any photo is fitted.
            self.model = create_model_checked(opt, nets)
        except ValueError as e:  # option values only the factories can check
            raise OptionsError(str(e)) from None
        self.trainer = Trainer(opt, self.model, self.device, distributed=self.world > 1)
        self.iteration, self.epoch, self.epoch_iter = 0, 1, 0
        if opt.continue_train:
            self._resume_weights()
        self._check_dataset_names()
        self.print_header()
        try:
            self.loader = self._make_loader()
        except ValueError as e:
            raise OptionsError(str(e)) from None
        if opt.continue_train:
            self._resume_rng()  # after the loader, as a straight run draws it: resume-exact
        self.eval_batch = None
        if opt.eval_freq and self.is_main:
            if opt.eval_photos in opt.dataset.split(",") and not opt.dataroot:
                print(f"warning: --eval_photos {opt.eval_photos} is also the training data, "
                      "so the eval/ scores are not held out", file=sys.stderr)
            from evaluation.quick import load_eval_batch

            self.eval_batch = load_eval_batch(opt.eval_photos, n=opt.eval_size,
                                              crop_size=opt.crop_size, seed=opt.seed)
        # Everything checked: only now does the run write its options (a --continue_train
        # that fails its checks leaves the run's opt.json as it was) and open its logs.
        self.vis = None
        if self.is_main:
            removed = remove_stale_temps(self.run_dir)  # those of a killed run's writes
            if removed:
                print(f"removed {removed} temp file(s) of an interrupted write in {self.run_dir}")
            save_options(opt, self.run_dir, parser)
            self.vis = Visualizer(opt, self.run_dir)
            n_params = sum(p.numel() for p in _unwrap(self.model.netG).parameters())
            print(f"{len(self.loader.dataset)} photos, {self.world} process(es) on "
                  f"{self.device}, G has {n_params / 1e6:.2f}M parameters")

    def _check_dataset_names(self):
        """The quick part of the dataset's checks, before the header: preparing it (which
        may fit every photo on first use) comes after."""
        opt = self.opt
        if opt.dataroot:
            if not os.path.isdir(opt.dataroot):
                raise DatasetError(f"--dataroot {opt.dataroot}: image folder not found")
            return
        try:
            for name in dataset_names(opt.dataset):
                get_dataset(name)
        except ValueError as e:
            raise OptionsError(str(e)) from None

    def note(self, text: str, err: bool = False):
        self.notes.append((text, err))

    def _check_run_dir(self) -> list[str]:
        """The run folder exists and takes files, else one error. Returns the folders made
        here, deepest first."""
        run_dir = self.run_dir
        for path, what in ((self.opt.checkpoints_dir, "--checkpoints_dir"),
                           (run_dir, "the run folder")):
            if os.path.exists(path) and not os.path.isdir(path):
                raise OptionsError(f"{what} {path} is a file, not a folder")
        made, folder = [], os.path.abspath(run_dir)
        while not os.path.exists(folder):
            made.append(folder)
            folder = os.path.dirname(folder)
        try:
            os.makedirs(run_dir, exist_ok=True)
            with tempfile.TemporaryFile(dir=run_dir):
                pass
        except OSError as e:
            remove_empty(made)
            raise OptionsError(f"cannot write the run folder {run_dir} (--checkpoints_dir "
                               f"{self.opt.checkpoints_dir}, --name {self.opt.name}): "
                               f"{e.strerror or e}") from None
        return made

    def _refuse_to_replace(self):
        """A new run never silently replaces the checkpoints of an earlier one."""
        held = sorted(f for f in os.listdir(self.run_dir) if f.endswith(".pt")) \
            if os.path.isdir(self.run_dir) else []
        if held:
            raise OptionsError(
                f"run {self.opt.name!r} already has checkpoints in {self.run_dir} "
                f"({', '.join(held[:4])}{' ...' if len(held) > 4 else ''}): add "
                "--continue_train to resume it, or give this run a new --name (delete the "
                "folder to start it over)")

    def print_header(self):
        """Where the run writes, then the set-up's notes: the first lines of the console."""
        if not self.is_main:
            return
        opt, d = self.opt, self.run_dir
        lines = [f"run {opt.name}: writing to {d}{os.sep}",
                 "  options      opt.txt, opt.json",
                 f"  checkpoints  latest.pt every {opt.save_latest_freq} iterations, <epoch>.pt "
                 f"every {opt.save_epoch_freq} epochs",
                 f"  losses       loss_log.txt every {opt.print_freq} iterations",
                 f"  tensorboard  tensorboard --logdir {os.path.join(d, 'logs')}"]
        if not opt.no_html:
            lines.append(f"  images       web{os.sep}index.html every {opt.display_freq} "
                         "iterations")
        print("\n".join(lines), flush=True)
        for text, err in self.notes:
            print(text, file=sys.stderr if err else sys.stdout)
        self.notes.clear()

    def _initial_generator(self, path: str):
        """--init_generator: G with the file's weights; opt adopts the architecture and the
        settings it was trained with (warning where the command line said otherwise)."""
        netG, trained_with, iteration = read_checkpoint(load_generator_file, path,
                                                        "--init_generator")
        for warning in adopt_options(self.opt, trained_with, self.parser):
            self.note(f"warning: {warning}", err=True)
        self.note(f"generator initialised from {path} (iteration "
                  f"{'?' if iteration is None else iteration}); discriminators are new")
        return netG.train()

    def _make_loader(self):
        """Rank 0 fits any photos without fits first; the others then find them on disk."""
        opt, world = self.opt, self.world
        dataset, error = None, None
        if self.is_main:
            try:
                dataset = create_dataset(opt)
            except (DatasetError, ValueError) as e:
                error = e
        if any_rank(error is not None, world, self.device):
            raise error or DatasetError("the dataset could not be prepared (see rank 0)")
        if dataset is None:
            dataset = create_dataset(opt)
        return create_dataloader(opt, self.rank, world, dataset)

    def _resume_weights(self):
        """Nets, optimisers and progress from the checkpoint (the checks that can fail)."""
        opt = self.opt
        path = checkpoint_path(opt)
        state = self.resume_state
        self.trainer.load_state_dict(state, path)
        self.iteration, self.epoch, self.epoch_iter = Checkpointer.progress(state, path)
        saved, steering = state.get("options") or {}, run_options(self.parser)
        changed = [f"--{k} {getattr(opt, k)!r} (was {saved[k]!r})"
                   for k in sorted(saved) if k not in steering and hasattr(opt, k)
                   and getattr(opt, k) != saved[k]]
        if changed:
            self.note("note: options that differ from the checkpoint's: " + ", ".join(changed))
        self.note(f"resumed from {path}: epoch {self.epoch}, iteration {self.iteration}")

    def _resume_rng(self):
        rng = self.resume_state.get("rng") or {}
        ranks = rng.get("ranks") or []
        if len(ranks) == self.world:
            set_rng_state(ranks[self.rank])
        elif self.rank == 0 and "torch" in rng:
            set_rng_state(rng)
        else:  # a different number of processes than when saved: deterministic fallback
            torch.manual_seed(self.opt.seed + self.rank + self.iteration)

    # -------------------------------------------------------------------------------- saving
    def save(self, which: str, epoch: int, epoch_iter: int):
        """Collective: every process calls it at the same iteration; rank 0 writes."""
        states = [rng_state()]
        if self.world > 1:
            states = [None] * self.world
            dist.all_gather_object(states, rng_state())
        if not self.is_main:
            return
        self.checkpointer.save(which, self.trainer.nets(), self.trainer.optimizers,
                               settings=self.model.settings(), options=vars(self.opt),
                               iteration=self.iteration, epoch=epoch, epoch_iter=epoch_iter,
                               rng=dict(states[0], ranks=states))

    # ------------------------------------------------------------------------------ training
    def iterations_planned(self) -> int:
        """The iteration this run stops at: --max_iters, or the end of the last epoch."""
        sampler, opt = self.loader.sampler, self.opt
        sampler.set_start(0)
        per_epoch = len(self.loader)
        sampler.set_start(self.epoch_iter * opt.batchSize)
        left = len(self.loader) + (opt.niter + opt.niter_decay - self.epoch) * per_epoch
        end = self.iteration + max(0, left)
        return min(end, opt.max_iters) if opt.max_iters else end

    def progress_bar(self):
        """One bar over the run's iterations (rank 0). Where stderr is not a terminal (a log
        file under nohup, a pipe) it redraws every 30 s, not 10 times a second."""
        tty = sys.stderr.isatty()
        return tqdm(total=self.iterations_planned(), initial=self.iteration, desc="train",
                    unit="it", disable=not self.is_main, dynamic_ncols=True,
                    mininterval=0.5 if tty else 30, smoothing=0.1)

    def train(self) -> int:
        opt, model, trainer = self.opt, self.model, self.trainer
        total_epochs = opt.niter + opt.niter_decay
        if opt.max_iters and self.iteration >= opt.max_iters:
            if self.is_main:
                print(f"nothing to do: iteration {self.iteration} >= --max_iters {opt.max_iters}")
                self.vis.close()
            return 0
        sampler = self.loader.sampler
        first = self.iteration + 1
        window = dict(images=0, render=0.0, step=0.0, start=time.perf_counter())
        finished = False
        under_torchrun = "TORCHELASTIC_RUN_ID" in os.environ
        bar = self.progress_bar()
        # The first step also compiles (numba's rasteriser on first use, cuDNN's autotuning,
        # CUDA graphs): say so, or a frozen-looking bar reads as a hang.
        bar.set_postfix_str("first step: compiling / warming up", refresh=True)
        with StopFlag(abort_on_second=not under_torchrun) as stop, bar:
            while self.epoch <= total_epochs and not finished:
                sampler.set_epoch(self.epoch)
                sampler.set_start(self.epoch_iter * opt.batchSize)
                trainer.update_learning_rate(self.epoch)
                for batch in self.loader:
                    t0 = time.perf_counter()
                    generator = torch.Generator().manual_seed(
                        pose_seed(opt.seed, self.rank, self.iteration))
                    pair = model.make_pair(batch, generator)
                    t1 = time.perf_counter()
                    losses, fake = trainer.step(pair)
                    window["render"] += t1 - t0
                    window["step"] += time.perf_counter() - t1
                    window["images"] += batch["image"].shape[0] * self.world
                    self.iteration += 1
                    self.epoch_iter += 1
                    if self.is_main:
                        self.log(bar, losses, pair, fake, window, first)
                        bar.update(1)
                    saved = False
                    if self.iteration % opt.save_latest_freq == 0:
                        self.save("latest", self.epoch, self.epoch_iter)
                        saved = True
                    stop_now = any_rank(stop.stop, self.world, self.device)
                    if (opt.max_iters and self.iteration >= opt.max_iters) or stop_now:
                        if not saved:
                            self.save("latest", self.epoch, self.epoch_iter)
                        finished = True
                        break
                else:
                    self.epoch_iter = 0
                    if self.epoch % opt.save_epoch_freq == 0 or self.epoch == total_epochs:
                        self.save(str(self.epoch), self.epoch + 1, 0)
                        self.save("latest", self.epoch + 1, 0)
                    self.epoch += 1
        self.finish()
        return 0

    def log(self, bar, losses, pair, fake, window, first):
        """Losses into the bar's postfix (every iteration), loss_log.txt and tensorboard
        (every --print_freq); images every --display_freq; the console gets only warnings."""
        opt, it = self.opt, self.iteration
        bar.set_postfix({"epoch": self.epoch, **{k: f"{v:.3f}" for k, v in losses.items()}},
                        refresh=False)
        # Once per --print_freq iterations at most: a diverged run must not flood the console.
        if (not all(np.isfinite(v) for v in losses.values())
                and it - window.get("warned", -opt.print_freq) >= opt.print_freq):
            tqdm.write(f"warning: non-finite loss at iteration {it}: {losses}", file=sys.stderr)
            window["warned"] = it
        if it % opt.print_freq == 0 or it == first:
            n_iter = max(1, it - window.get("iteration", it - 1))
            elapsed = max(time.perf_counter() - window["start"], 1e-9)
            ips = window["images"] / elapsed
            lrs = self.trainer.learning_rates()
            self.vis.loss_line(self.epoch, it, losses)
            self.vis.scalars({**{f"loss/{k}": v for k, v in losses.items()},
                              "lr/G": lrs["G"], "lr/D": lrs["D"],
                              "speed/images_per_s": ips, "speed/iters_per_s": n_iter / elapsed,
                              "speed/render_s": window["render"] / n_iter,
                              "speed/step_s": window["step"] / n_iter}, it)
            window.update(images=0, render=0.0, step=0.0, start=time.perf_counter(),
                          iteration=it)
        if opt.eval_freq and it % opt.eval_freq == 0:
            from evaluation.quick import quick_eval

            self.vis.scalars(quick_eval(self.model, self.eval_batch, self.device), it)
        if it % opt.display_freq == 0 or it == first:
            self.vis.images({"input": pair["input"], "rotated": pair["rotated"],
                             "output": fake, "real": pair["real"]}, self.epoch, it)
            self.vis.flush()

    def finish(self):
        hash_dir = os.environ.get(HASH_ENV)
        if hash_dir:
            os.makedirs(hash_dir, exist_ok=True)
            with open(os.path.join(hash_dir, f"rank{self.rank}.json"), "w") as f:
                json.dump({"iteration": self.iteration,
                           **weights_digest(self.model, self.trainer.net_names())}, f)
        if self.is_main:
            self.vis.close()
            done = self.epoch > self.opt.niter + self.opt.niter_decay
            where = (f"finished all {self.epoch - 1} epochs" if done
                     else f"stopped at epoch {self.epoch}")
            print(f"{where}, iteration {self.iteration}; checkpoints in {self.run_dir}")


if __name__ == "__main__":
    sys.exit(main())
