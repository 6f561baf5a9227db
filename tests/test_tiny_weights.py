"""The tiny weights folder: real layout, loadable by every loader, every path live."""

from __future__ import annotations

import json

import pytest
import torch

from star_cli.errors import InputError
from star_cli.hub.layout import check_weights_dir
from star_cli.models.loading import load_star_unet
from star_cli.models.text import TextEncoder, load_tokenizer, tokenize
from star_cli.models.vae import VideoVAE
from star_cli.testing import make_tiny_weights
from star_cli.testing.__main__ import main
from star_cli.testing.weights import TEXT_HIDDEN, tiny_vocabulary


@pytest.fixture(scope="module")
def tiny_root(tmp_path_factory):
    return make_tiny_weights(tmp_path_factory.mktemp("weights") / "tiny")


def test_layout_is_complete_and_verified_by_the_manifest(tiny_root):
    paths = check_weights_dir(tiny_root, "light", verify=True)
    assert paths.star == tiny_root / "star" / "light_deg.safetensors"
    manifest = json.loads((tiny_root / "manifest.json").read_text())
    assert set(manifest["files"]) == {
        "star/light_deg.safetensors",
        "vae/config.json", "vae/diffusion_pytorch_model.safetensors",
        "text_encoder/config.json", "text_encoder/model.safetensors",
        "tokenizer/vocab.json", "tokenizer/merges.txt",
        "tokenizer/tokenizer_config.json", "tokenizer/special_tokens_map.json",
    }


def test_tokenizer_is_a_real_cut_down_clip_bpe(tiny_root):
    tokenizer = load_tokenizer(tiny_root / "tokenizer")
    vocab, merges = tiny_vocabulary()
    assert vocab["!"] == 0 and vocab["!</w>"] == 256 and len(merges) == 48
    ids = tokenize(tokenizer, "The thing!")[0].tolist()
    expected = ["<|startoftext|>", "the</w>", "th", "ing</w>", "!</w>", "<|endoftext|>"]
    assert ids[:7] == [vocab[token] for token in expected] + [0]


def test_every_part_loads_and_the_control_path_is_live(tiny_root):
    paths = check_weights_dir(tiny_root, "light")
    text = TextEncoder.from_dirs(paths.text_encoder_dir, paths.tokenizer_dir)
    positive, _ = text.contexts("a good video")
    assert positive.shape == (1, 77, TEXT_HIDDEN)
    vae = VideoVAE.from_dir(paths.vae_dir)
    lr = torch.rand(2, 3, 80, 64) * 2 - 1
    hint = vae.encode(lr, torch.Generator().manual_seed(0)).permute(1, 0, 2, 3)[None]
    assert hint.shape == (1, 4, 2, 10, 8)
    unet = load_star_unet(paths.star, dtype=torch.float32, device="cpu").eval()
    x, t = torch.randn_like(hint), torch.tensor([500])
    with torch.no_grad():
        v = unet(x, t, positive, hint)
        v_other_hint = unet(x, t, positive, hint.flip(-1))
    assert v.shape == x.shape and torch.isfinite(v).all()
    assert not torch.allclose(v, v_other_hint, atol=1e-4)
    frames = vae.decode(v[0].permute(1, 0, 2, 3))
    assert frames.shape == (2, 3, 80, 64)


def test_same_seed_same_files_other_seed_other_files(tiny_root, tmp_path):
    again = make_tiny_weights(tmp_path / "again")
    other = make_tiny_weights(tmp_path / "other", seed=1)
    def contents(root):  # size and sha256 of each file (mtimes are when they were written)
        return {rel: (r["size"], r["sha256"]) for rel, r in json.loads((root / "manifest.json").read_text())["files"].items()}

    files = contents(tiny_root)
    assert contents(again) == files
    assert contents(other)["star/light_deg.safetensors"] != files["star/light_deg.safetensors"]


def test_unknown_variant_is_an_input_error(tmp_path):
    with pytest.raises(InputError, match="light"):
        make_tiny_weights(tmp_path, variants=("medium",))


def test_command_line_writes_both_variants(tmp_path, capsys):
    assert main(["tiny-weights", str(tmp_path / "cli"), "--variant", "all"]) == 0
    assert capsys.readouterr().out.strip() == str(tmp_path / "cli")
    check_weights_dir(tmp_path / "cli", "heavy", verify=True)
    check_weights_dir(tmp_path / "cli", "light")
