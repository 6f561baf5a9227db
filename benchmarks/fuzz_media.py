"""A large fuzz run of damaged clips through `star upscale` (not in CI: minutes).

The same contract as tests/cli/test_cli_fuzz.py (star_cli.testing.fuzz.check_run): exit 0
with a decodable output or exit 2 with one `error:` line, never a traceback, nothing left
behind. Several containers and stream mixes, each damaged in `--cases` places (flipped
bytes, zeroed blocks, truncations); every fourth case with --ignore-errors. The first
`--isolated` cases of each clip run in a child process of their own, so a crash of the
process (an abort in a C library, a crash at exit) counts too. Prints the count of cases
tried and of those that behaved, and every misbehaving case.

    python benchmarks/fuzz_media.py [--cases 300] [--isolated 20] [--seed 0] [--timeout 120]
"""

from __future__ import annotations

import argparse
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from star_cli.testing.fuzz import Mutation, check_run, mutations
from star_cli.testing.media import faststart_copy, make_video


def make_clips(folder: Path) -> dict[str, Path]:
    mp4 = make_video(folder / "plain.mp4", frames=16, width=48, height=32)
    return {
        "mp4 + aac": mp4,
        "faststart mp4": faststart_copy(mp4, folder / "fast.mp4"),
        "mkv + opus + srt": make_video(folder / "subs.mkv", frames=16, width=48, height=32, subtitles=True),
        "mov vfr": make_video(folder / "vfr.mov", frames=16, width=48, height=32, vfr=True),
        "webm vp9": make_video(folder / "vp9.webm", frames=16, width=48, height=32, codec="libvpx-vp9"),
        # 64 wide: libx265 with make_video's settings aborts the process (heap corruption) on 48-wide frames
        "mkv hevc 10-bit": make_video(
            folder / "hevc.mkv", frames=16, width=64, height=32, codec="libx265", pix_fmt="yuv420p10le", audio=False
        ),
    }


def check_isolated(source: Path, mutation: Mutation, folder: Path, extra: tuple[str, ...], timeout: int) -> str | None:
    """`check_run` in a child process: its verdict, or how the process died."""
    code = (
        "import sys; from pathlib import Path; from star_cli.testing.fuzz import Mutation, check_run;"
        "print(check_run(Path(sys.argv[1]), Mutation(sys.argv[2], int(sys.argv[3]), int(sys.argv[4])), Path(sys.argv[5]), *sys.argv[6:]))"
    )
    args = [sys.executable, "-c", code, str(source), mutation.kind, str(mutation.offset), str(mutation.count), str(folder), *extra]
    try:
        done = subprocess.run(args, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return f"no answer within {timeout} s"
    verdict = done.stdout.strip().splitlines()[-1] if done.stdout.strip() else ""
    if done.returncode != 0:
        return f"the process died (exit {done.returncode}): {done.stderr.strip()[-200:]!r}"
    return None if verdict == "None" else verdict


class _Hung(Exception):
    pass


def _alarm(_signum: int, _frame: object) -> None:
    raise _Hung


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=300, help="damaged copies per clip")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--isolated", type=int, default=20, help="cases per clip run in a child process of their own")
    parser.add_argument("--timeout", type=int, default=120, help="seconds before a case counts as hung")
    args = parser.parse_args()
    signal.signal(signal.SIGALRM, _alarm)
    tried = behaved = 0
    started = time.monotonic()
    with tempfile.TemporaryDirectory() as tmp:
        clips = make_clips(Path(tmp))
        for number, (name, source) in enumerate(clips.items()):
            for index, mutation in enumerate(mutations(source.stat().st_size, args.cases, seed=args.seed * 100 + number)):
                extra = ("--ignore-errors",) if index % 4 == 3 else ()
                if index < args.isolated:
                    problem = check_isolated(source, mutation, Path(tmp) / "case", extra, args.timeout)
                else:
                    signal.alarm(args.timeout)
                    try:
                        problem = check_run(source, mutation, Path(tmp) / "case", *extra)
                    except _Hung:
                        problem = f"no answer within {args.timeout} s"
                    finally:
                        signal.alarm(0)
                tried += 1
                if problem is None:
                    behaved += 1
                else:
                    print(f"MISBEHAVED {name} {mutation} {' '.join(extra)}: {problem}", flush=True)
            print(f"{name}: {tried} tried so far, {behaved} behaved", flush=True)
    print(f"fuzz: {tried} cases tried, {behaved} behaved, {tried - behaved} misbehaved ({time.monotonic() - started:.0f} s)")


if __name__ == "__main__":
    main()
