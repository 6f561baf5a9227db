"""What the encoder accepts: the size an odd output is encoded at."""

from __future__ import annotations

from star_cli.testing.media import make_video
from star_cli.video.encoding import even_size
from star_cli.video.options import EncodeOptions
from star_cli.video.probe import probe


def test_even_size_drops_a_pixel_only_for_subsampled_output(tmp_path):
    info420 = probe(make_video(tmp_path / "a.mp4", frames=2, width=64, height=48, audio=False))
    info444 = probe(make_video(tmp_path / "b.mp4", frames=2, width=64, height=48, pix_fmt="yuv444p", audio=False))
    assert even_size(EncodeOptions(), info420, 963, 723) == (962, 722)
    assert even_size(EncodeOptions(), info420, 962, 722) == (962, 722)
    assert even_size(EncodeOptions(), info444, 963, 723) == (963, 723)  # 4:4:4 holds odd sizes
    assert even_size(EncodeOptions(codec="ffv1"), info420, 963, 723) == (963, 723)  # RGB
