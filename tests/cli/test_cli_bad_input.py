"""Bad input (issue 2): one clear line on stderr, exit code 2, nothing written, nothing lost.

Every case snapshots the whole test folder (inputs, the output folder, any existing
output) before the run and compares it after, so a refusal that leaves a partial
file, touches the input or replaces an existing output fails the test.
"""

from __future__ import annotations

import re
import os
from pathlib import Path

import av
import numpy as np
import pytest

from cli_checks import error_line, packet_times, snapshot
from star_cli.testing import make_tiny_weights
from star_cli.testing.media import faststart_copy, make_audio, make_video, truncate

LANCZOS = ("--engine", "lanczos")


def _still_png(path: Path) -> Path:
    with av.open(str(path), "w", format="image2") as container:
        stream = container.add_stream("png")
        stream.width, stream.height, stream.pix_fmt = 64, 48, "rgb24"
        frame = av.VideoFrame.from_ndarray(np.full((48, 64, 3), 128, np.uint8), format="rgb24")
        container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    return path


def _missing(tmp: Path, clip: Path) -> list:
    return [tmp / "nope.mp4", "-o", tmp / "out" / "o.mp4"]


def _folder_without_videos(tmp: Path, clip: Path) -> list:
    (tmp / "videos").mkdir()
    (tmp / "videos" / "notes.txt").write_text("not a video\n")
    return [tmp / "videos", "-o", tmp / "out"]


def _folder_with_only_hidden_files(tmp: Path, clip: Path) -> list:
    (tmp / "videos").mkdir()
    (tmp / "videos" / "._in.mp4").write_bytes(b"\0\5\26\7" + bytes(4000))  # macOS AppleDouble beside a video on exFAT
    (tmp / "videos" / ".in.mp4.1234-abcdef12.partial.mp4").write_bytes(clip.read_bytes())
    return [tmp / "videos", "-o", tmp / "out"]


def _zero_bytes(tmp: Path, clip: Path) -> list:
    (tmp / "empty.mp4").touch()
    return [tmp / "empty.mp4", "-o", tmp / "out" / "o.mp4"]


def _pipe_named_mp4(tmp: Path, clip: Path) -> list:
    os.mkfifo(tmp / "live.mp4")
    return [tmp / "live.mp4", "-o", tmp / "out" / "o.mp4"]


def _text_named_mp4(tmp: Path, clip: Path) -> list:
    (tmp / "notes.mp4").write_text("this is not a video\n" * 20)
    return [tmp / "notes.mp4", "-o", tmp / "out" / "o.mp4"]


def _truncated_mp4(tmp: Path, clip: Path) -> list:
    truncate(clip, 0.6)  # the index (moov) sits at the end: nothing is left to decode
    return [clip, "-o", tmp / "out" / "o.mp4"]


def _audio_only(tmp: Path, clip: Path) -> list:
    return [make_audio(tmp / "sound.mp4"), "-o", tmp / "out" / "o.mp4"]


def _still_image(tmp: Path, clip: Path) -> list:
    return [_still_png(tmp / "still.png"), "-o", tmp / "out" / "o.mp4"]


def _output_folder_missing(tmp: Path, clip: Path) -> list:
    return [clip, "-o", tmp / "missing" / "o.mp4"]


def _output_folder_missing_for_folder_input(tmp: Path, clip: Path) -> list:
    return [tmp, "-o", tmp / "missing" / "out"]  # a missing folder is made, but only inside one that exists


def _output_is_input(tmp: Path, clip: Path) -> list:
    return [clip, "-o", clip, "--overwrite"]


def _output_folder_is_input_folder(tmp: Path, clip: Path) -> list:
    return [tmp, "-o", tmp, "--overwrite"]


def _folder_output_named_like_a_file(tmp: Path, clip: Path) -> list:
    return [tmp, "-o", tmp / "out" / "upscaled.mp4"]


def _two_inputs_share_an_output_name(tmp: Path, clip: Path) -> list:
    (tmp / "in.mov").write_bytes(clip.read_bytes())
    (tmp / "in.mov").rename(tmp / "in.ts")  # in.ts is written as in.mkv; so is in.mkv
    (tmp / "in.mkv").write_bytes(clip.read_bytes())
    return [tmp, "-o", tmp / "out"]


def _output_exists(tmp: Path, clip: Path) -> list:
    (tmp / "out" / "o.mp4").write_bytes(b"precious")
    return [clip, "-o", tmp / "out" / "o.mp4"]


def _output_exists_in_output_folder(tmp: Path, clip: Path) -> list:
    (tmp / "out" / "in.mp4").write_bytes(b"precious")
    return [tmp, "-o", tmp / "out"]


