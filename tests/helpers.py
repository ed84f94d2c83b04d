"""Small helpers shared by the test modules (importable because pytest puts tests/ on the
path)."""

from __future__ import annotations

import html.parser


class _Links(html.parser.HTMLParser):
    def __init__(self):
        super().__init__()
        self.links: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.links += [v for k, v in attrs if k in ("src", "href") and v]


def page_links(path) -> list[str]:
    """Every src/href of an HTML page, as written (relative paths stay relative)."""
    parser = _Links()
    with open(path) as f:
        parser.feed(f.read())
    return parser.links


# A tiny rotatespade generator (a few thousand weights): fast enough for end-to-end runs.
TINY_G = ["--ngf", "8", "--n_blocks_G", "1", "--n_downsample_G", "2", "--spade_nhidden", "8",
          "--crop_size", "64", "--device", "cpu", "--model", "rotatespade"]


def write_tiny_checkpoint(root, name: str = "tiny", extra=(), iteration: int = 0,
                          seed: int = 1) -> str:
    """``<root>/<name>/latest.pt`` as train.py writes it (``util.checkpoint.Checkpointer``),
    of a tiny model made by the real model code, initialised from ``seed`` (so its outputs
    do not depend on which tests ran before; the global RNG is left as it was); ``extra``:
    more training flags. Returns the path.

    An untrained tiny G's output is a nearly flat grey: with seed 1 it spans more than the
    16 grey levels that test_inference's not-blank check asks of every output (seeds 0, 2
    and 3 give 15-16 levels at 64 px)."""
    import os

    import torch

    from models import create_model
    from options.train_options import TrainOptions
    from trainers.trainer import Trainer
    from util.checkpoint import Checkpointer, rng_state

    opt = TrainOptions().parse(TINY_G + ["--name", name, "--checkpoints_dir", str(root),
                                         "--no_vgg_loss", "--ndf", "8", "--num_D", "1",
                                         "--n_layers_D", "2", *extra])
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = create_model(opt)
        trainer = Trainer(opt, model, torch.device("cpu"))
    return Checkpointer(os.path.join(str(root), name)).save(
        "latest", trainer.nets(), trainer.optimizers, settings=model.settings(),
        options=vars(opt), iteration=iteration, epoch=1, epoch_iter=iteration, rng=rng_state())


def assert_same_state(a, b, where: str = "", exact: bool = True):
    """Two saved states (dicts / lists of tensors and plain values) equal, recursively:
    tensors bit for bit (``exact``) or to float32 round-off; ``where`` names the key path in
    a failure."""
    import torch

    if isinstance(a, dict):
        assert set(a) == set(b), where
        for k in a:
            assert_same_state(a[k], b[k], f"{where}/{k}", exact)
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            assert_same_state(x, y, f"{where}[{i}]", exact)
    elif torch.is_tensor(a):
        if exact:
            assert torch.equal(a, b), where
        else:
            torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7, msg=where)
    else:
        assert a == b, where
