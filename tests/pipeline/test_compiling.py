"""Compiling the UNet: regional graphs equal to eager, `--compile` auto's rule, and the eager fallback."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from star_cli import STARPipeline
from star_cli.errors import InputError
from star_cli.families.i2vgenxl import engine as engine_module
from star_cli.models import STARUNet
from star_cli.models.blocks import ResBlock
from star_cli.models.conditioning import Conditioning
from star_cli.models.transformer import TemporalTransformer
from star_cli.pipeline.engines import compiling
from star_cli.pipeline.engines.compiling import (
    CompileChoice,
    auto_compile,
    compile_choice,
    compile_failed,
    compile_repeated_blocks,
    compile_unavailable,
    eager_on_compile_error,
    is_compiled,
    region_shapes,
    uncompile,
)
from star_cli.pipeline.events import Notice
from star_cli.pipeline.plan import PlanOptions, make_plan
from star_cli.testing import make_tiny_weights
from star_cli.testing.weights import TINY_UNET, randomise_zero_parameters

CUDA = torch.device("cuda")  # a device name only: nothing runs on it here
TOY = make_plan(72, 240, 426, PlanOptions())  # the reference's toy example at x4: 3 s of video


def _counting_backend(graphs: list[int]):
    def backend(graph_module, example_inputs):
        graphs.append(len(graph_module.graph.nodes))
        return graph_module.forward

    return backend


def _failing_backend(graph_module, example_inputs):
    raise RuntimeError("no kernel for this card")


def test_compile_wraps_every_repeated_block_once_per_shape_and_matches_eager():
    torch.manual_seed(0)
    blocks = nn.ModuleList([ResBlock(32, 128), nn.Identity(), ResBlock(32, 128)]).eval()
    cond = Conditioning(torch.randn(1, 128), torch.randn(1, 77, 8), frames=2)
    x = torch.randn(2, 32, 6, 8)

    def run() -> torch.Tensor:
        with torch.no_grad():
            return blocks[2](blocks[0](x, cond), cond)

    eager = run()
    graphs: list[int] = []
    assert compile_repeated_blocks(blocks, backend=_counting_backend(graphs)) == 2
    assert is_compiled(blocks) and all(block._compiled_call_impl is not None for block in (blocks[0], blocks[2]))
    torch.testing.assert_close(run(), eager, rtol=0, atol=1e-5)
    assert len(graphs) == 1  # the second block of the same class and shapes reuses the first one's graph
    uncompile(blocks)
    assert not is_compiled(blocks)


def test_compiled_temporal_transformer_traces_its_attention_kernel_order_in_one_graph():
    """Device forms ask for an SDPA order inside the temporal transformer: `--compile` must
    capture it (one graph, no break) and compute the same."""
    torch.manual_seed(0)
    blocks = nn.ModuleList([TemporalTransformer(32, 2, 16)]).eval()
    for parameter in blocks.parameters():
        nn.init.normal_(parameter, 0.0, 0.2)
    blocks[0].device_forms = True
    cond = Conditioning(torch.randn(1, 128), torch.randn(1, 77, 8), frames=3)
    x = torch.randn(3, 32, 4, 4)
    with torch.no_grad():
        eager = blocks[0](x, cond)
    graphs: list[int] = []
    compile_repeated_blocks(blocks, backend=_counting_backend(graphs))
    with torch.no_grad():
        compiled = blocks[0](x, cond)
    assert len(graphs) == 1
    torch.testing.assert_close(compiled, eager, rtol=0, atol=1e-6)


@pytest.mark.skipif(
    not os.environ.get("STAR_TEST_INDUCTOR"),
    reason="inductor compiles the tiny UNet in about 160 s on a shared 2-core CPU; set STAR_TEST_INDUCTOR=1",
)
def test_inductor_compiled_unet_matches_eager_within_1e_5():
    torch.manual_seed(0)
    unet = STARUNet(**TINY_UNET).eval()
    randomise_zero_parameters(unet)
    generator = torch.Generator().manual_seed(1)
    hint = torch.randn(1, 4, 3, 10, 8, generator=generator)
    context = torch.randn(1, 77, TINY_UNET["context_dim"], generator=generator)
    t = torch.tensor([500])
    with torch.no_grad():
        eager = unet(hint, t, context, hint)
    compile_repeated_blocks(unet)
    with torch.no_grad():
        compiled = unet(hint, t, context, hint)
    torch.testing.assert_close(compiled, eager, rtol=0, atol=1e-5)


def test_auto_compiles_long_runs_on_cuda_only(monkeypatch):
    monkeypatch.setattr(compiling, "compile_unavailable", lambda device: None)
    film = make_plan(7200, 240, 426, PlanOptions())  # 5 minutes at 24 fps
    off = auto_compile([TOY], CUDA)
    assert not off.on and "under 2x the 140 s of compiling 1 region shape" in off.reason and "--compile forces it" in off.reason
    assert "over 2x the 140 s" in auto_compile([make_plan(7200, 240, 426, PlanOptions())], CUDA).reason
    assert not auto_compile([], CUDA).on
    assert auto_compile([film], CUDA).on
    assert auto_compile([TOY] * 100, CUDA).on  # a folder of short clips together repays what one does not
    assert not auto_compile([film], CUDA, share=1 / 64).on  # one of 64 ranks samples too little of it
    streamed = auto_compile([film], CUDA, offload="sequential")
    assert not streamed.on and "--offload sequential" in streamed.reason
    cpu = auto_compile([film], torch.device("cpu"))
    assert not cpu.on and "CUDA only" in cpu.reason


def test_auto_weighs_one_compile_per_region_shape(monkeypatch):
    """The planner gives a video's chunks and tiles one shape; a folder of several sizes has several."""
    monkeypatch.setattr(compiling, "compile_unavailable", lambda device: None)
    tiled = make_plan(72, 540, 960, PlanOptions(scale=2, tile_size=(592, 1024)))
    assert len(tiled.tiles) > 1 and len(region_shapes([tiled])) == 1
    assert region_shapes([TOY, TOY]) == region_shapes([TOY]) == {(30, 122, 216)}
    clips = [TOY, tiled] * 60
    assert region_shapes(clips) == region_shapes([TOY]) | region_shapes([tiled])
    assert "compiling 2 region shapes" in auto_compile(clips, CUDA).reason


