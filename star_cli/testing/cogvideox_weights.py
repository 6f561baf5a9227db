"""Tiny, random CogVideoX weights in the real layout (`python -m star_cli.testing tiny-weights PATH --model cogvideox`).

`star upscale --model cogvideox` then runs the whole path on a CPU in seconds: the same
files `star download-weights --variant cogvideox` leaves, at toy sizes, and the denoiser
goes through the real conversion (a SAT/DeepSpeed model-states file, converted by
`star_cli.hub.convert_sat`), so the tiny folder and a downloaded one are made alike.

- denoiser: a 2-layer STAR DiT of one 32-wide head (RoPE splits it 8/12/12),
  its zero-initialised layers randomised so every path matters; native size 64x96
  pixels and 9 frames (3 latent frames), declared in its config;
- VAE: an AutoencoderKLCogVideoX with four levels (latents 1/8 of the frame, time
  compressed 4x after the first frame) but narrow;
- T5: a 2-layer T5EncoderModel in two shards with an index, as the release ships it;
- tokenizer: a real sentencepiece unigram model trained on a few words, with the
  release's T5 files around it (100 extra ids).
"""

from __future__ import annotations

import hashlib
import io
import json
import tempfile
from pathlib import Path
from typing import Any

import torch
from diffusers import AutoencoderKLCogVideoX
from safetensors.torch import save_file
from transformers import T5Config, T5EncoderModel

from star_cli.hub.convert_sat import convert_sat_checkpoint
from star_cli.hub.layout import COGVIDEOX_DENOISER, COGVIDEOX_DIR
from star_cli.models.cogvideox import STARCogVideoXTransformer
from star_cli.models.cogvideox.sat import SAT_PREFIX, star_to_sat
from star_cli.testing.weights import randomise_zero_parameters

TINY_NATIVE = {"height": 64, "width": 96, "frames": 9}
TINY_T5 = {"d_model": 32, "d_ff": 64, "d_kv": 16, "num_heads": 2, "num_layers": 2}
TINY_DIT = {
    "num_attention_heads": 1, "attention_head_dim": 32, "in_channels": 32, "out_channels": 16, "num_layers": 2,
    "text_embed_dim": TINY_T5["d_model"], "time_embed_dim": 16, "sample_height": TINY_NATIVE["height"] // 8,
    "sample_width": TINY_NATIVE["width"] // 8, "sample_frames": 49, "max_text_seq_length": 226, "patch_size": 2,
    "use_rotary_positional_embeddings": True, "use_learned_positional_embeddings": False, "norm_eps": 1e-5,
    "activation_fn": "gelu-approximate", "flip_sin_to_cos": True, "freq_shift": 0, "attention_bias": True,
}
TINY_VAE = {
    "block_out_channels": (8, 16, 16, 16), "layers_per_block": 1, "latent_channels": 16, "norm_num_groups": 4,
    "norm_eps": 1e-6, "temporal_compression_ratio": 4, "scaling_factor": 0.7, "use_quant_conv": False,
    "use_post_quant_conv": False,
}
EXTRA_IDS = 100
_WORDS = (
    "a the man woman dog cat walks runs on beach street city night day red blue green old film video "
    "sharp clear detailed high quality camera moving slowly fast light dark"
).split()
def sat_checkpoint(config: dict[str, Any] = TINY_DIT) -> dict[str, Any]:
    """A random tiny DiT as DeepSpeed saves SAT models: `module` holds SAT names (LoRA merged) plus the
    conditioner and VAE entries the converter must ignore, beside run state."""
    model = STARCogVideoXTransformer(**config)
    randomise_zero_parameters(model)
    module = {SAT_PREFIX + name: tensor.clone() for name, tensor in star_to_sat(model.state_dict())}
    module["conditioner.embedders.0.transformer.shared.weight"] = torch.randn(8, 4)
    module["first_stage_model.encoder.conv_in.conv.weight"] = torch.randn(4, 3, 3, 3, 3)
    return {"module": module, "buffer_names": [], "dp_world_size": 1, "mp_world_size": 1, "ds_version": "0.0", "iteration": 1}


