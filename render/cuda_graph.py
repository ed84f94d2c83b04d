"""Replay a rendering function as a CUDA graph: one launch instead of ~1,000 small kernels.

At 256 px and batch 8 a textured render costs well under a millisecond of GPU work but
~1,000 kernel launches, each several microseconds of Python and driver time, so eager mode
is bound by launches, not by the GPU. A CUDA graph records the kernels once and replays them
with one call. It needs fixed shapes and no host syncs, which the dense rasteriser provides
under a :class:`~render.rasterizer.SizingPlan`.

    render = CudaGraphed(lambda img, src, dst: training_pair(img, src, ..., mesh))
    out = render(img, src, dst)   # first call per input shapes: eager, then captured

The function must be pure in its tensor arguments (all on one CUDA device); anything else it
uses (the mesh, flags) is baked into the graph, and tensors among those must already be on
that device (a host-to-device copy cannot be captured: ``FaceMesh.mediapipe(device=...)``).
It may return a tensor, or a dict, list or tuple of them (nested; None allowed). Outputs are
cloned out of the graph's buffers unless ``clone_outputs=False``. After each replay one host
sync reads the plan's overflow flag: if some geometry needed more room than the recording
allowed, that call is re-run eagerly and the graph is captured again for the new sizes.
Arguments that are not all on CUDA run eagerly (with a warning when only some are).
"""

from __future__ import annotations

import warnings

import torch

from render.rasterizer import SizingPlan

__all__ = ["CudaGraphed"]


def _flatten(tree, leaves: list):
    """Tensors of a nested dict/list/tuple into ``leaves``; returns a spec to rebuild it."""
    if isinstance(tree, torch.Tensor):
        leaves.append(tree)
        return None
    if isinstance(tree, dict):
        return dict, [(k, _flatten(v, leaves)) for k, v in tree.items()]
    if isinstance(tree, list | tuple):
        return type(tree), [(None, _flatten(v, leaves)) for v in tree]
    if tree is None:
        return "none", None
    raise TypeError(f"CudaGraphed: outputs must be tensors, dicts, lists, tuples or None, "
                    f"got {type(tree).__name__}")


def _unflatten(spec, leaves):
    if spec is None:
        return next(leaves)
    kind, items = spec
    if kind == "none":
        return None
    if kind is dict:
        return {k: _unflatten(s, leaves) for k, s in items}
    return kind(_unflatten(s, leaves) for _, s in items)


class _Graph:
    def __init__(self, graph, inputs, outputs, spec, overflowed):
        self.graph, self.inputs, self.outputs = graph, inputs, outputs
        self.spec, self.overflowed = spec, overflowed


class CudaGraphed:
    """Callable wrapper that captures ``fn`` once per input signature and replays it.

    Args:
        fn: function of CUDA tensors only (see the module docstring).
        headroom: room each rasteriser step gets over its recorded work (>= 1).
        clone_outputs: return copies (safe to keep across calls); False returns the graph's
            own buffers, which the next call overwrites.
    """

    def __init__(self, fn, headroom: float = 1.5, clone_outputs: bool = True):
        self.fn, self.headroom, self.clone_outputs = fn, headroom, clone_outputs
        self._graphs: dict = {}
        self.captures = 0  # how many graphs were captured (re-captures included)

    def __call__(self, *args):
        if not args or not all(isinstance(a, torch.Tensor) for a in args):
            raise TypeError("CudaGraphed: call it with tensors only (bake in the rest)")
        devices = {a.device for a in args}
        if len(devices) > 1 or args[0].device.type != "cuda":
            if any(d.type == "cuda" for d in devices):
                warnings.warn("CudaGraphed: arguments on several devices "
                              f"({', '.join(sorted(map(str, devices)))}); running eagerly",
                              stacklevel=2)
            return self.fn(*args)
        key = tuple((tuple(a.shape), a.dtype) for a in args) + (args[0].device,)
        entry = self._graphs.get(key)
        if entry is None:
            return self._record_and_capture(key, args)
        for static, a in zip(entry.inputs, args):
            static.copy_(a)
        with torch.cuda.device(args[0].device):
            entry.graph.replay()
        if entry.overflowed is not None and bool(entry.overflowed):
            del self._graphs[key]  # geometry outgrew the plan: redo eagerly, re-capture
            return self._record_and_capture(key, args)
        outputs = [o.clone() for o in entry.outputs] if self.clone_outputs else entry.outputs
        return _unflatten(entry.spec, iter(outputs))

    def _record_and_capture(self, key, args):
        plan = SizingPlan(self.headroom)
        with plan.recording():
            result = self.fn(*args)  # this call's answer, computed eagerly
        _flatten(result, [])  # an output type we cannot return fails before any capture
        device = args[0].device
        with torch.cuda.device(device):
            inputs = [a.clone() for a in args]
            # Warm up, then capture, on one side stream (as the CUDA-graph docs ask):
            # cuBLAS workspaces, the allocator and lazy initialisation must not happen
            # during capture, and per-stream state is then the capture stream's own.
            side = torch.cuda.Stream(device=device)
            side.wait_stream(torch.cuda.current_stream(device))
            with torch.cuda.stream(side):
                for _ in range(2):
                    with plan.replay():
                        self.fn(*inputs)
            graph = torch.cuda.CUDAGraph()
            try:
                with torch.cuda.graph(graph, stream=side):
                    with plan.replay():
                        out = self.fn(*inputs)
                    overflowed = plan.overflowed()
            except RuntimeError as e:
                raise RuntimeError(f"CudaGraphed: capture failed; is everything the function "
                                   f"uses (e.g. the mesh) on {device}? ({e})") from e
            torch.cuda.current_stream(device).wait_stream(side)
        leaves: list = []
        spec = _flatten(out, leaves)
        flag = overflowed if isinstance(overflowed, torch.Tensor) else None
        self._graphs[key] = _Graph(graph, inputs, leaves, spec, flag)
        self.captures += 1
        return result
