"""STAR's CogVideoX checkpoint (SwissArmyTransformer names) -> our denoiser's state dict.

The released checkpoint is a SAT/DeepSpeed state dict: the DiT under
`model.diffusion_model.` (often), the T5 conditioner and the VAE beside it, LoRA
(r 512) kept as separate `matrix_A`/`matrix_B` tensors next to each frozen
`original` projection, and the 12 adaLN outputs of a layer in one Linear. The
mapping here is the fixture README's section 4.1:

- LoRA is merged in float32 as SAT's `merge_linear_lora` does
  (W + cat_j(B_j @ A_j) * alpha/r), then cast; a checkpoint whose LoRA is already
  merged (plain `.weight`) is taken as it is;
- the fused q/k/v projection is split into diffusers' `to_q`/`to_k`/`to_v`;
- the 12 adaLN chunks go to `norm1` (image/text attention chunks) and `norm2` (MLP);
- RoPE buffers and the unused learned position table are dropped;
  `conditioner.*` and `first_stage_model.*` are not the DiT's and are ignored.

The conversion is a generator over (name, tensor) reading only the source tensors
each output needs, so a memory-mapped checkpoint of 5B parameters is converted
without two full copies in memory. Every missing key is reported before anything
is produced.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from star_cli.errors import StarError
from star_cli.models.cogvideox.dit import STARCogVideoXTransformer

SAT_PREFIX = "model.diffusion_model."
IGNORED_PREFIXES = ("conditioner.", "first_stage_model.")
DROPPED_KEYS = frozenset(
    {"mixins.pos_embed.freqs_sin", "mixins.pos_embed.freqs_cos", "transformer.position_embeddings.weight"}
)
ADALN_CHUNKS = 12
NORM1_CHUNKS = (0, 1, 2, 6, 7, 8)  # image shift/scale/gate, text shift/scale/gate (attention)
NORM2_CHUNKS = (3, 4, 5, 9, 10, 11)  # the same for the MLP
_NAMES_SHOWN = 5

log = logging.getLogger(__name__)

# SAT module -> ours; each has a weight and a bias.
_MODEL_RENAMES = {
    "time_embed.0": "time_embedding.linear_1",
    "time_embed.2": "time_embedding.linear_2",
    "mixins.patch_embed.proj_sr": "patch_embed.proj",
    "mixins.patch_embed.text_proj": "patch_embed.text_proj",
    "transformer.final_layernorm": "norm_final",
    "mixins.final_layer.norm_final": "norm_out.norm",
    "mixins.final_layer.adaLN_modulation.1": "norm_out.linear",
    "mixins.final_layer.linear": "proj_out",
}
_LAYER_RENAMES = {
    "mixins.adaln_layer.query_layernorm_list.{i}": "attn1.norm_q",
    "mixins.adaln_layer.key_layernorm_list.{i}": "attn1.norm_k",
    "transformer.layers.{i}.input_layernorm": "norm1.norm",
    "transformer.layers.{i}.post_attention_layernorm": "norm2.norm",
    "transformer.layers.{i}.mlp.dense_h_to_4h": "ff.net.0.proj",
    "transformer.layers.{i}.mlp.dense_4h_to_h": "ff.net.2",
}
_LAYER_WEIGHTS_ONLY = {
    "transformer.layers.{i}.spa_local.conv1": "spa_local.conv1",
    "transformer.layers.{i}.temp_local.conv1": "temp_local.conv1",
}
_LAYER_PATTERN = re.compile(r"^transformer\.layers\.(\d+)\.")


class SATCheckpointError(StarError):
    """The checkpoint is not a complete STAR CogVideoX DiT."""


@dataclass(frozen=True)
class _Group:
    """Outputs computed together from a few source tensors (e.g. q, k, v from one fused projection)."""

    sources: tuple[str, ...]
    build: Callable[[Sequence[Tensor]], list[tuple[str, Tensor]]]


def _strip(state_dict: Mapping[str, Tensor]) -> dict[str, str]:
    """SAT name without the engine prefix -> the key in `state_dict`, the DiT's keys only."""
    names: dict[str, str] = {}
    for key in state_dict.keys():
        name = key[len(SAT_PREFIX) :] if key.startswith(SAT_PREFIX) else key
        if not key.startswith(IGNORED_PREFIXES):
            names[name] = key
    return names


def sat_layer_count(names: Mapping[str, object] | Sequence[str]) -> int:
    """Number of transformer layers named in a SAT state dict (keys with or without the prefix)."""
    layers = {
        int(match.group(1))
        for name in names
        if (match := _LAYER_PATTERN.match(name[len(SAT_PREFIX) :] if name.startswith(SAT_PREFIX) else name))
    }
    return max(layers) + 1 if layers else 0


