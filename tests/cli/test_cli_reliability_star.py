"""Issue 12 through the CLI, STAR engine on tiny weights: --resume never mixes runs, damaged or
full work folders, the output lock, SIGTERM keeping the windows, one-pixel and flat frames,
and weights files whose bytes changed."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from cli_checks import error_line, partial_files, snapshot
from star_cli import atomic
from star_cli.pipeline import upscale as upscale_module
from star_cli.pipeline.resume import work_folder
from star_cli.testing import make_tiny_weights
from star_cli.testing.media import decode_rgb, make_video

MULTI_WINDOW = ("--chunk-len", "8", "--chunk-overlap", "2", "--window-chunks", "1", "--guidance", "1", "--codec", "ffv1")
STAR_SCRIPT = str(Path(sys.executable).with_name("star"))


@pytest.fixture(autouse=True)
def no_library_progress_bars():
    """As `star`'s entry point does (these tests call the app in-process): only our own lines on stderr."""
    from transformers.utils import logging

    logging.disable_progress_bar()
    yield
    logging.enable_progress_bar()


@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> Path:
    return make_tiny_weights(tmp_path_factory.mktemp("weights"))


@pytest.fixture(scope="module")
def other_weights(tmp_path_factory) -> Path:
    return make_tiny_weights(tmp_path_factory.mktemp("other-weights"), seed=1)


@pytest.fixture(scope="module")
def short_clip(tmp_path_factory) -> Path:
    return make_video(tmp_path_factory.mktemp("short") / "in.mp4", frames=12, width=32, height=24, audio=False)


def upscale(run_cli, clip: Path, out: Path, weights: Path, *extra: object):
    return run_cli("upscale", clip, "-o", out, "--scale", "2", "--weights-dir", weights, "--quiet", *MULTI_WINDOW, *extra)


@pytest.fixture(scope="module")
def reference(short_clip, weights, tmp_path_factory) -> np.ndarray:
    """The frames of one uninterrupted run."""
    from typer.testing import CliRunner

    from star_cli.cli import app

    out = tmp_path_factory.mktemp("reference") / "out.mkv"
    args = ["upscale", str(short_clip), "-o", str(out), "--scale", "2", "--weights-dir", str(weights), "--quiet", *MULTI_WINDOW]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    return decode_rgb(out)


def interrupted_run(run_cli, monkeypatch, clip: Path, out: Path, weights: Path, *extra: object) -> Path:
    """Run until the first window is stored, then Ctrl-C: the work folder of an interrupted run."""
    real = upscale_module.restore_windows

    def interrupted(*args):
        for item in real(*args):
            raise KeyboardInterrupt
            yield item

    with monkeypatch.context() as patch:
        patch.setattr(upscale_module, "restore_windows", interrupted)
        assert upscale(run_cli, clip, out, weights, *extra).exit_code == 130
    folder = work_folder(out)
    assert sorted(p.name for p in folder.iterdir()) == ["state.json", "window_000000.json", "window_000000.mkv"]
    return folder


# ---------------------------------------------------------------- --resume never mixes runs


def test_resume_with_other_weights_or_options_is_refused_and_keeps_the_windows(
    run_cli, monkeypatch, short_clip, weights, other_weights, reference, tmp_path
):
    out = tmp_path / "out.mkv"
    folder = interrupted_run(run_cli, monkeypatch, short_clip, out, weights)
    before = snapshot(tmp_path)
    line = error_line(upscale(run_cli, short_clip, out, other_weights, "--resume"))
    assert "the weights differ (star/light_deg.safetensors, text_encoder/model.safetensors" in line, line
    line = error_line(upscale(run_cli, short_clip, out, weights, "--resume", "--seed", "3", "--color-fix", "wavelet"))
    assert "options differ (--color-fix, --seed)" in line, line
    line = error_line(upscale(run_cli, short_clip, out, weights, "--resume", "--scale", "3"))
    assert "options differ (--scale)" in line and "the plan differs" in line, line
    assert line.endswith("run with --overwrite instead to start over")
    assert snapshot(tmp_path) == before
    # What does not change frames may change: device, offload, the encoder.
    result = upscale(run_cli, short_clip, out, weights, "--resume", "--offload", "model", "--device", "cpu")
    assert result.exit_code == 0, result.output
    np.testing.assert_array_equal(decode_rgb(out), reference)
    assert not folder.exists()


def test_a_rerun_without_resume_keeps_the_finished_windows_unless_told_to_start_over(
    run_cli, monkeypatch, short_clip, weights, reference, tmp_path
):
    out = tmp_path / "out.mkv"
    folder = interrupted_run(run_cli, monkeypatch, short_clip, out, weights)
    before = snapshot(tmp_path)
    line = error_line(upscale(run_cli, short_clip, out, weights))
    assert "holds 1 finished window(s) of an interrupted run: add --resume to continue from them, or --overwrite" in line
    assert snapshot(tmp_path) == before
    result = upscale(run_cli, short_clip, out, weights, "--overwrite")
    assert result.exit_code == 0, result.output
    np.testing.assert_array_equal(decode_rgb(out), reference)
    assert not folder.exists()


