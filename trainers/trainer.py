"""The optimisation step: one generator step (+ the rotated-mesh step), then D steps.

Owns the optimisers (TTUR: G at lr/2, D at lr*2 unless --no_TTUR, as in SPADE), the linear
learning-rate decay over --niter_decay epochs, DDP wrapping, and checkpoint state.
"""

from __future__ import annotations

import torch
from torch.nn.parallel import DistributedDataParallel as DDP

from models.rotate_model import _unwrap
from util.checkpoint import CheckpointError, load_net


class Trainer:
    def __init__(self, opt, model, device: torch.device, distributed: bool = False):
        self.opt = opt
        self.model = model.to(device)
        self.device = device
        if distributed:
            ids = [device.index] if device.type == "cuda" else None
            for name in self.net_names():
                net = torch.nn.SyncBatchNorm.convert_sync_batchnorm(getattr(model, name))
                setattr(model, name, DDP(net, device_ids=ids, broadcast_buffers=False))
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
    def step(self, pair: dict) -> tuple[dict[str, float], torch.Tensor]:
        """One iteration on a rendered pair; returns the loss values and G's output."""
        opt, model = self.opt, self.model
        g_opt, d_opt = self.optimizers["G"], self.optimizers["D"]
        g_opt.zero_grad(set_to_none=True)
        losses, fake = model(pair, "generator")
        sum(losses.values()).backward()
        if opt.train_rotate:
            # A separate backward per forward: DDP syncs each pass on its own.
            rot_losses, _ = model(pair, "generator_rotated")
            sum(rot_losses.values()).backward()
            losses.update(rot_losses)
        g_opt.step()
        for _ in range(opt.D_steps_per_G):
            d_opt.zero_grad(set_to_none=True)
            d_losses = model(pair, "discriminator")
            if opt.train_rotate:
                d_losses.update(model(pair, "discriminator_rotated"))
            sum(d_losses.values()).backward()
            d_opt.step()
        losses.update(d_losses)
        values = {k: float(v.detach()) for k, v in losses.items()}
        return values, fake.detach()

    def update_learning_rate(self, epoch: int) -> float:
        """Linear decay to zero over the --niter_decay epochs after --niter (1-based epochs);
        returns the generator's learning rate."""
        opt = self.opt
        done = max(0, epoch - opt.niter)
        factor = 1.0 - done / (opt.niter_decay + 1) if opt.niter_decay > 0 else 1.0
        for name, o in self.optimizers.items():
            for group in o.param_groups:
                group["lr"] = self.base_lr[name] * factor
        return self.optimizers["G"].param_groups[0]["lr"]

    # -------------------------------------------------------------------------- checkpoint
    def state_dict(self) -> dict:
        return {"nets": {n: _unwrap(getattr(self.model, n)).state_dict()
                         for n in self.net_names()},
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
