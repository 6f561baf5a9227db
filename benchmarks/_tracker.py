"""Dispatch-level memory and FLOP probes for full-size models on the meta device.

The methodology of /work/shared/fixtures/star-reference/MEASUREMENTS.md, so our numbers
can be checked against the reference's:
- memory: every tensor storage an op creates is counted from its creation until its
  last reference dies (a weakref finalizer on the storage); views and in-place results
  share an input's storage and count nothing. Storages that existed before the probe
  (weights, inputs) are never counted: the peak is what the computation adds.
- attention is counted as a memory-efficient kernel: `scaled_dot_product_attention`
  is routed to aten's memory-efficient attention op, whose meta kernel allocates the
  output (and no attention matrix). On meta/CPU, SDPA would otherwise fall back to the
  math path, which materialises a float32 (queries x keys) matrix no GPU kernel makes.
- FLOPs: `torch.utils.flop_counter.FlopCounterMode`, with the same attention routing
  (the counter knows the efficient kernel's FLOPs: 4 x batch x heads x Lq x Lk x d).

Meta tensors carry shapes and dtypes but no data, so a 2-billion-parameter model and
its 20 GiB of activations cost nothing but Python time. Only meta storages count: host
tensors made on the way (noise drawn on the CPU, frames handed back) are not device
memory. Pipeline code that reads values gets a healthy run's answers (`Meta`).
"""

from __future__ import annotations

import weakref
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves
from torch.utils.flop_counter import FlopCounterMode

GiB = 1024**3


class EfficientAttention(TorchFunctionMode):
    """Run SDPA as aten's memory-efficient attention kernel (output only, no score matrix)."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is F.scaled_dot_product_attention:
            q, k, v, *rest = args
            options = dict(zip(("attn_mask", "dropout_p", "is_causal", "scale"), rest)) | kwargs
            out = torch.ops.aten._scaled_dot_product_efficient_attention(
                q,
                k,
                v,
                options.get("attn_mask"),
                False,
                dropout_p=options.get("dropout_p", 0.0),
                is_causal=options.get("is_causal", False),
                scale=options.get("scale"),
            )
            return out[0]
        return func(*args, **kwargs)


@dataclass(frozen=True)
class PeakRecord:
    """Where the peak was reached: the op that allocated last, its output, the module running."""

    bytes: int
    op: str
    shape: tuple[int, ...]
    module: str


class Meta(TorchFunctionMode):
    """Let code that inspects values run on meta tensors: `bool()` is True, `.cpu()` gives zeros.

    Pipeline code checks results (`if not torch.isfinite(x).all()`) and hands frames to
    the host (`.cpu().numpy()`); neither has a value on meta. Both answers are the
    ones a healthy run gives, so the code under test takes its normal path.
    """

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is torch.Tensor.__bool__ and args[0].is_meta:
            return True
        if func is torch.Tensor.cpu and args[0].is_meta:
            return torch.zeros(args[0].shape, dtype=args[0].dtype)
        return func(*args, **kwargs)


class MemoryTracker(TorchDispatchMode):
    """Live bytes of the meta storages created under this mode, and their peak."""

    def __init__(self) -> None:
        super().__init__()
        self.live = 0
        self.peak = PeakRecord(0, "", (), "")
        self._tracked: dict[int, int] = {}
        self._stack: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        inputs = {id(t.untyped_storage()) for t in tree_leaves((args, kwargs)) if isinstance(t, torch.Tensor)}
        new = [t for t in tree_leaves(out) if isinstance(t, torch.Tensor) and self._track(t.untyped_storage(), inputs)]
        if new and self.live > self.peak.bytes:
            largest = max(new, key=lambda t: t.untyped_storage().nbytes())
            module = self._stack[-1] if self._stack else ""
            self.peak = PeakRecord(self.live, str(func), tuple(largest.shape), module)
        return out

    def _track(self, storage: torch.UntypedStorage, inputs: set[int]) -> bool:
        """Count `storage` if the op created it on meta; True if it did."""
        key = id(storage)
        if key in inputs or key in self._tracked or storage.device.type != "meta":
            return False
        self._tracked[key] = storage.nbytes()
        self.live += self._tracked[key]
        weakref.finalize(storage, self._release, key)
        return True

    def _release(self, key: int) -> None:
        self.live -= self._tracked.pop(key)

    @contextmanager
    def module_names(self, model: nn.Module) -> Iterator[None]:
        """Record which submodule of `model` is running, so the peak names its place."""
        names = {m: n for n, m in model.named_modules()}

        def enter(module, _args):
            if module in names:
                self._stack.append(names[module])

        def leave(module, _args, _out):
            if module in names:
                self._stack.pop()

        handles = (
            nn.modules.module.register_module_forward_pre_hook(enter),
            nn.modules.module.register_module_forward_hook(leave),
        )
        try:
            yield
        finally:
            for handle in handles:
                handle.remove()


@contextmanager
def track_memory(*models: nn.Module) -> Iterator[MemoryTracker]:
    """Count the meta bytes allocated inside the block (attention as a memory-efficient kernel).

    `models` name the submodule where the peak happens; value checks pass (`Meta`).
    """
    tracker = MemoryTracker()
    with ExitStack() as stack:
        stack.enter_context(torch.no_grad())
        stack.enter_context(EfficientAttention())
        stack.enter_context(Meta())
        for model in models:
            stack.enter_context(tracker.module_names(model))
        stack.enter_context(tracker)
        yield tracker


@contextmanager
def count_flops() -> Iterator[FlopCounterMode]:
    """FlopCounterMode over the block (attention as the memory-efficient kernel)."""
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), EfficientAttention(), counter:
        yield counter


def module_bytes(module: nn.Module) -> int:
    """Bytes of every parameter and buffer of `module` (meta tensors included)."""
    return sum(t.numel() * t.element_size() for t in (*module.parameters(), *module.buffers()))


def largest_direct_bytes(module: nn.Module) -> int:
    """The most bytes any one submodule holds directly (not through its children).

    What `accelerate.cpu_offload` keeps on the device at once: it hooks every module
    that owns tensors directly and loads only those for the duration of its forward.
    """
    return max(
        sum(t.numel() * t.element_size() for t in (*m.parameters(recurse=False), *m.buffers(recurse=False)))
        for m in module.modules()
    )
