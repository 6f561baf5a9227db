"""The classical engine: Lanczos resampling through swscale.

It is the fast preview and the baseline every benchmark compares against; it has
no temporal context, so it restores frames one batch at a time. A file run does
not come here at all unless the video needs rotating: it resizes the decoded YUV
frames straight into the encoder's format (video.resize.LanczosResizer), like
ffmpeg's scale filter. `restore` serves RGB arrays (the Python API, rotated video).
"""

from __future__ import annotations

import av
import numpy as np
from av.video.reformatter import Interpolation, VideoReformatter

from star_cli.pipeline.plan import Plan, Window
from star_cli.pipeline.timing import StageClock


class LanczosEngine:
    """Resize each RGB frame to the output size with a Lanczos kernel.

    The resize writes planar RGB (gbrp), which PyAV hands back as packed RGB: the
    same pixels as swscale's packed-RGB output, whose scaler is unthreaded and several
    times slower. The reformatter keeps its swscale context across frames.
    """

    name = "lanczos"
    temporal = False

    def __init__(self) -> None:
        self._resize = VideoReformatter()
        self.clock = StageClock()

    def restore(self, frames: np.ndarray, plan: Plan, window: Window | None = None) -> np.ndarray:
        """(N, H, W, 3) uint8 -> (N, out_h, out_w, 3) uint8 at the plan's output size."""
        height, width = plan.output_size
        out = np.empty((len(frames), height, width, 3), dtype=np.uint8)
        with self.clock.stage("resize"):
            for i, frame in enumerate(frames):
                source = av.VideoFrame.from_numpy_buffer(np.ascontiguousarray(frame), format="rgb24")
                planar = self._resize.reformat(
                    source, width=width, height=height, format="gbrp", interpolation=Interpolation.LANCZOS, threads=0
                )
                out[i] = planar.to_ndarray()
        return out
