"""Our CogVideoX DiT (diffusers + LIEM, LoRA merged) against the reference's tiny DiT forward pass."""

from __future__ import annotations

import torch

from star_cli.models.cogvideox import STARCogVideoXTransformer
from star_cli.models.cogvideox.dit import FINAL_NORM_EPS

DIT_BOUND = 1e-5  # fixture README section 6: single DiT evaluations in float32 on CPU


def _max_error(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a.float() - b.float()).abs().max().item()


def _forward_with_intermediates(
    model: STARCogVideoXTransformer, fixture: dict[str, torch.Tensor]
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """v and the fixture's `debug.*` tensors, captured with hooks on diffusers' own submodules."""
    seen: dict[str, torch.Tensor] = {}
    hooks = [
        model.time_embedding.register_forward_hook(lambda m, i, o: seen.__setitem__("debug.time_emb", o)),
        model.patch_embed.register_forward_hook(lambda m, i, o: seen.__setitem__("debug.tokens_embedded", o)),
        model.transformer_blocks[0].norm1.register_forward_hook(
            lambda m, i, o: seen.__setitem__("debug.liem_in.0", o[0])
        ),
        model.transformer_blocks[0].attn1.register_forward_pre_hook(
            lambda m, a, k: seen.__setitem__("debug.liem_out.0", k["hidden_states"]), with_kwargs=True
        ),
    ]
    for index, block in enumerate(model.transformer_blocks):
        hooks.append(
            block.register_forward_hook(
                lambda m, i, o, index=index: seen.__setitem__(f"debug.block_out.{index}", torch.cat([o[1], o[0]], 1))
            )
        )
    try:
        with torch.no_grad():
            v = model(
                fixture["input.x_noisy"],
                fixture["input.lr_latent"],
                fixture["input.timesteps"].float(),
                fixture["input.context"],
            )
    finally:
        for hook in hooks:
            hook.remove()
    return v, seen


def test_forward_matches_the_reference_v(tiny_dit, dit_fixture):
    v, _ = _forward_with_intermediates(tiny_dit, dit_fixture)
    assert v.shape == dit_fixture["output.v"].shape
    assert _max_error(v, dit_fixture["output.v"]) < DIT_BOUND


def test_intermediates_match_the_reference(tiny_dit, dit_fixture):
    _, seen = _forward_with_intermediates(tiny_dit, dit_fixture)
    names = sorted(k for k in dit_fixture if k.startswith("debug."))
    assert sorted(seen) == names
    errors = {name: _max_error(seen[name], dit_fixture[name]) for name in names}
    assert max(errors.values()) < DIT_BOUND, errors


def test_model_is_diffusers_cogvideox_plus_liem(tiny_dit, dit_config):
    names = set(tiny_dit.state_dict())
    extra = {n for n in names if ".spa_local." in n or ".temp_local." in n}
    assert extra == {
        f"transformer_blocks.{i}.{gate}.conv1.weight"
        for i in range(dit_config["num_layers"])
        for gate in ("spa_local", "temp_local")
    }
    assert not list(tiny_dit.buffers())
    assert tiny_dit.norm_out.norm.eps == FINAL_NORM_EPS
    rebuilt = STARCogVideoXTransformer.from_config(tiny_dit.config)
    assert type(rebuilt) is STARCogVideoXTransformer and rebuilt.norm_out.norm.eps == FINAL_NORM_EPS
    assert set(rebuilt.state_dict()) == names


def test_any_grid_and_length(tiny_dit, dit_fixture):
    """The RoPE and LIEM grid follow the input: 3 latent frames of 6x10 (patch grid 3x5), cached per grid."""
    x = torch.randn(1, 3, 16, 6, 10)
    context = dit_fixture["input.context"][:1]
    with torch.no_grad():
        v = tiny_dit(x, torch.randn_like(x), torch.tensor([500.0]), context)
    assert v.shape == x.shape and torch.isfinite(v).all()
    first = tiny_dit.rotary_embedding((3, 3, 5), torch.device("cpu"))
    assert first[0].shape == (3 * 3 * 5, 64)
    assert tiny_dit.rotary_embedding((3, 3, 5), torch.device("cpu"))[0] is first[0]


def test_frames_do_not_mix_through_liem(tiny_dit):
    """LIEM's temporal gate is per token; with the gates alone, changing frame 1 leaves frame 0's gated tokens alone."""
    block = tiny_dit.transformer_blocks[0]
    tokens = torch.randn(1, 2 * 4 * 6, 128)
    changed = tokens.clone()
    changed[:, 24:] += 1.0
    with torch.no_grad():
        a, b = block.liem(tokens, (2, 4, 6)), block.liem(changed, (2, 4, 6))
    assert torch.equal(a[:, :24], b[:, :24])
    assert not torch.equal(a[:, 24:], b[:, 24:])
