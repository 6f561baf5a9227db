"""STARUNet: the I2VGen-XL video UNet with STAR's LIEM gates and its ControlNet.

Given a noisy latent x, timesteps t, text context y and the LR video's latent
`hint`, it predicts v. The state dict reproduces the official checkpoints'
names and shapes exactly (`light_deg.pt`, `heavy_deg.pt`), so they load with
`strict=True`; the ControlNet lives under `VideoControlNet.`.

Only what the checkpoint and the forward (x, t, y, hint) use exists here: the
reference's image conditioning, fps embedding, focus masks and relative
position bias carry no parameters in the released weights and are left out.
Conversely, every tensor of the checkpoint takes part in the forward.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from star_cli.models.blocks import ResBlock, TemporalConvBlock, Upsample, zero_init
from star_cli.models.conditioning import Conditioning, ConditionedBlock, apply_block
from star_cli.models.config import STARConfig
from star_cli.models.controlnet import VideoControlNet
from star_cli.models.encoder import (
    build_input_blocks,
    build_middle_block,
    embed_timesteps,
    time_embedding_mlp,
    transformers_at,
)
from star_cli.models.transformer import FeedForward, TemporalTransformer


def _build_output_blocks(config: STARConfig, skip_channels: list[int]) -> nn.ModuleList:
    """Decoder: per level, num_res_blocks + 1 ResBlocks eating one skip each, then upsample."""
    skips = list(skip_channels)
    blocks = nn.ModuleList()
    channels = config.dim * config.dim_mult[-1]
    for level in reversed(range(len(config.dim_mult))):
        out = config.dim * config.dim_mult[level]
        for j in range(config.num_res_blocks + 1):
            layers: list[nn.Module] = [
                ResBlock(channels + skips.pop(), config.embed_dim, out),
                *transformers_at(config, out, level),
            ]
            channels = out
            if level != 0 and j == config.num_res_blocks:
                layers.append(Upsample(channels))
            blocks.append(nn.ModuleList(layers))
    return blocks


class STARUNet(nn.Module):
    """The STAR denoiser (UNet + ControlNet). Keyword arguments are `STARConfig`'s fields."""

    def __init__(self, **config: Any) -> None:
        super().__init__()
        self.config = STARConfig(**config)
        cfg = self.config
        self.time_embed = time_embedding_mlp(cfg)
        self.input_blocks, skip_channels = build_input_blocks(cfg)
        self.middle_block = build_middle_block(cfg)
        self.output_blocks = _build_output_blocks(cfg, skip_channels)
        self.out = nn.Sequential(
            nn.GroupNorm(32, cfg.dim), nn.SiLU(), nn.Conv2d(cfg.dim, cfg.out_dim, 3, padding=1)
        )
        zero_init(self.out[-1])
        self.VideoControlNet = VideoControlNet(cfg)

    # -- switches -------------------------------------------------------------------

    def enable_gradient_checkpointing(self, enabled: bool = True) -> None:
        """Recompute every ResBlock and transformer in backward instead of storing activations."""
        for module in self.modules():
            if isinstance(module, ConditionedBlock):
                module.gradient_checkpointing = enabled

    def set_feed_forward_chunk(self, n_tokens: int | None) -> None:
        """Evaluate feed-forwards `n_tokens` tokens at a time (None: all at once). Same result."""
        if n_tokens is not None and n_tokens < 1:
            raise ValueError(f"feed-forward chunk must be a positive token count, got {n_tokens}")
        for module in self.modules():
            if isinstance(module, FeedForward):
                module.chunk_tokens = n_tokens

    def set_device_forms(self, enabled: bool = True) -> None:
        """Run the video GroupNorms and temporal convolutions in `device_forms`' CUDA forms. Same result."""
        for module in self.modules():
            if isinstance(module, (TemporalConvBlock, TemporalTransformer)):
                module.device_forms = enabled

    # -- forward ----------------------------------------------------------------------

    def check_latent_size(self, height: int, width: int) -> None:
        """Raise ValueError unless (height, width) survives the down/up path unchanged.

        Downsampling pads 2 rows and 1 column, upsampling drops 2 rows, so with n
        downsamplings H - 2 and W must both be divisible by 2**n (n=3: H = 2 mod 8,
        W = 0 mod 8).
        """
        step = 2**self.config.num_downsamples
        if height < 2 or (height - 2) % step or width % step or width == 0:
            raise ValueError(
                f"latent size {height}x{width} is not supported: height must be 2 more than a "
                f"multiple of {step} and width a multiple of {step}"
            )

    def _check_inputs(self, x: Tensor, t: Tensor, y: Tensor, hint: Tensor) -> None:
        cfg = self.config
        if x.ndim != 5 or x.shape[1] != cfg.in_dim:
            raise ValueError(f"x must be (B, {cfg.in_dim}, F, H, W), got {tuple(x.shape)}")
        if hint.shape != x.shape:
            raise ValueError(f"hint must have x's shape {tuple(x.shape)}, got {tuple(hint.shape)}")
        if t.shape != (x.shape[0],):
            raise ValueError(f"t must be ({x.shape[0]},), got {tuple(t.shape)}")
        if y.ndim != 3 or y.shape[0] != x.shape[0] or y.shape[2] != cfg.context_dim:
            raise ValueError(f"y must be ({x.shape[0]}, L, {cfg.context_dim}), got {tuple(y.shape)}")
        self.check_latent_size(x.shape[3], x.shape[4])

    def forward(self, x: Tensor, t: Tensor, y: Tensor, hint: Tensor) -> Tensor:
        """x, hint (B, in_dim, F, H, W); t (B,); y (B, L, context_dim) -> v (B, out_dim, F, H, W).

        Runs in the weights' dtype and returns in x's dtype.
        """
        self._check_inputs(x, t, y, hint)
        dtype = self.time_embed[0].weight.dtype
        batch, frames = x.shape[0], x.shape[2]
        x_in, hint, y, t = x.to(dtype), hint.to(dtype), y.to(dtype), t.to(x.device)

        control = self.VideoControlNet(x_in, t, y, hint)
        cond = Conditioning(embed_timesteps(self.time_embed, t, self.config.dim), y, frames)

        h = x_in.transpose(1, 2).flatten(0, 1)
        skips = []
        for block in self.input_blocks:
            h = apply_block(block, h, cond)
            skips.append(h)
        h = apply_block(self.middle_block, h, cond) + control.pop()
        for block in self.output_blocks:
            h = torch.cat((h, skips.pop() + control.pop()), dim=1)
            h = apply_block(block, h, cond)
        v = self.out(h).unflatten(0, (batch, frames)).transpose(1, 2)
        return v.to(x.dtype).contiguous()
