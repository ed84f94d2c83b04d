"""Small helpers shared by the test modules (importable because pytest puts tests/ on the
path)."""

from __future__ import annotations

import html.parser

import torch
from torch.utils._python_dispatch import TorchDispatchMode


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


class HostSyncs(TorchDispatchMode):
    """Counts the operations that make the host wait for the device's result."""

    def __init__(self, monkeypatch):
        super().__init__()
        self.count = 0
        tolist = torch.Tensor.tolist  # not dispatched for CPU tensors: spy on it directly

        def counted(t):
            self.count += 1
            return tolist(t)

        monkeypatch.setattr(torch.Tensor, "tolist", counted)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = func.overloadpacket.__name__
        self.count += name in ("_local_scalar_dense", "nonzero", "repeat_interleave")
        return func(*args, **(kwargs or {}))
