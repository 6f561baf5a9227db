"""CogVideoX's text conditioning: T5-XXL's last hidden state, as the reference's `FrozenT5Embedder`.

The prompt is tokenised to exactly 226 tokens (truncated, padded with `<pad>`, the
end token included) and encoded without an attention mask, so the padding tokens
are attended and their outputs are part of the context, as in the reference. The
negative context is not an encoded empty prompt but all zeros (the reference's
`force_uc_zero_embeddings`).

Loaded from the CogVideoX-5B release's diffusers layout: `text_encoder/` (a
`T5EncoderModel`) and `tokenizer/` (a T5 tokenizer).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from transformers import T5EncoderModel, T5Tokenizer

from star_cli.errors import StarError
from star_cli.models.loading import library_bars_off

TEXT_LENGTH = 226


def tokenize(tokenizer: T5Tokenizer, texts: str | Sequence[str], length: int = TEXT_LENGTH) -> torch.Tensor:
    """Token ids (N, length): truncated, end token appended, padded to `length`."""
    if isinstance(texts, str):
        texts = [texts]
    encoded = tokenizer(list(texts), truncation=True, max_length=length, padding="max_length", return_tensors="pt")
    return encoded["input_ids"]


def negative_context(context: torch.Tensor) -> torch.Tensor:
    """The reference's negative context: zeros shaped like the positive one."""
    return torch.zeros_like(context)


class T5TextEncoder:
    """Tokenizer + T5 encoder producing the (N, 226, d_model) text context."""

    def __init__(self, model: T5EncoderModel, tokenizer: T5Tokenizer, length: int = TEXT_LENGTH) -> None:
        self.model = model.eval().requires_grad_(False)
        self.tokenizer = tokenizer
        self.length = length

    @classmethod
    def from_dirs(
        cls,
        text_encoder_dir: str | Path,
        tokenizer_dir: str | Path,
        *,
        device: torch.device | str = "cpu",
        dtype: torch.dtype = torch.float32,
    ) -> T5TextEncoder:
        """Load `<weights>/text_encoder` and `<weights>/tokenizer` (diffusers' CogVideoX-5B layout)."""
        try:
            tokenizer = T5Tokenizer.from_pretrained(str(tokenizer_dir))
        except (OSError, ValueError, ImportError) as error:
            raise StarError(f"cannot load the T5 tokenizer from {tokenizer_dir}: {error}") from None
        try:
            with library_bars_off():
                model = T5EncoderModel.from_pretrained(str(text_encoder_dir), dtype=dtype)
        except (OSError, ValueError) as error:
            raise StarError(f"cannot load the T5 text encoder from {text_encoder_dir}: {error}") from None
        return cls(model.to(device), tokenizer)

    @property
    def device(self) -> torch.device:
        return self.model.device

    @torch.no_grad()
    def encode(self, texts: str | Sequence[str]) -> torch.Tensor:
        """Text context (N, 226, d_model) per text, in the model's dtype, on its device; no attention mask."""
        ids = tokenize(self.tokenizer, texts, self.length).to(self.device)
        return self.model(input_ids=ids).last_hidden_state