def _rename(source: str, target: str, *, bias: bool = True) -> list[_Group]:
    suffixes = ("weight", "bias") if bias else ("weight",)
    return [_Group((f"{source}.{s}",), lambda t, name=f"{target}.{s}": [(name, t[0])]) for s in suffixes]


def _lora_sources(names: Mapping[str, str], stem: str, partitions: int) -> tuple[str, ...] | None:
    """Source names of an unmerged LoRA projection (original, A_0.., B_0..), None when it is merged."""
    if f"{stem}.weight" in names:
        return None
    a = tuple(f"{stem}.matrix_A.{j}" for j in range(partitions))
    b = tuple(f"{stem}.matrix_B.{j}" for j in range(partitions))
    return (f"{stem}.original.weight", *a, *b)


def _merge(tensors: Sequence[Tensor], partitions: int, lora_alpha: float) -> Tensor:
    """W + cat_j(B_j @ A_j) * alpha / r in float32 (SAT's merge_linear_lora); r from A's rows."""
    weight, a, b = tensors[0], tensors[1 : 1 + partitions], tensors[1 + partitions :]
    scaling = lora_alpha / a[0].shape[0]
    delta = torch.cat([bj.float() @ aj.float() * scaling for aj, bj in zip(a, b)], dim=0)
    return weight.float() + delta


def _split(targets: Sequence[str], suffix: str, tensor: Tensor) -> list[tuple[str, Tensor]]:
    return [(f"{name}.{suffix}", part) for name, part in zip(targets, tensor.chunk(len(targets)))]


def _projection(names: Mapping[str, str], stem: str, targets: Sequence[str], lora_alpha: float) -> list[_Group]:
    """A (possibly LoRA) SAT Linear -> `len(targets)` diffusers Linears, split on the output dimension."""
    partitions = len(targets)
    lora = _lora_sources(names, stem, partitions)
    if lora is None:
        weight_group = _Group((f"{stem}.weight",), lambda t: _split(targets, "weight", t[0]))
        bias = f"{stem}.bias"
    else:
        weight_group = _Group(lora, lambda t: _split(targets, "weight", _merge(t, partitions, lora_alpha)))
        bias = f"{stem}.original.bias"
    return [weight_group, _Group((bias,), lambda t: _split(targets, "bias", t[0]))]


def _adaln(layer: int) -> list[_Group]:
    """One Linear(E, 12D) -> norm1.linear (6 chunks) and norm2.linear (6 chunks)."""
    source = f"mixins.adaln_layer.adaLN_modulations.{layer}.1"
    ours = f"transformer_blocks.{layer}"

    def split(tensors: Sequence[Tensor], suffix: str) -> list[tuple[str, Tensor]]:
        chunks = tensors[0].chunk(ADALN_CHUNKS)
        return [
            (f"{ours}.norm1.linear.{suffix}", torch.cat([chunks[c] for c in NORM1_CHUNKS])),
            (f"{ours}.norm2.linear.{suffix}", torch.cat([chunks[c] for c in NORM2_CHUNKS])),
        ]

    return [_Group((f"{source}.{s}",), lambda t, s=s: split(t, s)) for s in ("weight", "bias")]


def _groups(names: Mapping[str, str], num_layers: int, lora_alpha: float) -> list[_Group]:
    groups = [g for source, target in _MODEL_RENAMES.items() for g in _rename(source, target)]
    for i in range(num_layers):
        ours = f"transformer_blocks.{i}"
        for source, target in _LAYER_RENAMES.items():
            groups += _rename(source.format(i=i), f"{ours}.{target}")
        for source, target in _LAYER_WEIGHTS_ONLY.items():
            groups += _rename(source.format(i=i), f"{ours}.{target}", bias=False)
        groups += _adaln(i)
        attention = f"transformer.layers.{i}.attention"
        qkv = [f"{ours}.attn1.to_{p}" for p in "qkv"]
        groups += _projection(names, f"{attention}.query_key_value", qkv, lora_alpha)
        groups += _projection(names, f"{attention}.dense", [f"{ours}.attn1.to_out.0"], lora_alpha)
    return groups


def _unexpected(names: Mapping[str, str], groups: Sequence[_Group]) -> list[str]:
    used = {source for group in groups for source in group.sources}
    return sorted(n for n in names if n not in used and n not in DROPPED_KEYS)


