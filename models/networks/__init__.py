"""Network factories, command-line flags and checkpoint specs for Rotate-and-Render.

``define_G(opt)`` / ``define_D(opt)`` build an initialised network from an argparse-style
namespace; ``modify_commandline_options`` adds the flags they read. ``net_spec(net)`` is
what a checkpoint saves about a net's architecture, ``rebuild(spec)`` builds it again.
Importing this package registers every network (see models/registry.py): a new one needs
its import line here.
"""

from __future__ import annotations

from torch import nn

from models.networks.architecture import (
    VGG19,
    MissingWeightsError,
    ResnetBlock,
    SPADEResnetBlock,
)
from models.networks.blend_generator import BlendGenerator
from models.networks.discriminator import MultiscaleDiscriminator, NLayerDiscriminator
from models.networks.generator import RotateGenerator, RotateSPADEGenerator, add_flag
from models.networks.loss import GANLoss, VGGLoss, feature_matching_loss
from models.networks.normalization import SPADE, get_norm_layer, warm_up_spectral_norm
from models.registry import DISCRIMINATORS, GENERATORS

__all__ = [
    "DISCRIMINATORS", "GENERATORS", "INIT_TYPES", "SPADE", "VGG19", "BlendGenerator", "GANLoss",
    "MissingWeightsError", "MultiscaleDiscriminator", "NLayerDiscriminator", "ResnetBlock",
    "RotateGenerator", "RotateSPADEGenerator", "SPADEResnetBlock", "VGGLoss", "define_D",
    "define_G", "feature_matching_loss", "get_norm_layer", "init_weights",
    "flag_of_kind", "modify_commandline_options", "net_spec", "rebuild",
]

INIT_TYPES = ("xavier", "normal", "kaiming", "orthogonal")
_NORMS_HELP = "[spectral]{instance,batch,syncbatch,none}, e.g. spectralinstance"
_KINDS = {r.what: r for r in (GENERATORS, DISCRIMINATORS)}


def init_weights(net: nn.Module, init_type: str = "xavier", gain: float = 0.02) -> nn.Module:
    """Initialise conv/linear weights (``gain`` = std or gain) and norm affine params."""
    if init_type not in INIT_TYPES:
        raise ValueError(f"unknown --init_type {init_type!r}; choose one of: "
                         f"{', '.join(INIT_TYPES)}")
    for m in net.modules():
        if isinstance(m, (nn.BatchNorm2d, nn.SyncBatchNorm, nn.InstanceNorm2d)):
            if m.weight is not None:
                nn.init.normal_(m.weight, 1.0, gain)
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.Conv2d, nn.Linear)):
            # With spectral norm the trainable tensor is weight_orig; weight is derived.
            w = getattr(m, "weight_orig", m.weight)
            if init_type == "normal":
                nn.init.normal_(w, 0.0, gain)
            elif init_type == "xavier":
                nn.init.xavier_normal_(w, gain=gain)
            elif init_type == "kaiming":
                nn.init.kaiming_normal_(w, a=0, mode="fan_in")
            else:
                nn.init.orthogonal_(w, gain=gain)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
    # The weights changed under spectral norm's singular-vector estimates: refresh them.
    warm_up_spectral_norm(net)
    return net


def define_G(opt) -> nn.Module:
    """Generator named by ``opt.netG``, initialised per ``opt.init_type``/``init_variance``."""
    cls = GENERATORS.get(opt.netG)
    args = cls.args_from_opt(opt)
    # Checked here so a bad crop fails at start-up, not at the first forward.
    # A half-resolution U-Net (netG blend) halves the crop first.
    factor = 2 ** (args.get("n_downsample_G", 0) + bool(args.get("blend_downsample")))
    if opt.crop_size % factor:
        raise ValueError(f"--crop_size {opt.crop_size} must be divisible by {factor} "
                         "(2**n_downsample_G, times 2 for a half-resolution netG blend)")
    return init_weights(cls.from_args(args), opt.init_type, opt.init_variance)


