"""The classical engine: Lanczos resampling through swscale.

It is the fast preview and the baseline every benchmark compares against; it has
no temporal context, so it restores frames one batch at a time.
"""

from __future__ import annotations

import av
import numpy as np

from star_cli.pipeline.plan import Plan, Window


class LanczosEngine:
    """Resize each RGB frame to the output size with a Lanczos kernel."""

    name = "lanczos"
    temporal = False

    def restore(self, frames: np.ndarray, plan: Plan, window: Window | None = None) -> np.ndarray:
        """(N, H, W, 3) uint8 -> (N, out_h, out_w, 3) uint8 at the plan's output size."""
        height, width = plan.output_size
        out = np.empty((len(frames), height, width, 3), dtype=np.uint8)
        for i, frame in enumerate(frames):
            resized = av.VideoFrame.from_ndarray(frame, format="rgb24").reformat(
                width=width, height=height, interpolation="LANCZOS"
            )
            out[i] = resized.to_ndarray()
        return out
