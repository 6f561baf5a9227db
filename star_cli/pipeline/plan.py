"""The plan: what the UNet sees, pass by pass, for one video. Plain data, no tensors, no weights.

A video is split into shots at scene cuts; each shot into temporal chunks (the UNet's
frame batches) grouped into windows (what the engine holds and denoises at once); each
frame is resized to the output size, padded to a canvas the UNet accepts, and the
canvas's latent grid is split into spatial tiles when it exceeds the tile size. Every
overlap carries blend weights (see `star_cli.spans`). ``star upscale --dry-run`` prints this.

The denoiser's accepted sizes come in as `PlanOptions.grid` (`star_cli.pipeline.grid`):
the UNet's rule by default; the CogVideoX DiT's tiles and chunks are exactly its
native frame and clip instead (the canvas is padded up to the frame). What each option
may be, and the UNet's size rule with its derivation: `star_cli.pipeline.plan_rules`.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

from star_cli.errors import InputError
from star_cli.pipeline.grid import UNET_GRID, ModelGrid
from star_cli.pipeline.plan_rules import AUTO_TILES, VAE_FACTOR, CanvasPolicy, TileSize, as_given, check_options
from star_cli.spans import BlendMode, balanced_spans, reference_spans, span_weights

REFERENCE_CANVAS = (720, 1280)  # STAR's pad_to_fit "BEST_H, BEST_W"
REFERENCE_PAD_VALUE = 1.0  # in [-1, 1]: white
MIN_OUTPUT_SIDE = 16
"""A downscale (--scale below 1) may not make a side shorter than this many pixels."""


@dataclass(frozen=True)
class PlanOptions:
    """How to cut a video into UNet passes. Sizes of tiles are in output pixels (height, width).

    Defaults, and why (the reference's policy is `PlanOptions.reference()`):
    - chunk_len 32: the reference's max_chunk_len. Soft blends plan the fewest equal
      chunks of at most chunk_len frames (memory is bounded by it); 'cut' follows the
      reference's rule exactly, whose last chunk may reach 1.25 x chunk_len.
    - chunk_overlap 8 (reference 16): chunks are joined at every sampling step, so the
      overlap only carries a cross-fade between estimates that are already pulled
      together, not a repair of independent results. 8 frames (1/3 s at 24 fps) is a
      smooth fade; 16 makes every frame cost 2x (32/16), 8 costs 1.33x (32/24). On 100
      frames of 426x240 at x4: 124 frame-evaluations instead of 164 (0.76).
    - blend 'cosine': zero-slope ends, no visible kink where a fade starts.
    - canvas 'minimal': pad to the smallest valid size by edge replication (the reference
      pads with white to 720x1280, which can double the work on small targets and puts a
      hard white edge beside the picture).
    - tile_size 'auto': the whole canvas, as the reference, unless memory forces tiles
      (star_cli.pipeline.tiling: tiles change the result). A fixed size gives the fewest
      tiles of at most that size, each shrunk to the smallest valid covering size.
    - vae_tile, vae_encode_tile None: whole VAE frames (latent sizes when 'auto' tiles).
    - tile_overlap 128 px (16 latent px): two cells of the UNet's coarsest level, a
      feathered seam wide enough for per-step joins (MultiDiffusion-style).
    - window_chunks 4: the engine holds at most ~4 chunks of frames (<= 104 frames at
      the defaults) at output size; 3 of every 4 chunk joins happen inside the per-step
      joint denoising, only window seams are cross-faded after decoding.
    - model_steps 14: 'fast' DPM-Solver++(2M) SDE with 15 steps drops its penultimate
      sigma; guidance_branches 2: classifier-free guidance (conditional + unconditional).
    - grid: the sizes the denoiser accepts (`star_cli.pipeline.grid`); the model family
      sets it, with its own defaults for the fields above.
    """

    scale: float = 4.0
    chunk_len: int = 32
    chunk_overlap: int = 8
    blend: BlendMode = "cosine"
    canvas: CanvasPolicy = "minimal"
    tile_size: TileSize = AUTO_TILES
    tile_overlap: int = 128
    tile_blend: BlendMode = "cosine"
    window_chunks: int | None = 4
    model_steps: int = 14
    guidance_branches: int = 2
    grid: ModelGrid = UNET_GRID
    vae_tile: int | None = None
    vae_encode_tile: int | None = None

    def __post_init__(self) -> None:
        check_options(self)

    @classmethod
    def reference(cls, scale: float = 4.0) -> PlanOptions:
        """The reference's policy: 720x1280 white canvas, chunks of 32 with 16 overlap, hard cuts, no tiles."""
        return cls(
            scale=scale, chunk_overlap=16, blend="cut", canvas="reference", tile_size=None, window_chunks=None
        )


@dataclass(frozen=True)
class Chunk:
    """Frames [start, end) denoised in one UNet pass; `weights[i]` is frame start+i's share of the join."""

    start: int
    end: int
    weights: tuple[float, ...]

    @property
    def length(self) -> int:
        return self.end - self.start


@dataclass(frozen=True)
class Tile:
    """A rectangle of the latent canvas (latent units) with separable feather weights."""

    top: int
    left: int
    height: int
    width: int
    row_weights: tuple[float, ...]
    col_weights: tuple[float, ...]


@dataclass(frozen=True)
class Window:
    """Whole chunks of one shot held and denoised together; `weights` cross-fade decoded windows."""

    start: int
    end: int
    chunks: tuple[Chunk, ...]
    weights: tuple[float, ...]

    @property
    def length(self) -> int:
        return self.end - self.start


@dataclass(frozen=True)
class Padding:
    """Pixels added around the resized frame; `mode` is a torch.nn.functional.pad mode."""

    top: int
    bottom: int
    left: int
    right: int
    mode: Literal["constant", "replicate"]
    value: float = 0.0

    @property
    def torch_pad(self) -> tuple[int, int, int, int]:
        """The (left, right, top, bottom) argument of torch.nn.functional.pad."""
        return (self.left, self.right, self.top, self.bottom)


@dataclass(frozen=True)
class Canvas:
    """The padded frame the VAE and UNet see, in pixels."""

    height: int
    width: int
    padding: Padding

    @property
    def latent_height(self) -> int:
        return self.height // VAE_FACTOR

    @property
    def latent_width(self) -> int:
        return self.width // VAE_FACTOR


@dataclass(frozen=True)
class Plan:
    """Everything the engine needs to know about how to cut one video; see the module doc."""

    options: PlanOptions
    num_frames: int
    input_size: tuple[int, int]  # (height, width) of the source frames
    output_size: tuple[int, int]  # (height, width) written
    canvas: Canvas
    scene_cuts: tuple[int, ...]
    shots: tuple[tuple[int, int], ...]
    windows: tuple[Window, ...]
    tiles: tuple[Tile, ...]
    tiling: str = ""  # why the canvas is (not) tiled, when memory decided it (--dry-run shows it)

    @property
    def chunks(self) -> tuple[Chunk, ...]:
        return tuple(c for w in self.windows for c in w.chunks)

    @property
    def frame_evaluations(self) -> int:
        """Frames fed to the UNet per sampling step and guidance branch (tiles not counted)."""
        return sum(c.length for c in self.chunks)

    @property
    def region_counts(self) -> Counter[tuple[int, int, int]]:
        """(frames, latent height, latent width) -> how many chunk x tile regions of a step have that shape."""
        return Counter((c.length, t.height, t.width) for c in self.chunks for t in self.tiles)

    @property
    def unet_evaluations(self) -> int:
        """UNet forward passes: chunks x tiles x model steps x guidance branches."""
        o = self.options
        return len(self.chunks) * len(self.tiles) * o.model_steps * o.guidance_branches

    @property
    def processed_pixel_frames(self) -> int:
        """Canvas pixel-frames fed to the UNet per sampling step and branch (tile overlaps included)."""
        tile_pixels = sum(t.height * t.width for t in self.tiles) * VAE_FACTOR**2
        return self.frame_evaluations * tile_pixels

    @property
    def output_pixel_frames(self) -> int:
        return self.num_frames * self.output_size[0] * self.output_size[1]

    @property
    def work_ratio(self) -> float:
        """processed / output pixel-frames: the price of padding and overlaps (1.0 = none)."""
        return self.processed_pixel_frames / self.output_pixel_frames


def output_size(height: int, width: int, scale: float) -> tuple[int, int]:
    """scale x size, rounded half up; exact for integer scales (321x241 x3 -> 963x723)."""
    return (max(1, math.floor(height * scale + 0.5)), max(1, math.floor(width * scale + 0.5)))


def _reference_pad(size: int, best: int, offset: int) -> tuple[int, int]:
    """STAR's pad_to_fit along one axis: centre on `best`, or extend past it to its grid."""
    if size < best:
        before = (best - size) // 2
        return before, best - size - before
    if size == best:
        return 0, 0
    return 0, (size + offset) // 64 * 64 + 64 - offset - size


def reference_canvas(height: int, width: int) -> Canvas:
    """The reference's canvas: white padding to at least 720x1280 (e.g. 960x1704 -> 976x1728)."""
    top, bottom = _reference_pad(height, REFERENCE_CANVAS[0], 48)
    left, right = _reference_pad(width, REFERENCE_CANVAS[1], 0)
    pad = Padding(top, bottom, left, right, "constant", REFERENCE_PAD_VALUE)
    return Canvas(height + top + bottom, width + left + right, pad)


def minimal_canvas(height: int, width: int, grid: ModelGrid = UNET_GRID, least: tuple[int, int] = (0, 0)) -> Canvas:
    """The smallest valid canvas of at least `least` pixels, padded at the bottom and right by edge replication.

    Bottom/right keeps the picture at the canvas origin, so cropping the output is a
    plain slice; replicated edges continue the picture instead of adding a white border
    that the model would try to restore.
    """
    canvas_h = max(least[0], VAE_FACTOR * grid.fit_height(-(-height // VAE_FACTOR)))
    canvas_w = max(least[1], VAE_FACTOR * grid.fit_width(-(-width // VAE_FACTOR)))
    return Canvas(canvas_h, canvas_w, Padding(0, canvas_h - height, 0, canvas_w - width, "replicate"))


def _shots(num_frames: int, scene_cuts: Sequence[int]) -> list[tuple[int, int]]:
    cuts = sorted({int(c) for c in scene_cuts} - {0})
    if cuts and not 0 < cuts[0] <= cuts[-1] < num_frames:
        raise ValueError(f"scene cuts must lie in [0, {num_frames}), got {cuts}")
    bounds = [0, *cuts, num_frames]
    return list(zip(bounds, bounds[1:]))


def _groups(count: int, per_group: int | None) -> list[tuple[int, int]]:
    """Split `count` items into the fewest runs of at most `per_group`, sizes differing by <= 1."""
    n = 1 if per_group is None else -(-count // per_group)
    base, extra = divmod(count, n)
    bounds = np.cumsum([0] + [base + (i < extra) for i in range(n)])
    return list(zip(bounds[:-1].tolist(), bounds[1:].tolist()))


def _shot_windows(shot: tuple[int, int], o: PlanOptions) -> list[Window]:
    start, end = shot
    if o.grid.exact_chunks:  # chunks of exactly chunk_len (a shorter shot is one short chunk)
        local = balanced_spans(end - start, o.chunk_len, o.chunk_overlap, lambda _: o.chunk_len)
    elif o.blend == "cut":
        local = reference_spans(end - start, o.chunk_len, o.chunk_overlap)
    else:
        local = balanced_spans(end - start, o.chunk_len, o.chunk_overlap)
    spans = [(start + s, start + e) for s, e in local]
    groups = [spans[a:b] for a, b in _groups(len(spans), o.window_chunks)]
    window_spans = [(g[0][0], g[-1][1]) for g in groups]
    windows = []
    for group, (w_start, w_end), w_weights in zip(groups, window_spans, span_weights(window_spans, o.blend)):
        chunks = tuple(
            Chunk(s, e, tuple(weights.tolist())) for (s, e), weights in zip(group, span_weights(group, o.blend))
        )
        windows.append(Window(w_start, w_end, chunks, tuple(w_weights.tolist())))
    return windows


def _tiles(canvas: Canvas, o: PlanOptions) -> tuple[Tile, ...]:
    fixed = o.tile_size not in (None, AUTO_TILES)
    tile_h, tile_w = (s // VAE_FACTOR for s in o.tile_size) if fixed else (None, None)
    overlap = o.tile_overlap // VAE_FACTOR
    fit_h, fit_w = (lambda _: tile_h, lambda _: tile_w) if o.grid.exact_tiles else (o.grid.fit_height, o.grid.fit_width)
    rows = balanced_spans(canvas.latent_height, tile_h, overlap, fit_h)
    cols = balanced_spans(canvas.latent_width, tile_w, overlap, fit_w)
    row_w, col_w = span_weights(rows, o.tile_blend), span_weights(cols, o.tile_blend)
    return tuple(
        Tile(r0, c0, r1 - r0, c1 - c0, tuple(rw.tolist()), tuple(cw.tolist()))
        for (r0, r1), rw in zip(rows, row_w)
        for (c0, c1), cw in zip(cols, col_w)
    )


def make_plan(
    num_frames: int, height: int, width: int, options: PlanOptions, scene_cuts: Sequence[int] = ()
) -> Plan:
    """Plan the upscale of `num_frames` frames of `height` x `width` (cuts: first frames of new shots)."""
    if num_frames < 1 or height < 1 or width < 1:
        raise InputError(f"nothing to upscale: {num_frames} frames of {width}x{height}")
    out_h, out_w = output_size(height, width, options.scale)
    if options.scale < 1 and min(out_h, out_w) < MIN_OUTPUT_SIDE:
        raise InputError(
            f"--scale {as_given(options.scale)} would make a {out_w}x{out_h} video from {width}x{height}: "
            f"a downscale must keep every side at least {MIN_OUTPUT_SIDE} px"
        )
    least = options.tile_size if options.grid.exact_tiles and options.tile_size else (0, 0)
    if options.canvas == "reference":
        canvas = reference_canvas(out_h, out_w)
    else:
        canvas = minimal_canvas(out_h, out_w, options.grid, least)
    shots = _shots(num_frames, scene_cuts)
    windows = tuple(w for shot in shots for w in _shot_windows(shot, options))
    return Plan(
        options=options,
        num_frames=num_frames,
        input_size=(height, width),
        output_size=(out_h, out_w),
        canvas=canvas,
        scene_cuts=tuple(s for s, _ in shots[1:]),
        shots=tuple(shots),
        windows=windows,
        tiles=_tiles(canvas, options),
    )