def test_a_run_that_fails_before_its_first_window_leaves_no_work_folder(run_cli, monkeypatch, short_clip, weights, tmp_path):
    from star_cli.errors import StarError

    def broken(*args):
        raise StarError("the checkpoint does not fit the model")

    monkeypatch.setattr(upscale_module, "make_engine", broken)
    (tmp_path / "out").mkdir()
    before = snapshot(tmp_path)
    assert error_line(upscale(run_cli, short_clip, tmp_path / "out" / "o.mkv", weights), exit_code=1).endswith("does not fit the model")
    assert snapshot(tmp_path) == before


def test_resume_of_a_folder_keeps_the_outputs_already_written(run_cli, short_clip, weights, reference, tmp_path):
    folder, out = tmp_path / "videos", tmp_path / "out"
    folder.mkdir()
    for name in ("a.mkv", "b.mkv"):
        shutil.copy(short_clip, folder / name)
    assert upscale(run_cli, folder, out, weights).exit_code == 0
    written = (out / "a.mkv").stat().st_mtime_ns
    (out / "b.mkv").unlink()  # as if the run had been stopped on b
    result = run_cli("upscale", folder, "-o", out, "--scale", "2", "--weights-dir", weights, *MULTI_WINDOW, "--resume")
    assert result.exit_code == 0, result.output
    assert "a.mkv: already written, kept (--resume)" in result.stderr.replace("\n", "")
    assert (out / "a.mkv").stat().st_mtime_ns == written
    np.testing.assert_array_equal(decode_rgb(out / "b.mkv"), reference)
    line = error_line(upscale(run_cli, folder / "a.mkv", out / "a.mkv", weights, "--resume"))
    assert "that run finished, nothing to resume (--overwrite redoes it)" in line


def test_resume_after_the_checkpoint_file_was_rewritten_is_refused(run_cli, monkeypatch, short_clip, weights, other_weights, tmp_path):
    checkpoint = tmp_path / "trained.safetensors"
    shutil.copyfile(weights / "star" / "light_deg.safetensors", checkpoint)
    out = tmp_path / "out.mkv"
    interrupted_run(run_cli, monkeypatch, short_clip, out, weights, "--checkpoint", checkpoint)
    shutil.copyfile(other_weights / "star" / "light_deg.safetensors", checkpoint)  # a new `star train` export
    before = snapshot(tmp_path)
    line = error_line(upscale(run_cli, short_clip, out, weights, "--resume", "--checkpoint", checkpoint))
    assert f"the weights differ (checkpoint {checkpoint.resolve()})" in line, line
    assert snapshot(tmp_path) == before


# ---------------------------------------------------------------- damaged and full work folders


def _garble_state(folder: Path) -> None:
    (folder / "state.json").write_bytes(b'{"format": 2, "iden')


def _truncate_window(folder: Path) -> None:
    window = folder / "window_000000.mkv"
    window.write_bytes(window.read_bytes()[: window.stat().st_size // 2])


# A flipped byte and a missing commit record: tests/pipeline/test_resume_store.py (no model needed).
@pytest.mark.parametrize(
    ("damage", "warning"),
    [
        (_garble_state, "state.json is damaged or missing: its windows are discarded and recomputed"),
        (_truncate_window, "stored window 0 is damaged (its checksum does not match): it is recomputed"),
    ],
    ids=["garbled state", "truncated window"],
)
def test_damaged_work_folder_is_recomputed_with_a_warning(damage, warning, run_cli, monkeypatch, short_clip, weights, reference, tmp_path):
    out = tmp_path / "out.mkv"
    damage(interrupted_run(run_cli, monkeypatch, short_clip, out, weights))
    result = upscale(run_cli, short_clip, out, weights, "--resume")
    assert result.exit_code == 0, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("warning: ") and lines[0].endswith(warning), lines
    np.testing.assert_array_equal(decode_rgb(out), reference)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.mkv"]


def test_disk_full_while_saving_a_window_is_one_line_and_the_folder_stays_resumable(
    run_cli, monkeypatch, short_clip, weights, reference, tmp_path
):
    real = atomic.partial_path

    def full_disk_for_window_1(dest: Path) -> Path:
        tmp = real(dest)
        if dest.name == "window_000001.mkv":
            tmp.symlink_to("/dev/full")  # every write fails with ENOSPC, as on a full disk
        return tmp

    out = tmp_path / "out.mkv"
    with monkeypatch.context() as patch:
        patch.setattr(atomic, "partial_path", full_disk_for_window_1)
        line = error_line(upscale(run_cli, short_clip, out, weights), exit_code=1)
    assert line == f"error: cannot save window 1 in {work_folder(out)}: No space left on device (finished windows are kept for --resume)"
    assert sorted(p.name for p in work_folder(out).iterdir()) == ["state.json", "window_000000.json", "window_000000.mkv"]
    assert not out.exists() and partial_files(tmp_path) == []
    result = upscale(run_cli, short_clip, out, weights, "--resume")
    assert result.exit_code == 0, result.output
    np.testing.assert_array_equal(decode_rgb(out), reference)


# ---------------------------------------------------------------- one run per output


def test_a_run_on_an_output_another_run_holds_never_touches_its_windows(run_cli, monkeypatch, short_clip, weights, tmp_path):
    out = tmp_path / "out.mkv"
    interrupted_run(run_cli, monkeypatch, short_clip, out, weights)
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from pathlib import Path; from star_cli.pipeline.lock import OutputLock;"
         "OutputLock(Path(sys.argv[1])).acquire(); print('locked', flush=True); time.sleep(120)", str(out)],
        stdout=subprocess.PIPE, text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        before = snapshot(tmp_path)
        for extra in ((), ("--resume",)):  # without --resume the folder would be cleared: not while it is held
            line = error_line(upscale(run_cli, short_clip, out, weights, *extra))
            assert line.startswith(f"error: another star run (pid {holder.pid}) is writing {out}"), line
        assert snapshot(tmp_path) == before
    finally:
        holder.kill()
        holder.communicate()


def test_sigterm_keeps_the_finished_windows_for_resume(run_cli, weights, tmp_path):  # SIGHUP: test_cli_reliability.py
    clip = make_video(tmp_path / "in.mp4", frames=24, width=32, height=24, audio=False)
    out = tmp_path / "out.mkv"
    command = [STAR_SCRIPT, "upscale", str(clip), "-o", str(out), "--scale", "2", "--weights-dir", str(weights), *MULTI_WINDOW]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}  # tiny models: threads only fight over a busy machine's cores
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    deadline = time.monotonic() + 120
    while not (work_folder(out) / "window_000000.json").exists() and process.poll() is None:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    assert process.poll() is None, "the run finished before the signal"
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 143, stderr
    last = " ".join(stderr.strip().splitlines()[-3:])
    assert re.search(r"interrupted: \d+ finished window\(s\) of", last) and "--resume" in last and "Traceback" not in stderr
    assert not out.exists() and partial_files(tmp_path) == []
    finished = sorted(work_folder(out).glob("window_*.json"))
    assert finished
    result = upscale(run_cli, clip, out, weights, "--resume")
    assert result.exit_code == 0, result.output
    assert len(decode_rgb(out)) == 24 and not work_folder(out).exists()


