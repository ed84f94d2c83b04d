"""Count what a piece of PyTorch code launches: ATen operations other than views (roughly
kernel launches on a GPU) and host syncs (operations whose result the host must wait for).
Used by benchmarks/render.py and by the tests that keep the GPU render path sync-free."""

from __future__ import annotations

import torch
from torch.utils._python_dispatch import TorchDispatchMode

_VIEWS = {"view", "_unsafe_view", "select", "slice", "unsqueeze", "squeeze", "t",
          "transpose", "permute", "expand", "unbind", "split", "alias", "detach",
          "lift_fresh", "view_as_real", "as_strided"}


class OpCounter(TorchDispatchMode):
    """``with OpCounter() as c: ...`` then ``c.ops`` and ``c.syncs``.

    A host sync is reading a value (.item()/int()/bool()/.tolist(), a copy to the host), or
    an operation whose output size depends on the data (nonzero, repeat_interleave without
    ``output_size``)."""

    def __init__(self):
        super().__init__()
        self.ops = self.syncs = 0
        self._tolist = None

    def __enter__(self):
        tolist = self._tolist = torch.Tensor.tolist

        def counted(t):
            # .tolist() of a CPU tensor is not dispatched: spy on it directly. Elsewhere it
            # dispatches a copy to the host, counted below; counting it here too would count
            # one sync twice.
            self.syncs += t.device.type == "cpu"
            return tolist(t)

        torch.Tensor.tolist = counted
        return super().__enter__()

    def __exit__(self, *exc):
        torch.Tensor.tolist = self._tolist
        return super().__exit__(*exc)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = func.overloadpacket.__name__
        self.ops += name not in _VIEWS
        self.syncs += (name in ("_local_scalar_dense", "nonzero")
                       or name == "repeat_interleave" and kwargs.get("output_size") is None
                       or name == "_to_copy" and args[0].device.type != "cpu"
                       and torch.device(kwargs.get("device", args[0].device)).type == "cpu")
        return func(*args, **kwargs)
