"""benchmarks/memory_traffic.py counts the memory-bound traffic of a forward and bounds its MFU."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import memory_traffic  # noqa: E402

from star_cli.models.config import STARConfig  # noqa: E402
from star_cli.testing.weights import TINY_UNET  # noqa: E402


def test_traffic_counts_the_memory_bound_ops_and_leaves_out_matrix_products_and_attention():
    traffic = memory_traffic.forward_traffic(STARConfig(**TINY_UNET), 2, 3, 10, 8, None)
    assert {"native_group_norm", "native_layer_norm", "silu", "gelu", "add", "amax"} <= set(traffic)
    assert not set(traffic) & (memory_traffic.COMPUTE_OPS | {"_safe_softmax", "_scaled_dot_product_flash_attention_for_cpu"})
    doubled = memory_traffic.forward_traffic(STARConfig(**TINY_UNET), 2, 6, 10, 8, None)
    assert 1.8 < sum(doubled.values()) / sum(traffic.values()) < 2.2  # twice the frames, about twice the bytes


def test_tiny_run_reports_a_ceiling(capsys):
    result = memory_traffic.main(["--tiny"])
    assert result["traffic_gb"] > 0 and result["floor_ms"] > 0 and 0 < result["mfu_ceiling"]
    assert "MFU ceiling" in capsys.readouterr().out