def _bad_input_with_overwrite(tmp: Path, clip: Path) -> list:
    (tmp / "out" / "o.mp4").write_bytes(b"precious")
    (tmp / "notes.mp4").write_text("this is not a video\n")
    return [tmp / "notes.mp4", "-o", tmp / "out" / "o.mp4", "--overwrite"]


def _output_container_unknown(tmp: Path, clip: Path) -> list:
    return [clip, "-o", tmp / "out" / "o.txt"]


def _codec_the_container_cannot_hold(tmp: Path, clip: Path) -> list:
    return [clip, "-o", tmp / "out" / "o.webm", "--codec", "h264"]


def _av1_in_mov(tmp: Path, clip: Path) -> list:
    return [clip, "-o", tmp / "out" / "o.mov", "--codec", "av1"]


def _crf_with_ffv1(tmp: Path, clip: Path) -> list:
    return [clip, "-o", tmp / "out" / "o.mkv", "--codec", "ffv1", "--crf", "20"]


def _unknown_engine(tmp: Path, clip: Path) -> list:
    return [clip, "-o", tmp / "out" / "o.mp4", "--engine", "bicubic"]


def _markup_in_name(tmp: Path, clip: Path) -> list:
    return [tmp / "clip[red].mp4", "-o", tmp / "out" / "o.mp4"]


def _unknown_batch_guidance(tmp: Path, clip: Path) -> list:
    return [clip, "-o", tmp / "out" / "o.mp4", "--batch-guidance", "maybe"]


def _device_and_gpus(tmp: Path, clip: Path) -> list:
    return [clip, "-o", tmp / "out" / "o.mp4", "--gpus", "0,1", "--device", "cpu"]


def _scale(value: str):
    def case(tmp: Path, clip: Path) -> list:
        return [clip, "-o", tmp / "out" / "o.mp4", "--scale", value]

    return case


CASES = {
    "missing path": (_missing, "input not found: .*nope.mp4"),
    "folder without videos": (_folder_without_videos, "no videos in folder"),
    "folder with only hidden files": (_folder_with_only_hidden_files, "no videos in folder"),
    "0-byte file": (_zero_bytes, r"empty.mp4: the file is empty \(0 bytes\)"),
    "a pipe named .mp4": (_pipe_named_mp4, r"live.mp4: is not a regular file \(a pipe or device\)"),
    "text file named .mp4": (_text_named_mp4, "notes.mp4: cannot be read as a video"),
    "truncated mp4": (_truncated_mp4, "in.mp4: cannot be read as a video .*truncated"),
    "audio-only file": (_audio_only, r"sound.mp4: has no video stream \(audio only\)"),
    "still image": (_still_image, "still.png: is a still image, not a video"),
    "output folder missing": (_output_folder_missing, "output folder does not exist: .*missing"),
    "output folder missing (folder input)": (_output_folder_missing_for_folder_input, "out cannot be made: .*missing does not exist"),
    "output is input": (_output_is_input, "output is the input file"),
    "output folder is input folder": (_output_folder_is_input_folder, "the output folder is the input folder"),
    "folder output named like a file": (_folder_output_named_like_a_file, "a folder input is written to a folder: .*upscaled.mp4"),
    "two inputs share an output name": (_two_inputs_share_an_output_name, r"in.mkv and in.ts would both be written to .*in.mkv"),
    "output exists": (_output_exists, "output exists: .*o.mp4 .*--overwrite"),
    "output exists (folder input)": (_output_exists_in_output_folder, "output exists: .*in.mp4"),
    "bad input with --overwrite": (_bad_input_with_overwrite, "notes.mp4: cannot be read as a video"),
    "unknown output container": (_output_container_unknown, "unsupported output container '.txt'"),
    "codec the container cannot hold": (_codec_the_container_cannot_hold, "a .webm file cannot hold h264"),
    "--crf with ffv1": (_crf_with_ffv1, "--crf sets a lossy codec's quality; ffv1 is lossless and takes none"),
    "av1 in .mov": (_av1_in_mov, "a .mov file cannot hold av1 video; use .mkv or .mp4"),
    "unknown engine": (_unknown_engine, "--engine must be one of star, lanczos, got 'bicubic'"),
    "markup in the file name": (_markup_in_name, r"input not found: .*clip\[red\].mp4"),
    "unknown guidance batching": (_unknown_batch_guidance, "--batch-guidance must be one of auto, on, off, got 'maybe'"),
    "--device with --gpus": (_device_and_gpus, "--device cpu and --gpus/--devices: give one"),
    "scale 0": (_scale("0"), "--scale must be between 0.125 and 8, got 0$"),
    "scale negative": (_scale("-2"), "--scale must be between 0.125 and 8, got -2$"),
    "scale above 8": (_scale("8.5"), "--scale must be between 0.125 and 8, got 8.5$"),
    "scale nan": (_scale("nan"), "--scale must be a finite number, got nan$"),
}


