"""Building blocks: pix2pixHD residual block, SPADE residual block, frozen VGG19 features."""

from __future__ import annotations

import os
from urllib.parse import urlparse

import torch
import torch.nn.functional as F
from torch import nn

from models.networks.normalization import SPADE, get_norm_layer, parse_norm, spectral_norm


class ResnetBlock(nn.Module):
    """pix2pixHD residual block: x + norm(conv(act(norm(conv(x))))) with reflection padding."""

    def __init__(
        self,
        dim: int,                       # Channels in and out.
        norm_layer="spectralinstance",  # Norm string, or a get_norm_layer() function.
        kernel_size: int = 3,           # Conv kernel size (odd).
    ):
        super().__init__()
        add_norm = get_norm_layer(norm_layer) if isinstance(norm_layer, str) else norm_layer
        pad = kernel_size // 2
        self.conv_block = nn.Sequential(
            nn.ReflectionPad2d(pad),
            add_norm(nn.Conv2d(dim, dim, kernel_size)),
            nn.ReLU(inplace=True),
            nn.ReflectionPad2d(pad),
            add_norm(nn.Conv2d(dim, dim, kernel_size)),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv_block(x)


class SPADEResnetBlock(nn.Module):
    """Residual block whose norms are SPADE layers conditioned on a label map.

    Main path: SPADE -> LeakyReLU -> conv3x3 -> SPADE -> LeakyReLU -> conv3x3. When the
    channel count changes, the shortcut is SPADE -> conv1x1 instead of the identity.
    """

    def __init__(
        self,
        fin: int,                   # Input channels.
        fout: int,                  # Output channels.
        label_nc: int,              # Channels of the conditioning map.
        norm_G: str = "spectralinstance",  # '[spectral]<kind>': spectral on the convs,
                                           # <kind> is SPADE's parameter-free norm.
        nhidden: int = 128,         # Hidden width of each SPADE's embedding conv.
    ):
        super().__init__()
        use_spectral, kind = parse_norm(norm_G)
        wrap = spectral_norm if use_spectral else (lambda m: m)
        fmiddle = min(fin, fout)
        self.learned_shortcut = fin != fout
        self.conv_0 = wrap(nn.Conv2d(fin, fmiddle, 3, padding=1))
        self.conv_1 = wrap(nn.Conv2d(fmiddle, fout, 3, padding=1))
        self.norm_0 = SPADE(fin, label_nc, kind, nhidden)
        self.norm_1 = SPADE(fmiddle, label_nc, kind, nhidden)
        if self.learned_shortcut:
            self.conv_s = wrap(nn.Conv2d(fin, fout, 1, bias=False))
            self.norm_s = SPADE(fin, label_nc, kind, nhidden)

    def forward(self, x: torch.Tensor, seg: torch.Tensor) -> torch.Tensor:
        x_s = self.conv_s(self.norm_s(x, seg)) if self.learned_shortcut else x
        dx = self.conv_0(F.leaky_relu(self.norm_0(x, seg), 0.2))
        dx = self.conv_1(F.leaky_relu(self.norm_1(dx, seg), 0.2))
        return x_s + dx


class MissingWeightsError(FileNotFoundError):
    """Pretrained weights are not on disk (they are never downloaded)."""


# torchvision's VGG19 'features' layout: conv widths, 'M' = 2x2 max-pool.
_VGG19_CFG = [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M",
              512, 512, 512, 512, "M", 512, 512, 512, 512, "M"]
# End indices (exclusive) in 'features' of relu1_1, relu2_1, relu3_1, relu4_1, relu5_1.
_VGG19_SLICE_ENDS = (2, 7, 12, 21, 30)


def vgg19_weights_filename() -> str:
    """File name torchvision caches VGG19_Weights.IMAGENET1K_V1 under."""
    from torchvision.models import VGG19_Weights

    return os.path.basename(urlparse(VGG19_Weights.IMAGENET1K_V1.url).path)


def vgg19_features() -> nn.Sequential:
    """Randomly initialised VGG19 'features' stack, key-compatible with torchvision's."""
    layers, in_ch = [], 3
    for v in _VGG19_CFG:
        if v == "M":
            layers.append(nn.MaxPool2d(2, 2))
        else:
            layers += [nn.Conv2d(in_ch, v, 3, padding=1), nn.ReLU(inplace=True)]
            in_ch = v
    return nn.Sequential(*layers)


def find_vgg19_weights(vgg_weights: str | None = None) -> str:
    """Path of the VGG19 ImageNet weights: ``vgg_weights`` if given, else torch hub's cache."""
    name = vgg19_weights_filename()
    cache = os.path.join(torch.hub.get_dir(), "checkpoints", name)
    candidates = [vgg_weights] if vgg_weights else [cache]
    for path in candidates:
        if os.path.isfile(path):
            return path
    raise MissingWeightsError(
        f"VGG19 ImageNet weights ({name}) not found; looked at: {', '.join(candidates)}. "
        "Nothing is downloaded. On a machine with internet run "
        "python -c \"import torchvision; torchvision.models.vgg19(weights='IMAGENET1K_V1')\" "
        f"and copy {name} to {cache}, or pass --vgg_weights PATH. "
        "Alternatively train with --no_vgg_loss to skip the perceptual loss."
    )


class VGG19(nn.Module):
    """Frozen VGG19 returning relu1_1, relu2_1, relu3_1, relu4_1, relu5_1 features.

    Takes images in [-1, 1] and applies the ImageNet normalisation itself.
    """

    def __init__(self, vgg_weights: str | None = None):  # Path to vgg19-*.pth; see above.
        super().__init__()
        features = vgg19_features()
        path = find_vgg19_weights(vgg_weights)
        state = torch.load(path, map_location="cpu", weights_only=True)
        expected = {f"features.{k}" for k in features.state_dict()}
        missing = sorted(expected - set(state))
        # torchvision's file also holds the classifier, which we do not need.
        unexpected = sorted(k for k in set(state) - expected if not k.startswith("classifier."))
        if missing or unexpected:
            raise ValueError(
                f"{path} is not a torchvision VGG19 state dict; "
                f"missing keys: {missing or 'none'}; unexpected keys: {unexpected or 'none'}"
            )
        features.load_state_dict({k[len("features."):]: state[k] for k in expected})
        bounds = (0, *_VGG19_SLICE_ENDS)
        self.slices = nn.ModuleList(
            features[a:b] for a, b in zip(bounds[:-1], bounds[1:])
        )
        self.register_buffer("mean", torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1),
                             persistent=False)
        self.register_buffer("std", torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1),
                             persistent=False)
        self.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True) -> VGG19:
        # Always a fixed feature extractor, whatever mode the parent model is put in.
        return super().train(False)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        h = ((x + 1) / 2 - self.mean) / self.std
        feats = []
        for s in self.slices:
            h = s(h)
            feats.append(h)
        return feats
