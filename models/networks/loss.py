"""Losses: adversarial (GANLoss), discriminator feature matching, VGG perceptual loss.

Discriminator outputs are the multiscale nested lists of MultiscaleDiscriminator: one list
of features per scale, patch logits last. Losses are computed in fp32 for autocast safety.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from models.networks.architecture import VGG19, MissingWeightsError

__all__ = ["GAN_MODES", "GANLoss", "MissingWeightsError", "VGGLoss", "feature_matching_loss"]

GAN_MODES = ("hinge", "ls", "original", "w")


def _logits_per_scale(pred) -> list[torch.Tensor]:
    """Accept a tensor, a list of per-scale tensors, or per-scale feature lists."""
    if isinstance(pred, torch.Tensor):
        return [pred]
    return [p[-1] if isinstance(p, (list, tuple)) else p for p in pred]


class GANLoss(nn.Module):
    """Adversarial loss averaged over discriminator scales.

    hinge: D real mean(relu(1 - x)), D fake mean(relu(1 + x)), G -mean(x).
    ls: MSE to the target label. original: BCE with logits. w: Wasserstein, -+mean(x).
    """

    def __init__(
        self,
        gan_mode: str = "hinge",        # One of GAN_MODES.
        target_real_label: float = 1.0,  # Target for real in 'ls' and 'original'.
        target_fake_label: float = 0.0,  # Target for fake in 'ls' and 'original'.
    ):
        super().__init__()
        if gan_mode not in GAN_MODES:
            raise ValueError(f"unknown --gan_mode {gan_mode!r}; choose one of: "
                             f"{', '.join(GAN_MODES)}")
        self.gan_mode = gan_mode
        self.real_label, self.fake_label = target_real_label, target_fake_label

    def _single(self, x: torch.Tensor, target_is_real: bool, for_discriminator: bool):
        x = x.float()
        if self.gan_mode in ("ls", "original"):
            target = torch.full_like(x, self.real_label if target_is_real else self.fake_label)
            if self.gan_mode == "ls":
                return F.mse_loss(x, target)
            return F.binary_cross_entropy_with_logits(x, target)
        if self.gan_mode == "w":
            return -x.mean() if target_is_real else x.mean()
        # hinge
        if for_discriminator:
            return F.relu(1 - x).mean() if target_is_real else F.relu(1 + x).mean()
        if not target_is_real:
            raise ValueError("the hinge generator loss is only defined for target_is_real=True")
        return -x.mean()

    def forward(self, pred, target_is_real: bool, for_discriminator: bool = True) -> torch.Tensor:
        losses = [self._single(x, target_is_real, for_discriminator)
                  for x in _logits_per_scale(pred)]
        return torch.stack(losses).mean()


def feature_matching_loss(pred_fake, pred_real, lambda_feat: float = 10.0) -> torch.Tensor:
    """L1 between D's intermediate features on fake and on (detached) real images.

    Summed over the intermediate layers (logits excluded) and averaged over the scales, times
    lambda_feat, as in pix2pixHD / SPADE and the original, so their --lambda_feat carries over.
    """
    per_scale = []
    for feats_fake, feats_real in zip(pred_fake, pred_real):
        layers = [F.l1_loss(f.float(), r.detach().float())
                  for f, r in zip(feats_fake[:-1], feats_real[:-1])]
        per_scale.append(torch.stack(layers).sum())
    return torch.stack(per_scale).mean() * lambda_feat


class VGGLoss(nn.Module):
    """Perceptual loss: weighted L1 between VGG19 relu{1..5}_1 features of fake and real.

    Raises MissingWeightsError if the ImageNet weights are not on disk (never downloads).
    """

    weights = (1.0 / 32, 1.0 / 16, 1.0 / 8, 1.0 / 4, 1.0)

    def __init__(self, vgg_weights: str | None = None):  # Path; None = torch hub's cache.
        super().__init__()
        self.vgg = VGG19(vgg_weights)

    def forward(self, fake: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
        feats_fake = self.vgg(fake)
        with torch.no_grad():
            feats_real = self.vgg(real)
        loss = fake.new_zeros((), dtype=torch.float32)
        for w, f, r in zip(self.weights, feats_fake, feats_real):
            loss = loss + w * F.l1_loss(f.float(), r.float())
        return loss
