"""What the UNet and its ControlNet share: the timestep embedding, the encoder, the middle.

The ControlNet is a trained copy of the UNet's encoder and middle, so both are
built by the same functions and hold identically named `input_blocks` and
`middle_block` lists.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from star_cli.models.blocks import Downsample, ResBlock
from star_cli.models.config import ATTENTION_LEVELS, STARConfig
from star_cli.models.transformer import SpatialTransformer, TemporalTransformer


def sinusoidal_embedding(t: Tensor, dim: int) -> Tensor:
    """(B,) timesteps -> (B, dim) float32: [cos | sin] of t * 10000^(-i/half), cos first (dim is even)."""
    half = dim // 2
    t = t.float()
    freqs = torch.pow(10000.0, -torch.arange(half, device=t.device, dtype=torch.float32) / half)
    angles = torch.outer(t, freqs)
    return torch.cat((torch.cos(angles), torch.sin(angles)), dim=1)


def time_embedding_mlp(config: STARConfig) -> nn.Sequential:
    """Linear(dim, 4 dim) -> SiLU -> Linear(4 dim, 4 dim), the checkpoint's `time_embed`."""
    return nn.Sequential(
        nn.Linear(config.dim, config.embed_dim), nn.SiLU(), nn.Linear(config.embed_dim, config.embed_dim)
    )


def embed_timesteps(mlp: nn.Sequential, t: Tensor, dim: int) -> Tensor:
    """Timesteps (B,) -> (B, 4 dim) on t's device, in the MLP's dtype.

    The device comes from t, not from the weights: under offloading hooks the
    weights sit on the meta device until the MLP itself is called.
    """
    return mlp(sinusoidal_embedding(t, dim).to(mlp[0].weight.dtype))


def transformers_at(config: STARConfig, channels: int, level: int) -> list[nn.Module]:
    """Spatial + temporal transformer pair for a level, or nothing below the attention levels."""
    if level >= ATTENTION_LEVELS:
        return []
    return _transformer_pair(config, channels)


def _transformer_pair(config: STARConfig, channels: int) -> list[nn.Module]:
    heads = channels // config.head_dim
    return [
        SpatialTransformer(channels, heads, config.head_dim, config.context_dim),
        TemporalTransformer(channels, heads, config.head_dim),
    ]


def build_input_blocks(config: STARConfig) -> tuple[nn.ModuleList, list[int]]:
    """Encoder blocks and the channel count of each one's output (the skip connections)."""
    dim = config.dim
    blocks = nn.ModuleList(
        [
            nn.ModuleList(
                [
                    nn.Conv2d(config.in_dim, dim, 3, padding=1),
                    TemporalTransformer(dim, config.num_heads, config.head_dim),
                ]
            )
        ]
    )
    skips = [dim]
    channels = dim
    last = len(config.dim_mult) - 1
    for level, mult in enumerate(config.dim_mult):
        for _ in range(config.num_res_blocks):
            out = dim * mult
            layers = [ResBlock(channels, config.embed_dim, out), *transformers_at(config, out, level)]
            blocks.append(nn.ModuleList(layers))
            channels = out
            skips.append(channels)
        if level != last:
            blocks.append(Downsample(channels))
            skips.append(channels)
    return blocks, skips


def build_middle_block(config: STARConfig) -> nn.ModuleList:
    """ResBlock, spatial + temporal transformers, ResBlock at the deepest width."""
    channels = config.dim * config.dim_mult[-1]
    return nn.ModuleList(
        [
            ResBlock(channels, config.embed_dim),
            *_transformer_pair(config, channels),
            ResBlock(channels, config.embed_dim),
        ]
    )

