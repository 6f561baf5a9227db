"""VAE wrapper: seeded per-frame encoding, grouped temporal decoding, tiled encoding and decoding."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from diffusers import AutoencoderKLTemporalDecoder
from diffusers.models.autoencoders.vae import DiagonalGaussianDistribution

from star_cli.errors import InputError, StarError
from star_cli.models.vae import VideoVAE
from star_cli.testing.weights import TINY_VAE, write_vae


@pytest.fixture(scope="module")
def tiny_vae() -> VideoVAE:
    torch.manual_seed(0)
    return VideoVAE(AutoencoderKLTemporalDecoder(**TINY_VAE))


class CallLog:
    """Wraps a model's `decode` to record the latent shape and num_frames of every call."""

    def __init__(self, model) -> None:
        self.calls: list[tuple[tuple[int, ...], int]] = []
        self._decode = model.decode

    def __call__(self, z, num_frames):
        self.calls.append((tuple(z.shape), num_frames))
        return self._decode(z, num_frames=num_frames)


class EncodeLog:
    """Wraps a model's `encode` to record the pixel shape of every call."""

    def __init__(self, model) -> None:
        self.shapes: list[tuple[int, ...]] = []
        self._encode = model.encode

    def __call__(self, pixels):
        self.shapes.append(tuple(pixels.shape))
        return self._encode(pixels)


class LocalVAE(torch.nn.Module):
    """A stand-in VAE in which each latent depends on its own 8x8 pixels only, and each pixel on its latent.

    Tiled encoding and decoding of such a model must equal whole-frame coding exactly,
    which isolates the tiling and blending arithmetic from the real model's seams.
    """

    def __init__(self) -> None:
        super().__init__()
        self.config = SimpleNamespace(scaling_factor=0.5, block_out_channels=(1, 1, 1, 1), latent_channels=4)
        self.mix = torch.nn.Parameter(torch.randn(3, 4))
        self.encode_mix = torch.nn.Parameter(torch.randn(8, 3))

    @property
    def device(self) -> torch.device:
        return self.mix.device

    @property
    def dtype(self) -> torch.dtype:
        return self.mix.dtype

    def encode(self, pixels):
        parameters = torch.einsum("oc,fchw->fohw", self.encode_mix, F.avg_pool2d(pixels, 8))
        return SimpleNamespace(latent_dist=DiagonalGaussianDistribution(parameters))

    def decode(self, z, num_frames):
        assert z.shape[0] == num_frames
        pixels = torch.tanh(torch.einsum("oc,fchw->fohw", self.mix, z))
        return SimpleNamespace(sample=F.interpolate(pixels, scale_factor=8, mode="nearest"))


@pytest.mark.parametrize("tile", [None, 3, 256])
def test_encode_is_seeded_and_per_frame_and_untiled_when_a_frame_fits(tiny_vae, tile):
    frames = torch.rand(2, 3, 16, 24) * 2 - 1
    latents = tiny_vae.encode(frames, torch.Generator().manual_seed(7), tile=tile, tile_overlap=2)
    assert latents.shape == (2, 4, 2, 3)
    generator = torch.Generator().manual_seed(7)
    with torch.no_grad():
        one_by_one = [tiny_vae.model.encode(frame[None]).latent_dist.sample(generator) for frame in frames]
    assert torch.equal(latents, torch.cat(one_by_one) * 0.18215)
    assert not torch.allclose(latents, tiny_vae.encode(frames, torch.Generator().manual_seed(8)))


def test_tiled_encode_calls_the_encoder_on_tiles_only(tiny_vae, monkeypatch):
    log = EncodeLog(tiny_vae.model)
    monkeypatch.setattr(tiny_vae.model, "encode", log)
    frames = torch.rand(2, 3, 80, 96) * 2 - 1
    latents = tiny_vae.encode(frames, torch.Generator().manual_seed(0), tile=6, tile_overlap=2)
    assert latents.shape == (2, 4, 10, 12) and latents.isfinite().all()
    assert len(log.shapes) == 2 * 2 * 3  # two frames x 2 tile rows x 3 tile columns
    assert max(shape[2] for shape in log.shapes) == 48 and max(shape[3] for shape in log.shapes) == 48
    assert all(shape[0] == 1 for shape in log.shapes)


def test_tiled_encode_equals_whole_frame_encode_for_a_local_encoder(monkeypatch):
    torch.manual_seed(0)
    vae = VideoVAE(LocalVAE())
    frames = torch.rand(2, 3, 163, 237) * 2 - 1  # 20x29 latents, with pixels past the last full latent
    whole = vae.encode(frames, torch.Generator().manual_seed(5), tile=None)
    log = EncodeLog(vae.model)
    monkeypatch.setattr(vae.model, "encode", log)
    tiled = vae.encode(frames, torch.Generator().manual_seed(5), tile=8, tile_overlap=3)
    assert whole.shape == (2, 4, 20, 29)
    torch.testing.assert_close(tiled, whole)
    assert len(log.shapes) == 2 * 4 * 6


def test_tiled_encode_of_the_real_encoder_stays_close_to_whole_frames(tiny_vae):
    # The encoder's mid-block attends over the whole frame, so tiles cannot match exactly.
    # With the same noise, encoding the frame shifted by one latent shows the size of a
    # misplacement; the tiled result must stay well inside it.
    torch.manual_seed(1)
    frames = torch.rand(1, 3, 80, 96) * 2 - 1
    whole = tiny_vae.encode(frames, torch.Generator().manual_seed(3), tile=None)
    tiled = tiny_vae.encode(frames, torch.Generator().manual_seed(3), tile=8, tile_overlap=4)
    shifted = tiny_vae.encode(frames.roll(8, dims=-1), torch.Generator().manual_seed(3), tile=None)
    assert (tiled - whole).abs().mean() < 0.5 * (shifted - whole).abs().mean()


