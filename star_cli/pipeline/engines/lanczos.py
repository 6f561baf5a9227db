"""The classical engine: Lanczos resampling through swscale.

It is the fast preview and the baseline every benchmark compares against; it has
no temporal context, so it restores frames one batch at a time.
"""

from __future__ import annotations

import av
import numpy as np


class LanczosEngine:
    """Resize each RGB frame to the output size with a Lanczos kernel."""

    name = "lanczos"
    temporal = False

    def __init__(self, out_height: int, out_width: int) -> None:
        self.out_height = out_height
        self.out_width = out_width

    def restore(self, frames: np.ndarray) -> np.ndarray:
        """(N,H,W,3) uint8 -> (N,out_h,out_w,3) uint8."""
        out = np.empty((len(frames), self.out_height, self.out_width, 3), dtype=np.uint8)
        for i, frame in enumerate(frames):
            resized = av.VideoFrame.from_ndarray(frame, format="rgb24").reformat(
                width=self.out_width, height=self.out_height, interpolation="LANCZOS"
            )
            out[i] = resized.to_ndarray()
        return out
