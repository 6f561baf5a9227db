"""Spatial and temporal transformers of the STAR UNet, each with its LIEM gates.

Spatial transformers attend over the pixels of one frame and cross-attend to the
text; temporal transformers attend over the frames of one pixel, twice (both
attentions are self-attentions: the reference builds them without a context).
Module and parameter names follow the checkpoint: `norm`, `proj_in`,
`transformer_blocks.0.{attn1,attn2,ff,norm1..3,local1,local2}`, `proj_out`.
"""

from __future__ import annotations

from contextlib import nullcontext

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from star_cli.models.attention import Attention, kernel_order
from star_cli.models.blocks import zero_init
from star_cli.models.conditioning import Conditioning, ConditionedBlock
from star_cli.models.device_forms import SHORT_SEQUENCE_ORDER, group_norm_by_reductions
from star_cli.models.liem import SpatialLIEM, TemporalLIEM


class GEGLU(nn.Module):
    """Linear to twice the width, then value * gelu(gate) (exact GELU, as the reference)."""

    def __init__(self, dim_in: int, dim_out: int) -> None:
        super().__init__()
        self.proj = nn.Linear(dim_in, dim_out * 2)

    def forward(self, x: Tensor) -> Tensor:
        value, gate = self.proj(x).chunk(2, dim=-1)
        return value * F.gelu(gate)


class FeedForward(nn.Module):
    """GEGLU feed-forward (width x4), optionally evaluated a slice of tokens at a time.

    The top-level GEGLU holds tokens x 2560 x 2 values at once and is the largest
    activation of the whole model; tokens are independent here, so slicing them
    (`chunk_tokens`) gives the same result with a peak bounded by the slice.
    """

    def __init__(self, dim: int, mult: int = 4, dropout: float = 0.0) -> None:
        super().__init__()
        inner = dim * mult
        self.net = nn.Sequential(GEGLU(dim, inner), nn.Dropout(dropout), nn.Linear(inner, dim))
        self.chunk_tokens: int | None = None

    def forward(self, x: Tensor) -> Tensor:
        tokens = x.reshape(-1, x.shape[-1])
        if self.chunk_tokens is None or tokens.shape[0] <= self.chunk_tokens:
            return self.net(x)
        parts = [self.net(part) for part in tokens.split(self.chunk_tokens)]
        return torch.cat(parts).view(x.shape)


class _TransformerBlockBase(nn.Module):
    """The parameters shared by both block kinds: two attentions, GEGLU, three LayerNorms."""

    def __init__(self, dim: int, heads: int, head_dim: int, context_dim: int | None) -> None:
        super().__init__()
        self.attn1 = Attention(dim, heads, head_dim)
        self.attn2 = Attention(dim, heads, head_dim, context_dim=context_dim)
        self.ff = FeedForward(dim)
        self.norm1 = nn.LayerNorm(dim)
        self.norm2 = nn.LayerNorm(dim)
        self.norm3 = nn.LayerNorm(dim)


class SpatialTransformerBlock(_TransformerBlockBase):
    """LIEM -> self-attention, cross-attention to the text, feed-forward (pre-norm, residual)."""

    def __init__(self, dim: int, heads: int, head_dim: int, context_dim: int) -> None:
        super().__init__(dim, heads, head_dim, context_dim)
        self.local1 = SpatialLIEM()

    def forward(self, x: Tensor, context: Tensor, height: int, width: int) -> Tensor:
        """x (B*F, H*W, C); context (B, L, context_dim), shared by the B's frames."""
        x = self.attn1(self.norm1(self.local1(x, height, width))) + x
        # Every frame's queries see the same text, so attend with all frames' tokens
        # as one long query sequence per video instead of repeating the context F times.
        batch = context.shape[0]
        queries = self.norm2(x).reshape(batch, -1, x.shape[-1])
        x = self.attn2(queries, context).view(x.shape) + x
        return self.ff(self.norm3(x)) + x