@pytest.mark.parametrize("engine", [LANCZOS, ()], ids=["lanczos", "star"])
@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_bad_input_is_one_line_exit_2_and_writes_nothing(case, engine, clip, tmp_path, run_cli):
    build, message = case
    (tmp_path / "out").mkdir()
    args = build(tmp_path, clip)
    before = snapshot(tmp_path)
    result = run_cli("upscale", *engine, *args)  # the case's own --engine comes last and wins
    line = error_line(result)
    assert re.search(message, line), line
    assert snapshot(tmp_path) == before


def _decoded_before_first_error(path: Path) -> tuple[int, int]:
    """(frames decoded before the first decode error or the end, frames decodable in all), by PyAV alone."""
    before, total, failed = 0, 0, False
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        for packet in container.demux(stream):
            try:
                count = len(stream.decode(packet))
            except av.FFmpegError:
                failed = True
                continue
            total += count
            before += 0 if failed else count
    return before, total


def _damage(path: Path, how: str) -> Path:
    if how == "truncated":
        return truncate(faststart_copy(path, path.with_name("fast.mp4")), 0.6)
    data = bytearray(path.read_bytes())  # the index is at the end: overwrite 20% of the frames
    start = int(len(data) * 0.3)
    data[start : start + len(data) // 5] = np.random.default_rng(0).integers(0, 256, len(data) // 5, np.uint8).tobytes()
    path.write_bytes(bytes(data))
    return path


@pytest.mark.parametrize("how", ["truncated", "corrupt"])
def test_damaged_mp4_names_the_failed_frame_and_ignore_errors_keeps_the_decodable_ones(how, tmp_path, run_cli):
    source = _damage(make_video(tmp_path / "in.mp4", frames=48), how)
    before_error, decodable = _decoded_before_first_error(source)
    assert 0 < before_error < 48 and before_error <= decodable < 48
    (tmp_path / "out").mkdir()
    before = snapshot(tmp_path)

    line = error_line(run_cli("upscale", source, "-o", tmp_path / "out" / "o.mp4", *LANCZOS))
    assert f"frame {before_error} could not be decoded" in line and "--ignore-errors" in line
    assert snapshot(tmp_path) == before

    result = run_cli("upscale", source, "-o", tmp_path / "out" / "o.mp4", *LANCZOS, "--ignore-errors", "-q")
    assert result.exit_code == 0, result.output
    assert f"{48 - decodable} of 48 frames cannot be decoded and are left out" in result.stderr.replace("\n", "")
    assert len(packet_times(tmp_path / "out" / "o.mp4", "video")) == decodable


def test_plan_that_cannot_fit_the_machine_is_refused_before_loading_weights(clip, tmp_path, run_cli, monkeypatch):
    """The check refuses with the very figure --dry-run shows for the chosen device."""
    weights = make_tiny_weights(tmp_path / "weights")
    (tmp_path / "out").mkdir()
    args = ("upscale", clip, "-o", tmp_path / "out" / "o.mp4", "--device", "cpu", "--weights-dir", weights, "--scale", "8", "--tile-size", "none")
    dry = run_cli(*args, "--dry-run")
    assert dry.exit_code == 0, dry.output
    shown = float(re.search(r"This run \(CPU\)[\s│]+about ([\d.]+) GiB of memory", dry.stdout).group(1))
    monkeypatch.setattr("star_cli.pipeline.memory.host_memory_available", lambda: int((shown - 0.3) * 2**30))
    before = snapshot(tmp_path)
    line = error_line(run_cli(*args))
    assert re.search(rf"this plan needs about {shown} GiB of memory but [\d.]+ GiB is available; try a smaller", line), line
    assert snapshot(tmp_path) == before


def test_missing_weights_are_reported_before_the_memory_check(clip, tmp_path, run_cli, monkeypatch):
    monkeypatch.setattr("star_cli.pipeline.memory.host_memory_available", lambda: 2**20)
    line = error_line(run_cli("upscale", clip, "-o", tmp_path / "o.mp4", "--device", "cpu"), exit_code=1)
    assert "star download-weights" in line and "memory" not in line


@pytest.mark.parametrize(
    "args, option", [((), "--output"), (("-o", "o.mp4", "--scale", "four"), "--scale")], ids=["no output", "scale text"]
)
def test_usage_errors_exit_2_without_traceback(args, option, clip, tmp_path, run_cli):
    before = snapshot(tmp_path)
    result = run_cli("upscale", clip, *args)
    assert result.exit_code == 2 and isinstance(result.exception, SystemExit)
    assert option in result.stderr and "Traceback" not in result.output
    assert snapshot(tmp_path) == before
