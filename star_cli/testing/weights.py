"""A complete, tiny, randomly initialised weights folder in the real layout.

Tests and users can run the whole STAR path (tokenizer, text tower, UNet +
ControlNet, VAE, manifest) on a CPU in seconds with it. The outputs are noise: only
shapes, plumbing and file formats are real. Everything is generated from code, so
no test depends on downloaded or checked-in weights:

- tokenizer: a genuine CLIP byte-level BPE vocabulary, cut down to its 512 byte
  symbols, the first merges of the real CLIP merge list and the two special tokens.
  Ids below 512 equal the real vocabulary's, so "!" is still the padding id 0.
- text tower: a 3-block CLIPTextModel (the penultimate-layer path is exercised),
  saved with the `text_model.` key prefix that real checkpoints and every
  transformers release read.
- UNet + ControlNet: a narrow STARUNet whose context width equals the text width;
  its zero-initialised layers (ControlNet zero convolutions, output convolutions)
  are randomised so every path contributes to the output.
- VAE: an AutoencoderKLTemporalDecoder with four levels, so latents are 1/8 of the
  frame size as with the real one.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import torch
from diffusers import AutoencoderKLTemporalDecoder
from safetensors.torch import save_file
from transformers import CLIPTextConfig, CLIPTextModel

from star_cli.errors import InputError
from star_cli.hub.layout import COGVIDEOX_VARIANT, STAR_VARIANTS, VARIANTS, star_relpath, write_manifest
from star_cli.models import STARUNet
from star_cli.models.loading import save_star_unet

BOS_TOKEN = "<|startoftext|>"
EOS_TOKEN = "<|endoftext|>"

# The first merges of the real CLIP vocabulary, in its order (merges.txt lines 2-49).
CLIP_FIRST_MERGES = (
    "i n|t h|a n|r e|a r|e r|th e</w>|in g</w>|o u|o n|s t|o r|e n|o n</w>|a l|a t|e r</w>|i t|i n</w>|"
    "t o</w>|r o|i s</w>|l e|i c|a t</w>|an d</w>|e d</w>|o f</w>|c h|o r</w>|e s</w>|i l|e l|s t</w>|"
    "a c|o m|a m|l o|a n</w>|a y</w>|s h|r i|l i|t i|f or</w>|n e|ð Ł|r a"
).split("|")

TEXT_HIDDEN = 64
TINY_TEXT = {"hidden_size": TEXT_HIDDEN, "intermediate_size": 128, "num_hidden_layers": 3, "num_attention_heads": 4}
# Four levels like the real UNet, but narrow: (1, 2, 4, 4) makes a CPU forward about 3x slower.
TINY_UNET = {"dim": 32, "head_dim": 16, "num_heads": 2, "dim_mult": (1, 1, 2, 2), "num_res_blocks": 1,
             "context_dim": TEXT_HIDDEN}
TINY_VAE = {"block_out_channels": (32, 32, 32, 32), "down_block_types": ("DownEncoderBlock2D",) * 4,
            "layers_per_block": 1, "latent_channels": 4, "scaling_factor": 0.18215}
_ZERO_INIT_STD = 0.02


def bytes_to_unicode() -> dict[int, str]:
    """CLIP/GPT-2's byte -> printable character table, in vocabulary order."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    table = {byte: chr(byte) for byte in printable}
    extra = 0
    for byte in range(256):
        if byte not in table:
            table[byte] = chr(256 + extra)
            extra += 1
    return table


def tiny_vocabulary() -> tuple[dict[str, int], list[str]]:
    """(vocab, merges) of the cut-down CLIP BPE: bytes, bytes + '</w>', merges, specials."""
    symbols = list(bytes_to_unicode().values())
    tokens = symbols + [symbol + "</w>" for symbol in symbols]
    tokens += [merge.replace(" ", "") for merge in CLIP_FIRST_MERGES]
    tokens += [BOS_TOKEN, EOS_TOKEN]
    return {token: index for index, token in enumerate(tokens)}, list(CLIP_FIRST_MERGES)


