"""Discriminators: multiscale PatchGAN (pix2pixHD / SPADE design).

Every discriminator returns, per scale, the list of its intermediate features with the
patch logits last, so the same output feeds both GANLoss and the feature-matching loss.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from models.networks.generator import add_flag
from models.networks.normalization import get_norm_layer
from models.registry import D_SUBARCHS, DISCRIMINATORS, BuiltFromArgs


@D_SUBARCHS.register("n_layer")
class NLayerDiscriminator(nn.Module):
    """PatchGAN: 4x4 convs, stride 2 except the last two, LeakyReLU(0.2), no norm on layer 1."""

    def __init__(
        self,
        input_nc: int,              # Channels of concat(condition, image[, seg]).
        ndf: int = 64,              # Width of the first layer; doubles per layer up to 8*ndf.
        n_layers_D: int = 4,        # Conv layers before the 1-channel logit conv.
        norm_D: str = "spectralinstance",  # Norm string, see normalization.parse_norm.
    ):
        super().__init__()
        add_norm = get_norm_layer(norm_D)
        kw, pad = 4, math.ceil((4 - 1) / 2)
        layers = [nn.Sequential(nn.Conv2d(input_nc, ndf, kw, stride=2, padding=pad),
                                nn.LeakyReLU(0.2, inplace=False))]
        nf = ndf
        for n in range(1, n_layers_D):
            nf_prev, nf = nf, min(nf * 2, ndf * 8)
            stride = 1 if n == n_layers_D - 1 else 2
            layers.append(nn.Sequential(
                add_norm(nn.Conv2d(nf_prev, nf, kw, stride=stride, padding=pad)),
                nn.LeakyReLU(0.2, inplace=False)))
        layers.append(nn.Conv2d(nf, 1, kw, stride=1, padding=pad))
        self.layers = nn.ModuleList(layers)

    @staticmethod
    def modify_commandline_options(parser, is_train):
        add_flag(parser, "--n_layers_D", type=int, default=4,
                 help="conv layers in each PatchGAN discriminator")
        return parser

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        feats = []
        for layer in self.layers:
            # Not in-place: the features are kept for feature matching.
            x = layer(x)
            feats.append(x)
        return feats


@DISCRIMINATORS.register("multiscale")
class MultiscaleDiscriminator(BuiltFromArgs, nn.Module):
    """``num_D`` discriminators, each seeing a 2x average-pooled copy of the previous input."""

    def __init__(
        self,
        input_nc: int,              # Channels of concat(condition, image[, seg]).
        num_D: int = 2,             # Number of scales.
        netD_subarch: str = "n_layer",  # Per-scale discriminator, a name in D_SUBARCHS.
        ndf: int = 64,              # Forwarded to the sub-discriminator.
        n_layers_D: int = 4,        # Forwarded to the sub-discriminator.
        norm_D: str = "spectralinstance",  # Forwarded to the sub-discriminator.
    ):
        super().__init__()
        sub = D_SUBARCHS.get(netD_subarch)
        self.discriminators = nn.ModuleList(
            sub(input_nc, ndf=ndf, n_layers_D=n_layers_D, norm_D=norm_D) for _ in range(num_D)
        )

    @classmethod
    def args_from_opt(cls, opt, input_nc: int) -> dict:
        return dict(input_nc=input_nc, num_D=opt.num_D, netD_subarch=opt.netD_subarch,
                    ndf=opt.ndf, n_layers_D=opt.n_layers_D, norm_D=opt.norm_D)

    @staticmethod
    def modify_commandline_options(parser, is_train, netD_subarch: str | None = None):
        add_flag(parser, "--num_D", type=int, default=2,
                 help="number of discriminator scales (each halves the input resolution)")
        add_flag(parser, "--netD_subarch", type=str, default="n_layer",
                 help=f"per-scale discriminator: {', '.join(D_SUBARCHS)}")
        subs = D_SUBARCHS.values() if netD_subarch is None else [D_SUBARCHS.get(netD_subarch)]
        for sub in subs:
            sub.modify_commandline_options(parser, is_train)
        return parser

    def forward(self, x: torch.Tensor) -> list[list[torch.Tensor]]:
        outputs = []
        for i, d in enumerate(self.discriminators):
            if i > 0:
                x = F.avg_pool2d(x, kernel_size=3, stride=2, padding=1, count_include_pad=False)
            outputs.append(d(x))
        return outputs

