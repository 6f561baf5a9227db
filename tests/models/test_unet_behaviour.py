"""STARUNet at run time: input checks, feed-forward chunking, checkpointing, dropout, attention."""

from __future__ import annotations

import pytest
import torch
from accelerate import cpu_offload

from star_cli.models import STARUNet
from star_cli.models.attention import multi_head_attention
from star_cli.models.device_forms import group_norm_by_reductions, temporal_conv_as_matmuls


def small_model() -> STARUNet:
    """Two levels, one ResBlock each, every parameter random (no zero-initialised branches)."""
    torch.manual_seed(0)
    model = STARUNet(dim=32, head_dim=16, num_heads=2, dim_mult=(1, 2), num_res_blocks=1, context_dim=24)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0.0, 0.2 / max(1, p[0].numel()) ** 0.5 if p.ndim > 1 else 0.2)
    return model.eval()


def small_inputs(batch: int = 1, height: int = 6) -> tuple[torch.Tensor, ...]:
    """x, t, y, hint for `small_model`: 3 frames of height x 4 latents, 7 context tokens."""
    g = torch.Generator().manual_seed(1)
    x = torch.randn(batch, 4, 3, height, 4, generator=g)
    hint = torch.randn(batch, 4, 3, height, 4, generator=g)
    y = torch.randn(batch, 7, 24, generator=g)
    t = torch.randint(0, 1000, (batch,), generator=g)
    return x, t, y, hint


@pytest.fixture(scope="module")
def full_meta_model() -> STARUNet:
    with torch.device("meta"):
        return STARUNet()


@pytest.mark.parametrize("height,width", [(18, 16), (90, 160), (122, 216), (10, 8)])
def test_valid_latent_sizes(full_meta_model: STARUNet, height: int, width: int) -> None:
    full_meta_model.check_latent_size(height, width)


@pytest.mark.parametrize("height,width", [(16, 16), (18, 12), (11, 16), (2, 0), (0, 8)])
def test_invalid_latent_sizes(full_meta_model: STARUNet, height: int, width: int) -> None:
    with pytest.raises(ValueError, match="latent size"):
        full_meta_model.check_latent_size(height, width)


def test_full_size_forward_runs_on_the_meta_device(full_meta_model: STARUNet) -> None:
    """Every shape of the 2B-parameter path (three downsamplings, 13 residuals) without memory."""
    with torch.device("meta"):
        x, hint = torch.randn(1, 4, 2, 18, 16), torch.randn(1, 4, 2, 18, 16)
        y, t = torch.randn(1, 77, 1024), torch.tensor([10])
    with torch.no_grad():
        v = full_meta_model.eval()(x, t, y, hint=hint)
    assert v.shape == x.shape


def test_forward_refuses_sizes_that_do_not_round_trip() -> None:
    model = small_model()  # one downsampling: heights and widths must be even
    x, t, y, hint = small_inputs(height=7)
    with pytest.raises(ValueError, match="latent size 7x4"):
        model(x, t, y, hint=hint)


def test_mismatched_inputs_are_refused() -> None:
    model = small_model()
    x, t, y, hint = small_inputs()
    with pytest.raises(ValueError, match="hint"):
        model(x, t, y, hint=hint[:, :, :2])
    with pytest.raises(ValueError, match="y must be"):
        model(x, t, y[..., :5], hint=hint)


def test_feed_forward_chunking_gives_the_same_output() -> None:
    model = small_model()
    inputs = small_inputs(batch=2)
    with torch.no_grad():
        whole = model(*inputs[:3], hint=inputs[3])
        model.set_feed_forward_chunk(5)
        chunked = model(*inputs[:3], hint=inputs[3])
    torch.testing.assert_close(chunked, whole, rtol=0, atol=1e-5)
    with pytest.raises(ValueError):
        model.set_feed_forward_chunk(0)


def test_device_forms_give_the_same_output() -> None:
    model = small_model()
    inputs = small_inputs(batch=2)
    with torch.no_grad():
        plain = model(*inputs[:3], hint=inputs[3])
        model.set_device_forms(True)
        forms = model(*inputs[:3], hint=inputs[3])
    assert plain.abs().max() > 0.1
    torch.testing.assert_close(forms, plain, rtol=0, atol=1e-5)


def test_device_forms_ask_for_the_short_sequence_kernels_around_temporal_attention_only(monkeypatch) -> None:
    from contextlib import contextmanager

    from star_cli.models import transformer
    from star_cli.models.device_forms import SHORT_SEQUENCE_ORDER

    attention_orders: list[list] = []
    depth = [0]
    seen: list[tuple[bool, bool]] = []  # (frame-long sequence, inside the order) per SDPA call
    original_sdpa = torch.nn.functional.scaled_dot_product_attention

    @contextmanager
    def recording_order(order):
        attention_orders.append(list(order))
        depth[0] += 1
        yield
        depth[0] -= 1

    def sdpa(q, k, *args, **kwargs):
        seen.append((q.shape[-2] == k.shape[-2] == 3, depth[0] > 0))  # 3 frames; frames hold 24 tokens
        return original_sdpa(q, k, *args, **kwargs)

    monkeypatch.setattr(transformer, "kernel_order", recording_order)
    monkeypatch.setattr(torch.nn.functional, "scaled_dot_product_attention", sdpa)
    model = small_model()
    inputs = small_inputs()
    with torch.no_grad():
        model(*inputs[:3], hint=inputs[3])
        assert attention_orders == [] and not any(inside for _, inside in seen)
        seen.clear()
        model.set_device_forms(True)
        model(*inputs[:3], hint=inputs[3])
    assert all(temporal == inside for temporal, inside in seen) and any(inside for _, inside in seen)
    assert all(order == list(SHORT_SEQUENCE_ORDER) for order in attention_orders)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_group_norm_by_reductions_matches_torch_on_a_video(dtype) -> None:
    g = torch.Generator().manual_seed(4)
    norm = torch.nn.GroupNorm(4, 8, eps=1e-6)
    with torch.no_grad():
        norm.weight.normal_(generator=g)
        norm.bias.normal_(generator=g)
    # an offset mean (3 x std) and a transposed (non-contiguous) view, as the first temporal stage gets
    video = (torch.randn(2, 5, 8, 3, 4, generator=g) + 3.0).transpose(1, 2)
    expected = torch.nn.functional.group_norm(video.double(), 4, norm.weight.double(), norm.bias.double(), 1e-6)
    with torch.no_grad():
        got = group_norm_by_reductions(norm.to(dtype), video.to(dtype))
    assert got.dtype == dtype and got.shape == video.shape
    tolerance = 1e-5 if dtype == torch.float32 else 1e-2
    torch.testing.assert_close(got.double(), expected, rtol=0, atol=tolerance)
    plain = torch.nn.functional.group_norm(video, 4, norm.weight.float(), norm.bias.float(), 1e-6)
    torch.testing.assert_close(group_norm_by_reductions(norm.float(), video), plain, rtol=0, atol=1e-5)  # with grad


