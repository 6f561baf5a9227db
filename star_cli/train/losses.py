"""STAR's training objective: v-prediction MSE plus the Dynamic Frequency (DF) loss.

    loss = ||v - v_true||^2 + b(t) * w * DF,   b(t) = beta * (1 - t/999)
    DF   = c(t) * L1(low(x0_pix), low(gt)) + (1 - c(t)) * L1(high(x0_pix), high(gt)),  c(t) = (t/999)^alpha

x0_pix is the network's clean-latent estimate decoded to pixels by the VAE decoder
*with* gradient: at high noise (large t) the loss asks for the right low frequencies
(structure), at low noise for the right high frequencies (detail). The reference's
released script decodes x0 under `no_grad`, so its DF term never reaches the weights;
here it does (gradient checkpointing keeps the decoder's activations bounded).

Bands come from the 2-D FFT of each frame, split either by a fixed radial low-pass
(`split = "radial"`, the paper's predefined filter) or, as in the reference script,
by a soft mask at a quantile of the spectrum magnitude (`split = "quantile"`).
The FFT is unnormalised like the reference's, so its 0.01 weight keeps its meaning.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from star_cli.diffusion.schedule import NUM_TIMESTEPS
from star_cli.models.vae import VideoVAE
from star_cli.train.config import LossConfig

T_MAX = NUM_TIMESTEPS - 1


@dataclass(frozen=True)
class LossTerms:
    """Batch means; `total` carries the gradient, the rest are for logging."""

    total: torch.Tensor
    v: torch.Tensor
    low: torch.Tensor
    high: torch.Tensor
    df: torch.Tensor


def c_weight(t: torch.Tensor, alpha: float) -> torch.Tensor:
    """Share of the low band in DF: (t/999)^alpha, 1 at pure noise, 0 at t=0."""
    return (t.float() / T_MAX) ** alpha


def b_weight(t: torch.Tensor, beta: float) -> torch.Tensor:
    """Weight of DF against the v-loss: beta * (1 - t/999)."""
    return beta * (1 - t.float() / T_MAX)


def radial_lowpass(height: int, width: int, cutoff: float, device: torch.device | None = None) -> torch.Tensor:
    """psi on the rfft2 grid (H, W//2+1): 1 where |f| <= cutoff * Nyquist, else 0."""
    fy = torch.fft.fftfreq(height, device=device)[:, None]
    fx = torch.fft.rfftfreq(width, device=device)[None, :]
    return (torch.sqrt(fy**2 + fx**2) / 0.5 <= cutoff).float()


def quantile_lowpass(spectrum: torch.Tensor, quantile: float, sharpness: float) -> torch.Tensor:
    """The reference's soft mask: sigmoid(sharpness * (q - |X|)), q the per-frame magnitude quantile."""
    magnitude = spectrum.abs()
    flat = magnitude.flatten(1)
    k = max(1, min(flat.shape[1], round(quantile * flat.shape[1])))
    threshold = flat.detach().kthvalue(k, dim=1).values.view(-1, *([1] * (magnitude.ndim - 1)))
    return torch.sigmoid(sharpness * (threshold - magnitude))


def split_bands(frames: torch.Tensor, cfg: LossConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """(low, high) spectra of (N, C, H, W) frames, as real views (..., 2)."""
    spectrum = torch.fft.rfft2(frames.float(), dim=(-2, -1))
    if cfg.split == "radial":
        mask = radial_lowpass(frames.shape[-2], frames.shape[-1], cfg.cutoff, frames.device)
    else:
        mask = quantile_lowpass(spectrum, cfg.quantile, cfg.sharpness)
    return torch.view_as_real(spectrum * mask), torch.view_as_real(spectrum * (1 - mask))


def _frames(video: torch.Tensor) -> torch.Tensor:
    """(B, C, F, H, W) -> (B*F, C, H, W)."""
    return video.transpose(1, 2).flatten(0, 1)


def df_terms(pred: torch.Tensor, target: torch.Tensor, cfg: LossConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sample L1 of the low and high bands of videos (B, 3, F, H, W)."""
    batch = pred.shape[0]
    pred_low, pred_high = split_bands(_frames(pred), cfg)
    true_low, true_high = split_bands(_frames(target), cfg)
    low = F.l1_loss(pred_low, true_low, reduction="none").reshape(batch, -1).mean(1)
    high = F.l1_loss(pred_high, true_high, reduction="none").reshape(batch, -1).mean(1)
    return low, high


def _decode_group(vae: VideoVAE, z: torch.Tensor) -> torch.Tensor:
    return vae.model.decode(z, num_frames=z.shape[0]).sample


def decode_with_grad(vae: VideoVAE, latents: torch.Tensor, group: int) -> torch.Tensor:
    """Decode scaled latents (B, C, F, h, w) to pixels (B, 3, F, H, W) keeping the graph.

    Groups of `group` frames (never straddling two samples: the temporal decoder mixes
    the frames of a group), each under activation checkpointing, so backward holds one
    group's decoder activations at a time.
    """
    batch, _, frames = latents.shape[:3]
    z = (latents / vae.scaling_factor).to(vae.dtype)
    videos = []
    for sample in z:
        per_frame = sample.transpose(0, 1)  # (F, C, h, w)
        parts = [checkpoint(_decode_group, vae, per_frame[s:s + group], use_reentrant=False)
                 for s in range(0, frames, group)]
        videos.append(torch.cat(parts).transpose(0, 1))
    return torch.stack(videos)


def training_loss(v_pred: torch.Tensor, v_true: torch.Tensor, t: torch.Tensor, cfg: LossConfig,
                  x0_pixels: torch.Tensor | None = None, gt_pixels: torch.Tensor | None = None) -> LossTerms:
    """The full objective for a batch: v-loss + b(t) * df_weight * DF (per sample, then averaged).

    Without pixels (a run with df_weight = 0 skips the decode) DF is not computed.
    """
    v = F.mse_loss(v_pred.float(), v_true.float(), reduction="none").flatten(1).mean(1)
    if x0_pixels is None or gt_pixels is None:
        zero = v.new_zeros(())
        return LossTerms(v.mean(), v.mean().detach(), zero, zero, zero)
    low, high = df_terms(x0_pixels, gt_pixels, cfg)
    c = c_weight(t, cfg.alpha).to(low.device)
    df = c * low + (1 - c) * high
    total = v + b_weight(t, cfg.beta).to(df.device) * cfg.df_weight * df
    return LossTerms(total.mean(), v.mean().detach(), low.mean().detach(), high.mean().detach(), df.mean().detach())
