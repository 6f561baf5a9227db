"""benchmarks/gpu_kernels.py runs every step in its CPU smoke mode, so the one GPU call a session gets cannot fail on a typo."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_tiny_cpu_run_times_every_variant_and_writes_the_json(tmp_path):
    args = ["--tiny", "--device", "cpu", "--repeats", "1", "--out", str(tmp_path)]
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "gpu_kernels.py"), *args],
        capture_output=True, text=True, cwd=ROOT, timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    result = json.loads((tmp_path / "gpu_kernels.json").read_text())
    variants = result["forward"]["variants"]
    assert [row["variant"] for row in variants][0] == "torch defaults" and len(variants) == 4
    assert all("error" not in row for row in variants), variants
    assert all(row["max_diff"] < 1e-4 for row in variants)  # every variant computes the same forward ...
    assert variants[0]["output_abs_max"] > 1e-3  # ... and that forward is not zero (no zero-initialised branch)
    assert result["forward"]["tflop"] > 0 and result["ceilings"]["gemm_tflops"] > 0
    profiles = result["forward"]["profile"]
    assert set(profiles) == {"torch defaults", "+ device forms (engine)"}
    for profiled in profiles.values():
        assert profiled["classes"] and profiled["kernels"]
        assert {row["op"] for row in profiled["ops"]} >= {"aten::native_group_norm", "aten::scaled_dot_product_attention"}
    assert result["video_layers"]["conv max_diff"] < 1e-4 and result["video_layers"]["group_norm max_diff"] < 1e-4
    assert all(move["max_diff"] < 1e-4 and move["direct_ms"] > 0 for move in result["token_moves"].values())
    assert result["vae_decode"]["max_diff"] < 1e-3 and result["vae_decode"]["channels_last_ms"] > 0
    assert isinstance(result["sdpa_spatial"]["FLASH_ATTENTION"], dict) and isinstance(result["sdpa_temporal"]["FLASH_ATTENTION"], dict)
    assert list(tmp_path.glob("profile_*.txt"))
