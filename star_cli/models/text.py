"""STAR's text conditioning: the OpenCLIP ViT-H/14 text tower, run with transformers.

The reference (`FrozenOpenCLIPEmbedder`, layer='penultimate') tokenises with
`open_clip.tokenize` and returns the output of the second-to-last transformer
block passed through the final LayerNorm. transformers' `CLIPTextModel` holds the
same weights, so we reproduce the reference exactly on top of it:

- tokens: open_clip's text cleaning (ftfy, HTML unescape, whitespace folding,
  lower case), start/end tokens, truncation that keeps the end token, and padding
  with id 0 ("!"). Padding with `<|endoftext|>` (transformers' default) changes the
  embedding at every padded position, and configuring `pad_token='!'` makes the
  tokenizer delete every "!" in the prompt, so padding is appended by hand.
- layer: hidden state of the penultimate block, then `final_layer_norm`. Converted
  checkpoints (Stable Diffusion 2, I2VGen-XL in diffusers) drop the tower's last
  block instead and use the last hidden state; a 23-block config is such a tower.
- no attention mask, like open_clip: padded positions are attended causally.
"""

from __future__ import annotations

import html
import json
import re
from collections.abc import Sequence
from pathlib import Path

import torch
from transformers import CLIPTextModel, CLIPTokenizer

from star_cli.errors import StarError
from star_cli.models.loading import library_bars_off

CONTEXT_LENGTH = 77
PAD_ID = 0
OPENCLIP_H_LAYERS = 24

POSITIVE_PROMPT = (
    "Cinematic, High Contrast, highly detailed, taken using a Canon EOS R camera,   hyper detailed photo - "
    "realistic maximum detail, 32k, Color Grading, ultra HD, extreme meticulous detailing,  skin pore "
    "detailing, hyper sharpness, perfect without deformations."
)
NEGATIVE_PROMPT = (
    "painting, oil painting, illustration, drawing, art, sketch, oil painting, cartoon, CG Style, 3D render, "
    "unreal engine, blurring, dirty, messy, worst quality, low quality, frames, watermark, signature, jpeg "
    "artifacts, deformed, lowres, over-smooth"
)


def compose_prompt(user_prompt: str = "") -> str:
    """The positive text the reference encodes: the user's prompt, then POSITIVE_PROMPT, no separator."""
    return user_prompt + POSITIVE_PROMPT


def clean_text(text: str) -> str:
    """open_clip's cleaning; transformers' CLIPTokenizer only folds whitespace and lower-cases.

    ftfy is imported here, not at the top: code that builds the text tower without
    tokenising (benchmarks/gpu_bench.py, on machines without ftfy) must not need it.
    """
    import ftfy

    text = html.unescape(html.unescape(ftfy.fix_text(text))).strip()
    return re.sub(r"\s+", " ", text).strip().lower()


def tokenize(tokenizer: CLIPTokenizer, texts: str | Sequence[str]) -> torch.Tensor:
    """Token ids (N, 77) exactly as `open_clip.tokenize` makes them for the CLIP vocabulary."""
    if isinstance(texts, str):
        texts = [texts]
    body = CONTEXT_LENGTH - 2
    encoded = tokenizer(
        [clean_text(text) for text in texts], add_special_tokens=False, truncation=True, max_length=body
    )["input_ids"]
    rows = []
    for ids in encoded:
        row = [tokenizer.bos_token_id, *ids, tokenizer.eos_token_id]
        rows.append(row + [PAD_ID] * (CONTEXT_LENGTH - len(row)))
    return torch.tensor(rows, dtype=torch.long)


def _unreadable_tokenizer_file(tokenizer_dir: Path) -> Path | None:
    """The first tokenizer file that is not what it should be (JSON, or merges as 'a b' pairs), if any."""
    for path in sorted(tokenizer_dir.glob("*.json")):
        try:
            json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return path
    merges = tokenizer_dir / "merges.txt"
    try:
        lines = merges.read_text(encoding="utf-8").splitlines()
    except (OSError, ValueError):
        return merges
    if any(len(line.split()) != 2 for line in lines[1:] if line):
        return merges
    return None