class TemporalTransformerBlock(_TransformerBlockBase):
    """LIEM -> self-attention, LIEM -> self-attention, feed-forward, along frames only."""

    def __init__(self, dim: int, heads: int, head_dim: int) -> None:
        super().__init__(dim, heads, head_dim, context_dim=None)
        self.local1 = TemporalLIEM()
        self.local2 = TemporalLIEM()

    def forward(self, x: Tensor) -> Tensor:
        """x (B*H*W, F, C)."""
        x = self.attn1(self.norm1(self.local1(x))) + x
        x = self.attn2(self.norm2(self.local2(x))) + x
        return self.ff(self.norm3(x)) + x


class TokenConv1d(nn.Conv1d):
    """A kernel-1 Conv1d (the checkpoint's `proj_in`/`proj_out` shape) applied to (..., C) tokens.

    A 1x1 convolution over frames is a linear map on channels, so it is applied
    in the token layout directly, sparing two transposes of the feature map.
    """

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__(in_channels, out_channels, kernel_size=1)

    def forward(self, x: Tensor) -> Tensor:  # type: ignore[override]
        return F.linear(x, self.weight[..., 0], self.bias)


class SpatialTransformer(ConditionedBlock):
    """GroupNorm -> linear in -> spatial block -> linear out, added to the input (per frame)."""

    def __init__(self, channels: int, heads: int, head_dim: int, context_dim: int) -> None:
        super().__init__()
        inner = heads * head_dim
        self.norm = nn.GroupNorm(32, channels, eps=1e-6)
        self.proj_in = nn.Linear(channels, inner)
        self.transformer_blocks = nn.ModuleList(
            [SpatialTransformerBlock(inner, heads, head_dim, context_dim)]
        )
        self.proj_out = zero_init(nn.Linear(inner, channels))

    def run(self, x: Tensor, cond: Conditioning) -> Tensor:
        n, c, h, w = x.shape
        tokens = self.proj_in(self.norm(x).permute(0, 2, 3, 1).reshape(n, h * w, c))
        for block in self.transformer_blocks:
            tokens = block(tokens, cond.context, h, w)
        out = self.proj_out(tokens).view(n, h, w, c).permute(0, 3, 1, 2)
        return x + out  # x first: the sum keeps x's (contiguous) layout


class TemporalTransformer(ConditionedBlock):
    """GroupNorm over (channels, frames, pixels) -> 1x1 in -> temporal block -> 1x1 out, residual.

    `device_forms` takes the norm's statistics by `group_norm_by_reductions` and asks for
    `SHORT_SEQUENCE_ORDER` for its attention (both faster on CUDA).
    """

    device_forms: bool = False

    def __init__(self, channels: int, heads: int, head_dim: int) -> None:
        super().__init__()
        inner = heads * head_dim
        self.norm = nn.GroupNorm(32, channels, eps=1e-6)
        self.proj_in = TokenConv1d(channels, inner)
        self.transformer_blocks = nn.ModuleList([TemporalTransformerBlock(inner, heads, head_dim)])
        self.proj_out = zero_init(TokenConv1d(inner, channels))

    def _norm(self, video: Tensor) -> Tensor:
        return group_norm_by_reductions(self.norm, video) if self.device_forms else self.norm(video)

    def run(self, x: Tensor, cond: Conditioning) -> Tensor:
        bf, c, h, w = x.shape
        frames = cond.frames
        video = x.unflatten(0, (bf // frames, frames)).transpose(1, 2)  # (B, C, F, H, W)
        # The norm sees the whole clip: statistics over channels-in-group x frames x pixels.
        # (the normed clip is a temporary: the token copy below is all that stays alive)
        tokens = self._norm(video).permute(0, 3, 4, 2, 1).reshape(-1, frames, c)
        tokens = self.proj_in(tokens)
        with kernel_order(SHORT_SEQUENCE_ORDER) if self.device_forms else nullcontext():
            for block in self.transformer_blocks:
                tokens = block(tokens)
        out = self.proj_out(tokens).view(bf // frames, h, w, frames, c).permute(0, 3, 4, 1, 2)
        return (x.unflatten(0, (bf // frames, frames)) + out).reshape(bf, c, h, w)
