"""Convolutional blocks of the STAR UNet: ResBlock, its temporal convolution, resampling.

Names follow the checkpoint (`in_layers`, `emb_layers`, `out_layers`,
`skip_connection`, and the reference's spelling `temopral_conv`). GroupNorms
here use 32 groups and PyTorch's default eps (1e-5), as the reference does.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from star_cli.models.conditioning import Conditioning, ConditionedBlock
from star_cli.models.device_forms import group_norm_by_reductions, temporal_conv_as_matmuls

# The reference's dropout inside ResBlocks and temporal convolutions (training only).
DROPOUT = 0.1


def zero_init(module: nn.Module) -> nn.Module:
    """Zero a residual branch's last layer, so a freshly built block starts as the identity."""
    for p in module.parameters():
        nn.init.zeros_(p)
    return module


def _temporal_stage(channels: int, dropout: float | None) -> nn.Sequential:
    """GroupNorm -> SiLU -> [Dropout] -> Conv3d over frames only (kernel 3x1x1)."""
    layers: list[nn.Module] = [nn.GroupNorm(32, channels), nn.SiLU()]
    if dropout is not None:
        layers.append(nn.Dropout(dropout))
    layers.append(nn.Conv3d(channels, channels, (3, 1, 1), padding=(1, 0, 0)))
    return nn.Sequential(*layers)


class TemporalConvBlock(nn.Module):
    """Four norm-act-conv stages along frames, added back to the input.

    The first stage has no dropout (hence `conv1.2` vs `conv2.3` in the
    checkpoint); the last conv starts at zero so a new block is the identity.
    `device_forms` evaluates each stage's norm and convolution in the forms of
    `star_cli.models.device_forms` (the engine turns it on where they are faster:
    CUDA); the result is the same.
    """

    device_forms: bool = False

    def __init__(self, channels: int, dropout: float = DROPOUT) -> None:
        super().__init__()
        self.conv1 = _temporal_stage(channels, None)
        self.conv2 = _temporal_stage(channels, dropout)
        self.conv3 = _temporal_stage(channels, dropout)
        self.conv4 = _temporal_stage(channels, dropout)
        zero_init(self.conv4[-1])

    def _stage(self, stage: nn.Sequential, video: Tensor) -> Tensor:
        if not self.device_forms:
            return stage(video)
        norm, *activation, conv = stage
        video = group_norm_by_reductions(norm, video)
        for layer in activation:
            video = layer(video)
        return temporal_conv_as_matmuls(conv, video)

    def forward(self, x: Tensor, frames: int) -> Tensor:
        """x (B*F, C, H, W) -> same; norms see the whole clip (channels-in-group x F x H x W)."""
        video = x.unflatten(0, (x.shape[0] // frames, frames)).transpose(1, 2)
        h = video
        for stage in (self.conv1, self.conv2, self.conv3, self.conv4):
            h = self._stage(stage, h)
        return (video + h).transpose(1, 2).flatten(0, 1)


class ResBlock(ConditionedBlock):
    """Norm-act-conv, plus the timestep embedding, norm-act-dropout-conv, skip; then temporal conv."""

    def __init__(self, channels: int, emb_dim: int, out_channels: int | None = None) -> None:
        super().__init__()
        out_channels = out_channels or channels
        self.in_layers = nn.Sequential(
            nn.GroupNorm(32, channels), nn.SiLU(), nn.Conv2d(channels, out_channels, 3, padding=1)
        )
        self.emb_layers = nn.Sequential(nn.SiLU(), nn.Linear(emb_dim, out_channels))
        self.out_layers = nn.Sequential(
            nn.GroupNorm(32, out_channels),
            nn.SiLU(),
            nn.Dropout(DROPOUT),
            zero_init(nn.Conv2d(out_channels, out_channels, 3, padding=1)),
        )
        self.skip_connection = (
            nn.Identity() if out_channels == channels else nn.Conv2d(channels, out_channels, 1)
        )
        self.temopral_conv = TemporalConvBlock(out_channels)

    def run(self, x: Tensor, cond: Conditioning) -> Tensor:
        h = self.in_layers(x)
        # One embedding per video, shared by its frames.
        emb = self.emb_layers(cond.emb).repeat_interleave(cond.frames, dim=0)
        h = self.out_layers(h + emb[:, :, None, None])
        return self.temopral_conv(self.skip_connection(x) + h, cond.frames)


class Downsample(nn.Module):
    """Stride-2 3x3 conv with the reference's asymmetric padding: 2 rows, 1 column.

    With the matching upsampling (which drops two rows), a height H round-trips
    only if H - 2 is divisible by 2**levels; widths need W divisible by 2**levels.
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.op = nn.Conv2d(channels, channels, 3, stride=2, padding=(2, 1))

    def forward(self, x: Tensor) -> Tensor:
        return self.op(x)


class Upsample(nn.Module):
    """Nearest x2, drop the first and last row (undoing Downsample's extra rows), 3x3 conv."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        x = F.interpolate(x, scale_factor=2.0, mode="nearest")[..., 1:-1, :]
        return self.conv(x)
