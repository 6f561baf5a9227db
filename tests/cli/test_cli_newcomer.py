"""What a new user meets first: help text, --version, folder batches, segments, refusals with one line."""

from __future__ import annotations

import inspect
import shutil
from pathlib import Path

import av
import pytest

from cli_checks import error_line, packet_times
from star_cli import __version__
from star_cli.cli import upscale
from star_cli.pipeline.request import build_request, request_defaults
from star_cli.testing.media import make_video
from star_cli.video.probe import probe

LANCZOS = ("--engine", "lanczos", "--preset", "ultrafast")


def test_version(run_cli):
    result = run_cli("--version")
    assert result.exit_code == 0 and result.stdout.strip() == f"star {__version__}"
    top = run_cli("--help").stdout
    assert "--version" in top and "<bool>" not in top


def test_help_shows_defaults_plainly(run_cli):
    text = run_cli("upscale", "--help").stdout
    assert "star upscale [OPTIONS] INPUT" in text and "{" not in text.split("\n", 3)[1]
    assert "<bool>" not in text
    for default in ("[default: (8, or a quarter of a shorter --chunk-len)]", "[default: (18)]", "[default: (auto)]",
                    "[default: (fp16 on a GPU (cogvideox: bf16), fp32 on the CPU)]"):
        assert default in " ".join(text.replace("│", " ").split()), default
    assert "at least 2" in text


def test_cli_defaults_are_the_request_defaults():
    cli = {name: p.default.default for name, p in inspect.signature(upscale).parameters.items() if name not in ("input", "output")}
    assert cli == request_defaults()


def test_chunk_len_8_alone_is_a_valid_plan(clip, tmp_path):
    request = build_request(input=clip, output=tmp_path / "o.mp4", **{**request_defaults(), "chunk_len": 8})
    assert request.plan.chunk_overlap == 2


@pytest.mark.parametrize(
    "args, match",
    [
        (("--engine", "lanczos", "--resume"), "--resume continues an interrupted STAR run"),
        (("--codec", "ffv1"), "--codec ffv1 cannot go into a .mp4"),
        (("--start", "soon"), "--start must be a time"),
        (("--start", "0.5", "--end", "10f"), "--end must come after --start"),
        (("--checkpoint", "nowhere.safetensors"), "--checkpoint nowhere.safetensors: no such file"),
    ],
)
def test_refusals_are_one_line(args, match, clip, tmp_path, run_cli):
    line = error_line(run_cli("upscale", clip, "-o", tmp_path / "o.mp4", *args))
    assert match in line, line


def test_checkpoint_folder_without_export_says_which_file_it_wants(clip, tmp_path, run_cli):
    (tmp_path / "run").mkdir()
    line = error_line(run_cli("upscale", clip, "-o", tmp_path / "o.mp4", "--checkpoint", tmp_path / "run"))
    assert "holds no unet.safetensors" in line


def test_a_train_run_folder_is_a_checkpoint(tmp_path):
    from star_cli.hub.layout import resolve_checkpoint

    step = tmp_path / "checkpoints" / "step-00000010"
    step.mkdir(parents=True)
    (step / "unet.safetensors").write_bytes(b"x")
    assert resolve_checkpoint(str(tmp_path)) == str(step / "unet.safetensors")
    (tmp_path / "unet.safetensors").write_bytes(b"x")
    assert resolve_checkpoint(str(tmp_path)) == str(tmp_path / "unet.safetensors")


def test_folder_with_an_unreadable_file_skips_it_and_exits_1(base_clip, tmp_path, run_cli):
    inputs = tmp_path / "in"
    inputs.mkdir()
    shutil.copy(base_clip, inputs / "a.mp4")
    shutil.copy(base_clip, inputs / "c.mp4")
    (inputs / "b.mp4").write_bytes(b"not a video at all" * 100)
    out = tmp_path / "out"  # missing: created, since its parent exists
    dry = run_cli("upscale", inputs, "-o", out, *LANCZOS, "--dry-run")
    assert dry.exit_code == 0 and "skipped" in dry.stderr and not out.exists()  # a dry run leaves no folder
    result = run_cli("upscale", inputs, "-o", out, *LANCZOS)
    assert result.exit_code == 1, result.output
    assert sorted(p.name for p in out.iterdir()) == ["a.mp4", "c.mp4"]
    stderr = " ".join(result.stderr.split())
    assert "warning: skipped" in stderr and "b.mp4" in stderr
    assert "file 1 of 3" in stderr or "file 3 of 3" in stderr
    assert stderr.endswith("error: 1 of 3 videos could not be read and were skipped (b.mp4); the other 2 were written")


def test_start_and_end_cut_video_and_audio(base_clip, tmp_path, run_cli):
    dest = tmp_path / "part.mp4"
    result = run_cli("upscale", base_clip, "-o", dest, *LANCZOS, "--scale", "1", "--start", "0.25", "--end", "18f", "-q")
    assert result.exit_code == 0, result.output
    info = probe(dest)
    assert info.num_frames == 18 - 6  # 0.25 s at 24 fps is frame 6
    video = packet_times(dest, "video")
    audio = packet_times(dest, "audio")
    assert min(t for t, _ in video) == pytest.approx(0, abs=1e-3)
    assert audio and min(t for t, _ in audio) >= -0.05 and max(t + d for t, d in audio) <= 12 / 24 + 0.05
    with av.open(str(base_clip)) as source, av.open(str(dest)) as part:
        first = next(part.decode(video=0)).to_ndarray(format="rgb24").astype(int)
        frames = [f.to_ndarray(format="rgb24").astype(int) for f in source.decode(video=0)]
    assert min(range(len(frames)), key=lambda i: abs(frames[i] - first).mean()) == 6


def test_odd_output_size_is_made_even_with_a_warning(tmp_path, run_cli):
    source = make_video(tmp_path / "in.mp4", frames=3, width=34, height=26, audio=False)  # x1.5: 51x39
    result = run_cli("upscale", source, "-o", tmp_path / "o.mp4", *LANCZOS, "--scale", "1.5")
    assert result.exit_code == 0, result.output
    assert "51x39 is odd" in " ".join(result.stderr.split()) and "written as 50x38" in " ".join(result.stderr.split())
    even = probe(tmp_path / "o.mp4")
    assert (even.width, even.height, even.pix_fmt) == (50, 38, "yuv420p")
    exact = run_cli("upscale", source, "-o", tmp_path / "x.mp4", *LANCZOS, "--scale", "1.5", "--exact-size", "-q")
    odd = probe(tmp_path / "x.mp4")
    assert exact.exit_code == 0 and (odd.width, odd.height, odd.pix_fmt) == (51, 39, "yuv444p")


def test_output_folder_parent_must_exist(base_clip, tmp_path, run_cli):
    inputs = tmp_path / "in"
    inputs.mkdir()
    shutil.copy(base_clip, inputs / "a.mp4")
    line = error_line(run_cli("upscale", inputs, "-o", tmp_path / "no" / "out", *LANCZOS))
    assert "no" in line and not Path(tmp_path / "no").exists()
