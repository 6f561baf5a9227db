"""Exact speed-ups of the STAR engine: batched guidance and fused attention (compilation: `compiling`).

None of these changes the arithmetic beyond float noise; each only decides how the
same operations are scheduled on the device.

- Batched guidance runs the conditional and unconditional passes as one batch of 2:
  one launch of every kernel for both, at twice the UNet's activation memory. `auto`
  batches when the memory estimate of the batched run fits the memory this process can
  use on the device (free + already reserved by torch), with a margin for the
  estimator's error; on a CPU (or an accelerator that does not report its memory) it
  stays off: nothing is waiting to be filled there.
- `attention_priority` wraps the engine's CUDA work in the SDPA kernel order
  `ATTENTION_ORDER`, cuDNN's fused attention first: 1.28x flash's speed on the UNet's
  top-level attention on an H200 (409 vs 318 TFLOP/s, benchmarks/gpu_kernels.py). torch
  2.11 already prefers it there; older releases and other cards may not. The previous
  order is restored on exit, so a program using the Python API keeps its own.
  `attention_backend` says which kernel the UNet's heads get.
  fp16/bf16 on CUDA must run a fused kernel (cuDNN, flash or memory-efficient); the math
  fallback materialises every score matrix and is many times slower.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

from star_cli.models.attention import SDPA_PRIORITY, kernel_order
from star_cli.pipeline.estimate import Offload, estimate
from star_cli.pipeline.plan import Plan

ESTIMATE_MARGIN = 1.15
"""Batch guidance only when 1.15 x the estimated peak fits: the estimator's target is +-15%."""

ATTENTION_ORDER = (
    SDPBackend.CUDNN_ATTENTION,
    SDPBackend.FLASH_ATTENTION,
    SDPBackend.EFFICIENT_ATTENTION,
    SDPBackend.MATH,
)
"""SDPA kernels in the order the engine asks torch for them; each is skipped where it cannot run."""

BACKEND_NAMES = {
    SDPBackend.CUDNN_ATTENTION: "cudnn",
    SDPBackend.FLASH_ATTENTION: "flash",
    SDPBackend.EFFICIENT_ATTENTION: "efficient",
    SDPBackend.MATH: "math",
}
HALF_ONLY_BACKENDS = ("cudnn", "flash")
FUSED_HALF_BACKENDS = ("cudnn", "flash", "efficient")


@contextmanager
def attention_priority(device: torch.device) -> Iterator[None]:
    """`ATTENTION_ORDER` for the SDPA calls inside the block on CUDA; elsewhere (or on an older torch) nothing changes."""
    if device.type != "cuda":
        yield
        return
    with kernel_order(ATTENTION_ORDER):
        yield


def usable_device_bytes(device: torch.device) -> int | None:
    """Bytes this process can still use on `device`: free memory plus torch's cached, unused blocks."""
    if device.type != "cuda":
        return None
    free, _ = torch.cuda.mem_get_info(device)
    return free + torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)


def batch_guidance(
    mode: str,
    plan: Plan,
    *,
    usable_bytes: int | None,
    dtype_bytes: int,
    offload: Offload = "none",
    vae_group: int = 3,
    model_params: int | None = None,
) -> bool:
    """Whether to run both guidance passes as one batch (`mode`: auto, on or off).

    `usable_bytes` (see `usable_device_bytes`) is measured with the weights already
    resident, so the estimate's weights are left out of what must fit.
    """
    if mode != "auto":
        return mode == "on"
    if plan.options.guidance_branches == 1 or usable_bytes is None:
        return False
    sizes = {} if model_params is None else {"model_params": model_params}
    batched = estimate(
        plan, dtype_bytes=dtype_bytes, offload=offload, vae_group=vae_group, batched_guidance=True, **sizes
    )
    need = batched.device_bytes - batched.weights_bytes
    return need * ESTIMATE_MARGIN <= usable_bytes


def pick_attention_backend(device_type: str, dtype: torch.dtype, usable: Mapping[str, bool]) -> str:
    """The SDPA kernel torch will run: the first of `ATTENTION_ORDER` that `usable` allows for `dtype`."""
    if device_type != "cuda":
        return f"{device_type} (torch's own SDPA kernels)"
    half = dtype in (torch.float16, torch.bfloat16)
    for backend in ATTENTION_ORDER:
        name = BACKEND_NAMES[backend]
        if usable.get(name) and (half or name not in HALF_ONLY_BACKENDS):
            return name
    return "math"


def attention_backend(device: torch.device, dtype: torch.dtype, heads: int, head_dim: int) -> str:
    """Which SDPA kernel the UNet's attention (`heads` x `head_dim`, no mask, no dropout) gets on `device`."""
    if device.type != "cuda":
        return pick_attention_backend(device.type, dtype, {})
    probe = torch.zeros(1, heads, 8, head_dim, device=device, dtype=dtype)
    params = _sdpa_params(probe)
    cuda = torch.backends.cuda
    return pick_attention_backend(
        "cuda",
        dtype,
        {
            "cudnn": SDPA_PRIORITY and cuda.cudnn_sdp_enabled() and cuda.can_use_cudnn_attention(params),
            "flash": cuda.flash_sdp_enabled() and cuda.can_use_flash_attention(params),
            "efficient": cuda.mem_efficient_sdp_enabled() and cuda.can_use_efficient_attention(params),
        },
    )


def fused_attention_error(
    device: torch.device,
    dtype: torch.dtype,
    shapes: Sequence[tuple[int, int, int, int]],
    backends: Sequence[SDPBackend] = (SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION),
) -> str | None:
    """Run SDPA on (batch, heads, tokens, head_dim) `shapes` with only `backends` allowed.

    None when every shape ran (torch refuses rather than falling back to the math kernel),
    else torch's reason: the empirical check behind `attention_backend`.
    """
    for shape in shapes:
        q = torch.zeros(shape, device=device, dtype=dtype)
        try:
            with sdpa_kernel(list(backends)):
                F.scaled_dot_product_attention(q, q, q)
        except RuntimeError as error:
            return f"{'x'.join(map(str, shape))}: {str(error).splitlines()[0]}"
    return None


def _sdpa_params(q: torch.Tensor) -> object:
    """torch.backends.cuda.SDPAParams for self-attention on `q` (its signature grew `enable_gqa` in torch 2.5)."""
    try:
        return torch.backends.cuda.SDPAParams(q, q, q, None, 0.0, False, False)
    except TypeError:
        return torch.backends.cuda.SDPAParams(q, q, q, None, 0.0, False)


def attention_warning(backend: str, device: torch.device, dtype: torch.dtype) -> str | None:
    """A one-line warning when half-precision CUDA attention would fall back to the math kernel."""
    if device.type == "cuda" and dtype in (torch.float16, torch.bfloat16) and backend not in FUSED_HALF_BACKENDS:
        return (
            f"attention runs PyTorch's math kernel in {str(dtype).removeprefix('torch.')} on this GPU "
            "(no cuDNN, flash or memory-efficient kernel applies): expect slow sampling and high memory"
        )
    return None
