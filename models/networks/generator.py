"""Render-to-image generators: a rendered face (B, 3, H, W) in [-1, 1] -> a photo in [-1, 1].

Both generators share pix2pixHD's global encoder; 'rotate' keeps pix2pixHD's residual
bottleneck and decoder, 'rotatespade' replaces the bottleneck and decoder blocks with SPADE
residual blocks conditioned on a landmark map. Both take ``forward(image, seg)`` so callers
need not care which one they hold; ``uses_landmarks`` says whether ``seg`` is read, so the
model knows whether to draw the landmark map (and feed it to the discriminators).
"""

from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F
from torch import nn

from models.networks.architecture import ResnetBlock, SPADEResnetBlock
from models.networks.normalization import get_norm_layer
from models.registry import GENERATORS, BuiltFromArgs

_MAX_MULT = 16  # Channel cap: ngf * 16, reached only with 5+ downsamplings.


def _mult(i: int) -> int:
    return min(2**i, _MAX_MULT)


@GENERATORS.register("rotate")
class RotateGenerator(BuiltFromArgs, nn.Module):
    """pix2pixHD global generator: 7x7 conv, strided downsampling, residual blocks, upsampling."""

    uses_landmarks = False

    def __init__(
        self,
        input_nc: int = 3,          # Channels of the rendered input image.
        output_nc: int = 3,         # Channels of the produced image.
        ngf: int = 64,              # Width of the first/last layer; doubles per downsampling.
        n_downsample_G: int = 3,    # Stride-2 stages; input sides must divide 2**this.
        n_blocks_G: int = 9,        # Residual blocks at the bottleneck.
        norm_G: str = "spectralinstance",  # Norm string, see normalization.parse_norm.
    ):
        super().__init__()
        self.n_downsample_G = n_downsample_G
        add_norm = get_norm_layer(norm_G)
        self.encoder = _encoder(input_nc, ngf, n_downsample_G, add_norm)
        dim = ngf * _mult(n_downsample_G)
        self.blocks = nn.Sequential(*(ResnetBlock(dim, add_norm) for _ in range(n_blocks_G)))
        up = []
        for i in reversed(range(n_downsample_G)):
            # Nearest upsampling + conv instead of a transposed conv avoids checkerboard.
            up += [nn.Upsample(scale_factor=2, mode="nearest"),
                   add_norm(nn.Conv2d(ngf * _mult(i + 1), ngf * _mult(i), 3, padding=1)),
                   nn.ReLU(inplace=True)]
        self.decoder = nn.Sequential(*up)
        self.to_rgb = nn.Sequential(nn.ReflectionPad2d(3), nn.Conv2d(ngf, output_nc, 7), nn.Tanh())

    @classmethod
    def args_from_opt(cls, opt) -> dict:
        return dict(ngf=opt.ngf, n_downsample_G=opt.n_downsample_G, n_blocks_G=opt.n_blocks_G,
                    norm_G=opt.norm_G)

    @staticmethod
    def modify_commandline_options(parser, is_train):
        add_flag(parser, "--n_downsample_G", type=int, default=3,
             help="stride-2 downsampling stages in the generator "
                  "(crop_size must be divisible by 2**N)")
        add_flag(parser, "--n_blocks_G", type=int, default=9,
             help="residual blocks at the generator's bottleneck")
        return parser

    def forward(self, image: torch.Tensor, seg: torch.Tensor | None = None) -> torch.Tensor:
        """``seg`` is accepted for a uniform call signature and ignored."""
        _check_size(image, self.n_downsample_G)
        return self.to_rgb(self.decoder(self.blocks(self.encoder(image))))