def convert_sat_state_dict(
    state_dict: Mapping[str, Tensor], *, lora_alpha: float = 1.0, dtype: torch.dtype | None = None
) -> Iterator[tuple[str, Tensor]]:
    """Yield our denoiser's (name, tensor) pairs from a SAT state dict, one source group at a time.

    Keys may carry `model.diffusion_model.`; LoRA may be merged or not (alpha/r scaling,
    r read from the LoRA matrices). Tensors are cast to `dtype` (None: the source's dtype).
    Raises SATCheckpointError naming the missing keys before yielding anything.
    """
    names = _strip(state_dict)
    num_layers = sat_layer_count(list(names))
    groups = _groups(names, num_layers, lora_alpha)
    missing = sorted({s for g in groups for s in g.sources if s not in names})
    if num_layers == 0:
        missing = ["transformer.layers.0.*", *missing]
    if missing:
        shown = ", ".join(missing[:_NAMES_SHOWN])
        more = f" (and {len(missing) - _NAMES_SHOWN} more)" if len(missing) > _NAMES_SHOWN else ""
        raise SATCheckpointError(f"not a complete STAR CogVideoX checkpoint: missing {shown}{more}")
    unexpected = _unexpected(names, groups)
    if unexpected:
        log.warning("ignoring %d unknown checkpoint key(s): %s", len(unexpected), ", ".join(unexpected[:_NAMES_SHOWN]))
    return _produce(state_dict, names, groups, dtype)


def _produce(
    state_dict: Mapping[str, Tensor], names: Mapping[str, str], groups: Sequence[_Group], dtype: torch.dtype | None
) -> Iterator[tuple[str, Tensor]]:
    for group in groups:
        tensors = [state_dict[names[s]] for s in group.sources]
        target_dtype = dtype or tensors[0].dtype
        for name, tensor in group.build(tensors):
            yield name, tensor.to(target_dtype).contiguous()


def star_to_sat(state_dict: Mapping[str, Tensor]) -> Iterator[tuple[str, Tensor]]:
    """The inverse mapping: our state dict -> SAT names (no prefix), LoRA merged, no RoPE buffers."""
    inverse = {target: source for source, target in _MODEL_RENAMES.items()}
    layer_inverse = {target: source for source, target in {**_LAYER_RENAMES, **_LAYER_WEIGHTS_ONLY}.items()}
    num_layers = len({k.split(".")[1] for k in state_dict if k.startswith("transformer_blocks.")})
    for target, source in inverse.items():
        for suffix in ("weight", "bias"):
            yield f"{source}.{suffix}", state_dict[f"{target}.{suffix}"]
    for i in range(num_layers):
        ours = f"transformer_blocks.{i}"
        for target, source in layer_inverse.items():
            for suffix in ("weight", "bias"):
                if f"{ours}.{target}.{suffix}" in state_dict:
                    yield f"{source.format(i=i)}.{suffix}", state_dict[f"{ours}.{target}.{suffix}"]
        attention = f"transformer.layers.{i}.attention"
        for suffix in ("weight", "bias"):
            norm1 = state_dict[f"{ours}.norm1.linear.{suffix}"].chunk(len(NORM1_CHUNKS))
            norm2 = state_dict[f"{ours}.norm2.linear.{suffix}"].chunk(len(NORM2_CHUNKS))
            chunks = dict(zip(NORM1_CHUNKS, norm1)) | dict(zip(NORM2_CHUNKS, norm2))
            yield f"mixins.adaln_layer.adaLN_modulations.{i}.1.{suffix}", torch.cat(
                [chunks[c] for c in range(ADALN_CHUNKS)]
            )
            yield f"{attention}.query_key_value.{suffix}", torch.cat(
                [state_dict[f"{ours}.attn1.to_{p}.{suffix}"] for p in "qkv"]
            )
            yield f"{attention}.dense.{suffix}", state_dict[f"{ours}.attn1.to_out.0.{suffix}"]


def from_sat_state_dict(
    state_dict: Mapping[str, Tensor], *, lora_alpha: float = 1.0, **config: object
) -> STARCogVideoXTransformer:
    """Our denoiser (LoRA merged, eval mode) from a SAT state dict; `config` = CogVideoXTransformer3DModel kwargs.

    The model is built on the meta device and the converted tensors assigned, in their own dtype.
    """
    converted = dict(convert_sat_state_dict(state_dict, lora_alpha=lora_alpha))
    with torch.device("meta"):
        model = STARCogVideoXTransformer(**config)
    expected = {name: tuple(t.shape) for name, t in model.state_dict().items()}
    wrong = sorted(n for n in expected.keys() | converted.keys() if expected.get(n) != _shape(converted.get(n)))
    if wrong:
        shown = ", ".join(wrong[:_NAMES_SHOWN])
        raise SATCheckpointError(f"the checkpoint does not fit the model config ({len(wrong)} tensors differ: {shown})")
    model.load_state_dict(converted, strict=True, assign=True)
    return model.eval()


def _shape(tensor: Tensor | None) -> tuple[int, ...] | None:
    return None if tensor is None else tuple(tensor.shape)
