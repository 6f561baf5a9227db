"""Colour signalling: FFmpeg's enum codes <-> names, and which YUV matrix to use.

Names follow ffprobe (`bt709`, `smpte170m`, `tv`, ...), so what `probe` reports
reads like what users already know. The decode side must pick the matrix and
range the *source* was encoded with (guessing like players do when untagged);
the encode side must tag exactly what it converted with.
"""

from __future__ import annotations

from dataclasses import dataclass

import av
from av.video.reformatter import ColorRange, Colorspace

# AVColorPrimaries, AVColorTransferCharacteristic, AVColorSpace, AVColorRange (libavutil/pixfmt.h).
PRIMARIES = {1: "bt709", 2: "unknown", 4: "bt470m", 5: "bt470bg", 6: "smpte170m", 7: "smpte240m",
             8: "film", 9: "bt2020", 10: "smpte428", 11: "smpte431", 12: "smpte432", 22: "ebu3213"}
TRANSFERS = {1: "bt709", 2: "unknown", 4: "gamma22", 5: "gamma28", 6: "smpte170m", 7: "smpte240m",
             8: "linear", 9: "log100", 10: "log316", 11: "iec61966-2-4", 12: "bt1361e",
             13: "iec61966-2-1", 14: "bt2020-10", 15: "bt2020-12", 16: "smpte2084", 17: "smpte428",
             18: "arib-std-b67"}
MATRICES = {0: "gbr", 1: "bt709", 2: "unknown", 4: "fcc", 5: "bt470bg", 6: "smpte170m",
            7: "smpte240m", 8: "ycgco", 9: "bt2020nc", 10: "bt2020c", 11: "smpte2085", 14: "ictcp"}
RANGES = {0: "unknown", 1: "tv", 2: "pc"}

# swscale knows fewer matrices than containers can signal; map each to its nearest.
_SWS_MATRIX = {"bt709": Colorspace.ITU709, "fcc": Colorspace.FCC, "bt470bg": Colorspace.ITU601,
               "smpte170m": Colorspace.ITU601, "smpte240m": Colorspace.SMPTE240M,
               "bt2020nc": Colorspace.BT2020, "bt2020c": Colorspace.BT2020}

# Wide-gamut / HDR signalling we must keep: relabelling it BT.709 would shift colours.
_WIDE_PRIMARIES = {"bt2020", "smpte431", "smpte432"}
_HDR_TRANSFERS = {"smpte2084", "arib-std-b67", "bt2020-10", "bt2020-12"}

HD_HEIGHT = 720
HD_WIDTH = 1280


def is_hd(width: int, height: int) -> bool:
    """HD by either side, as players guess an untagged matrix (a 1280x536 scope film is HD)."""
    return height >= HD_HEIGHT or width >= HD_WIDTH


def name_of(table: dict[int, str], code: int) -> str:
    """The ffprobe-style name of an enum code; anything unlisted is `unknown`."""
    return table.get(int(code), "unknown")


def code_of(table: dict[int, str], name: str) -> int:
    """The enum code of a name from `table` (inverse of `name_of`)."""
    return next(code for code, known in table.items() if known == name)


@dataclass(frozen=True)
class ColourTags:
    """What a stream says about its colours, as ffprobe-style names."""

    primaries: str = "unknown"
    trc: str = "unknown"
    matrix: str = "unknown"
    range: str = "unknown"


def tags_of(frame: av.VideoFrame) -> ColourTags:
    """The colour tags a decoded frame carries (the decoder merges stream and bitstream signalling)."""
    return ColourTags(
        name_of(PRIMARIES, frame.color_primaries),
        name_of(TRANSFERS, frame.color_trc),
        name_of(MATRICES, frame.colorspace),
        name_of(RANGES, frame.color_range),
    )


def decode_matrix(tags: ColourTags, height: int, width: int = 0) -> Colorspace:
    """The YUV->RGB matrix for a source; untagged HD is BT.709, untagged SD BT.601 (as players guess)."""
    if tags.matrix in _SWS_MATRIX:
        return _SWS_MATRIX[tags.matrix]
    return Colorspace.ITU709 if is_hd(width, height) else Colorspace.ITU601


def decode_range(tags: ColourTags, pix_fmt: str) -> ColorRange:
    """Full range only when tagged so (or a JPEG-style `yuvj*` format); untagged video is limited."""
    if tags.range == "pc" or pix_fmt.startswith("yuvj"):
        return ColorRange.JPEG
    return ColorRange.MPEG


def output_tags(
    source: ColourTags,
    height: int,
    *,
    width: int = 0,
    rgb: bool = False,
    full_range: bool = False,
    source_hd: bool = False,
) -> ColourTags:
    """Tags for an encoded output of `width` x `height` from a source tagged `source`.

    HD output is BT.709, except that wide-gamut / HDR sources keep their
    primaries, transfer and BT.2020 matrix (our RGB is still in their gamut); SD
    output keeps the source's tags, and where it had none, the matrix the reader
    guessed for it (BT.709 for an HD source, BT.601 for SD). The range is
    limited unless `full_range` (a full-range source stays full range).
    RGB pixel formats (lossless ffv1) carry the `gbr` matrix and full range.
    """
    wide = source.primaries in _WIDE_PRIMARIES or source.trc in _HDR_TRANSFERS
    yuv_range = "pc" if full_range else "tv"
    if wide:
        base = ColourTags(source.primaries, source.trc, "bt2020nc", yuv_range)
    elif is_hd(width, height) or (source_hd and source.matrix not in _SWS_MATRIX):
        base = ColourTags("bt709", "bt709", "bt709", yuv_range)
    else:
        base = ColourTags(
            source.primaries if source.primaries != "unknown" else "smpte170m",
            source.trc if source.trc != "unknown" else "smpte170m",
            source.matrix if source.matrix in _SWS_MATRIX else "smpte170m",
            yuv_range,
        )
    if rgb:
        return ColourTags(base.primaries, base.trc, "gbr", "pc")
    return base


def encode_matrix(tags: ColourTags) -> Colorspace:
    """The RGB->YUV matrix that matches `tags.matrix` (set by `output_tags`)."""
    return _SWS_MATRIX.get(tags.matrix, Colorspace.ITU601)