def load_tokenizer(tokenizer_dir: str | Path) -> CLIPTokenizer:
    """Load a CLIP tokenizer folder, overriding a `pad_token='!'` it may declare (it would eat "!").

    The `tokenizers` library reports a damaged file as a bare Exception ("Error while
    initializing BPE"): any failure is reported as one line naming the file at fault.
    """
    try:
        return CLIPTokenizer.from_pretrained(str(tokenizer_dir), pad_token="<|endoftext|>")
    except Exception as error:  # noqa: BLE001 - tokenizers raises plain Exception
        culprit = _unreadable_tokenizer_file(Path(tokenizer_dir))
        where = f"{culprit} is damaged" if culprit is not None else f"cannot load the tokenizer from {tokenizer_dir}"
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise StarError(f"{where} ({reason}): run `star download-weights` to repair it") from None


def _final_layer_norm(model: CLIPTextModel) -> torch.nn.Module:
    """transformers 5 dropped the `text_model` wrapper of CLIPTextModel; 4.x still has it."""
    return getattr(model, "text_model", model).final_layer_norm


class TextEncoder:
    """Tokenizer + CLIP text tower producing STAR's (N, 77, hidden) text context."""

    def __init__(
        self, model: CLIPTextModel, tokenizer: CLIPTokenizer | None, *, final_layer_dropped: bool | None = None
    ) -> None:
        """`final_layer_dropped=None` decides from the config: a 23-block tower lost its last block.

        Without a tokenizer only `encode_ids` works (benchmarks feed random token ids).
        """
        self.model = model.eval().requires_grad_(False)
        self.tokenizer = tokenizer
        if final_layer_dropped is None:
            final_layer_dropped = model.config.num_hidden_layers == OPENCLIP_H_LAYERS - 1
        self.final_layer_dropped = final_layer_dropped

    @classmethod
    def from_dirs(
        cls,
        text_encoder_dir: str | Path,
        tokenizer_dir: str | Path,
        *,
        device: torch.device | str = "cpu",
        dtype: torch.dtype = torch.float32,
    ) -> TextEncoder:
        """Load `<weights>/text_encoder` and `<weights>/tokenizer`."""
        try:
            with library_bars_off():
                model = CLIPTextModel.from_pretrained(str(text_encoder_dir))
        except (OSError, ValueError) as error:
            raise StarError(f"cannot load the text encoder from {text_encoder_dir}: {error}") from error
        return cls(model.to(device=device, dtype=dtype), load_tokenizer(tokenizer_dir))

    @property
    def device(self) -> torch.device:
        return self.model.device

    @torch.no_grad()
    def encode(self, texts: str | Sequence[str]) -> torch.Tensor:
        """Text context (N, 77, hidden) for each text, in the model's dtype and device."""
        return self.encode_ids(tokenize(self.tokenizer, texts))

    @torch.no_grad()
    def encode_ids(self, ids: torch.Tensor) -> torch.Tensor:
        """Text context (N, 77, hidden) of token ids (N, 77), as `encode` runs the tower."""
        ids = ids.to(self.device)
        if self.final_layer_dropped:
            return self.model(input_ids=ids).last_hidden_state
        hidden = self.model(input_ids=ids, output_hidden_states=True).hidden_states[-2]
        return _final_layer_norm(self.model)(hidden)

    def contexts(self, user_prompt: str = "") -> tuple[torch.Tensor, torch.Tensor]:
        """(positive, negative) contexts, each (1, 77, hidden), for the reference's prompts."""
        both = self.encode([compose_prompt(user_prompt), NEGATIVE_PROMPT])
        return both[:1], both[1:]
