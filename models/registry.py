"""The names ``--model``, ``--netG``, ``--netD`` and ``--netD_subarch`` pick, and what a
picked network must provide so that a checkpoint can rebuild it.

A class joins by decorating itself (``@GENERATORS.register("mine")``); its module must be
imported once, by ``models/networks/__init__.py`` (networks) or ``models/__init__.py``
(models), so that the flag sees it.
"""

from __future__ import annotations

from util.registry import Registry

MODELS = Registry("model", flag="--model")
GENERATORS = Registry("generator", flag="--netG")
DISCRIMINATORS = Registry("discriminator", flag="--netD")
D_SUBARCHS = Registry("per-scale discriminator", flag="--netD_subarch")


class BuiltFromArgs:
    """Mixin of every registered generator and discriminator (nanoGPT's ``model_args``).

    A subclass says which constructor arguments the options ask for (``args_from_opt``);
    ``from_opt`` builds the net with them and keeps them as ``init_args``, which a checkpoint
    saves, so ``from_args(init_args)`` rebuilds the same architecture without the options.
    The arguments must be plain values (int, float, str, bool, None): checkpoints are read
    with ``weights_only=True``.
    """

    init_args: dict

    @classmethod
    def args_from_opt(cls, opt, *given) -> dict:
        """``given``: what the caller decides rather than the options (a discriminator's
        input channels)."""
        raise NotImplementedError(f"{cls.__name__} must define args_from_opt(opt)")

    @classmethod
    def options_from_args(cls, args: dict) -> dict:
        """The option values constructor ``args`` stand for (so a run that loads the net
        records, and warns about, what it really is): by default the arguments themselves
        (those named like an option are that option)."""
        return dict(args)

    @classmethod
    def from_opt(cls, opt, *given):
        return cls.from_args(cls.args_from_opt(opt, *given))

    @classmethod
    def from_args(cls, args: dict):
        net = cls(**args)
        net.init_args = dict(args)
        return net
