"""The Real-ESRGAN + video-codec degradation: each op changes frames, clips are reproducible by seed."""

from __future__ import annotations

import dataclasses
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
import torch
from rich.console import Console

from star_cli.errors import InputError, StarError
from star_cli.testing.media import make_video
from star_cli.train import kernels
from star_cli.train.compress import compress_frames, jpeg, quant_table
from star_cli.train.config import PRESETS, CompressionConfig, StageConfig
from star_cli.train.degrade import (
    degrade_clip,
    gaussian_noise,
    poisson_noise,
    resize,
    run_degrade,
    sample_plan,
    usm_sharpen,
)
from star_cli.video.probe import probe


def _clip(frames: int = 4, height: int = 32, width: int = 48, seed: int = 0) -> torch.Tensor:
    """Smooth gradients plus a few hard edges, in [0, 1]."""
    g = torch.Generator().manual_seed(seed)
    y = torch.linspace(0, 1, height)[:, None]
    x = torch.linspace(0, 1, width)[None, :]
    base = torch.stack([y * x, (1 - y) * x, y * (1 - x)])
    clip = base[None].repeat(frames, 1, 1, 1) * 0.8 + 0.1
    clip[:, :, height // 4: height // 2, width // 4: width // 2] = torch.rand(frames, 3, 1, 1, generator=g)
    return clip


def _changed(a: torch.Tensor, b: torch.Tensor) -> bool:
    return a.shape != b.shape or (a - b).abs().mean().item() > 1e-3


def test_kernels_are_normalised_and_symmetric() -> None:
    for shape, beta in (("gaussian", 1.0), ("generalized", 0.7), ("plateau", 1.5)):
        k = kernels.shaped_kernel(13, 2.0, 0.8, 0.6, shape=shape, beta=beta)
        assert k.sum().item() == pytest.approx(1.0, abs=1e-5)
        assert torch.allclose(k, k.flip(0, 1), atol=1e-7)  # point-symmetric: correlation == convolution
    sinc = kernels.sinc_kernel(21, np.pi / 3)
    assert sinc.sum().item() == pytest.approx(1.0, abs=1e-5) and sinc.min() < 0  # ringing lobes
    stage = StageConfig()
    one = kernels.random_blur_kernel(np.random.default_rng(5), stage)
    assert one.shape == (21, 21) and torch.equal(one, kernels.random_blur_kernel(np.random.default_rng(5), stage))


@pytest.mark.parametrize("op", ["blur", "sinc", "resize", "gaussian", "gaussian_gray", "poisson", "poisson_gray",
                                "jpeg", "usm", "libx264", "mpeg4", "libvpx"])
def test_each_operation_changes_the_frames(op: str) -> None:
    clip = _clip(height=31, width=45)  # odd sizes on purpose
    gen = torch.Generator().manual_seed(0)
    out = {
        "blur": lambda: kernels.filter2d(clip, kernels.pad_kernel(kernels.shaped_kernel(9, 2.0, 2.0, 0.0))),
        "sinc": lambda: kernels.filter2d(clip, kernels.pad_kernel(kernels.sinc_kernel(11, np.pi / 3))),
        "resize": lambda: resize(clip, (20, 30), "bicubic"),
        "gaussian": lambda: gaussian_noise(clip, 10.0, False, gen),
        "gaussian_gray": lambda: gaussian_noise(clip, 10.0, True, gen),
        "poisson": lambda: poisson_noise(clip, 2.0, False, gen),
        "poisson_gray": lambda: poisson_noise(clip, 2.0, True, gen),
        "jpeg": lambda: jpeg(clip, 30),
        "usm": lambda: usm_sharpen(clip),
        "libx264": lambda: compress_frames(clip, "libx264", crf=40),
        "mpeg4": lambda: compress_frames(clip, "mpeg4", bitrate=20_000),
        "libvpx": lambda: compress_frames(clip, "libvpx", crf=50),
    }[op]()
    assert _changed(out, clip)
    if op not in ("blur", "sinc", "resize"):  # linear filters may overshoot; the pipeline clamps after them
        assert out.min() >= 0 and out.max() <= 1
    if op != "resize":
        assert out.shape == clip.shape


def test_grey_noise_is_the_same_in_every_channel() -> None:
    grey = torch.full((2, 3, 16, 16), 0.5)  # mid-grey: 10/255 noise never reaches the clipping limits
    noisy = gaussian_noise(grey, 10.0, True, torch.Generator().manual_seed(1))
    assert torch.equal(noisy[:, 0], noisy[:, 1]) and torch.equal(noisy[:, 1], noisy[:, 2])
    assert _changed(noisy, grey)


def test_jpeg_error_falls_with_quality_and_tables_follow_libjpeg() -> None:
    clip = _clip()
    errors = [(jpeg(clip, q) - clip).abs().mean().item() for q in (20, 60, 95)]
    assert errors[0] > errors[1] > errors[2]
    assert quant_table(torch.tensor([[16.0]]), 50).item() == 16  # quality 50 is the base table
    assert quant_table(torch.tensor([[16.0]]), 100).item() == 1


def test_degradation_is_reproducible_by_seed() -> None:
    clip = _clip(frames=3, height=32, width=48)
    for preset in ("light", "heavy"):
        gt, lq = degrade_clip(clip, PRESETS[preset], seed=11, fps=Fraction(24))
        gt2, lq2 = degrade_clip(clip, PRESETS[preset], seed=11, fps=Fraction(24))
        assert torch.equal(gt, gt2) and torch.equal(lq, lq2)
        assert lq.shape == (3, 3, 8, 12) and gt.shape == clip.shape
    lqs = {degrade_clip(clip, PRESETS["heavy"], seed=s)[1].sum().item() for s in range(4)}
    assert len(lqs) == 4
    a, b = sample_plan(PRESETS["heavy"], 3), sample_plan(PRESETS["heavy"], 3)
    assert a.codec == b.codec and a.stage1.noise == b.stage1.noise and a.noise_seed == b.noise_seed


def test_one_plan_per_clip_degrades_every_frame_alike() -> None:
    """Without noise, a static clip stays static: kernel, resize and JPEG are drawn once per clip."""
    still = _clip(frames=1).repeat(4, 1, 1, 1)
    quiet = dataclasses.replace(StageConfig(), noise_range=(0.0, 0.0), poisson_scale_range=(0.0, 0.0))
    cfg = dataclasses.replace(PRESETS["heavy"], stage1=quiet, stage2=quiet, compression=CompressionConfig(prob=0.0))
    for seed in range(3):
        _, lq = degrade_clip(still, cfg, seed=seed)
        assert (lq - lq[:1]).abs().max().item() == 0.0


def test_star_degrade_writes_decodable_pairs(tmp_path: Path) -> None:
    hr = tmp_path / "hr"
    hr.mkdir()
    make_video(hr / "a.mp4", frames=6, width=64, height=48, seed=1)
    make_video(hr / "b.mkv", frames=5, width=70, height=42, seed=2, audio=False)  # cropped to 64x40
    (hr / "broken.mp4").write_bytes(b"not a video at all")
    (hr / "text").mkdir()
    (hr / "text" / "a.txt").write_text("a red square\n", encoding="utf-8")
    out = tmp_path / "pairs"
    lines = Console(record=True, width=200)
    with pytest.raises(StarError, match=r"1 of 3 videos could not be read and were skipped \(broken.mp4\); the other 2") as error:
        run_degrade(hr, out, preset="light", seed=3, overwrite=False, console=lines)
    assert not isinstance(error.value, InputError)  # exit 1, as `star upscale` ends a folder with a file left out
    printed = " ".join(lines.export_text().split())
    assert "skipped broken.mp4" in printed
    for stem, frames, (w, h) in (("a", 6, (64, 48)), ("b", 5, (64, 40))):
        gt, lq = probe(out / "gt" / f"{stem}.mp4"), probe(out / "lq" / f"{stem}.mp4")
        assert gt.num_frames == lq.num_frames == frames
        assert (gt.width, gt.height) == (w, h) and (lq.width, lq.height) == (w // 4, h // 4)
    assert (out / "text" / "a.txt").read_text(encoding="utf-8") == "a red square\n"
    assert not (out / "text" / "b.txt").exists()
    assert "no caption for 1 video(s) (b.mkv)" in printed
    with pytest.raises(InputError, match="already exists"):
        run_degrade(hr, out, preset="light", seed=3, overwrite=False, console=Console(quiet=True))
    with pytest.raises(InputError, match="unknown degradation preset"):
        run_degrade(hr, out, preset="medium", seed=3, overwrite=True, console=Console(quiet=True))
    (hr / "broken.mp4").unlink()
    assert run_degrade(hr, out, preset="light", seed=3, overwrite=True, console=Console(quiet=True), scale=2) == 2
    lq = probe(out / "lq" / "a.mp4")
    assert (lq.width, lq.height) == (32, 24)


def test_star_degrade_exits_1_naming_an_unreadable_video_like_star_upscale(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from star_cli.cli import app

    hr = tmp_path / "hr"
    hr.mkdir()
    make_video(hr / "a.mp4", frames=3, width=32, height=32, seed=1, audio=False)
    (hr / "c.mp4").write_text("hi\n", encoding="utf-8")
    result = CliRunner().invoke(app, ["degrade", str(hr), str(tmp_path / "pairs"), "--scale", "2"])
    assert result.exit_code == 1, result.output
    last = " ".join(result.output.strip().splitlines()[-1].split())
    assert last.startswith("error:") and "(c.mp4)" in last and "the other 1 were written" in last
    assert probe(tmp_path / "pairs" / "lq" / "a.mp4").width == 16