def write_denoiser(root: Path) -> None:
    """The tiny DiT through the real path: a SAT model-states file, converted by hub.convert_sat."""
    with tempfile.TemporaryDirectory(dir=root) as scratch:
        source = Path(scratch) / "mp_rank_00_model_states.pt"
        torch.save(sat_checkpoint(), source)
        digest = hashlib.sha256(source.read_bytes()).hexdigest()
        config = {"diffusers": TINY_DIT, "native": TINY_NATIVE}
        convert_sat_checkpoint(source, root / COGVIDEOX_DENOISER, config=config, source_sha256=digest)


def write_vae(folder: Path) -> None:
    AutoencoderKLCogVideoX(**TINY_VAE).save_pretrained(folder)


def write_tokenizer(folder: Path) -> int:
    """The release's four tokenizer files around a tiny trained sentencepiece model; returns the id count."""
    import sentencepiece

    lines = [" ".join(_WORDS[(i * 7 + j * 3) % len(_WORDS)] for j in range(8)) for i in range(200)]
    model = io.BytesIO()
    sentencepiece.SentencePieceTrainer.train(
        sentence_iterator=iter(lines), model_writer=model, vocab_size=64, hard_vocab_limit=False, model_type="unigram",
        pad_id=0, eos_id=1, unk_id=2, bos_id=-1, pad_piece="<pad>", eos_piece="</s>", unk_piece="<unk>",
        num_threads=1, minloglevel=2,
    )
    pieces = sentencepiece.SentencePieceProcessor(model_proto=model.getvalue()).get_piece_size()
    extra = [f"<extra_id_{i}>" for i in range(EXTRA_IDS)]
    special = {"eos_token": "</s>", "pad_token": "<pad>", "unk_token": "<unk>", "additional_special_tokens": extra}
    config = {"tokenizer_class": "T5Tokenizer", "model_max_length": 226, "extra_ids": EXTRA_IDS, "legacy": True, **special}
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "spiece.model").write_bytes(model.getvalue())
    (folder / "added_tokens.json").write_text(json.dumps({t: pieces + EXTRA_IDS - 1 - i for i, t in enumerate(extra)}))
    (folder / "special_tokens_map.json").write_text(json.dumps(special, indent=2))
    (folder / "tokenizer_config.json").write_text(json.dumps(config, indent=2))
    return pieces + EXTRA_IDS


def write_text_encoder(folder: Path, vocab_size: int) -> None:
    """A tiny T5 encoder as the release ships T5-XXL: config.json, two shards and their index."""
    config = T5Config(vocab_size=vocab_size, feed_forward_proj="gated-gelu", is_encoder_decoder=False, use_cache=False, **TINY_T5)
    model = T5EncoderModel(config)
    folder.mkdir(parents=True, exist_ok=True)
    config.save_pretrained(folder)
    state = {k: v.clone().contiguous() for k, v in model.state_dict().items() if k != "encoder.embed_tokens.weight"}
    names = sorted(state)
    shards = {"model-00001-of-00002.safetensors": names[: len(names) // 2], "model-00002-of-00002.safetensors": names[len(names) // 2 :]}
    for shard, keys in shards.items():
        save_file({k: state[k] for k in keys}, str(folder / shard), metadata={"format": "pt"})
    index = {
        "metadata": {"total_size": sum(t.numel() * t.element_size() for t in state.values())},
        "weight_map": {k: shard for shard, keys in shards.items() for k in keys},
    }
    (folder / "model.safetensors.index.json").write_text(json.dumps(index, indent=2))


def write_cogvideox_weights(root: Path) -> None:
    """Every file of the cogvideox variant under `root` (the caller seeds torch and writes the manifest)."""
    folder = root / COGVIDEOX_DIR
    folder.mkdir(parents=True, exist_ok=True)
    vocab = write_tokenizer(folder / "tokenizer")
    write_text_encoder(folder / "text_encoder", vocab)
    write_vae(folder / "vae")
    write_denoiser(root)
