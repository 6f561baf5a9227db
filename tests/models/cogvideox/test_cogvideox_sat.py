"""The reference (SAT) checkpoint names -> our denoiser: prefixes, LoRA forms, missing keys, laziness."""

from __future__ import annotations

from collections.abc import Iterator, Mapping

import pytest
import torch

from star_cli.errors import StarError
from star_cli.models.cogvideox import convert_sat_state_dict, from_sat_state_dict
from star_cli.models.cogvideox.sat import SAT_PREFIX, SATCheckpointError, sat_layer_count, star_to_sat


def _strip(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k[len(SAT_PREFIX) :]: v for k, v in state_dict.items()}


def _assert_same_weights(a: Mapping[str, torch.Tensor], b: Mapping[str, torch.Tensor], atol: float = 0.0) -> None:
    assert a.keys() == b.keys()
    for name in a:
        assert torch.allclose(a[name], b[name], rtol=0, atol=atol), name


def test_prefix_is_optional_and_other_parts_are_ignored(sat_state_dict):
    prefixed = dict(convert_sat_state_dict(sat_state_dict))
    engine = {
        **_strip(sat_state_dict),
        "conditioner.embedders.0.transformer.shared.weight": torch.zeros(3),
        "first_stage_model.encoder.conv_in.conv.weight": torch.zeros(3),
    }
    _assert_same_weights(prefixed, dict(convert_sat_state_dict(engine)))
    assert not any("freqs" in n or "position_embeddings" in n for n in prefixed)


def test_lora_is_merged_as_sat_does(sat_state_dict):
    sat = _strip(sat_state_dict)
    ours = dict(convert_sat_state_dict(sat))
    stem = "transformer.layers.1.attention.query_key_value"
    scaling = 1.0 / sat[f"{stem}.matrix_A.0"].shape[0]
    delta = torch.cat([sat[f"{stem}.matrix_B.{j}"] @ sat[f"{stem}.matrix_A.{j}"] * scaling for j in range(3)])
    merged = sat[f"{stem}.original.weight"] + delta
    q, k, v = merged.chunk(3)
    assert torch.allclose(ours["transformer_blocks.1.attn1.to_k.weight"], k, atol=1e-7)
    dense = "transformer.layers.0.attention.dense"
    expected = sat[f"{dense}.original.weight"] + sat[f"{dense}.matrix_B.0"] @ sat[f"{dense}.matrix_A.0"] * scaling
    assert torch.allclose(ours["transformer_blocks.0.attn1.to_out.0.weight"], expected, atol=1e-7)


def test_merged_checkpoints_convert_to_the_same_weights(sat_state_dict):
    """A checkpoint with LoRA already merged (plain `.weight`), as `star_to_sat` writes it, gives the same model."""
    ours = dict(convert_sat_state_dict(sat_state_dict))
    merged_sat = dict(star_to_sat(ours))
    assert not any("matrix_" in n or ".original." in n for n in merged_sat)
    assert sat_layer_count(merged_sat) == 2
    _assert_same_weights(ours, dict(convert_sat_state_dict(merged_sat)))


def test_adaln_chunks_go_to_norm1_and_norm2(sat_state_dict):
    sat = _strip(sat_state_dict)
    ours = dict(convert_sat_state_dict(sat))
    chunks = sat["mixins.adaln_layer.adaLN_modulations.0.1.weight"].chunk(12)
    # text shift of the attention half, image shift of the MLP half
    assert torch.equal(ours["transformer_blocks.0.norm1.linear.weight"].chunk(6)[3], chunks[6])
    assert torch.equal(ours["transformer_blocks.0.norm2.linear.weight"].chunk(6)[0], chunks[3])  # image shift (MLP)


def test_missing_keys_are_named_in_one_line(sat_state_dict):
    broken = dict(sat_state_dict)
    del broken[SAT_PREFIX + "transformer.layers.1.temp_local.conv1.weight"]
    del broken[SAT_PREFIX + "transformer.layers.0.attention.dense.matrix_B.0"]
    with pytest.raises(SATCheckpointError) as error:
        convert_sat_state_dict(broken)
    message = str(error.value)
    assert isinstance(error.value, StarError) and "\n" not in message
    assert "transformer.layers.1.temp_local.conv1.weight" in message
    assert "transformer.layers.0.attention.dense.matrix_B.0" in message
    with pytest.raises(SATCheckpointError, match="transformer.layers.0"):
        convert_sat_state_dict({"conditioner.x": torch.zeros(1)})


def test_config_that_does_not_fit_is_a_star_error(sat_state_dict, dit_config):
    with pytest.raises(SATCheckpointError, match="does not fit"):
        from_sat_state_dict(sat_state_dict, **{**dit_config, "num_layers": 3})


def test_cast_to_the_requested_dtype(sat_state_dict):
    assert {t.dtype for _, t in convert_sat_state_dict(sat_state_dict, dtype=torch.bfloat16)} == {torch.bfloat16}


class _CountingMapping(Mapping[str, torch.Tensor]):
    """A state dict that records which tensors were read (a memory-mapped checkpoint pages in only those)."""

    def __init__(self, tensors: dict[str, torch.Tensor]) -> None:
        self.tensors = tensors
        self.read: list[str] = []

    def __getitem__(self, key: str) -> torch.Tensor:
        self.read.append(key)
        return self.tensors[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self.tensors)

    def __len__(self) -> int:
        return len(self.tensors)


def test_conversion_reads_tensors_only_as_it_yields(sat_state_dict, tiny_dit):
    source = _CountingMapping(sat_state_dict)
    produced = convert_sat_state_dict(source)
    assert source.read == []
    next(produced)
    assert len(source.read) == 1
    outputs = 1 + sum(1 for _ in produced)
    assert outputs == len(tiny_dit.state_dict())
    assert len(source.read) == len(set(source.read))  # every source tensor read once
