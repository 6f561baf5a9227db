"""Compression artefacts for synthetic training pairs: baseline JPEG and real video codecs.

JPEG is computed in torch (colour transform, 4:2:0 chroma, 8x8 DCT, libjpeg's quality
tables): it is exact, batched over frames and needs no image library. Video compression
goes through a real encoder (PyAV: libx264, mpeg4, libvpx), because inter-frame
artefacts (blocking that moves, smeared motion, key-frame pumping) are what users'
footage has and what no per-frame model reproduces.
"""

from __future__ import annotations

import io
import math
from collections.abc import Iterator
from fractions import Fraction

import av
import numpy as np
import torch
import torch.nn.functional as F

from star_cli.errors import StarError

# ITU T.81 Annex K tables (quality 50).
_LUMA_Q = torch.tensor([
    [16, 11, 10, 16, 24, 40, 51, 61], [12, 12, 14, 19, 26, 58, 60, 55],
    [14, 13, 16, 24, 40, 57, 69, 56], [14, 17, 22, 29, 51, 87, 80, 62],
    [18, 22, 37, 56, 68, 109, 103, 77], [24, 35, 55, 64, 81, 104, 113, 92],
    [49, 64, 78, 87, 103, 121, 120, 101], [72, 92, 95, 98, 112, 100, 103, 99],
], dtype=torch.float64)
_CHROMA_Q = torch.full((8, 8), 99.0, dtype=torch.float64)
_CHROMA_Q[:4, :4] = torch.tensor([[17, 18, 24, 47], [18, 21, 26, 66], [24, 26, 56, 99], [47, 66, 99, 99]])

_RGB_TO_YCC = torch.tensor([[0.299, 0.587, 0.114], [-0.168736, -0.331264, 0.5], [0.5, -0.418688, -0.081312]])
_YCC_TO_RGB = torch.linalg.inv(_RGB_TO_YCC.double()).float()

# Rate control each codec accepts ("crf" where the encoder has a constant-quality mode).
CODEC_CONTAINERS = {"libx264": "mp4", "mpeg4": "mp4", "libvpx": "webm"}
CRF_CODECS = frozenset({"libx264", "libvpx"})


def _dct_matrix() -> torch.Tensor:
    k = torch.arange(8, dtype=torch.float64)
    m = torch.cos((2 * k[None, :] + 1) * k[:, None] * math.pi / 16) * math.sqrt(2 / 8)
    m[0] /= math.sqrt(2)
    return m


_DCT = _dct_matrix()


def quant_table(base: torch.Tensor, quality: float) -> torch.Tensor:
    """libjpeg's scaling of the base table for a quality in [1, 100]."""
    quality = min(max(quality, 1.0), 100.0)
    scale = 5000.0 / quality if quality < 50 else 200.0 - 2.0 * quality
    return torch.clamp(torch.floor((base * scale + 50.0) / 100.0), 1.0, 255.0)


