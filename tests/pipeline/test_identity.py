"""The resume identity: every frame-affecting option by default, exclusions named, differences explained."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from star_cli.pipeline.identity import (
    EXCLUDED_FIELDS,
    file_sample_hash,
    frame_options,
    identity_difference,
    run_identity,
)
from star_cli.pipeline.request import StarSettings, UpscaleRequest, build_request


def request(**changes: object) -> UpscaleRequest:
    options = dict(
        input=Path("in.mp4"), output=Path("out.mp4"), scale=4.0, engine="star", dry_run=False, overwrite=False,
        ignore_errors=False, chunk_len=32, chunk_overlap=None, blend="cosine", canvas="minimal", tile_size=None,
        window_chunks=4, scene_detect=True, checkpoint="light", weights_dir=None, prompt="", prompt_file=None, seed=0,
        steps=15, guidance=7.5, solver="dpmpp_2m_sde", color_fix="adain", device="auto", dtype=None, offload="none",
        vae_group=3, resume=False, codec="auto", crf=None, preset="medium", pix_fmt=None, quiet=False, verbose=False,
    )
    return build_request(**{**options, **changes})


def _dotted_fields(value: object, prefix: str = "") -> set[str]:
    names = set()
    for field in dataclasses.fields(value):
        name = prefix + field.name
        names.add(name)
        if dataclasses.is_dataclass(child := getattr(value, field.name)):
            names |= _dotted_fields(child, f"{name}.")
    return names


def test_every_exclusion_names_a_real_field():
    assert EXCLUDED_FIELDS <= _dotted_fields(request())


@pytest.mark.parametrize(
    ("change", "named"),
    [
        (dict(seed=1), "star.seed"), (dict(prompt="a cat"), "star.prompt"), (dict(steps=20), "star.steps"),
        (dict(guidance=5.0), "star.guidance"), (dict(solver="heun"), "star.solver"), (dict(color_fix="none"), "star.color_fix"),
        (dict(dtype="bf16"), "star.dtype"), (dict(vae_group=2), "star.vae_group"), (dict(scale=2.0), "plan.scale"),
        (dict(chunk_len=40), "plan.chunk_len"), (dict(blend="linear"), "plan.blend"), (dict(tile_size="272x256"), "plan.tile_size"),
        (dict(scene_detect=False), "scene_detect"), (dict(ignore_errors=True), "ignore_errors"),
    ],
)
def test_frame_affecting_options_change_the_identity(change, named):
    before, after = frame_options(request()), frame_options(request(**change))
    assert [k for k in before if before[k] != after[k]] == [named]


@pytest.mark.parametrize(
    "change",
    [dict(resume=True), dict(device="cpu"), dict(offload="model"), dict(codec="ffv1"), dict(crf=30), dict(quiet=True),
     dict(verbose=True), dict(overwrite=True), dict(output=Path("elsewhere.mkv"))],
)
def test_options_that_do_not_change_frames_are_left_out(change):
    assert frame_options(request(**change)) == frame_options(request())


def test_deinterlacing_is_compared_by_the_frames_it_rebuilds_not_the_mode(tmp_path):
    source = tmp_path / "in.mp4"
    source.write_bytes(b"video")
    plan = "a plan"

    def identity(mode: str, rebuilt: str | None) -> dict:
        return run_identity(request(deinterlace=mode), source, plan, None, deinterlace=rebuilt)

    assert identity("auto", None) == identity("off", None)  # a progressive source: the same frames
    changed = identity_difference(identity("off", None), identity("auto", "interlaced"))
    assert changed is not None and "--deinterlace" in changed


def test_a_new_option_is_covered_without_touching_the_identity_code():
    @dataclasses.dataclass(frozen=True)
    class LaterSettings(StarSettings):
        model: str = "star"  # e.g. a --model option added by another issue

    base = request()
    later = dataclasses.replace(base, star=LaterSettings(**dataclasses.asdict(base.star)))
    changed = dataclasses.replace(later, star=dataclasses.replace(later.star, model="cogvideox"))
    assert frame_options(later)["star.model"] != frame_options(changed)["star.model"]


def test_differences_are_explained_part_by_part():
    stored = {"version": "0.1", "input": {"size": "1"}, "options": {"star.seed": "0", "plan.chunk_len": "32"},
              "plan": "a", "weights": {"vae/x": "1", "star/y": "2"}}
    assert identity_difference(stored, stored) is None
    current = {**stored, "options": {"star.seed": "1", "plan.chunk_len": "16"}, "plan": "b", "weights": {"vae/x": "1", "star/y": "3"}}
    assert identity_difference(stored, current) == "options differ (--chunk-len, --seed); the plan differs; the weights differ (star/y)"
    assert identity_difference({**stored, "version": "0.0"}, stored) == "it was made by star 0.0, this is 0.1"
    assert identity_difference("garbage", stored) == "it was made by another star version"


def test_a_checkpoint_is_identified_by_size_mtime_and_sampled_bytes(tmp_path):
    path = tmp_path / "ckpt.safetensors"
    path.write_bytes(bytes(range(256)) * 40_000)
    first = file_sample_hash(path)
    data = bytearray(path.read_bytes())
    data[0] ^= 1  # the header
    path.write_bytes(bytes(data))
    assert file_sample_hash(path) != first
