"""Normalisation layers: the ``--norm_G`` / ``--norm_D`` factory and SPADE.

Norm strings are ``[spectral]<kind>`` with ``<kind>`` one of ``instance``, ``batch``,
``syncbatch`` or ``none``: the optional ``spectral`` prefix wraps the convolution in
spectral normalisation, ``<kind>`` picks the feature normalisation that follows it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.spectral_norm import SpectralNorm

NORM_KINDS = ("instance", "batch", "syncbatch", "none")


def parse_norm(norm_type: str) -> tuple[bool, str]:
    """Split a norm string into ``(use_spectral, kind)``; 'spectral' alone means no feature norm."""
    use_spectral = norm_type.startswith("spectral")
    kind = norm_type[len("spectral"):] if use_spectral else norm_type
    kind = kind or "none"
    if kind not in NORM_KINDS:
        valid = ", ".join(f"{p}{k}" for p in ("", "spectral") for k in NORM_KINDS)
        raise ValueError(f"unknown norm {norm_type!r}; choose one of: {valid}")
    return use_spectral, kind


def feature_norm(kind: str, num_features: int, affine: bool = True) -> nn.Module:
    """A 2-D feature normalisation layer of the given kind ('none' gives Identity)."""
    if kind == "instance":
        # Affine-free as in pix2pixHD/SPADE: per-image statistics, no learned scale.
        return nn.InstanceNorm2d(num_features, affine=False)
    if kind == "batch":
        return nn.BatchNorm2d(num_features, affine=affine)
    if kind == "syncbatch":
        # torch's own SyncBatchNorm; it falls back to plain batch norm outside DDP.
        return nn.SyncBatchNorm(num_features, affine=affine)
    if kind == "none":
        return nn.Identity()
    raise ValueError(f"unknown norm kind {kind!r}; choose one of: {', '.join(NORM_KINDS)}")


def spectral_norm(module: nn.Module) -> nn.Module:
    """``torch.nn.utils.spectral_norm``: the trainable tensor becomes ``weight_orig``."""
    return nn.utils.spectral_norm(module)


def warm_up_spectral_norm(net: nn.Module, n_iter: int = 20) -> None:
    """Run power iterations on every spectral-normalised layer of ``net``.

    torch starts ``u``/``v`` random and refines them one step per training forward, so a
    freshly (re)initialised layer would otherwise divide by a poor sigma estimate.
    """
    for m in net.modules():
        for hook in m._forward_pre_hooks.values():
            if isinstance(hook, SpectralNorm):
                with torch.no_grad():
                    for _ in range(n_iter):
                        weight = hook.compute_weight(m, do_power_iteration=True)
                setattr(m, hook.name, weight)


def get_norm_layer(norm_type: str = "spectralinstance"):
    """Return ``add_norm(conv) -> nn.Module`` applying ``norm_type`` to a conv layer.

    The returned module is the (possibly spectral-normalised) conv followed by the feature
    norm. When a feature norm follows, the conv's bias is dropped since the norm would
    subtract it anyway.
    """
    use_spectral, kind = parse_norm(norm_type)

    def add_norm(layer: nn.Module) -> nn.Module:
        if kind != "none" and getattr(layer, "bias", None) is not None:
            layer.bias = None
        if use_spectral:
            layer = spectral_norm(layer)
        if kind == "none":
            return layer
        return nn.Sequential(layer, feature_norm(kind, layer.out_channels))

    return add_norm


class SPADE(nn.Module):
    """Spatially-adaptive normalisation (Park et al., CVPR 2019).

    A parameter-free norm whitens ``x``; a per-pixel scale and shift, predicted from the
    conditioning map resized to ``x``'s resolution, then modulate it.
    """

    def __init__(
        self,
        norm_nc: int,               # Channels of the features being normalised.
        label_nc: int,              # Channels of the conditioning map.
        param_free_norm: str = "instance",  # 'instance' | 'batch' | 'syncbatch' | 'none'.
        nhidden: int = 128,         # Width of the shared conv that embeds the map.
        kernel_size: int = 3,       # Kernel size of the modulation convs.
    ):
        super().__init__()
        self.param_free_norm = feature_norm(param_free_norm, norm_nc, affine=False)
        pad = kernel_size // 2
        self.shared = nn.Sequential(
            nn.Conv2d(label_nc, nhidden, kernel_size, padding=pad), nn.ReLU(inplace=True)
        )
        self.gamma = nn.Conv2d(nhidden, norm_nc, kernel_size, padding=pad)
        self.beta = nn.Conv2d(nhidden, norm_nc, kernel_size, padding=pad)

    def forward(self, x: torch.Tensor, segmap: torch.Tensor) -> torch.Tensor:
        normalized = self.param_free_norm(x)
        segmap = F.interpolate(segmap.to(x.dtype), size=x.shape[2:], mode="nearest")
        actv = self.shared(segmap)
        # (1 + gamma) so that a zero-initialised modulation starts as the identity.
        return normalized * (1 + self.gamma(actv)) + self.beta(actv)