def test_decode_uses_groups_of_three_with_a_short_last_group(tiny_vae, monkeypatch):
    latents = torch.randn(7, 4, 4, 6)
    log = CallLog(tiny_vae.model)
    monkeypatch.setattr(tiny_vae.model, "decode", log)
    frames = tiny_vae.decode(latents)
    assert frames.shape == (7, 3, 32, 48)
    assert [num for _, num in log.calls] == [3, 3, 1]
    with torch.no_grad():
        expected = torch.cat([log._decode(chunk / 0.18215, num_frames=len(chunk)).sample for chunk in latents.split(3)])
    torch.testing.assert_close(frames, expected)


def test_group_size_changes_the_result(tiny_vae):
    latents = torch.randn(4, 4, 4, 6)
    by_three = tiny_vae.decode(latents, group=3)
    by_two = tiny_vae.decode(latents, group=2)
    torch.testing.assert_close(by_three[3:], tiny_vae.decode(latents[3:], group=1))
    assert not torch.allclose(by_three[:2], by_two[:2], atol=1e-5)


def test_iter_decode_yields_one_group_at_a_time(tiny_vae):
    groups = list(tiny_vae.iter_decode(torch.randn(5, 4, 4, 6), group=2))
    assert [len(group) for group in groups] == [2, 2, 1]


def test_tiled_decode_equals_whole_frame_decode_for_a_local_decoder(monkeypatch):
    torch.manual_seed(0)
    vae = VideoVAE(LocalVAE())
    log = CallLog(vae.model)
    monkeypatch.setattr(vae.model, "decode", log)
    latents = torch.randn(4, 4, 20, 29)
    whole = vae.decode(latents, tile=None)
    log.calls.clear()
    tiled = vae.decode(latents, group=3, tile=8, tile_overlap=3)
    torch.testing.assert_close(tiled, whole)
    shapes = [shape for shape, _ in log.calls]
    assert len(shapes) == 2 * 4 * 6  # two frame groups x 4 tile rows x 6 tile columns
    assert max(shape[2] for shape in shapes) == 8 and max(shape[3] for shape in shapes) == 8


def test_tiling_is_skipped_when_a_frame_fits_one_tile(tiny_vae, monkeypatch):
    latents = torch.randn(3, 4, 4, 6)
    log = CallLog(tiny_vae.model)
    monkeypatch.setattr(tiny_vae.model, "decode", log)
    torch.testing.assert_close(tiny_vae.decode(latents, tile=6, tile_overlap=2), tiny_vae.decode(latents, tile=None))
    assert len(log.calls) == 2


def test_tiled_decode_of_the_real_decoder_stays_close_to_whole_frames(tiny_vae):
    # The decoder's mid-block attends over the whole frame, so tiles cannot match exactly;
    # misplaced or unblended tiles would differ by about the signal's own spread.
    torch.manual_seed(1)
    latents = torch.randn(1, 4, 10, 12)
    whole = tiny_vae.decode(latents, tile=None)
    tiled = tiny_vae.decode(latents, tile=6, tile_overlap=2)
    assert tiled.shape == whole.shape == (1, 3, 80, 96)
    assert (tiled - whole).abs().mean() < 0.3 * whole.std()


@pytest.mark.parametrize(("options", "message"), [
    ({"group": 0}, "group"),
    ({"tile": 8, "tile_overlap": 8}, "overlap"),
])
def test_bad_decode_options_are_input_errors(tiny_vae, options, message):
    with pytest.raises(InputError, match=message):
        tiny_vae.decode(torch.randn(1, 4, 4, 4), **options)


def test_bad_encode_tile_overlap_is_an_input_error(tiny_vae):
    with pytest.raises(InputError, match="overlap"):
        tiny_vae.encode(torch.rand(1, 3, 32, 32), tile=2, tile_overlap=2)


def test_from_dir_loads_a_written_folder(tmp_path):
    write_vae(tmp_path / "vae")
    vae = VideoVAE.from_dir(tmp_path / "vae", dtype=torch.float64)
    assert vae.dtype == torch.float64 and vae.spatial_factor == 8 and vae.scaling_factor == pytest.approx(0.18215)
    with pytest.raises(StarError, match="VAE"):
        VideoVAE.from_dir(tmp_path / "missing")


def test_decode_dtype_runs_the_decoder_under_autocast_and_returns_float32(tiny_vae):
    """The reference decodes under CUDA autocast with float32 weights; bfloat16 stands in on the CPU."""
    latents = torch.randn(3, 4, 4, 6, generator=torch.Generator().manual_seed(1))
    exact = tiny_vae.decode(latents)
    low = VideoVAE(tiny_vae.model, decode_dtype=torch.bfloat16).decode(latents)
    assert low.dtype == exact.dtype == torch.float32 and tiny_vae.model.dtype == torch.float32
    assert not torch.equal(low, exact)
    torch.testing.assert_close(low, exact, atol=0.1, rtol=0.1)


def test_encode_draws_posterior_noise_from_the_given_source(tiny_vae):
    frames = torch.rand(2, 3, 32, 32) * 2 - 1
    zeros = tiny_vae.encode(frames, noise=lambda k, mean: torch.zeros_like(mean))
    means = torch.cat([tiny_vae.posterior(frame[None])[0] for frame in frames]) * tiny_vae.scaling_factor
    torch.testing.assert_close(zeros, means)
    seen = []
    tiny_vae.encode(frames, noise=lambda k, mean: seen.append(k) or torch.ones_like(mean))
    assert seen == [0, 1]
