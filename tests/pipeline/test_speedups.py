"""Exact speed-ups: batched guidance gives the eager, two-pass result; attention kernel checks."""

from __future__ import annotations

import pytest
import torch
from torch.nn.attention import SDPBackend

from star_cli.diffusion.guidance import guided_v
from star_cli.diffusion.tiled import grid_regions
from star_cli.diffusion.window import SamplerSettings, sample_window
from star_cli.models import STARUNet
from star_cli.pipeline.engines.speedups import (
    ATTENTION_ORDER,
    BACKEND_NAMES,
    attention_backend,
    attention_priority,
    attention_warning,
    batch_guidance,
    fused_attention_error,
    pick_attention_backend,
)
from star_cli.pipeline.estimate import GiB, estimate
from star_cli.pipeline.plan import PlanOptions, make_plan
from star_cli.testing.weights import TINY_UNET, randomise_zero_parameters


@pytest.fixture(scope="module")
def unet() -> STARUNet:
    torch.manual_seed(0)
    model = STARUNet(**TINY_UNET).eval()
    randomise_zero_parameters(model)
    return model


@pytest.fixture(scope="module")
def inputs():
    generator = torch.Generator().manual_seed(1)
    hint = torch.randn(1, 4, 3, 10, 8, generator=generator)
    context, negative = torch.randn(2, 1, 77, TINY_UNET["context_dim"], generator=generator)
    return hint, context, negative


def _sample(unet, inputs, batched: bool) -> torch.Tensor:
    hint, context, negative = inputs
    regions = grid_regions([(0, 3)], [(0, 10)], [(0, 8)], (3, 10, 8))
    settings = SamplerSettings(steps=3, mode="normal", batch_guidance=batched)

    def denoise(x, t, y, h):
        with torch.no_grad():
            return unet(x, t, y, hint=h)

    return sample_window(denoise, hint, context, negative, regions, settings, seed=0)


def test_batched_guidance_equals_two_passes_on_the_real_unet(unet, inputs):
    hint, context, negative = inputs
    x_t = torch.randn(hint.shape, generator=torch.Generator().manual_seed(2))
    t = torch.tensor([700])

    def denoise(x, steps, y, h):
        with torch.no_grad():
            return unet(x, steps, y, hint=h)

    one_call = {
        batched: guided_v(denoise, x_t, t, context, negative, hint, scale=7.5, rescale=0.2, batched=batched)
        for batched in (True, False)
    }
    torch.testing.assert_close(one_call[True], one_call[False], rtol=0, atol=1e-5)
    # three solver steps compound the float noise of each call (values up to the first sigma)
    torch.testing.assert_close(_sample(unet, inputs, True), _sample(unet, inputs, False), rtol=1e-4, atol=1e-5)


def test_auto_batches_guidance_only_when_the_estimate_fits_with_its_margin():
    plan = make_plan(72, 240, 426, PlanOptions())
    batched = estimate(plan, batched_guidance=True)
    need = batched.device_bytes - batched.weights_bytes
    fits = dict(plan=plan, dtype_bytes=2)
    assert batch_guidance("auto", usable_bytes=int(need * 1.2), **fits)
    assert not batch_guidance("auto", usable_bytes=int(need * 1.1), **fits)
    assert not batch_guidance("auto", usable_bytes=None, **fits)  # CPU: nothing to fill
    assert batch_guidance("on", usable_bytes=None, **fits)
    assert not batch_guidance("off", usable_bytes=1000 * GiB, **fits)
    single = make_plan(72, 240, 426, PlanOptions(guidance_branches=1))
    assert not batch_guidance("auto", single, usable_bytes=1000 * GiB, dtype_bytes=2)


@pytest.mark.parametrize(
    ("dtype", "usable", "expected"),
    [
        (torch.float16, {"cudnn": True, "flash": True, "efficient": True}, "cudnn"),
        (torch.float16, {"cudnn": False, "flash": True, "efficient": True}, "flash"),
        (torch.bfloat16, {"flash": False, "efficient": True}, "efficient"),
        (torch.float16, {}, "math"),
        (torch.float32, {"cudnn": True, "flash": True, "efficient": True}, "efficient"),  # no fp32 cuDNN/flash kernel
        (torch.float32, {"cudnn": True, "flash": True}, "math"),
    ],
)
def test_attention_backend_follows_the_engine_order(dtype, usable, expected):
    assert pick_attention_backend("cuda", dtype, usable) == expected
    assert pick_attention_backend("cpu", dtype, usable).startswith("cpu")


def test_attention_priority_changes_nothing_off_cuda():
    order = torch._C._get_sdp_priority_order()
    with attention_priority(torch.device("cpu")):
        assert torch._C._get_sdp_priority_order() == order
        assert torch.backends.cuda.flash_sdp_enabled() and torch.backends.cuda.math_sdp_enabled()


def test_attention_order_puts_cudnn_first_and_keeps_a_fallback():
    assert ATTENTION_ORDER[0] == SDPBackend.CUDNN_ATTENTION and ATTENTION_ORDER[-1] == SDPBackend.MATH
    assert len(set(ATTENTION_ORDER)) == len(ATTENTION_ORDER) == len(BACKEND_NAMES)


def test_only_half_precision_cuda_on_the_math_kernel_is_warned_about():
    cuda, cpu = torch.device("cuda"), torch.device("cpu")
    assert "math kernel" in attention_warning("math", cuda, torch.float16)
    assert attention_warning("math", cuda, torch.float32) is None
    assert attention_warning("flash", cuda, torch.bfloat16) is None
    assert attention_warning(attention_backend(cpu, torch.float16, 8, 64), cpu, torch.float16) is None
    assert attention_backend(cpu, torch.float32, 8, 64).startswith("cpu")


def test_the_fused_attention_probe_runs_the_kernels_or_says_why_not():
    cpu = torch.device("cpu")
    shapes = [(1, 2, 40, 64), (16, 2, 4, 64)]  # spatial-like and temporal-like
    assert fused_attention_error(cpu, torch.float32, shapes) is None  # CPU has a fused flash kernel
    reason = fused_attention_error(cpu, torch.float32, shapes, backends=[SDPBackend.EFFICIENT_ATTENTION])
    assert reason is not None and reason.startswith("1x2x40x64: ")
