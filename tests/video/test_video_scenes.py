"""detect_scene_cuts(): hard cuts found, motion within a shot ignored."""

from __future__ import annotations

import numpy as np
import pytest

from star_cli.testing.media import make_video, pattern_frame
from star_cli.video.scenes import colour_histogram, detect_scene_cuts, histogram_distance


@pytest.mark.parametrize("cut_at", [(), (12,), (5, 17)])
def test_cuts_are_found_where_the_shot_changes(tmp_path, cut_at):
    path = make_video(tmp_path / "cuts.mp4", frames=24, width=96, height=64, cut_at=cut_at)
    assert detect_scene_cuts(path) == list(cut_at)


def test_cuts_in_a_rotated_vfr_matroska(tmp_path):
    path = make_video(tmp_path / "cuts.mkv", frames=20, rotation=90, vfr=True, cut_at=(9,))
    assert detect_scene_cuts(path) == [9]


def test_histogram_distance_separates_motion_from_cuts():
    same_shot = [colour_histogram(pattern_frame(i, 96, 64)) for i in (0, 1)]
    new_shot = colour_histogram(pattern_frame(2, 96, 64, shot=1))
    motion, cut = histogram_distance(*same_shot), histogram_distance(same_shot[1], new_shot)
    assert motion < 0.1 < 0.6 < cut <= 1.0
    assert histogram_distance(new_shot, new_shot) == 0.0
    assert colour_histogram(np.zeros((4, 4, 3), np.uint8)).sum(axis=1).tolist() == [1.0, 1.0, 1.0]