def test_temporal_conv_as_matmuls_matches_the_convolution_at_every_length() -> None:
    g = torch.Generator().manual_seed(3)
    conv = torch.nn.Conv3d(6, 5, (3, 1, 1), padding=(1, 0, 0))
    with torch.no_grad():
        conv.weight.normal_(generator=g)
        conv.bias.normal_(generator=g)
    for frames in (1, 2, 4):
        video = torch.randn(2, 6, frames, 3, 5, generator=g)
        torch.testing.assert_close(temporal_conv_as_matmuls(conv, video), conv(video), rtol=0, atol=1e-5)


def _plain_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, heads: int) -> torch.Tensor:
    q, k, v = (t.double().unflatten(-1, (heads, -1)).transpose(1, 2) for t in (q, k, v))
    weights = torch.softmax(q @ k.transpose(-1, -2) * q.shape[-1] ** -0.5, dim=-1)
    return (weights @ v).transpose(1, 2).flatten(2)


def test_attention_batch_splitting_matches_one_call() -> None:
    g = torch.Generator().manual_seed(2)
    q, k, v = (torch.randn(37, 5, 32, generator=g) for _ in range(3))
    whole = multi_head_attention(q, k, v, heads=4)
    split = multi_head_attention(q, k, v, heads=4, max_batch_heads=16)  # 4 sequences per call
    torch.testing.assert_close(split, whole, rtol=0, atol=1e-6)
    torch.testing.assert_close(whole.double(), _plain_attention(q, k, v, 4), rtol=0, atol=1e-5)


def test_half_precision_attention_softmax_stays_accurate() -> None:
    g = torch.Generator().manual_seed(3)
    # Logits in the hundreds overflow fp16 if exponentiated naively.
    q = torch.randn(4, 16, 64, generator=g) * 12
    k = torch.randn(4, 16, 64, generator=g) * 12
    v = torch.randn(4, 16, 64, generator=g)
    out = multi_head_attention(q.half(), k.half(), v.half(), heads=2)
    assert torch.isfinite(out).all()
    reference = _plain_attention(q.half(), k.half(), v.half(), 2)
    assert (out.double() - reference).abs().max().item() < 1e-2


def gradients(model: STARUNet) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    model.zero_grad()
    x, t, y, hint = small_inputs()
    torch.manual_seed(123)  # same dropout masks in both runs
    v = model(x, t, y, hint=hint)
    v.square().mean().backward()
    return v.detach(), {k: p.grad.clone() for k, p in model.named_parameters() if p.grad is not None}


def count_runs(block: torch.nn.Module) -> list[int]:
    """Record every evaluation of `block`'s body (forward, and any recomputation in backward)."""
    calls: list[int] = []
    body = block.run

    def counted(x: torch.Tensor, cond: object) -> torch.Tensor:
        calls.append(1)
        return body(x, cond)

    block.run = counted
    return calls


def test_gradient_checkpointing_gives_the_same_gradients() -> None:
    model = small_model().train()
    runs = count_runs(model.output_blocks[0][1])  # a spatial transformer
    v_plain, plain = gradients(model)
    assert len(runs) == 1
    model.enable_gradient_checkpointing(True)
    v_ckpt, ckpt = gradients(model)
    assert len(runs) == 3  # evaluated again during backward: activations were not kept

    torch.testing.assert_close(v_ckpt, v_plain, rtol=0, atol=1e-6)
    assert plain.keys() == ckpt.keys()
    assert len(plain) == sum(1 for _ in model.parameters())
    for name in plain:
        torch.testing.assert_close(ckpt[name], plain[name], rtol=1e-5, atol=1e-7, msg=name)


def test_dropout_acts_only_in_training() -> None:
    model = small_model()
    x, t, y, hint = small_inputs()
    with torch.no_grad():
        model.eval()
        assert torch.equal(model(x, t, y, hint=hint), model(x, t, y, hint=hint))
        model.train()
        assert not torch.equal(model(x, t, y, hint=hint), model(x, t, y, hint=hint))


def test_runs_under_accelerate_offload_hooks() -> None:
    """Weights stay on the meta device until each module runs; the result must not change."""
    model = small_model()
    x, t, y, hint = small_inputs()
    with torch.no_grad():
        expected = model(x, t, y, hint=hint)
        cpu_offload(model, execution_device=torch.device("cpu"))
        assert all(p.is_meta for p in model.parameters())
        torch.testing.assert_close(model(x, t, y, hint=hint), expected, rtol=0, atol=0)
