"""From the fixture's raw uint8 frames to uint8 output frames, with the reference's recorded noise.

Preprocess -> VAE encode (sampled posterior) -> 50 steps with dynamic CFG -> grouped
decode -> AdaIN against the LR frames -> truncation to uint8; each stage checked
against the reference's own value of it.
"""

from __future__ import annotations

import pytest
import torch

from star_cli.diffusion.cogvideox import sample_cogvideox
from star_cli.models.cogvideox.frames import to_model_range, to_unit, unit_to_uint8, upscale_uint8
from star_cli.models.cogvideox.vae import decode_latent, encode_video
from star_cli.pipeline.colorfix import adain_color_fix

BOUND = 1e-4
MAX_LEVELS = 1
MAX_FRACTION_OFF = 1e-3


def _max_error(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a - b).abs().max().item()


@pytest.fixture(scope="module")
def chain(tiny_dit, tiny_vae, pipeline_fixture, vae_fixture, sampler_fixture, recorded_noise):
    frames = pipeline_fixture["frames_raw"].permute(0, 3, 1, 2)
    lq = to_model_range(upscale_uint8(frames, 4))
    with torch.no_grad():
        lr_latent = encode_video(tiny_vae, lq.permute(1, 0, 2, 3)[None], noise=vae_fixture["posterior.noise"])
        lr_latent = lr_latent.permute(0, 2, 1, 3, 4)
        final = sample_cogvideox(
            tiny_dit,
            sampler_fixture["init_noise"],
            lr_latent,
            sampler_fixture["context.cond"],
            noise=recorded_noise(),
        )
        decoded = decode_latent(tiny_vae, final.permute(0, 2, 1, 3, 4)).permute(0, 2, 1, 3, 4)
    colorfixed = to_unit(adain_color_fix(decoded[0], to_model_range(frames)))
    return {
        "lr_latent": lr_latent,
        "final_latent": final,
        "decoded": decoded,
        "colorfixed": colorfixed,
        "frames_out": unit_to_uint8(colorfixed.permute(0, 2, 3, 1)),
    }


def test_latents(chain, sampler_fixture):
    assert _max_error(chain["lr_latent"], sampler_fixture["lr_latent"]) < BOUND
    assert _max_error(chain["final_latent"], sampler_fixture["final_latent"]) < BOUND


def test_decoded_and_colour_fixed(chain, pipeline_fixture):
    assert _max_error(chain["decoded"], pipeline_fixture["decoded"]) < BOUND
    assert _max_error(chain["colorfixed"], pipeline_fixture["colorfixed"][0]) < BOUND


def test_output_frames(chain, pipeline_fixture):
    difference = (chain["frames_out"].int() - pipeline_fixture["frames_out"].int()).abs()
    assert difference.max().item() <= MAX_LEVELS
    assert (difference > 0).float().mean().item() <= MAX_FRACTION_OFF


def test_decode_of_the_reference_latent(tiny_vae, pipeline_fixture, sampler_fixture):
    """The pipeline's decode input is (1/0.7) * the sampler's final latent; decoding it gives the reference's frames."""
    latent = sampler_fixture["final_latent"].permute(0, 2, 1, 3, 4)
    assert torch.equal((1.0 / 0.7) * latent, pipeline_fixture["decode_input"])
    with torch.no_grad():
        decoded = decode_latent(tiny_vae, latent).permute(0, 2, 1, 3, 4)
    assert _max_error(decoded, pipeline_fixture["decoded"]) < BOUND
