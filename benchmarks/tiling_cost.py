"""What tiling costs in exactness, on the reference pipeline fixture (star-reference/pipeline_tiny).

The reference never tiles: it encodes, denoises and decodes whole 720x1280 canvases.
This runs the fixture's recorded tensors through our VAE and UNet whole (the baseline,
checked against the recording) and tiled, and prints how far tiles move the result
inside the picture (the 80x128 crop the user keeps) and over the whole canvas:

- VAE decode of the first frame group (3 frames) in latent tiles of 64 and 48 (the
  old default was 64, 16 overlap);
- VAE encode (posterior mean) of frame 0 in latent tiles of 64;
- one guided UNet chunk (step 1, frames 2-5, tiny_a) in 2 column tiles of 90x88 latents
  with 16 overlap, against the whole 90x160 latent, plus the FLOP ratio of the tiles.

Values are in the VAE's [-1, 1] (x 127.5 for 8-bit levels) and in latent units for x0.
Usage: python benchmarks/tiling_cost.py [--fixtures ../shared/fixtures] [--skip-unet]
About 3 minutes on 2 CPU cores (the UNet part 2 minutes).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import torch
from diffusers import AutoencoderKLTemporalDecoder
from safetensors import safe_open

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from star_cli.diffusion.guidance import model_x0_fn  # noqa: E402
from star_cli.diffusion.samplers import sample_dpmpp_2m_sde  # noqa: E402
from star_cli.diffusion.tiled import grid_regions, joined_x0_fn  # noqa: E402
from star_cli.models import STARUNet  # noqa: E402
from star_cli.models.vae import VideoVAE  # noqa: E402
from star_cli.pipeline.estimate import flops_per_frame  # noqa: E402

PICTURE = (slice(320, 400), slice(576, 704))  # the 80x128 output inside the 720x1280 canvas
LATENT_PICTURE = (slice(40, 50), slice(72, 88))


def load(fixtures: Path) -> tuple[dict, VideoVAE]:
    with safe_open(fixtures / "star-reference" / "pipeline_tiny.safetensors", framework="pt") as f:
        meta = f.metadata()
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    config = {k: v for k, v in json.loads(meta["vae_config"]).items() if not k.startswith("_")}
    model = AutoencoderKLTemporalDecoder(**config)
    model.load_state_dict({k.removeprefix("vae."): v for k, v in tensors.items() if k.startswith("vae.")})
    return tensors, VideoVAE(model)


def report(name: str, tiled: torch.Tensor, whole: torch.Tensor, picture: tuple[slice, slice]) -> None:
    inside = (tiled[..., picture[0], picture[1]] - whole[..., picture[0], picture[1]]).abs().max().item()
    everywhere = (tiled - whole).abs().max().item()
    print(f"{name:44s} max |tiled - whole|: picture {inside:.3g}, canvas {everywhere:.3g}")


def decode_cost(tensors: dict, vae: VideoVAE) -> None:
    latents = tensors["stage.sampled"][0].permute(1, 0, 2, 3)[:3]
    started = time.perf_counter()
    whole = vae.decode(latents, group=3, tile=None)
    seconds = time.perf_counter() - started
    window = whole[:, :, 288:432, 544:736]
    error = (window - tensors["stage.decoded_window"][:3]).abs().max().item()
    print(f"VAE decode, whole frames (baseline, {seconds:.0f} s): vs the reference {error:.3g}")
    for tile in (64, 48):
        report(f"VAE decode, {tile}-latent tiles (overlap 16)", vae.decode(latents, group=3, tile=tile), whole, PICTURE)


def encode_cost(tensors: dict, vae: VideoVAE) -> None:
    canvas = torch.ones(1, 3, 720, 1280)
    canvas[..., PICTURE[0], PICTURE[1]] = tensors["stage.resized"][0]
    mean, _ = vae.posterior(canvas)
    error = (mean[0] - tensors["stage.posterior_mean"][0]).abs().max().item()
    print(f"VAE encode, whole frame (baseline): posterior mean vs the reference {error:.3g}")
    tiled, _ = vae.posterior(canvas, tile=64)
    report("VAE encode, 64-latent tiles: posterior mean", tiled, mean, LATENT_PICTURE)


def unet_cost(fixtures: Path, tensors: dict) -> None:
    with safe_open(fixtures / "star-reference" / "unet_tiny_a.safetensors", framework="pt") as f:
        config = {k: json.loads(v) for k, v in f.metadata().items() if k != "num_params"}
        weights = {k.removeprefix("weights."): f.get_tensor(k).float() for k in f.keys() if k.startswith("weights.")}
    unet = STARUNet(**config).eval()
    unet.load_state_dict(weights)

    def denoise(x, t, context, hint):
        with torch.no_grad():
            return unet(x, t, context, hint=hint)

    sigmas = tensors["stage.solver_sigmas"].tolist()
    # step 1's input, rebuilt by our solver from the recorded step-0 x0 and SDE noise
    x = sample_dpmpp_2m_sde(
        lambda x, sigma: tensors["stage.x0_step0"],
        tensors["stage.noised_lr"] * sigmas[0],
        sigmas[:2],
        noise_sampler=lambda sigma, sigma_next: tensors["stage.sde_noise.0"],
    )
    frames = slice(2, 6)
    hint = tensors["stage.lr_latent"][:, :, frames]
    x = x[:, :, frames]

    def region_fn(region):
        return model_x0_fn(denoise, tensors["input.y"], tensors["input.y_neg"], region.crop(hint), guide_scale=7.5, guide_rescale=0.2)

    size = tuple(hint.shape[2:])
    started = time.perf_counter()
    whole = joined_x0_fn(grid_regions([(0, 4)], [(0, 90)], [(0, 160)], size), region_fn, size)(x, sigmas[1])
    seconds = time.perf_counter() - started
    error = (whole[:, :, 1:3] - tensors["stage.x0_step1"][:, :, 3:5]).abs().max().item()
    print(f"UNet chunk, whole latent (baseline, {seconds:.0f} s): x0 vs the reference {error:.3g}")
    regions = grid_regions([(0, 4)], [(0, 90)], [(0, 88), (72, 160)], size)
    tiled = joined_x0_fn(regions, region_fn, size)(x, sigmas[1])
    report("UNet chunk, 2 tiles of 90x88 latents: x0", tiled, whole, LATENT_PICTURE)
    ratio = 2 * flops_per_frame(90 * 88) / flops_per_frame(90 * 160)
    print(f"{'':44s} FLOPs of the tiles: {ratio:.2f} x the whole latent's (full-size model estimate)")


def default_fixtures() -> Path | None:
    """$STAR_FIXTURES, else the nearest shared/fixtures above this file (as tests/conftest.py finds it)."""
    if os.environ.get("STAR_FIXTURES"):
        return Path(os.environ["STAR_FIXTURES"])
    return next((p / "shared" / "fixtures" for p in Path(__file__).resolve().parents if (p / "shared" / "fixtures").is_dir()), None)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fixtures", type=Path, default=default_fixtures(), help="the shared/fixtures folder")
    parser.add_argument("--skip-unet", action="store_true")
    args = parser.parse_args()
    if args.fixtures is None:
        parser.error("no shared/fixtures folder found: pass --fixtures or set STAR_FIXTURES")
    torch.set_num_threads(2)
    tensors, vae = load(args.fixtures)
    decode_cost(tensors, vae)
    encode_cost(tensors, vae)
    if not args.skip_unet:
        unet_cost(args.fixtures, tensors)


if __name__ == "__main__":
    main()
