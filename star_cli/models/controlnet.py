"""STAR's ControlNet: a copy of the encoder and middle that reads the LR video's latent.

It sees the same noisy latent, timestep and text as the UNet, plus the LR latent
through `input_hint_block` (a zero-initialised conv whose output is added right
after the first conv). Every encoder output and the middle output leave through
their own zero-initialised 1x1 conv; the UNet adds these residuals to its skip
connections and to its middle output, so a fresh ControlNet changes nothing.
"""

from __future__ import annotations

from torch import Tensor, nn

from star_cli.models.blocks import zero_init
from star_cli.models.conditioning import Conditioning, apply_block, apply_layer
from star_cli.models.config import STARConfig
from star_cli.models.encoder import (
    build_input_blocks,
    build_middle_block,
    embed_timesteps,
    time_embedding_mlp,
)


def _zero_conv(channels: int) -> nn.Sequential:
    # A one-element Sequential because the checkpoint names these `zero_convs.<i>.0`.
    return nn.Sequential(zero_init(nn.Conv2d(channels, channels, 1)))


class VideoControlNet(nn.Module):
    """Encoder + middle copy returning one residual per UNet skip, then one for the middle."""

    def __init__(self, config: STARConfig) -> None:
        super().__init__()
        self.dim = config.dim
        self.time_embed = time_embedding_mlp(config)
        self.input_blocks, skip_channels = build_input_blocks(config)
        self.zero_convs = nn.ModuleList([_zero_conv(c) for c in skip_channels])
        self.middle_block = build_middle_block(config)
        self.middle_block_out = _zero_conv(config.dim * config.dim_mult[-1])
        self.input_hint_block = zero_init(nn.Conv2d(config.in_dim, config.dim, 3, padding=1))

    def forward(self, x: Tensor, t: Tensor, y: Tensor, hint: Tensor) -> list[Tensor]:
        """x, hint (B, C, F, H, W); t (B,); y (B, L, context_dim) -> residuals, each (B*F, C_i, H_i, W_i).

        Order: one per encoder block (shallowest first), then the middle; the UNet
        consumes them from the end.
        """
        cond = Conditioning(embed_timesteps(self.time_embed, t, self.dim), y, x.shape[2])
        h = x.transpose(1, 2).flatten(0, 1)
        hint_features = self.input_hint_block(hint.transpose(1, 2).flatten(0, 1))

        first_conv, *first_rest = self.input_blocks[0]
        h = first_conv(h) + hint_features
        for layer in first_rest:
            h = apply_layer(layer, h, cond)
        residuals = [self.zero_convs[0](h)]
        for block, zero_conv in zip(self.input_blocks[1:], self.zero_convs[1:]):
            h = apply_block(block, h, cond)
            residuals.append(zero_conv(h))
        h = apply_block(self.middle_block, h, cond)
        residuals.append(self.middle_block_out(h))
        return residuals
