"""Text path: open_clip-exact tokens and the penultimate-layer context."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from transformers import CLIPTextConfig, CLIPTextModel

from star_cli.errors import StarError
from star_cli.models.text import (
    CONTEXT_LENGTH,
    NEGATIVE_PROMPT,
    POSITIVE_PROMPT,
    TextEncoder,
    _final_layer_norm,
    compose_prompt,
    load_tokenizer,
    tokenize,
)
from star_cli.testing.weights import tiny_vocabulary, write_text_encoder, write_tokenizer


@pytest.fixture(scope="module")
def clip_fixture_dir(fixtures_dir: Path) -> Path:
    return fixtures_dir / "clip-tokenizer"


@pytest.fixture(scope="module")
def clip_tokenizer(clip_fixture_dir: Path):
    return load_tokenizer(clip_fixture_dir)


@pytest.fixture(scope="module")
def openclip_cases(clip_fixture_dir: Path):
    return json.loads((clip_fixture_dir / "openclip_tokenize_cases.json").read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def tiny_tokenizer(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tokenizer")
    write_tokenizer(folder)
    return load_tokenizer(folder)


def tiny_text_model(layers: int, seed: int = 0) -> CLIPTextModel:
    vocab, _ = tiny_vocabulary()
    config = CLIPTextConfig(vocab_size=len(vocab), hidden_size=32, intermediate_size=64, num_hidden_layers=layers,
                            num_attention_heads=2, max_position_embeddings=77, hidden_act="gelu")
    torch.manual_seed(seed)
    return CLIPTextModel(config).eval()


def test_tokenize_matches_every_openclip_case(clip_tokenizer, openclip_cases):
    texts = [case["text"] for case in openclip_cases["cases"]]
    expected = torch.tensor([case["ids"] for case in openclip_cases["cases"]])
    assert len(texts) == 9
    assert torch.equal(tokenize(clip_tokenizer, texts), expected)


def test_reference_prompts_are_the_fixture_texts(openclip_cases):
    texts = {case["text"] for case in openclip_cases["cases"]}
    assert {POSITIVE_PROMPT, NEGATIVE_PROMPT, compose_prompt("a good video")} <= texts
    assert compose_prompt() == POSITIVE_PROMPT


def test_tokenize_cleans_text_like_openclip(clip_tokenizer):
    # open_clip unescapes HTML and repairs mojibake (ftfy) before BPE; CLIPTokenizer alone does neither.
    assert torch.equal(tokenize(clip_tokenizer, "fish &amp; chips"), tokenize(clip_tokenizer, "fish & chips"))
    assert torch.equal(tokenize(clip_tokenizer, "cafÃ© latte"), tokenize(clip_tokenizer, "café latte"))
    assert torch.equal(tokenize(clip_tokenizer, "  A\tdog \n"), tokenize(clip_tokenizer, "a dog"))


def test_long_text_is_truncated_keeping_the_end_token(clip_tokenizer):
    ids = tokenize(clip_tokenizer, "word " * 200)[0]
    assert ids.shape == (CONTEXT_LENGTH,)
    assert ids[0] == clip_tokenizer.bos_token_id and ids[-1] == clip_tokenizer.eos_token_id
    assert (ids[1:-1] != 0).all()


def test_pad_token_bang_in_a_tokenizer_config_does_not_eat_bangs(tmp_path, tiny_tokenizer):
    write_tokenizer(tmp_path)
    config = json.loads((tmp_path / "tokenizer_config.json").read_text())
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({**config, "pad_token": "!"}))
    (tmp_path / "special_tokens_map.json").write_text(json.dumps({**config, "pad_token": "!"}))
    ids = tokenize(load_tokenizer(tmp_path), "sunset!!")
    assert torch.equal(ids, tokenize(tiny_tokenizer, "sunset!!"))
    bang_end = tiny_vocabulary()[0]["!</w>"]
    assert bang_end in ids[0].tolist()


def test_penultimate_layer_equals_a_tower_whose_last_layer_was_dropped(tiny_tokenizer):
    full = tiny_text_model(3)
    truncated = tiny_text_model(2)
    state = {k: v for k, v in full.state_dict().items() if ".layers.2." not in k}
    truncated.load_state_dict(state)
    texts = ["a red car", ""]
    penultimate = TextEncoder(full, tiny_tokenizer).encode(texts)
    dropped = TextEncoder(truncated, tiny_tokenizer, final_layer_dropped=True).encode(texts)
    assert penultimate.shape == (2, CONTEXT_LENGTH, 32)
    torch.testing.assert_close(penultimate, dropped)
    last = full(input_ids=tokenize(tiny_tokenizer, texts)).last_hidden_state
    assert not torch.allclose(penultimate, last, atol=1e-3)


def test_final_layer_dropped_is_detected_from_a_23_block_config(tiny_tokenizer):
    assert TextEncoder(tiny_text_model(23), tiny_tokenizer).final_layer_dropped
    assert not TextEncoder(tiny_text_model(3), tiny_tokenizer).final_layer_dropped


def test_final_layer_norm_found_with_and_without_text_model_wrapper():
    model = tiny_text_model(1)
    assert _final_layer_norm(model) is model.final_layer_norm
    assert _final_layer_norm(SimpleNamespace(text_model=model)) is model.final_layer_norm


def test_padding_with_end_tokens_would_change_the_context(tiny_tokenizer):
    model = tiny_text_model(2)
    encoder = TextEncoder(model, tiny_tokenizer)
    ids = tokenize(tiny_tokenizer, "a dog")
    eot_padded = torch.where(ids == 0, tiny_tokenizer.eos_token_id, ids)
    with torch.no_grad():
        ours = model(input_ids=ids, output_hidden_states=True).hidden_states[-2]
        theirs = model(input_ids=eot_padded, output_hidden_states=True).hidden_states[-2]
    context = encoder.encode("a dog")
    torch.testing.assert_close(context, model.final_layer_norm(ours))
    assert not torch.allclose(context[:, 4:], model.final_layer_norm(theirs)[:, 4:], atol=1e-3)


def test_from_dirs_loads_a_written_folder_and_builds_both_contexts(tmp_path):
    vocab = write_tokenizer(tmp_path / "tokenizer")
    write_text_encoder(tmp_path / "text_encoder", vocab)
    encoder = TextEncoder.from_dirs(tmp_path / "text_encoder", tmp_path / "tokenizer", dtype=torch.float64)
    positive, negative = encoder.contexts("a good video")
    assert positive.shape == negative.shape == (1, CONTEXT_LENGTH, 64)
    assert positive.dtype == torch.float64
    torch.testing.assert_close(positive, encoder.encode(compose_prompt("a good video")))
    assert not torch.allclose(positive, negative)


def test_from_dirs_names_the_folder_it_cannot_load(tmp_path):
    write_tokenizer(tmp_path / "tokenizer")
    with pytest.raises(StarError, match="text encoder"):
        TextEncoder.from_dirs(tmp_path / "missing", tmp_path / "tokenizer")


@pytest.mark.parametrize("name", ["vocab.json", "merges.txt", "tokenizer_config.json"])
def test_a_damaged_tokenizer_file_is_named_in_one_line(name, tmp_path):
    write_tokenizer(tmp_path)
    path = tmp_path / name
    data = bytearray(path.read_bytes())
    data[len(data) // 3 : len(data) // 3 + 40] = b"\x00\xff garbage ] [ {" * 2 + b"\xfe" * 8
    path.write_bytes(bytes(data))
    with pytest.raises(StarError) as caught:
        load_tokenizer(tmp_path)
    message = str(caught.value)
    assert "\n" not in message and str(path) in message


@pytest.fixture(scope="module")
def clip_text(fixtures_dir: Path) -> tuple[list[str], torch.Tensor, torch.Tensor, Path]:
    """The clip-text fixture: prompts, open_clip ids, the reference embedder's context, the tiny tower folder."""
    from safetensors import safe_open

    folder = fixtures_dir / "clip-text"
    with safe_open(folder / "clip_text_tiny.safetensors", framework="pt") as f:
        prompts = json.loads(f.metadata()["prompts"])
        return prompts, f.get_tensor("input.ids"), f.get_tensor("output.context"), folder / "tiny_clip_text"


def test_text_encoder_matches_the_reference_embedder_on_all_positions(clip_text, clip_fixture_dir):
    """Prompts -> our tokens -> TextEncoder (float32, as StarEngine loads it) = FrozenOpenCLIPEmbedder, all 77 positions."""
    prompts, ids, expected, tower = clip_text
    encoder = TextEncoder.from_dirs(tower, clip_fixture_dir, dtype=torch.float32)
    assert torch.equal(tokenize(encoder.tokenizer, prompts), ids)
    torch.testing.assert_close(encoder.encode(prompts), expected, atol=1e-5, rtol=1e-5)
    # why float32: the same tower in float16 is 6.5e-3 away (README of the fixture)
    half = TextEncoder.from_dirs(tower, clip_fixture_dir, dtype=torch.float16).encode(prompts).float()
    assert (half - expected).abs().max() > 1e-3