def write_tokenizer(folder: Path) -> dict[str, int]:
    """Write vocab.json, merges.txt, tokenizer_config.json, special_tokens_map.json; return the vocab."""
    vocab, merges = tiny_vocabulary()
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n", encoding="utf-8")
    special = {"bos_token": BOS_TOKEN, "eos_token": EOS_TOKEN, "unk_token": EOS_TOKEN, "pad_token": EOS_TOKEN}
    config = {"tokenizer_class": "CLIPTokenizer", "model_max_length": 77, "do_lower_case": True,
              "errors": "replace", "add_prefix_space": False, **special}
    (folder / "tokenizer_config.json").write_text(json.dumps(config, indent=2), encoding="utf-8")
    (folder / "special_tokens_map.json").write_text(json.dumps(special, indent=2), encoding="utf-8")
    return vocab


def write_text_encoder(folder: Path, vocab: dict[str, int]) -> None:
    """Write config.json + model.safetensors of a tiny CLIP text tower."""
    config = CLIPTextConfig(
        vocab_size=len(vocab), max_position_embeddings=77, hidden_act="gelu", projection_dim=TEXT_HIDDEN,
        bos_token_id=vocab[BOS_TOKEN], eos_token_id=vocab[EOS_TOKEN], pad_token_id=0, **TINY_TEXT,
    )
    model = CLIPTextModel(config)
    folder.mkdir(parents=True, exist_ok=True)
    config.save_pretrained(folder)
    state = {
        (key if key.startswith("text_model.") else f"text_model.{key}"): value.contiguous()
        for key, value in model.state_dict().items()
    }
    save_file(state, str(folder / "model.safetensors"), metadata={"format": "pt"})


def write_vae(folder: Path) -> None:
    """Write config.json + diffusion_pytorch_model.safetensors of a tiny temporal-decoder VAE."""
    AutoencoderKLTemporalDecoder(**TINY_VAE).save_pretrained(folder)


def randomise_zero_parameters(model: torch.nn.Module) -> None:
    """Give every all-zero parameter small random values, so zero-initialised paths (residual branches,
    adaLN gates) matter: in tests they must change the output, in benchmarks no GEMM may run on zeros."""
    with torch.no_grad():
        for parameter in model.parameters():
            if not parameter.any():
                parameter.normal_(0.0, _ZERO_INIT_STD)


def write_star_unet(path: Path) -> None:
    """Write a tiny UNet + ControlNet as fp16 safetensors with its config in metadata `star_config`."""
    model = STARUNet(**TINY_UNET)
    randomise_zero_parameters(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_star_unet(model, path, dtype=torch.float16)


def make_tiny_weights(path: str | Path, variants: Sequence[str] = ("light",), seed: int = 0) -> Path:
    """Write a tiny weights folder at `path` (created if needed) and its manifest; return the folder.

    Deterministic for a given seed; the caller's global random state is left untouched.
    The `cogvideox` variant adds the CogVideoX family's folder (`star_cli.testing.cogvideox_weights`).
    """
    if not variants or not set(variants) <= set(VARIANTS):
        raise InputError(f"tiny weight variants must be among {', '.join(VARIANTS)}, got {list(variants)}")
    root = Path(path)
    star_variants = [v for v in variants if v in STAR_VARIANTS]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        if star_variants:
            vocab = write_tokenizer(root / "tokenizer")
            write_text_encoder(root / "text_encoder", vocab)
            write_vae(root / "vae")
        for variant in star_variants:
            write_star_unet(root / star_relpath(variant))
        if COGVIDEOX_VARIANT in variants:
            from star_cli.testing.cogvideox_weights import write_cogvideox_weights

            write_cogvideox_weights(root)
    write_manifest(root)
    return root