@GENERATORS.register("rotatespade")
class RotateSPADEGenerator(BuiltFromArgs, nn.Module):
    """The 'rotate' encoder, then SPADE residual blocks at the bottleneck and in the decoder.

    The landmark map ``seg`` (B, label_nc, H, W) modulates every bottleneck and decoder
    block; each SPADE layer resizes it to its own resolution.
    """

    uses_landmarks = True

    def __init__(
        self,
        input_nc: int = 3,          # Channels of the rendered input image.
        output_nc: int = 3,         # Channels of the produced image.
        label_nc: int = 5,          # Channels of the landmark map.
        ngf: int = 64,              # Width of the first/last layer; doubles per downsampling.
        n_downsample_G: int = 3,    # Stride-2 stages; input sides must divide 2**this.
        n_blocks_G: int = 9,        # SPADE residual blocks at the bottleneck.
        norm_G: str = "spectralinstance",  # Encoder norm; in SPADE blocks the prefix
                                           # applies spectral norm, the kind is SPADE's norm.
        spade_nhidden: int = 128,   # Hidden width of each SPADE's embedding conv.
    ):
        super().__init__()
        self.n_downsample_G = n_downsample_G
        self.encoder = _encoder(input_nc, ngf, n_downsample_G, get_norm_layer(norm_G))
        dim = ngf * _mult(n_downsample_G)
        self.blocks = nn.ModuleList(
            SPADEResnetBlock(dim, dim, label_nc, norm_G, spade_nhidden) for _ in range(n_blocks_G)
        )
        self.up_blocks = nn.ModuleList(
            SPADEResnetBlock(ngf * _mult(i + 1), ngf * _mult(i), label_nc, norm_G, spade_nhidden)
            for i in reversed(range(n_downsample_G))
        )
        self.to_rgb = nn.Sequential(nn.LeakyReLU(0.2), nn.ReflectionPad2d(3),
                                    nn.Conv2d(ngf, output_nc, 7), nn.Tanh())

    @classmethod
    def args_from_opt(cls, opt) -> dict:
        return dict(label_nc=opt.label_nc, ngf=opt.ngf, n_downsample_G=opt.n_downsample_G,
                    n_blocks_G=opt.n_blocks_G, norm_G=opt.norm_G, spade_nhidden=opt.spade_nhidden)

    @staticmethod
    def modify_commandline_options(parser, is_train):
        RotateGenerator.modify_commandline_options(parser, is_train)
        add_flag(parser, "--spade_nhidden", type=int, default=128,
             help="hidden width of the conv that embeds the landmark map in each SPADE layer")
        return parser

    def forward(self, image: torch.Tensor, seg: torch.Tensor) -> torch.Tensor:
        _check_size(image, self.n_downsample_G)
        if seg is None:
            raise ValueError("netG 'rotatespade' needs the landmark map seg (B, label_nc, H, W)")
        x = self.encoder(image)
        for block in self.blocks:
            x = block(x, seg)
        for block in self.up_blocks:
            # Upsample first so each block's SPADE sees the landmarks at the finer scale.
            x = block(F.interpolate(x, scale_factor=2, mode="nearest"), seg)
        return self.to_rgb(x)


def _encoder(input_nc: int, ngf: int, n_down: int, add_norm) -> nn.Sequential:
    layers = [nn.ReflectionPad2d(3), add_norm(nn.Conv2d(input_nc, ngf, 7)), nn.ReLU(inplace=True)]
    for i in range(n_down):
        layers += [add_norm(nn.Conv2d(ngf * _mult(i), ngf * _mult(i + 1), 3, stride=2, padding=1)),
                   nn.ReLU(inplace=True)]
    return nn.Sequential(*layers)


def _check_size(image: torch.Tensor, n_down: int) -> None:
    h, w = image.shape[-2:]
    if h % 2**n_down or w % 2**n_down:
        raise ValueError(f"generator input {h}x{w} must be divisible by 2**n_downsample_G "
                         f"= {2**n_down}")


def add_flag(parser: argparse.ArgumentParser, *args, **kwargs) -> None:
    """parser.add_argument, once per flag: several networks share flags (both generators add
    --n_downsample_G, and with --netG unset every generator's flags are added), so a flag
    added again with the same definition is skipped. One added again with a different
    definition is an error: keeping either silently would give one network a default or
    meaning it was not written for."""
    scratch = argparse.ArgumentParser(add_help=False)
    new = scratch.add_argument(*args, **kwargs)
    existing = next((a for a in parser._actions
                     if set(a.option_strings) & set(new.option_strings)), None)
    if existing is None:
        parser.add_argument(*args, **kwargs)
    else:
        old, mine = _definition(existing), _definition(new)
        diff = [f"{k} {old[k]!r} vs {mine[k]!r}" for k in old if old[k] != mine[k]]
        if diff:
            raise ValueError(f"flag {'/'.join(new.option_strings)} is defined twice, "
                             f"differently: {'; '.join(diff)}")


def _definition(action: argparse.Action) -> dict:
    return dict(action=type(action).__name__, flags=action.option_strings, dest=action.dest,
                nargs=action.nargs, const=action.const, default=action.default,
                type=getattr(action.type, "__name__", action.type), choices=action.choices,
                help=action.help)