def define_D(opt, input_nc: int | None = None) -> nn.Module:
    """Discriminator named by ``opt.netD`` taking ``input_nc`` channels (else ``opt.input_nc``).

    ``input_nc`` is the channel count of what the model concatenates: condition image +
    real/fake image (6), plus the landmark map's label_nc if the model also feeds it.
    """
    cls = DISCRIMINATORS.get(opt.netD)
    if input_nc is None:
        input_nc = getattr(opt, "input_nc", None)
        if input_nc is None:
            raise ValueError("define_D needs input_nc (argument or opt.input_nc)")
    return init_weights(cls.from_opt(opt, input_nc), opt.init_type, opt.init_variance)


def modify_commandline_options(parser, is_train: bool, netG_name: str | None = None,
                               netD_name: str | None = None):
    """Add the network flags; a name of None adds the flags of every registered class.

    Flags already defined elsewhere (e.g. --netD by the options module) are left as they are.
    """
    add_flag(parser, "--ngf", type=int, default=64, help="generator width of the first layer")
    add_flag(parser, "--norm_G", type=str, default="spectralinstance",
             help=f"generator normalisation: {_NORMS_HELP}")
    add_flag(parser, "--init_type", type=str, default="xavier", choices=INIT_TYPES,
             help="weight initialisation of G and D")
    add_flag(parser, "--init_variance", type=float, default=0.02,
             help="std (normal) or gain (xavier, orthogonal) of the weight initialisation")
    gens = GENERATORS.values() if netG_name is None else [GENERATORS.get(netG_name)]
    for g in gens:
        g.modify_commandline_options(parser, is_train)
    if not is_train:
        return parser
    add_flag(parser, "--netD", type=str, default="multiscale",
             help=f"discriminator: {', '.join(DISCRIMINATORS)}")
    add_flag(parser, "--ndf", type=int, default=64, help="discriminator width of the first layer")
    add_flag(parser, "--norm_D", type=str, default="spectralinstance",
             help=f"discriminator normalisation: {_NORMS_HELP}")
    add_flag(parser, "--vgg_weights", type=str, default=None,
             help="path to torchvision's vgg19-dcbb9e9d.pth for the VGG loss; default: look in "
                  "torch hub's cache (<hub dir>/checkpoints). Never downloaded")
    discs = DISCRIMINATORS.values() if netD_name is None else [DISCRIMINATORS.get(netD_name)]
    for d in discs:
        d.modify_commandline_options(parser, is_train)
    return parser


def net_spec(net: nn.Module) -> dict:
    """What rebuilds ``net``'s architecture: its registry kind, name and constructor
    arguments. ``net`` must come from ``from_opt``/``from_args`` (define_G, define_D)."""
    for kind, registry in _KINDS.items():
        name = registry.name_of(type(net))
        if name is not None:
            if not hasattr(net, "init_args"):
                raise ValueError(f"{kind} {name!r} was built directly, so its constructor "
                                 "arguments are unknown; build it with from_opt or from_args")
            return {"kind": kind, "name": name, "args": dict(net.init_args)}
    raise ValueError(f"{type(net).__name__} is not a registered generator or discriminator")


def flag_of_kind(kind: str) -> str:
    """The option that names a net of ``kind``: 'netG' for generators, 'netD' for
    discriminators."""
    return _KINDS[kind].flag.lstrip("-")


def spec_options(spec: dict) -> dict:
    """The option values a ``net_spec`` stands for: its registry name under its flag and its
    constructor arguments, translated by the class where an argument and its option differ
    (``options_from_args``). Unknown names give just the flag and the arguments."""
    values = {flag_of_kind(spec["kind"]): spec["name"]}
    try:
        cls = _KINDS[spec["kind"]].get(spec["name"])
    except (KeyError, ValueError):
        return values | dict(spec["args"])
    return values | cls.options_from_args(dict(spec["args"]))


def rebuild(spec: dict) -> nn.Module:
    """A freshly initialised net of the architecture ``net_spec`` described."""
    if spec.get("kind") not in _KINDS:
        raise ValueError(f"unknown network kind {spec.get('kind')!r}; expected one of: "
                         f"{', '.join(_KINDS)}")
    return _KINDS[spec["kind"]].get(spec["name"]).from_args(spec["args"])
