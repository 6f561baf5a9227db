"""What the encoder and the container accept, decided before a file is opened.

`VideoWriter` asks these at construction (and `pipeline.prepare` asks `even_size`
while planning), so every refusal -- an unknown preset, a --crf out of the codec's
range, a pixel format the encoder lacks, an odd size 4:2:0 cannot hold, a file type
that cannot carry the codec -- is one InputError line before any frame is made.
Kept apart from the writer: these are pure questions to FFmpeg's codec tables, the
writer is the stateful encode loop.
"""

from __future__ import annotations

import io
from pathlib import Path

import av

from star_cli.errors import InputError
from star_cli.video.options import ENCODERS, EncodeOptions
from star_cli.video.probe import VideoInfo

X264_PRESETS = ("ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow", "slower", "veryslow")
# SVT-AV1 presets are numbers (0 slowest .. 13 fastest); these track x264's names by speed.
_SVT_PRESETS = dict(zip(X264_PRESETS, ("12", "11", "10", "9", "8", "6", "5", "4", "2")))
_CRF_RANGE = {"h264": (0, 51), "hevc": (0, 51), "av1": (0, 63)}
# ffv1 is lossless; bgr0 stores our RGB frames bit-exactly (no YUV rounding at all).
_LOSSLESS_PIX_FMT = "bgr0"
# Where a pixel shape (sample aspect ratio) set on the encoder survives: the MP4 family's muxers
# write it into the file (a `pasp` box) from the codec parameters, and H.264/HEVC write it into
# their own bitstream (the VUI), which players read in any container.
_SAR_MUXERS = ("mp4", "mov", "ipod")
_SAR_CODECS = ("h264", "hevc")


def encoder_options(options: EncodeOptions) -> dict[str, str]:
    """The encoder's own option dict for `options` (ffv1 is lossless: no crf, no preset)."""
    if options.codec == "ffv1":
        return {"level": "3", "g": "1"}
    if options.preset not in X264_PRESETS:
        raise InputError(f"unknown preset {options.preset!r}; choose one of: {', '.join(X264_PRESETS)}")
    low, high = _CRF_RANGE[options.codec]
    if not low <= options.crf <= high:
        raise InputError(f"--crf {options.crf} is out of range for {options.codec} ({low}..{high})")
    if options.codec == "av1":
        return {"crf": str(options.crf), "preset": _SVT_PRESETS[options.preset]}
    extra = {"x265-params": "log-level=error"} if options.codec == "hevc" else {}
    return {"crf": str(options.crf), "preset": options.preset, **extra}


def _subsampled(pix_fmt: str) -> bool:
    """The format stores chroma at less than full width or height (4:2:0, 4:2:2)."""
    fmt = av.VideoFormat(pix_fmt)
    return fmt.chroma_width(16) < 16 or fmt.chroma_height(16) < 16


def _is_444(pix_fmt: str) -> bool:
    fmt = av.VideoFormat(pix_fmt)
    return not fmt.is_rgb and len(fmt.components) >= 3 and not _subsampled(pix_fmt)


def choose_pix_fmt(options: EncodeOptions, bit_depth: int, width: int, height: int, source_pix_fmt: str = "") -> str:
    """The pixel format to encode with, checked against the encoder and the frame size.

    Default: the source's chroma (4:4:4 kept where the encoder takes it, else 4:2:0)
    at the source's depth (10-bit when the source has more than 8 bits and the
    encoder can), 4:4:4 when a side is odd (reached only when the caller keeps an
    exact odd size, see `even_size`), and lossless RGB for ffv1.
    """
    encoder = ENCODERS[options.codec]
    supported = [f.name for f in av.Codec(encoder, "w").video_formats]
    odd = width % 2 or height % 2
    if options.pix_fmt is not None:
        pix_fmt = options.pix_fmt
    elif options.codec == "ffv1":
        pix_fmt = _LOSSLESS_PIX_FMT
    else:
        full_chroma = odd or (bool(source_pix_fmt) and _is_444(source_pix_fmt) and "yuv444p" in supported)
        pix_fmt = ("yuv444p" if full_chroma else "yuv420p") + ("10le" if bit_depth > 8 else "")
        if pix_fmt not in supported:
            pix_fmt = pix_fmt.removesuffix("10le")
    if pix_fmt not in supported:
        hint = " (it needs even width and height)" if odd and options.pix_fmt is None else ""
        raise InputError(
            f"{options.codec} ({encoder}) cannot encode {pix_fmt} at {width}x{height}{hint}; "
            f"its pixel formats: {', '.join(supported)}"
        )
    fmt = av.VideoFormat(pix_fmt)
    if (width % 2 and fmt.chroma_width(16) < 16) or (height % 2 and fmt.chroma_height(16) < 16):
        raise InputError(f"{pix_fmt} cannot hold an odd size exactly ({width}x{height}); use --pix-fmt yuv444p")
    return pix_fmt


def even_size(options: EncodeOptions, source: VideoInfo, width: int, height: int) -> tuple[int, int]:
    """The size to encode `width` x `height` at: one pixel less on an odd side when the format subsamples chroma.

    An odd size in 4:2:0 is impossible, and the 4:4:4 it would otherwise take is a
    High 4:4:4 stream that browsers and phones refuse; dropping the last row or column
    (a quarter of a source pixel at x4) keeps the file playable everywhere.
    """
    if not (width % 2 or height % 2):
        return width, height
    even = (max(2, width - width % 2), max(2, height - height % 2))
    pix_fmt = choose_pix_fmt(options, source.bit_depth, *even, source.pix_fmt)
    return even if _subsampled(pix_fmt) else (width, height)


def records_pixel_shape(muxer: str, codec: str) -> bool:
    """Whether `codec` video written by `muxer` keeps a non-square sample aspect ratio.

    Matroska and WebM take it only from the stream's own field, which PyAV cannot set,
    so there AV1 (no such field in its bitstream) and FFV1 (one per frame, which PyAV
    frames cannot set) lose it.
    """
    return muxer in _SAR_MUXERS or codec in _SAR_CODECS


def check_container(dest: Path, codec: str) -> str:
    """Refuse a file type that cannot hold `codec` video, before any work is done for it; return its muxer's name.

    FFmpeg picks the muxer by the file name; an in-memory stand-in carrying only
    the name lets us ask it without creating a file.
    """
    stand_in = io.BytesIO()
    stand_in.name = dest.name
    try:
        with av.open(stand_in, "w") as container:
            supported, muxer = container.supported_codecs, container.format.name
    except ValueError as error:
        raise InputError(f"{dest}: cannot write this kind of file ({error}); use .mp4, .mkv, .mov or .webm") from None
    # The mov muxer lists AV1 but writes it only in its MP4 mode: its header fails for .mov.
    if ENCODERS[codec] not in supported or (muxer == "mov" and codec == "av1"):
        raise InputError(
            f"{dest}: a {dest.suffix or 'file without extension'} file cannot hold {codec} video; use .mkv or .mp4"
        )
    return muxer
