"""T5 glue on a tiny random T5 written in the CogVideoX-5B folder layout (text_encoder/, tokenizer/)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from transformers import T5Config, T5EncoderModel, T5Tokenizer

from star_cli.errors import StarError
from star_cli.models.cogvideox.text import TEXT_LENGTH, T5TextEncoder, negative_context, tokenize

_WORDS = ["▁a", "▁cat", "▁on", "▁the", "▁mat", "▁sharp", "▁video"]


@pytest.fixture(scope="module")
def t5_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("cogvideox-t5")
    vocab = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0)] + [(word, -1.0 - i) for i, word in enumerate(_WORDS)]
    T5Tokenizer(vocab=vocab, extra_ids=0).save_pretrained(root / "tokenizer")
    torch.manual_seed(0)
    config = T5Config(vocab_size=len(vocab), d_model=16, d_kv=8, d_ff=32, num_layers=2, num_heads=2)
    T5EncoderModel(config).save_pretrained(root / "text_encoder")
    return root


@pytest.fixture(scope="module")
def encoder(t5_folder: Path) -> T5TextEncoder:
    return T5TextEncoder.from_dirs(t5_folder / "text_encoder", t5_folder / "tokenizer")


def test_tokens_are_padded_to_226_with_the_end_token(encoder):
    ids = tokenize(encoder.tokenizer, ["a cat on the mat", "video"])
    assert ids.shape == (2, TEXT_LENGTH)
    assert ids[0, :6].tolist() == [3, 4, 5, 6, 7, encoder.tokenizer.eos_token_id]
    assert torch.all(ids[0, 6:] == encoder.tokenizer.pad_token_id)
    long = tokenize(encoder.tokenizer, " ".join(["cat"] * 400))
    assert long.shape == (1, TEXT_LENGTH) and long[0, -1].item() == encoder.tokenizer.eos_token_id


def test_context_is_the_unmasked_last_hidden_state(encoder):
    context = encoder.encode("a sharp video")
    assert context.shape == (1, TEXT_LENGTH, 16)
    ids = tokenize(encoder.tokenizer, "a sharp video")
    with torch.no_grad():
        unmasked = encoder.model(input_ids=ids).last_hidden_state
        mask = (ids != encoder.tokenizer.pad_token_id).long()
        masked = encoder.model(input_ids=ids, attention_mask=mask).last_hidden_state
    assert torch.equal(context, unmasked)
    assert not torch.allclose(context, masked)  # the padding is attended, as in the reference


def test_negative_context_is_zeros(encoder):
    context = encoder.encode("a cat")
    negative = negative_context(context)
    assert negative.shape == context.shape and not negative.any()


def test_unreadable_folders_are_star_errors(tmp_path: Path, t5_folder: Path):
    with pytest.raises(StarError, match="tokenizer"):
        T5TextEncoder.from_dirs(t5_folder / "text_encoder", tmp_path / "missing")
    with pytest.raises(StarError, match="text encoder"):
        T5TextEncoder.from_dirs(tmp_path / "missing", t5_folder / "tokenizer")
