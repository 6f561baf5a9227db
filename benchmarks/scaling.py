"""How `star upscale` scales over ranks: windows per second with 1 and with N processes, tiny model, CPU.

Every run is a whole `python -m torch.distributed.run --standalone --nproc-per-node P -m
star_cli upscale ...` (the same launcher for P = 1 and P = N, one thread per process,
so N processes may use N cores and the ideal ratio is N). Start-up (imports, loading
the weights, each rank's first window) is left out: this script watches the work
folder and times the windows as they are stored, from the P-th to the last, so the
rate is the steady state: (windows - P) / (last stored - P-th stored). The printed
efficiency is ratio / N. On a machine shared with other work the ratio is what the
free cores allow, not what the code allows: the load average is printed with it.

    python benchmarks/scaling.py [--processes 2] [--frames 64] [--steps 4]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from star_cli.pipeline.plan import PlanOptions, make_plan
from star_cli.pipeline.resume import work_folder
from star_cli.testing import make_tiny_weights
from star_cli.testing.media import make_video

WIDTH, HEIGHT = 32, 24
PLAN = dict(scale=2, chunk_len=4, chunk_overlap=1, window_chunks=1)


def windows(frames: int) -> int:
    return len(make_plan(frames, HEIGHT, WIDTH, PlanOptions(**PLAN)).windows)


def stored_times(processes: int, source: Path, dest: Path, weights: Path, steps: int) -> list[float]:
    """When each window landed in the work folder (seconds, sorted) during one launched run, which must succeed."""
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(processes),
               "-m", "star_cli", "upscale", str(source), "-o", str(dest), "--weights-dir", str(weights),
               "--scale", str(PLAN["scale"]), "--chunk-len", str(PLAN["chunk_len"]),
               "--chunk-overlap", str(PLAN["chunk_overlap"]), "--window-chunks", "1",
               "--steps", str(steps), "--guidance", "1", "--codec", "ffv1", "--quiet", "--overwrite"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    seen: dict[str, float] = {}
    with tempfile.TemporaryFile() as stderr:
        process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=stderr)
        while process.poll() is None:
            now = time.perf_counter()
            for path in work_folder(dest).glob("window_*.mkv"):
                seen.setdefault(path.name, now)
            time.sleep(0.01)
        if process.returncode:
            stderr.seek(0)
            raise SystemExit(f"run failed ({process.returncode}): {stderr.read().decode(errors='replace')[-2000:]}")
    return sorted(seen.values())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--frames", type=int, default=64, help="frames of the clip (3 per window, plus 1)")
    parser.add_argument("--steps", type=int, default=4)
    args = parser.parse_args()
    total = windows(args.frames)
    rates = {}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        weights = make_tiny_weights(root / "weights")
        clip = make_video(root / "clip.mp4", frames=args.frames, width=WIDTH, height=HEIGHT, audio=False)
        for processes in (1, args.processes):
            times = stored_times(processes, clip, root / "out.mkv", weights, args.steps)
            # The last window may be joined and its folder removed between two looks: count what was seen.
            if len(times) < processes + 2:
                raise SystemExit(f"saw {len(times)} of {total} windows stored: use a longer clip or more steps")
            counted, span = len(times) - processes, times[-1] - times[processes - 1]
            rates[processes] = counted / span
            print(f"{processes} process(es): {counted} windows in {span:.1f} s after the first "
                  f"{processes} (of {total}): {rates[processes]:.2f} windows/s")
    ratio = rates[args.processes] / rates[1]
    print(f"ratio {args.processes} / 1 processes: {ratio:.2f}x (ideal {args.processes}x), "
          f"parallel efficiency {ratio / args.processes:.0%}; CPUs here: {os.cpu_count()}, "
          f"load average {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
