"""What every UNet layer may need besides the features, and per-block checkpointing.

Features travel as (B*F, C, H, W): frames folded into the batch for 2-D layers.
Layers that need the timestep embedding, the text context or the frame count to
unfold the batch derive from `ConditionedBlock` and receive a `Conditioning`;
plain layers (convs, resampling) take the features only. `apply_layer` is the one
place that knows the difference, so a block list stays a plain, iterable
`nn.ModuleList` that offloading hooks can stream.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint


@dataclass(frozen=True)
class Conditioning:
    """emb (B, embed_dim) timestep embedding; context (B, L, context_dim) text; frames F."""

    emb: Tensor
    context: Tensor
    frames: int


class ConditionedBlock(nn.Module, ABC):
    """A block called as `block(x, cond)`, recomputed in backward when checkpointing is on.

    Checkpointing trades compute for memory during training; it is skipped when no
    graph is being recorded, so inference never pays for it. The non-reentrant
    checkpoint restores the RNG state, so dropout masks match on recomputation.
    """

    gradient_checkpointing: bool = False

    def forward(self, x: Tensor, cond: Conditioning) -> Tensor:
        if self.gradient_checkpointing and torch.is_grad_enabled():
            return checkpoint(self.run, x, cond, use_reentrant=False)
        return self.run(x, cond)

    @abstractmethod
    def run(self, x: Tensor, cond: Conditioning) -> Tensor:
        """The block's computation, (B*F, C, H, W) -> (B*F, C', H', W')."""


def apply_layer(layer: nn.Module, x: Tensor, cond: Conditioning) -> Tensor:
    """Call `layer` with the conditioning only if it takes one."""
    return layer(x, cond) if isinstance(layer, ConditionedBlock) else layer(x)


def apply_block(block: nn.Module, x: Tensor, cond: Conditioning) -> Tensor:
    """Run one entry of `input_blocks`/`output_blocks`: a ModuleList of layers, or a single layer."""
    layers = block if isinstance(block, nn.ModuleList) else (block,)
    for layer in layers:
        x = apply_layer(layer, x, cond)
    return x
