"""The optimisation step: one generator step (+ the rotated-mesh step), then D steps.

Owns the optimisers (TTUR: G at lr/2, D at lr*2 unless --no_TTUR, as in SPADE; Adam's
betas default to TTUR's (0, 0.9)), the learning-rate schedule, DDP wrapping, and the nets' and
optimisers' part of a checkpoint.
"""

from __future__ import annotations

import contextlib
import inspect

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel as DDP

from models.rotate_model import _unwrap
from util.checkpoint import CheckpointError, load_net

# No buffer broadcast before every forward (newer torch renamed the switch).
_NO_BUFFER_SYNC = ({"forward_sync_buffers": False}
                   if "forward_sync_buffers" in inspect.signature(DDP).parameters
                   else {"broadcast_buffers": False})


@contextlib.contextmanager
def frozen(*nets):
    """Parameters of ``nets`` need no gradient inside the block (D during the G step: its
    weight gradients would be computed and thrown away)."""
    params = [p for n in nets if n is not None for p in n.parameters() if p.requires_grad]
    for p in params:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p in params:
            p.requires_grad_(True)


class Trainer:
    def __init__(self, opt, model, device: torch.device, distributed: bool = False):
        self.opt = opt
        self.model = model.to(device)
        self.device = device
        if distributed:
            ids = [device.index] if device.type == "cuda" else None
            for name in self.net_names():
                net = getattr(model, name)
                if device.type == "cuda":  # SyncBatchNorm has no CPU kernels
                    net = torch.nn.SyncBatchNorm.convert_sync_batchnorm(net)
                # Rank 0's buffers (spectral norm's power-iteration vectors) everywhere once;
                # they then evolve identically. DDP copies only the parameters here.
                for buf in net.buffers():
                    dist.broadcast(buf.data, 0)
                setattr(model, name, DDP(net, device_ids=ids, **_NO_BUFFER_SYNC))
        lr_g, lr_d = (opt.lr, opt.lr) if opt.no_TTUR else (opt.lr / 2, opt.lr * 2)
        betas = (opt.beta1, opt.beta2)
        self.optimizers = {"G": torch.optim.Adam(model.netG.parameters(), lr=lr_g, betas=betas)}
        d_params = list(model.netD.parameters())
        if model.netD_rotate is not None:
            d_params += list(model.netD_rotate.parameters())
        self.optimizers["D"] = torch.optim.Adam(d_params, lr=lr_d, betas=betas)
        self.base_lr = {"G": lr_g, "D": lr_d}

    def net_names(self):
        return ["netG", "netD"] + (["netD_rotate"] if self.model.netD_rotate is not None else [])

    # ------------------------------------------------------------------------------ steps
    def autocast(self):
        """bfloat16 autocast of the forward passes with --bf16 (losses are computed in fp32:
        models/networks/loss.py); backward and the optimisers run outside it."""
        return torch.autocast(self.device.type, torch.bfloat16, enabled=self.opt.bf16)

    def generator_step(self, pair: dict) -> tuple[dict[str, torch.Tensor], tuple]:
        """The G step; returns its losses and G's outputs (reconstruction, and rotated with
        --train_rotate, else None), from before G's update."""
        opt, model = self.opt, self.model
        g_opt = self.optimizers["G"]
        g_opt.zero_grad(set_to_none=True)
        fake_rotated = None
        with frozen(model.netD, model.netD_rotate):
            with self.autocast():
                losses, fake = model(pair, "generator")
            sum(losses.values()).backward()
            if opt.train_rotate:
                # A separate backward per forward: DDP syncs each pass on its own.
                with self.autocast():
                    rot_losses, fake_rotated = model(pair, "generator_rotated")
                sum(rot_losses.values()).backward()
                losses.update(rot_losses)
        g_opt.step()
        return losses, (fake, fake_rotated)

    def discriminator_step(self, pair: dict, fakes=(None, None)) -> dict[str, torch.Tensor]:
        """One D step; ``fakes`` are G's outputs (reconstruction, rotated) to learn from, or
        None to run G (as updated) again."""
        d_opt = self.optimizers["D"]
        d_opt.zero_grad(set_to_none=True)
        with self.autocast():
            losses = self.model(pair, "discriminator", fake=fakes[0])
            if self.opt.train_rotate:
                losses.update(self.model(pair, "discriminator_rotated", fake=fakes[1]))
        sum(losses.values()).backward()
        d_opt.step()
        return losses

    def step(self, pair: dict) -> tuple[dict[str, float], torch.Tensor]:
        """One iteration on a rendered pair: a G step, then --D_steps_per_G D steps. D sees
        the updated G, as in SPADE, or with --reuse_fake the G step's own output, as in
        pix2pixHD. Returns the loss values and G's output (before its update)."""
        losses, fakes = self.generator_step(pair)
        fakes = tuple(None if f is None else f.detach() for f in fakes)
        for _ in range(self.opt.D_steps_per_G):
            d_losses = self.discriminator_step(pair, fakes if self.opt.reuse_fake
                                               else (None, None))
        losses.update(d_losses)
        values = {k: float(v.detach()) for k, v in losses.items()}
        return values, fakes[0].float()

    def lr_factor(self, epoch: int) -> float:
        """Learning-rate multiplier in (1-based) ``epoch``, as in SPADE / the original: full
        rate for --niter epochs; after each later epoch it drops by 1/--niter_decay, so the
        last epoch runs at 1/niter_decay and the rate would reach zero after it."""
        opt = self.opt
        if opt.niter_decay <= 0:
            return 1.0
        done = max(0, epoch - 1 - opt.niter)
        return max(0.0, 1.0 - done / opt.niter_decay)

    def update_learning_rate(self, epoch: int) -> float:
        """Set the rates for ``epoch`` (idempotent, so resuming mid-schedule is exact);
        returns the generator's learning rate."""
        factor = self.lr_factor(epoch)
        for name, o in self.optimizers.items():
            for group in o.param_groups:
                group["lr"] = self.base_lr[name] * factor
        return self.optimizers["G"].param_groups[0]["lr"]

    def learning_rates(self) -> dict[str, float]:
        return {name: o.param_groups[0]["lr"] for name, o in self.optimizers.items()}

    # -------------------------------------------------------------------------- checkpoint
    def nets(self) -> dict:
        """name -> the net itself (outside any DDP wrapper), as a checkpoint saves it."""
        return {n: _unwrap(getattr(self.model, n)) for n in self.net_names()}

    def state_dict(self) -> dict:
        return {"nets": {n: net.state_dict() for n, net in self.nets().items()},
                "optimizers": {n: o.state_dict() for n, o in self.optimizers.items()}}

    def load_state_dict(self, state: dict, path: str):
        for n in self.net_names():
            if n not in state["nets"]:
                raise CheckpointError(f"{path} has no {n} (saved nets: "
                                      f"{', '.join(state['nets'])}); was it trained without "
                                      "--train_rotate?")
            load_net(_unwrap(getattr(self.model, n)), state["nets"][n], n, path)
        for n, o in self.optimizers.items():
            try:
                o.load_state_dict(state["optimizers"][n])
            except (KeyError, ValueError) as e:
                raise CheckpointError(f"{path}: optimiser {n} does not match ({e})") from None
