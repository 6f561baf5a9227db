"""diffusers' CogVideoX VAE used as the reference uses it: whole-clip encode, sampled posterior, grouped decode."""

from __future__ import annotations

import torch

from star_cli.models.cogvideox.vae import (
    convert_sat_vae_state_dict,
    decode_latent,
    encode_posterior,
    encode_video,
    sat_vae_key,
)

VAE_BOUND = 1e-4  # fixture README section 6


def _max_error(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a - b).abs().max().item()


def test_whole_clip_posterior_and_its_scaled_sample(tiny_vae, vae_fixture, sampler_fixture):
    with torch.no_grad():
        mean, logvar = encode_posterior(tiny_vae, vae_fixture["video"])
        latent = encode_video(tiny_vae, vae_fixture["video"], noise=vae_fixture["posterior.noise"])
    assert _max_error(mean, vae_fixture["posterior.mean"]) < VAE_BOUND
    assert _max_error(logvar, vae_fixture["posterior.logvar"]) < VAE_BOUND
    assert tiny_vae.num_sample_frames_batch_size == 8  # diffusers' default is left as it was
    assert _max_error(latent, vae_fixture["latent_scaled"]) < VAE_BOUND
    assert _max_error(latent.permute(0, 2, 1, 3, 4), sampler_fixture["lr_latent"]) < VAE_BOUND


def test_generator_draws_the_posterior_noise(tiny_vae, vae_fixture):
    video = vae_fixture["video"][:, :, :5, :16, :24]
    with torch.no_grad():
        a = encode_video(tiny_vae, video, generator=torch.Generator().manual_seed(3))
        b = encode_video(tiny_vae, video, generator=torch.Generator().manual_seed(3))
        c = encode_video(tiny_vae, video, generator=torch.Generator().manual_seed(4))
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_grouped_decode(tiny_vae, vae_fixture):
    with torch.no_grad():
        decoded = decode_latent(tiny_vae, vae_fixture["latent_scaled"])
    assert decoded.shape == vae_fixture["decoded"].shape
    assert _max_error(decoded, vae_fixture["decoded"]) < VAE_BOUND


def test_sat_key_mapping(vae_fixture):
    assert sat_vae_key("loss.discriminator.main.0.weight") is None
    decoder_key = "decoder.up.0.block.1.norm1.conv_y.conv.weight"
    assert sat_vae_key(decoder_key) == "decoder.up_blocks.3.resnets.1.norm1.conv_y.conv.weight"
    assert sat_vae_key("encoder.mid.block_2.nin_shortcut.weight") == "encoder.mid_block.resnets.1.conv_shortcut.weight"
    assert sat_vae_key("encoder.down.2.downsample.conv.weight") == "encoder.down_blocks.2.downsamplers.0.conv.weight"
    sat = {k: v for k, v in vae_fixture.items() if k.startswith(("encoder.", "decoder."))}
    assert len(dict(convert_sat_vae_state_dict({**sat, "loss.logvar": torch.zeros(1)}))) == len(sat) == 244
