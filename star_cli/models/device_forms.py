"""Faster CUDA forms of three video layers: the same arithmetic, laid out for a GPU.

Measured on an H200 (benchmarks/gpu_kernels.py, one full-size forward at the toy
example's canvas), three of the UNet's video layers run far from the card's limits:

- GroupNorm over a whole clip (the temporal convolutions' and temporal transformers'
  norms). PyTorch's CUDA kernel gives each (sample, group) pair one thread block to
  reduce; a video has only 32 groups per sample, each millions of values long, so the
  statistics took about 1 ms per call where reading the tensor once takes 0.13 ms:
  GroupNorms were 18% of the forward. `group_norm_by_reductions` takes the same
  statistics with two reductions torch spreads over the whole device.
- the 3x1x1 temporal convolution, which cuDNN runs by reordering the tensor to
  channels-last and back. `temporal_conv_as_matmuls` does three GEMMs on the data as
  it lies instead (1.3x on the top-level shape).
- temporal attention, 16 frames long per latent pixel: memory-efficient attention runs
  those short sequences 1.6x faster than cuDNN's kernel (0.20 vs 0.32 ms for 3294
  sequences on an H200), which leads on the long spatial ones, so the temporal
  transformers ask for `SHORT_SEQUENCE_ORDER` (122 -> 101 ms of a forward on the H200).

All agree with the plain layers to float rounding; the UNet switches them on with
`STARUNet.set_device_forms` (the engine does so on CUDA, where they were measured). They
read the layers' weights directly, not through the layers' forward, so a UNet offloaded
layer by layer (accelerate's hooks load weights in each forward) keeps the plain layers.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn.attention import SDPBackend

SHORT_SEQUENCE_ORDER = (
    SDPBackend.EFFICIENT_ATTENTION,
    SDPBackend.CUDNN_ATTENTION,
    SDPBackend.FLASH_ATTENTION,
    SDPBackend.MATH,
)
"""SDPA kernels for the temporal attentions' frame-long sequences (see the module doc)."""


def group_norm_by_reductions(norm: nn.GroupNorm, x: Tensor) -> Tensor:
    """`norm(x)` for x (B, C, ...), with float32 statistics from a sum and a sum of squares.

    Each is one device-wide reduction that reads x in its own dtype and accumulates
    in float32 (no float32 copy of x is made); var = E[x^2] - E[x]^2 in float32. The
    normalisation and the affine map are one fused multiply-add written in x's dtype.
    """
    batch, channels = x.shape[:2]
    groups = norm.num_groups
    rows = x.reshape(batch, groups, -1)
    count = rows.shape[-1]
    mean = rows.sum(-1, dtype=torch.float32) / count
    square = torch.linalg.vector_norm(rows, dim=-1, dtype=torch.float32).square_() / count
    rstd = (square - mean.square()).clamp_(min=0.0).add_(norm.eps).rsqrt_()
    per_channel = channels // groups
    scale = rstd.repeat_interleave(per_channel, dim=1)
    shift = -mean.repeat_interleave(per_channel, dim=1) * scale
    if norm.affine:
        scale = scale * norm.weight.float()
        shift = shift * norm.weight.float() + norm.bias.float()
    flat = rows.view(batch, channels, -1)
    if torch.is_grad_enabled():  # training: autograd needs the out-of-place form (a float32 temporary)
        return torch.addcmul(shift[..., None], flat, scale[..., None]).to(x.dtype).view(x.shape)
    out = torch.empty_like(flat)
    torch.addcmul(shift[..., None], flat, scale[..., None], out=out)  # float32 math, written in x's dtype
    return out.view(x.shape)


def temporal_conv_as_matmuls(conv: nn.Conv3d, video: Tensor) -> Tensor:
    """`conv` (a 3x1x1 kernel, padding 1 along frames) on video (B, C, F, H, W), as three matrix products.

    Frame f of the output is W0 @ x[f-1] + W1 @ x[f] + W2 @ x[f+1] + bias (zero
    frames beyond the ends). In the contiguous (C, F*H*W) view of each video, the
    shifted frames are column slices, so every tap is one large GEMM on the data as
    it lies. The same sum as the convolution, accumulated per tap instead of all at once.
    """
    batch, channels, frames, height, width = video.shape
    pixels = height * width
    taps = [conv.weight[:, :, k, 0, 0].expand(batch, -1, -1) for k in range(3)]
    bias = conv.bias[:, None] if conv.bias is not None else video.new_zeros(conv.out_channels, 1)
    flat = video.contiguous().view(batch, channels, frames * pixels)
    out = torch.baddbmm(bias, taps[1], flat)
    if frames > 1:
        out[:, :, pixels:].baddbmm_(taps[0], flat[:, :, :-pixels])
        out[:, :, :-pixels].baddbmm_(taps[2], flat[:, :, pixels:])
    return out.view(batch, -1, frames, height, width)
