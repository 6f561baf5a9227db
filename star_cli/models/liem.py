"""LIEM: STAR's local information enhancement, a cheap gate before global attention.

Each gate summarises every token by two numbers, the maximum and the mean over
its channels (in that order: the checkpoints were trained so), maps them to one
logit and multiplies the token by its sigmoid. Spatial gates look at a 7x7
neighbourhood of those summaries; temporal gates look at the token alone. The
paper describes 3x3 and mean-then-max; the released weights decide: 7x7, max first.

Both work directly on token layouts (N, L, C), the layout the transformer blocks
already hold, so no transpose of the full feature map is needed.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


def _max_and_mean(x: Tensor) -> Tensor:
    """(..., C) -> (..., 2): channel max, then channel mean."""
    return torch.stack((x.amax(dim=-1), x.mean(dim=-1)), dim=-1)


class SpatialLIEM(nn.Module):
    """Gate tokens of one frame by sigmoid(conv7x7([max, mean])); `conv1` is the checkpoint name."""

    def __init__(self, kernel_size: int = 7) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(2, 1, kernel_size, padding=kernel_size // 2, bias=False)

    def forward(self, x: Tensor, height: int, width: int) -> Tensor:
        """x (N, H*W, C) -> same shape."""
        stats = _max_and_mean(x).transpose(1, 2).unflatten(-1, (height, width))
        gate = torch.sigmoid(self.conv1(stats)).flatten(2).transpose(1, 2)
        return x * gate


class TemporalLIEM(nn.Module):
    """Gate each token by sigmoid(linear([max, mean])); `conv1` is the checkpoint's name for the linear."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Linear(2, 1, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        """x (N, F, C) -> same shape."""
        return x * torch.sigmoid(self.conv1(_max_and_mean(x)))