def test_auto_stays_off_where_torch_cannot_compile(monkeypatch):
    monkeypatch.setattr(compiling, "compile_unavailable", lambda device: "Triton is missing")
    choice = auto_compile([make_plan(7200, 240, 426, PlanOptions())], CUDA)
    assert not choice.on and "Triton is missing" in choice.reason
    assert str(compile_choice(True, [TOY], CUDA)) == "compile: on (--compile)"
    assert str(compile_choice(False, [TOY], CUDA)) == "compile: off (--no-compile)"


def test_compile_unavailable_names_what_is_missing():
    if compile_unavailable(torch.device("cpu")) is not None:
        pytest.skip("no C++ compiler on this machine")
    from torch.utils._triton import has_triton

    reason = compile_unavailable(CUDA)
    assert (reason is None) == has_triton()
    assert reason is None or "Triton" in reason


def test_a_failing_compile_warns_and_runs_eagerly():
    torch.manual_seed(0)
    blocks = nn.ModuleList([ResBlock(32, 128)]).eval()
    cond = Conditioning(torch.randn(1, 128), torch.randn(1, 77, 8), frames=2)
    x = torch.randn(2, 32, 6, 8)
    with torch.no_grad():
        eager = blocks[0](x, cond)
    compile_repeated_blocks(blocks, backend=_failing_backend)
    warnings: list[str] = []
    with torch.no_grad():
        out = eager_on_compile_error(blocks, lambda: blocks[0](x, cond), warnings.append)
    torch.testing.assert_close(out, eager, rtol=0, atol=0)
    assert len(warnings) == 1 and "compiling the UNet failed" in warnings[0] and "no kernel for this card" in warnings[0]
    assert not is_compiled(blocks) and compile_failed(blocks)


def test_errors_of_the_forward_itself_are_not_swallowed():
    blocks = nn.ModuleList([ResBlock(32, 128)]).eval()
    compile_repeated_blocks(blocks, backend=_failing_backend)

    def forward() -> torch.Tensor:
        raise torch.OutOfMemoryError("CUDA out of memory")

    with pytest.raises(torch.OutOfMemoryError):
        eager_on_compile_error(blocks, forward, lambda text: None)
    assert is_compiled(blocks)


@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> Path:
    return make_tiny_weights(tmp_path_factory.mktemp("weights"))


def test_the_engine_compiles_when_auto_says_so_and_falls_back_once(weights, monkeypatch):
    """The whole path: `expect` compiles, the first forward's compile fails, the call ends with
    the uncompiled frames and one warning, and auto does not try again."""
    frames = np.random.default_rng(0).integers(0, 256, (4, 16, 16, 3), dtype=np.uint8)
    settings = dict(scale=2, steps=2, guidance=1.0)
    pipe = STARPipeline.from_pretrained(weights, device="cpu")
    eager = pipe(frames, **settings)
    attempts: list[int] = []

    def failing_compile(model: nn.Module) -> int:
        attempts.append(1)
        return compile_repeated_blocks(model, backend=_failing_backend)

    monkeypatch.setattr(engine_module, "auto_compile", lambda plans, device, **_: CompileChoice(True, "auto: test"))
    monkeypatch.setattr(engine_module, "compile_repeated_blocks", failing_compile)
    events: list[object] = []
    out = pipe(frames, **settings, progress=events.append)
    np.testing.assert_array_equal(out, eager)
    warnings = [e.text for e in events if isinstance(e, Notice) and e.level == "warning"]
    assert len(warnings) == 1 and "running it uncompiled" in warnings[0]
    np.testing.assert_array_equal(pipe(frames, **settings), eager)
    assert len(attempts) == 1 and not is_compiled(pipe.engine.unet)


def test_the_stream_api_gets_the_fallback_warning_too(weights, monkeypatch):
    monkeypatch.setattr(compiling, "compile_unavailable", lambda device: None)
    monkeypatch.setattr(engine_module, "compile_repeated_blocks", lambda model: compile_repeated_blocks(model, backend=_failing_backend))
    pipe = STARPipeline.from_pretrained(weights, device="cpu", compile=True)
    frames = np.random.default_rng(0).integers(0, 256, (4, 16, 16, 3), dtype=np.uint8)
    events: list[object] = []
    out = list(pipe.stream(iter(frames), scale=2, steps=2, guidance=1.0, progress=events.append))
    assert len(out) == 4
    assert [e.text for e in events if isinstance(e, Notice) and e.level == "warning" and "compiling the UNet failed" in e.text]


def test_an_explicit_compile_that_cannot_run_is_refused_before_loading(weights, monkeypatch):
    monkeypatch.setattr(compiling, "compile_unavailable", lambda device: "no C++ compiler")
    loads: list[object] = []
    monkeypatch.setattr(engine_module, "load_star_unet", lambda *a, **k: loads.append(a))
    with pytest.raises(InputError, match=r"^--compile: no C\+\+ compiler"):
        STARPipeline.from_pretrained(weights, device="cpu", compile=True)
    assert not loads
