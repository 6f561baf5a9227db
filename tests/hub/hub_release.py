"""Tiny STAR weights as published on the (fake) Hub, and a sources file pointing at them."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

from fakehub import FakeHub

STAR_REPO, VAE_REPO, VAE_FALLBACK, TEXT_REPO = "test/STAR", "test/svd", "test/svd-xt", "test/i2vgen-xl"
# One resolution level keeps the model at ~600 tensors: pickles of it load fast with weights_only.
TINY_STAR = {"dim": 32, "head_dim": 16, "num_heads": 2, "dim_mult": (1,), "num_res_blocks": 1, "context_dim": 64}
PLAIN_FILES = {  # repo path -> place in the weights folder
    "vae/config.json": "vae/config.json",
    "vae/diffusion_pytorch_model.fp16.safetensors": "vae/diffusion_pytorch_model.safetensors",
    "text_encoder/config.json": "text_encoder/config.json",
    "text_encoder/model.fp16.safetensors": "text_encoder/model.safetensors",
    "tokenizer/vocab.json": "tokenizer/vocab.json",
    "tokenizer/merges.txt": "tokenizer/merges.txt",
    "tokenizer/tokenizer_config.json": "tokenizer/tokenizer_config.json",
    "tokenizer/special_tokens_map.json": "tokenizer/special_tokens_map.json",
}


def star_path(variant: str) -> str:
    return f"I2VGen-XL-based/{variant}_deg.pt"


def toml_inline(table: dict) -> str:
    """A flat dict of numbers and tuples as a TOML inline table (JSON numbers and arrays are TOML)."""
    return "{ " + ", ".join(f"{k} = {json.dumps(list(v) if isinstance(v, tuple) else v)}" for k, v in table.items()) + " }"


def sources_text(config: dict, star_sha256: dict[str, str]) -> str:
    """The shipped sources' shape, pointing at the fake Hub's test repos."""
    star = "".join(
        f'\n[[star.files]]\npath = "{star_path(v)}"\ndest = "star/{v}_deg.safetensors"\n'
        f'variant = "{v}"\nconvert = true\nsha256 = "{sha}"\n'
        for v, sha in star_sha256.items()
    )

    def files(table: str, prefixes: tuple[str, ...]) -> str:
        return "".join(f'\n[[{table}.files]]\npath = "{s}"\ndest = "{d}"\n' for s, d in PLAIN_FILES.items() if s.startswith(prefixes))

    return (
        f'format = 1\n\n[star]\nrepos = ["{STAR_REPO}"]\nconfig = {toml_inline(config)}\n{star}\n'
        f'[vae]\nrepos = ["{VAE_REPO}", "{VAE_FALLBACK}"]\n{files("vae", ("vae/",))}\n'
        f'[text]\nrepos = ["{TEXT_REPO}"]\n{files("text", ("text_encoder/", "tokenizer/"))}'
    )


@dataclass(frozen=True)
class TinyRelease:
    """Files as published on the (fake) Hub, keyed by (repo, path), and the state dicts of the pickles."""

    files: dict[tuple[str, str], bytes]
    states: dict[str, dict]

    def star_sha256(self) -> dict[str, str]:
        return {v: hashlib.sha256(self.files[STAR_REPO, star_path(v)]).hexdigest() for v in self.states}

    def publish(self, hub: FakeHub) -> FakeHub:
        for (repo, path), data in self.files.items():
            hub.add(repo, path, data)
        return hub
