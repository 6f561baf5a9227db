"""`star upscale` over 2 CPU ranks (gloo, tiny weights): the output is the single run's, frame for frame.

Runs go through both launchers users have: torchrun (`python -m torch.distributed.run`)
and `star upscale --devices cpu,cpu`, which starts torch.distributed.run's elastic
launcher itself. A few runs start the two ranks by hand (RANK, WORLD_SIZE, ... as
torchrun sets them) to give each its own folder or its own exit code to check.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import av
import numpy as np
import pytest
from typer.testing import CliRunner

from star_cli.cli import app
from star_cli.pipeline.lock import OutputLock
from star_cli.pipeline.plan import PlanOptions, make_plan
from star_cli.pipeline.resume import finished_windows, work_folder
from star_cli.report import kept_windows_line
from star_cli.testing import make_tiny_weights
from star_cli.testing.media import decode_rgb, make_video

STAR = str(Path(sys.executable).with_name("star"))
TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", "--monitor-interval", "0.2"]
FRAMES = 24
# 8 windows of one chunk each: enough to share, to kill a rank between two, and to resume.
OPTIONS = ["--scale", "2", "--chunk-len", "4", "--chunk-overlap", "1", "--window-chunks", "1", "--guidance", "1",
           "--steps", "2", "--codec", "ffv1"]
WINDOWS = len(make_plan(FRAMES, 24, 32, PlanOptions(scale=2, chunk_len=4, chunk_overlap=1, window_chunks=1)).windows)
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "COLUMNS": "200"}  # one thread, like the in-process reference


@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> Path:
    return make_tiny_weights(tmp_path_factory.mktemp("weights"))


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    return make_video(tmp_path_factory.mktemp("clip") / "in.mp4", frames=FRAMES, width=32, height=24, audio=True)


def single_run(source: Path, out: Path, weights: Path, *extra: str) -> None:
    result = CliRunner().invoke(app, ["upscale", str(source), "-o", str(out), "--weights-dir", str(weights), "--quiet", *OPTIONS, *extra])
    assert result.exit_code == 0, result.output


@pytest.fixture(scope="module")
def reference(clip, weights, tmp_path_factory) -> np.ndarray:
    out = tmp_path_factory.mktemp("ref") / "out.mkv"
    single_run(clip, out, weights)
    return decoded(out)


def decoded(path: Path) -> np.ndarray:
    with av.open(str(path)) as container:
        assert [s.type for s in container.streams][:1] == ["video"]
    return decode_rgb(path)


def star_args(source: Path, out: Path | str, weights: Path, *extra: str) -> list[str]:
    return ["upscale", str(source), "-o", str(out), "--weights-dir", str(weights), *OPTIONS, *extra]


def run(command: list[str], cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(command, cwd=cwd, env=ENV, capture_output=True, text=True, timeout=300)


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


def test_two_torchrun_ranks_write_the_single_run_frames(clip, weights, reference, tmp_path):
    out = tmp_path / "out.mkv"
    done = run([*TORCHRUN, "-m", "star_cli", *star_args(clip, out, weights, "--quiet")])
    assert done.returncode == 0, done.stderr[-3000:]
    np.testing.assert_array_equal(decoded(out), reference)
    with av.open(str(out)) as container:
        assert [s.type for s in container.streams] == ["video", "audio"]
    assert leftovers(tmp_path) == []  # work folder, claims and rank cards are gone


def test_killed_rank_fails_the_run_and_resume_recomputes_only_missing_windows(clip, weights, reference, tmp_path):
    out = tmp_path / "out.mkv"
    work = work_folder(out)
    command = [STAR, *star_args(clip, out, weights, "--devices", "cpu,cpu", "--quiet")]
    process = subprocess.Popen(command, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    card = work / "ranks" / "rank-00001.json"
    while not (list(work.glob("window_*.mkv")) and card.exists()):
        assert process.poll() is None and time.monotonic() < deadline, process.communicate()[1][-3000:]
        time.sleep(0.05)
    pid = json.loads(card.read_text())["pid"]
    os.kill(pid, signal.SIGKILL)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 1
    assert stderr.strip().splitlines() == [
        f"error: rank 1 (pid {pid}) was killed by SIGKILL; no output was written; run the same command with --resume "
        "to recompute only the missing windows"
    ]
    assert not out.exists() and not list(tmp_path.glob(".*partial*"))
    stored = len(list(work.glob("window_*.mkv")))
    assert 0 < stored < WINDOWS, "the kill landed after the last window: make the clip longer"
    assert list((work / "claims").iterdir())  # the dead run's claims are still there, to be taken over

    done = run([*TORCHRUN, "-m", "star_cli", *star_args(clip, out, weights, "--resume", "--verbose")])
    assert done.returncode == 0, done.stderr[-3000:]
    restored = re.findall(r"rank (\d): window (\d+) restored", done.stderr)
    assert len(restored) == WINDOWS - stored
    assert {rank for rank, _ in restored} <= {"0", "1"}
    assert re.search(rf"in.mp4: windows {WINDOWS}/{WINDOWS}, {FRAMES}/{FRAMES} frames", done.stderr)  # plain lines in a log
    assert not re.search(r"━.*\d+/\d+ frames", done.stderr)  # no terminal bar
    np.testing.assert_array_equal(decoded(out), reference)
    assert leftovers(tmp_path) == []


def test_ctrl_c_on_the_launcher_stops_every_rank_and_says_what_it_kept(clip, weights, tmp_path):
    out = tmp_path / "out.mkv"
    command = [STAR, *star_args(clip, out, weights, "--devices", "cpu,cpu", "--quiet")]
    process = subprocess.Popen(
        command, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),  # a test runner may ignore SIGINT
    )
    deadline = time.monotonic() + 120
    while not list(work_folder(out).glob("window_*.mkv")):
        assert process.poll() is None and time.monotonic() < deadline, process.communicate()[1][-3000:]
        time.sleep(0.05)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 130, stderr
    kept = finished_windows(work_folder(out)) if work_folder(out).is_dir() else 0
    said = kept_windows_line(kept, WINDOWS, work_folder(out)) if kept else "interrupted: no partial output was kept"
    assert stderr.strip().splitlines() == [said]
    assert not out.exists() and not list(tmp_path.glob(".*partial*"))


def test_a_folder_of_three_videos_over_two_ranks(weights, tmp_path):
    # --codec ffv1 goes into Matroska only. Each video is one rank's, whole, through the single run's code: the fast engine shows it as well as STAR.
    clips, single, shared = tmp_path / "clips", tmp_path / "single", tmp_path / "shared"
    for folder in (clips, single, shared):
        folder.mkdir()
    for name, frames in (("a.mkv", 4), ("b.mkv", 9), ("c.mkv", 6)):
        make_video(clips / name, frames=frames, width=32, height=24, seed=frames)
    single_run(clips, single, weights, "--engine", "lanczos")
    done = run([STAR, *star_args(clips, shared, weights, "--devices", "cpu,cpu", "--engine", "lanczos")])
    assert done.returncode == 0, done.stderr[-3000:]
    assert "wrote 3 videos" in done.stderr
    assert sorted(p.name for p in shared.iterdir()) == ["a.mkv", "b.mkv", "c.mkv"]  # nothing hidden is left
    for name in ("a.mkv", "b.mkv", "c.mkv"):
        np.testing.assert_array_equal(decoded(shared / name), decoded(single / name))


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def by_hand(args: list[str], cwds: list[Path]) -> list[subprocess.CompletedProcess]:
    """Two ranks started the way torchrun starts them, each in its own working folder."""
    port = str(_free_port())
    processes = []
    for rank, cwd in enumerate(cwds):
        env = {**ENV, "RANK": str(rank), "LOCAL_RANK": str(rank), "WORLD_SIZE": "2", "LOCAL_WORLD_SIZE": "2",
               "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": port}
        processes.append(subprocess.Popen([STAR, *args], cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    return [subprocess.CompletedProcess(p.args, p.wait(timeout=120), *p.communicate()) for p in processes]


def test_a_work_folder_the_ranks_do_not_share_is_one_error_line(clip, weights, tmp_path):
    # Each rank writes "out.mkv" in its own folder: the same path on two machines without a shared disk.
    cwds = [tmp_path / "node0", tmp_path / "node1"]
    for cwd in cwds:
        cwd.mkdir()
    rank0, rank1 = by_hand(star_args(clip, "out.mkv", weights), cwds)
    assert (rank0.returncode, rank1.returncode) == (2, 2), rank0.stderr + rank1.stderr
    lines = rank0.stderr.strip().splitlines()
    assert len(lines) == 1 and "is not shared by every rank (rank 1 cannot see" in lines[0], rank0.stderr
    assert rank1.stderr == ""
    assert [list(cwd.iterdir()) for cwd in cwds] == [[], []]


def test_bad_input_on_one_rank_is_reported_once_and_every_rank_exits_2(clip, weights, tmp_path):
    cwds = [tmp_path / "node0", tmp_path / "node1"]
    for cwd in cwds:
        cwd.mkdir()
    (cwds[0] / "in.mp4").write_bytes(clip.read_bytes())  # only rank 0 can see the input
    rank0, rank1 = by_hand(star_args(Path("in.mp4"), tmp_path / "out.mkv", weights), cwds)
    assert (rank0.returncode, rank1.returncode) == (2, 2)
    assert rank0.stderr.strip().splitlines() == ["error: rank 1: input not found: in.mp4"]
    assert rank1.stderr == ""
    assert sorted(p.name for p in tmp_path.iterdir()) == ["node0", "node1"]


def test_an_output_another_run_is_writing_is_refused_once_by_every_rank(clip, weights, tmp_path):
    out = tmp_path / "out.mkv"
    lock = OutputLock(out)
    lock.acquire()
    try:
        rank0, rank1 = by_hand(star_args(clip, out, weights), [tmp_path, tmp_path])
    finally:
        lock.release()
    assert (rank0.returncode, rank1.returncode) == (2, 2), rank0.stderr + rank1.stderr
    assert rank0.stderr.strip().splitlines() == [f"error: another star run (pid {os.getpid()}) is writing {out}: wait for it to finish or stop it"]
    assert rank1.stderr == ""
    assert not out.exists() and not work_folder(out).exists()