# ---------------------------------------------------------------- tiny and flat frames


def _flat_clip(path: Path, colour: tuple[int, int, int], width: int, height: int) -> Path:
    """A lossless RGB clip of one colour (ffv1: any size, 1x1 included)."""
    with av.open(str(path), "w") as container:
        stream = container.add_stream("ffv1", rate=24)
        stream.width, stream.height, stream.pix_fmt = width, height, "bgr0"
        for i in range(4):
            frame = av.VideoFrame.from_ndarray(np.full((height, width, 3), colour, np.uint8), format="rgb24")
            frame = frame.reformat(format="bgr0")
            frame.pts, frame.time_base = i, Fraction(1, 24)
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    return path


@pytest.mark.parametrize(
    ("size", "fix"), [((1, 1), "adain"), ((1, 1), "wavelet"), ((32, 24), "adain")], ids=["1px adain", "1px wavelet", "flat"]
)
def test_one_pixel_and_flat_frames_keep_their_colour(size, fix, run_cli, weights, tmp_path):
    colour = (200, 120, 40)
    clip = _flat_clip(tmp_path / "flat.mkv", colour, *size)
    out = tmp_path / "out.mkv"
    result = run_cli("upscale", clip, "-o", out, "--weights-dir", weights, "--quiet", "--guidance", "1",
                     "--codec", "ffv1", "--color-fix", fix)
    assert (result.exit_code, result.stderr) == (0, ""), result.output
    frames = decode_rgb(out)
    assert frames.shape == (4, size[1] * 4, size[0] * 4, 3)
    pixels = frames.reshape(len(frames), -1, 3).astype(float)
    # AdaIN gives each frame the reference's mean and spread (flat: ~1 level, the reference's eps);
    # wavelet keeps the reference's low frequencies, so the mean colour.
    assert np.abs(pixels.mean(1) - colour).max() <= 2
    if fix == "adain":
        assert pixels.std(1).max() <= 2


# ---------------------------------------------------------------- weights whose bytes changed


@pytest.mark.parametrize("name", ["star/light_deg.safetensors", "tokenizer/vocab.json", "tokenizer/merges.txt"])
def test_a_flipped_byte_in_a_weights_file_is_named(name, run_cli, short_clip, weights, tmp_path, monkeypatch):
    monkeypatch.setattr("star_cli.hub.layout.ALWAYS_HASHED_BYTES", 64 << 10)  # the UNet counts as large: found by its mtime
    copy = Path(shutil.copytree(weights, tmp_path / "weights"))
    target = copy / name
    data = bytearray(target.read_bytes())
    data[len(data) // 2] ^= 0x01  # same size: a size check alone would pass it
    target.write_bytes(bytes(data))
    before = snapshot(tmp_path)
    line = error_line(upscale(run_cli, short_clip, tmp_path / "out.mkv", copy), exit_code=1)
    assert line == f"error: {target} is corrupt (its sha256 differs from manifest.json): run `star download-weights --dir {copy}`"
    assert snapshot(tmp_path) == before