def _blocks_roundtrip(plane: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
    """Quantise the 8x8 DCT of (N, H, W) samples (H, W multiples of 8) and transform back."""
    n, h, w = plane.shape
    dct = _DCT.to(plane.device, plane.dtype)
    blocks = (plane - 128.0).reshape(n, h // 8, 8, w // 8, 8).transpose(2, 3)
    coeffs = dct @ blocks @ dct.T
    q = table.to(plane.device, plane.dtype)
    coeffs = torch.round(coeffs / q) * q
    return (dct.T @ coeffs @ dct + 128.0).transpose(2, 3).reshape(n, h, w)


def jpeg(frames: torch.Tensor, quality: float) -> torch.Tensor:
    """Baseline JPEG (4:2:0) round trip of (N, 3, H, W) RGB frames in [0, 1]; output in [0, 1],
    quantised to 8 bits like a decoded file."""
    n, _, h, w = frames.shape
    x = frames.clamp(0, 1).float() * 255.0
    pad_h, pad_w = (-h) % 16, (-w) % 16
    x = F.pad(x, (0, pad_w, 0, pad_h), mode="replicate")
    ycc = torch.einsum("ij,njhw->nihw", _RGB_TO_YCC.to(x.device), x)
    ycc[:, 1:] += 128.0
    y = _blocks_roundtrip(ycc[:, 0], quant_table(_LUMA_Q, quality))
    chroma = F.avg_pool2d(ycc[:, 1:], 2)
    ch, cw = chroma.shape[-2:]
    table = quant_table(_CHROMA_Q, quality)
    chroma = _blocks_roundtrip(chroma.reshape(n * 2, ch, cw), table).reshape(n, 2, ch, cw)
    chroma = F.interpolate(chroma, scale_factor=2, mode="bilinear", align_corners=False) - 128.0  # libjpeg "fancy" upsampling
    ycc = torch.cat([y[:, None], chroma], dim=1)
    rgb = torch.einsum("ij,njhw->nihw", _YCC_TO_RGB.to(x.device), ycc)
    rgb = torch.round(rgb.clamp(0, 255))[:, :, :h, :w] / 255.0
    return rgb.to(frames.dtype)


class VideoCompressor:
    """Encode RGB frames with a real codec into memory, chunk by chunk, then decode them back.

    Exactly one of `crf` (libx264, libvpx) or `bitrate` (bits per second, any codec) is
    used. Odd sizes are edge-padded for 4:2:0 and cropped back on decode. One encoder
    thread keeps the output a pure function of the input. Only the compressed bytes
    are held, so a long video streams through in bounded memory.
    """

    def __init__(self, codec: str, width: int, height: int, *, crf: int | None = None,
                 bitrate: int | None = None, fps: Fraction = Fraction(24)) -> None:
        if codec not in CODEC_CONTAINERS:
            raise ValueError(f"unsupported codec {codec!r}")
        if (crf is None) == (bitrate is None):
            raise ValueError("give exactly one of crf or bitrate")
        if crf is not None and codec not in CRF_CODECS:
            raise ValueError(f"{codec} has no crf mode")
        self.codec, self.width, self.height = codec, width, height
        self.count = 0
        self._buf = io.BytesIO()
        self._container = av.open(self._buf, "w", format=CODEC_CONTAINERS[codec])
        self._stream = self._container.add_stream(codec, rate=fps)
        self._stream.width, self._stream.height = width + width % 2, height + height % 2
        self._stream.pix_fmt = "yuv420p"
        self._stream.thread_count = 1
        if bitrate is not None:
            self._stream.bit_rate = int(bitrate)
        else:
            # libvpx needs a bitrate ceiling in constrained-quality mode; make it loose.
            self._stream.options = {"crf": str(int(crf))} | ({"b": "50M"} if codec == "libvpx" else {})

    def feed(self, frames: np.ndarray) -> None:
        """Encode (N, H, W, 3) uint8 RGB frames."""
        padded = np.pad(frames, ((0, 0), (0, self.height % 2), (0, self.width % 2), (0, 0)), mode="edge")
        try:
            for frame in padded:
                rgb = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")
                self._container.mux(self._stream.encode(rgb))
        except av.FFmpegError as exc:
            raise StarError(f"video compression with {self.codec} failed: {exc}") from exc
        self.count += len(frames)

    def decoded(self, batch_size: int = 32) -> Iterator[np.ndarray]:
        """Flush the encoder and yield the decoded frames in (<= batch_size, H, W, 3) uint8 batches."""
        try:
            self._container.mux(self._stream.encode())
            self._container.close()
            self._buf.seek(0)
            produced = 0
            with av.open(self._buf, "r") as container:
                batch: list[np.ndarray] = []
                for frame in container.decode(video=0):
                    batch.append(frame.to_ndarray(format="rgb24")[: self.height, : self.width])
                    if len(batch) == batch_size:
                        produced += len(batch)
                        yield np.stack(batch)
                        batch = []
                if batch:
                    produced += len(batch)
                    yield np.stack(batch)
        except av.FFmpegError as exc:
            raise StarError(f"video compression with {self.codec} failed: {exc}") from exc
        if produced != self.count:
            raise StarError(f"video compression with {self.codec} returned {produced} of {self.count} frames")


def compress_frames(frames: torch.Tensor, codec: str, *, crf: int | None = None, bitrate: int | None = None,
                    fps: Fraction = Fraction(24)) -> torch.Tensor:
    """Round-trip (N, 3, H, W) float frames in [0, 1] through a real codec."""
    n, _, h, w = frames.shape
    as_bytes = (frames.clamp(0, 1) * 255.0).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
    compressor = VideoCompressor(codec, w, h, crf=crf, bitrate=bitrate, fps=fps)
    compressor.feed(as_bytes)
    out = np.concatenate(list(compressor.decoded(batch_size=max(n, 1))))
    return torch.from_numpy(out).permute(0, 3, 1, 2).to(device=frames.device, dtype=frames.dtype) / 255.0
