"""Lanczos resizing in one swscale pass, straight from the decoded frame to the encoder's format.

ffmpeg's `-vf scale=...:flags=lanczos` never leaves YUV; neither does this: each
decoded frame is scaled and converted (source matrix and range -> output matrix
and range) by one libswscale call, like ffmpeg's scale filter. The reformatter
keeps its swscale context across frames (building a Lanczos context costs about as
much as a resize).
"""

from __future__ import annotations

import av
from av.video.reformatter import ColorRange, Colorspace, Interpolation, VideoReformatter

from star_cli.video.colour import decode_matrix, decode_range, tags_of


class LanczosResizer:
    """Scale decoded frames of one stream to `width` x `height` in `pix_fmt` (the output's format)."""

    def __init__(self, width: int, height: int, pix_fmt: str, matrix: Colorspace, color_range: ColorRange) -> None:
        self.size = (width, height)
        self.pix_fmt = pix_fmt
        self.matrix, self.color_range = matrix, color_range
        self._source: tuple[Colorspace, ColorRange] | None = None
        self._reformatter = VideoReformatter()

    def __call__(self, frame: av.VideoFrame) -> av.VideoFrame:
        if self._source is None:  # a stream property: fixed from its first frame, as the RGB reader does
            tags = tags_of(frame)
            self._source = (decode_matrix(tags, frame.height, frame.width), decode_range(tags, frame.format.name))
        return self._reformatter.reformat(
            frame,
            width=self.size[0],
            height=self.size[1],
            format=self.pix_fmt,
            src_colorspace=self._source[0],
            dst_colorspace=self.matrix,
            src_color_range=self._source[1],
            dst_color_range=self.color_range,
            interpolation=Interpolation.LANCZOS,
            threads=0,
        )
