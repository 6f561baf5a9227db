"""benchmarks/gpu_bench.py runs end to end in its smoke mode, without any video I/O package."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BLOCKED = ("av", "ftfy", "imageio", "imageio_ffmpeg")
# The GPU machine lacks these: any import of them on the benchmark's path must fail the run here.
RUNNER = f"""
import runpy, sys
for name in {BLOCKED!r}:
    sys.modules[name] = None
sys.argv = ["gpu_bench.py", *sys.argv[1:]]
runpy.run_path({str(ROOT / "benchmarks" / "gpu_bench.py")!r}, run_name="__main__")
leaked = sorted(n for n in sys.modules if n.split(".")[0] in {BLOCKED!r} and sys.modules[n] is not None)
assert not leaked, leaked
"""


def test_tiny_cpu_run_writes_the_json_and_table_without_video_packages(tmp_path):
    args = ["--tiny", "--device", "cpu", "--cases", "toy", "--steps", "2", "--vae-frames", "2", "--out", str(tmp_path)]
    done = subprocess.run(
        [sys.executable, "-c", RUNNER, *args], capture_output=True, text=True, cwd=ROOT, timeout=300
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "EXTRAPOLATED" in done.stdout and "attention kernel" in done.stdout
    result = json.loads((tmp_path / "gpu_bench.json").read_text())
    (run,) = result["runs"]
    assert (run["case"], run["policy"], run["tiles"]) == ("toy", "ours", 1)
    assert run["sample"]["calls_full"] == result["calls_full"] == 14
    assert run["sample"]["tflop_per_unit"] > 0 and run["encode"]["tflop_per_unit"] > 0
    assert run["sample"]["full_s"] >= 13 * run["sample"]["per_unit_s"]
    assert run["peak"]["estimate_gib"] > 0 and run["host"]["peak_rss"] > 0


def test_speedups_compare_the_reference_policy_with_ours():
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from _bench_report import speedups
    from _card import card_peak

    def run(policy: str, total: float, sampling: float) -> dict:
        return {"case": "toy", "policy": policy, "total_full_s": total, "sample": {"full_s": sampling}}

    ratios = speedups([run("reference", 300.0, 200.0), run("ours", 100.0, 80.0), {"case": "1080p", "policy": "ours", "error": "OOM"}])
    assert ratios == {"toy": {"total": 3.0, "sampling": 2.5}}
    assert card_peak("NVIDIA H100 80GB HBM3", None) == 989.4
    assert card_peak("NVIDIA H100 PCIe", None) == 756.0
    assert card_peak("NVIDIA GeForce RTX 4090", None) == 165.2
    assert card_peak("Some Future GPU", None) is None
    assert card_peak("Some Future GPU", 123.0) == 123.0
