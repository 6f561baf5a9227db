"""When and how the UNet is compiled: regional `torch.compile`, `--compile` auto, and the eager fallback.

Compiling each ResBlock and transformer on its own ("regional" compilation) keeps the
compile short: blocks of one class share their code, and shapes stay static per region
(chunk x tile) of a plan. It is the same arithmetic (equal to eager within 1e-5, tested),
so it never enters a run's --resume identity.

Compiling costs a fixed time per region shape before the first step and saves a share
of every forward after, so it pays only on long runs. Measured on an H200
(benchmarks/gpu_kernels.py, README "Speed"): about 140 s to compile, then 0.21 s saved
per batched-guidance forward of 2 x 16 frames at the toy example's 122x216 latent (572
TFLOP; 2073 -> 1863 ms, 11%). `auto_compile` turns it on for a run whose estimated saving
is at least twice its compile time: on CUDA only (the one place it was measured) and only
where torch can compile (Triton on GPUs). Slower cards save more seconds per FLOP, so
the H200's rate errs on the side of not compiling.

A compile that fails on the user's machine (a Triton or compiler problem surfaces at
the first forward of each shape) must not cost the run: `eager_on_compile_error` returns
the blocks to eager code and runs the forward again.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import torch
from torch import nn

from star_cli.errors import InputError
from star_cli.models.conditioning import ConditionedBlock
from star_cli.pipeline.estimate import estimate
from star_cli.pipeline.plan import Plan

RECOMPILE_LIMIT = 64
"""Compiled variants allowed per block class: widths x region shapes of a plan (torch's default, 8, is too few)."""

COMPILE_SECONDS = 140.0
"""Compiling the UNet's blocks for one region shape (H200 host, inductor, cold cache)."""

SAVED_SECONDS_PER_TFLOP = 0.21 / 572
"""Forward time saved per TFLOP by the compiled blocks (H200: 0.21 s on a 572-TFLOP forward)."""

PAYBACK = 2.0
"""`auto` compiles when the estimated saving is at least this many times the compile time."""

_FAILED: weakref.WeakSet[nn.Module] = weakref.WeakSet()
"""Models whose compilation failed in this process: `auto` does not try them again."""


@dataclass(frozen=True)
class CompileChoice:
    """Whether a run compiles the UNet, and the one line that says why."""

    on: bool
    reason: str

    def __str__(self) -> str:
        return f"compile: {'on' if self.on else 'off'} ({self.reason})"


def compile_unavailable(device: torch.device) -> str | None:
    """Why torch cannot compile for `device` here (None: it can).

    Checked before any weights load, so `--compile` on a machine without Triton fails at
    once instead of at the first forward.
    """
    if device.type == "cuda":
        from torch.utils._triton import has_triton, has_triton_package

        if not has_triton_package():
            return "torch.compile needs Triton on GPUs, and it is not installed (pip install triton)"
        if not has_triton():
            return "Triton does not run on this GPU (it needs compute capability 7.0 or newer)"
    if device.type == "cpu":
        try:
            from torch._inductor.cpp_builder import get_cpp_compiler

            get_cpp_compiler()
        except Exception as error:  # noqa: BLE001 - whatever stops torch finding a compiler
            return f"torch.compile needs a C++ compiler on the CPU ({str(error).splitlines()[0] if str(error) else 'none found'})"
    return None


def refuse_uncompilable(device: torch.device) -> None:
    """An InputError when `--compile` cannot work on `device` here (see `compile_unavailable`)."""
    unavailable = compile_unavailable(device)
    if unavailable is not None:
        raise InputError(f"--compile: {unavailable}; run without it (or with --no-compile)")


def region_shapes(plans: Iterable[Plan]) -> set[tuple[int, int, int]]:
    """The distinct (frames, latent height, latent width) regions the UNet will see: one compile each."""
    return {shape for plan in plans for shape in plan.region_counts}


def auto_compile(plans: Iterable[Plan], device: torch.device, *, share: float = 1.0, offload: str = "none") -> CompileChoice:
    """`--compile` auto: compile when this process's part (`share`) of the plans' sampling repays it twice.

    Not under `--offload sequential`: its forwards wait on weights streamed layer by layer,
    which compiled kernels do not speed up.
    """
    if device.type != "cuda":
        return CompileChoice(False, "auto compiles on CUDA only; --compile forces it")
    if offload == "sequential":
        return CompileChoice(False, "auto: the UNet's weights stream in under --offload sequential; --compile forces it")
    unavailable = compile_unavailable(device)
    if unavailable is not None:
        return CompileChoice(False, f"auto: {unavailable}")
    plans = list(plans)
    shapes = len(region_shapes(plans))
    if not shapes:
        return CompileChoice(False, "auto: nothing to sample")
    saved = share * sum(estimate(plan).flops for plan in plans) / 1e12 * SAVED_SECONDS_PER_TFLOP
    cost = COMPILE_SECONDS * shapes
    compiling = f"{_duration(cost)} of compiling {shapes} region shape{'s' if shapes > 1 else ''}"
    if saved >= PAYBACK * cost:
        return CompileChoice(True, f"auto: saves about {_duration(saved)} of sampling, over {PAYBACK:g}x the {compiling}")
    return CompileChoice(
        False, f"auto: would save about {_duration(saved)} of sampling, under {PAYBACK:g}x the {compiling}; --compile forces it"
    )


def _duration(seconds: float) -> str:
    if seconds < 600:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def compile_choice(
    setting: bool | None, plans: Iterable[Plan], device: torch.device, *, share: float = 1.0, offload: str = "none"
) -> CompileChoice:
    """A run's choice: `--compile` (True) / `--no-compile` (False) as given, else (None) `auto_compile`."""
    if setting is not None:
        return CompileChoice(setting, "--compile" if setting else "--no-compile")
    return auto_compile(plans, device, share=share, offload=offload)


def _raise_recompile_limit(limit: int) -> None:
    import torch._dynamo

    config = torch._dynamo.config
    for name in ("recompile_limit", "cache_size_limit", "accumulated_recompile_limit", "accumulated_cache_size_limit"):
        if hasattr(config, name):
            setattr(config, name, max(getattr(config, name), limit))


def _repeated_blocks(model: nn.Module) -> list[ConditionedBlock]:
    return [module for module in model.modules() if isinstance(module, ConditionedBlock)]


def compile_repeated_blocks(model: nn.Module, backend: str | Callable = "inductor") -> int:
    """Compile each ResBlock and transformer of `model` in place (static shapes); returns how many.

    `backend` is torch.compile's: 'inductor' for speed, 'eager'/'aot_eager' to check the capture.
    """
    _raise_recompile_limit(RECOMPILE_LIMIT)
    blocks = _repeated_blocks(model)
    for block in blocks:
        block.compile(backend=backend, dynamic=False)
    return len(blocks)


def compile_failed(model: nn.Module) -> bool:
    """Whether compiling `model` already failed here (`eager_on_compile_error` fell back)."""
    return model in _FAILED


def is_compiled(model: nn.Module) -> bool:
    """Whether `model`'s blocks run compiled code (`nn.Module.compile` keeps it in `_compiled_call_impl`)."""
    return any(block._compiled_call_impl is not None for block in _repeated_blocks(model))


def uncompile(model: nn.Module) -> None:
    """Return `model`'s blocks to their eager code."""
    for block in _repeated_blocks(model):
        block._compiled_call_impl = None


def eager_on_compile_error(model: nn.Module, forward: Callable[[], torch.Tensor], warn: Callable[[str], None]) -> torch.Tensor:
    """`forward()`; if compiling `model`'s blocks fails in it, `warn`, return them to eager code and run it again.

    Only torch.compile's own errors (dynamo, inductor, Triton as inductor reports them)
    fall back; anything else, out-of-memory included, is the forward's and is raised.
    """
    from torch._dynamo.exc import TorchDynamoException

    try:
        return forward()
    except TorchDynamoException as error:
        if not is_compiled(model):
            raise
        uncompile(model)
        _FAILED.add(model)
        warn(f"compiling the UNet failed ({_root_cause(error)}); running it uncompiled (same result, slower)")
        return forward()


def _root_cause(error: BaseException) -> str:
    """The innermost error's type and first line (dynamo wraps the compiler's own as `inner_exception`)."""
    while (inner := getattr(error, "inner_exception", None) or error.__cause__) is not None:
        error = inner
    lines = [line for line in str(error).splitlines() if line.strip()]
    return f"{type(error).__name__}: {lines[0][:200]}" if lines else type(error).__name__
