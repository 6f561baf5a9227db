"""Multi-head attention on `scaled_dot_product_attention`, split into safe batches.

Temporal attention runs one short sequence per latent pixel, so its batch
(sequences x heads) reaches the hundreds of thousands at video sizes. CUDA kernels
index batches with a 16-bit grid dimension (65,535), and the reference capped
each launch at 16,384 sequence-heads for the same reason; we do the same. Splitting
changes nothing numerically: sequences are independent.

Precision: SDPA's fused kernels accumulate the softmax in float32 for fp16/bf16
inputs, and its math fallback upcasts, so no manual "force fp32" step is needed.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.attention import SDPBackend, sdpa_kernel

MAX_BATCH_HEADS = 16384

SDPA_PRIORITY = "set_priority" in inspect.signature(sdpa_kernel).parameters
"""Whether this torch can order the SDPA kernels (2.6 on); older ones keep their own order."""


@contextmanager
def kernel_order(order: Sequence[SDPBackend]) -> Iterator[None]:
    """Ask SDPA for the kernels in `order` inside the block (each skipped where it cannot run); the
    previous order is restored on exit. On a torch that cannot order them, nothing changes."""
    if not SDPA_PRIORITY:
        yield
        return
    with sdpa_kernel(list(order), set_priority=True):
        yield


def multi_head_attention(
    q: Tensor, k: Tensor, v: Tensor, heads: int, *, max_batch_heads: int = MAX_BATCH_HEADS
) -> Tensor:
    """Attend q (N, Lq, heads*d) to k, v (N, Lk, heads*d); returns (N, Lq, heads*d)."""
    n, lq, inner = q.shape
    head_dim = inner // heads

    def split_heads(t: Tensor) -> Tensor:
        return t.unflatten(-1, (heads, head_dim)).transpose(1, 2)

    step = max(1, max_batch_heads // heads)
    if n <= step:
        out = F.scaled_dot_product_attention(split_heads(q), split_heads(k), split_heads(v))
        return out.transpose(1, 2).flatten(2)
    out = q.new_empty(n, lq, inner)
    for start in range(0, n, step):
        part = slice(start, start + step)
        chunk = F.scaled_dot_product_attention(
            split_heads(q[part]), split_heads(k[part]), split_heads(v[part])
        )
        out[part] = chunk.transpose(1, 2).flatten(2)
    return out


class Attention(nn.Module):
    """Self-attention, or cross-attention when a context is given.

    Parameter names (`to_q`, `to_k`, `to_v`, `to_out.0`) are the checkpoint's;
    q/k/v carry no bias, the output projection does.
    """

    def __init__(
        self,
        query_dim: int,
        heads: int,
        head_dim: int,
        context_dim: int | None = None,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        inner = heads * head_dim
        kv_dim = query_dim if context_dim is None else context_dim
        self.heads = heads
        self.to_q = nn.Linear(query_dim, inner, bias=False)
        self.to_k = nn.Linear(kv_dim, inner, bias=False)
        self.to_v = nn.Linear(kv_dim, inner, bias=False)
        self.to_out = nn.Sequential(nn.Linear(inner, query_dim), nn.Dropout(dropout))

    def forward(self, x: Tensor, context: Tensor | None = None) -> Tensor:
        """x (N, L, query_dim); context (N, Lc, context_dim) or None for self-attention."""
        source = x if context is None else context
        out = multi_head_attention(self.to_q(x), self.to_k(source), self.to_v(source), self.heads)
        return self.to_out(out)

