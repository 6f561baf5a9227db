"""`--tile-size auto`: exact whole frames whenever they fit, the largest tiles that fit otherwise.

Tiles are a memory fallback, never free: each UNet tile normalises and attends on its
own (and costs FLOPs in its overlaps), each VAE tile has its own GroupNorm statistics
(on the reference pipeline fixture a 64-latent decode tiling moves pixels by up to 0.22
of [-1, 1]). The reference never tiles. So the rule, in one place:

1. The memory that bounds the run is the free accelerator memory, or on the CPU the
   host memory the OS says is available; only MEMORY_FRACTION of it is planned for
   (allocator caching, fragmentation, the estimate's own error). Where no figure
   exists, nothing is tiled (a run that then does not fit fails like any other).
2. The UNet tile is the largest one (whole canvas first) whose estimated peak fits.
3. Then the VAE decode tile, then the encode tile, the same way (whole frame first).
   If even the smallest candidate does not fit, the smallest is planned and the
   memory check refuses the run with its usual one-line advice.

The estimate (star_cli.pipeline.estimate) is the only judge of "fits".
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace

from star_cli.families import DEFAULT_MODEL, get_family
from star_cli.pipeline.estimate import GiB, Estimate, Offload, flops_per_frame
from star_cli.pipeline.plan import REFERENCE_CANVAS, Canvas, Plan, PlanOptions, make_plan
from star_cli.pipeline.plan_rules import AUTO_TILES, VAE_FACTOR, valid_latent_height, valid_latent_width

MEMORY_FRACTION = 0.9
"""Share of the free memory a plan may use: the rest absorbs allocator caching and estimate error."""

VAE_TILE_CANDIDATES = (256, 192, 128, 96, 64, 48)
"""Latent sizes tried for VAE tiles after the whole frame, largest first (all > 2 x VAE_TILE_OVERLAP)."""


@dataclass(frozen=True)
class MemoryBudget:
    """What a run may use, and how it runs (the estimate depends on both)."""

    device_free: int | None  # free accelerator memory; None: the run is on the CPU (or the backend does not say)
    host_available: int | None  # None: the OS does not say
    dtype_bytes: int = 2
    offload: Offload = "none"
    vae_group: int = 3
    model_params: int | None = None
    model: str = DEFAULT_MODEL  # the family whose estimate the plan is checked against

    @property
    def limit(self) -> int | None:
        """Bytes a plan may need: MEMORY_FRACTION of the bounding memory (None: unknown)."""
        bound = self.device_free if self.device_free is not None else self.host_available
        return None if bound is None else int(bound * MEMORY_FRACTION)

    @property
    def memory_name(self) -> str:
        return "GPU memory free" if self.device_free is not None else "host memory available"

    def estimate(self, plan: Plan) -> Estimate:
        family = get_family(self.model)
        return family.estimate(
            plan, dtype_bytes=self.dtype_bytes, offload=self.offload, vae_group=self.vae_group, model_params=self.model_params
        )

    def need(self, plan: Plan) -> int:
        """The plan's peak in the bounding memory (on the CPU everything lives in host memory)."""
        est = self.estimate(plan)
        if self.device_free is not None:
            return est.device_bytes
        return est.host_bytes + est.device_bytes - min(est.offloaded_bytes, est.weights_bytes)


def unet_tile_candidates(canvas: Canvas, overlap_px: int) -> Iterator[tuple[int, int] | None]:
    """None (the whole canvas), then valid tile sizes in pixels, largest area first.

    For every grid of r x c tiles, the smallest valid tile that covers the canvas with
    the overlap; sizes that cannot hold two overlaps are skipped.
    """
    height, width = canvas.latent_height, canvas.latent_width
    overlap = overlap_px // VAE_FACTOR
    sizes = set()
    for rows in range(1, height // max(overlap, 1) + 2):
        tile_h = valid_latent_height(-(-(height + (rows - 1) * overlap) // rows))
        for cols in range(1, width // max(overlap, 1) + 2):
            tile_w = valid_latent_width(-(-(width + (cols - 1) * overlap) // cols))
            if (rows, cols) != (1, 1) and min(tile_h, tile_w) > 2 * overlap and (tile_h < height or tile_w < width):
                sizes.add((min(tile_h, valid_latent_height(height)), min(tile_w, width)))
    yield None
    for tile_h, tile_w in sorted(sizes, key=lambda s: (-s[0] * s[1], -s[0])):
        yield tile_h * VAE_FACTOR, tile_w * VAE_FACTOR


def _vae_candidates(canvas: Canvas) -> list[int | None]:
    longest = max(canvas.latent_height, canvas.latent_width)
    return [None, *(t for t in VAE_TILE_CANDIDATES if t < longest)]


def _first_fitting(
    options: Sequence[PlanOptions], build: Callable[[PlanOptions], Plan], budget: MemoryBudget, limit: int
) -> tuple[Plan, bool]:
    """The first plan built from `options` (never empty) that fits `limit`, else the last one (and False)."""
    for plan in map(build, options):
        if budget.need(plan) <= limit:
            return plan, True
    return plan, False


def _tile_text(tile: int | None) -> str:
    return "whole frames" if tile is None else f"{tile * VAE_FACTOR} px tiles"


def _flops_note(whole: Plan, chosen: Plan) -> str:
    """Per-frame UNet FLOPs of the chosen tiles against the whole canvas, or the whole canvas against 720x1280 tiles."""

    def per_frame(plan: Plan) -> float:
        return sum(flops_per_frame(t.height * t.width) for t in plan.tiles)

    if len(chosen.tiles) > 1:
        return f"tiles cost {per_frame(chosen) / per_frame(whole):.2f}x the whole canvas's UNet FLOPs"
    fixed = make_plan(1, *whole.input_size, replace(whole.options, tile_size=REFERENCE_CANVAS))
    if len(fixed.tiles) == 1:
        return ""
    ratio = per_frame(whole) / per_frame(fixed)
    return f"the whole canvas costs {ratio:.2f}x the UNet FLOPs of {REFERENCE_CANVAS[1]}x{REFERENCE_CANVAS[0]} tiles"


TILE_FIELDS = ("tile_size", "vae_tile", "vae_encode_tile")


def tile_choice(options: PlanOptions) -> dict[str, object]:
    """The tile fields of a planned run's options (what `--resume` restores under 'auto'); JSON keeps tuples as lists."""
    return {name: getattr(options, name) for name in TILE_FIELDS}


def restore_tiles(options: PlanOptions, choice: object) -> PlanOptions | None:
    """`options` with an interrupted run's `tile_choice` in place of 'auto'; None if not 'auto' or `choice` is malformed.

    Free memory may differ when a run resumes, and 'auto' would then plan other tiles
    (other frames): the stored choice keeps the run's plan, as its windows need.
    """
    if options.tile_size != AUTO_TILES or not isinstance(choice, dict) or set(choice) != set(TILE_FIELDS):
        return None
    tile, vae, encode = (choice[name] for name in TILE_FIELDS)
    whole_or_pair = tile is None or (isinstance(tile, list) and len(tile) == 2 and all(type(v) is int and v > 0 for v in tile))
    if not whole_or_pair or any(v is not None and (type(v) is not int or v <= 0) for v in (vae, encode)):
        return None
    return replace(options, tile_size=None if tile is None else tuple(tile), vae_tile=vae, vae_encode_tile=encode)


def plan_tiles(
    num_frames: int,
    height: int,
    width: int,
    options: PlanOptions,
    budget: MemoryBudget,
    scene_cuts: Sequence[int] = (),
) -> Plan:
    """`make_plan`, with `tile_size='auto'` resolved against `budget` (see the module doc).

    A fixed `tile_size` or `None` is planned as given. The returned plan's `tiling` says
    what was decided and why.
    """
    if options.tile_size != AUTO_TILES:
        return make_plan(num_frames, height, width, options, scene_cuts)

    def build(option: PlanOptions) -> Plan:
        return make_plan(num_frames, height, width, option, scene_cuts)

    whole = build(replace(options, tile_size=None, vae_tile=None, vae_encode_tile=None))
    limit = budget.limit
    if limit is None:
        return replace(whole, tiling="whole frames: no memory figure to plan against")
    smallest_vae = VAE_TILE_CANDIDATES[-1]
    small_vae = replace(whole.options, vae_tile=smallest_vae, vae_encode_tile=smallest_vae)
    unet_options = [replace(small_vae, tile_size=t) for t in unet_tile_candidates(whole.canvas, options.tile_overlap)]
    unet_plan, unet_fits = _first_fitting(unet_options, build, budget, limit)
    unet_tile = unet_plan.options.tile_size
    decode_options = [replace(small_vae, tile_size=unet_tile, vae_tile=t) for t in _vae_candidates(whole.canvas)]
    decode_plan, _ = _first_fitting(decode_options, build, budget, limit)
    encode_options = [replace(decode_plan.options, vae_encode_tile=t) for t in _vae_candidates(whole.canvas)]
    plan, fits = _first_fitting(encode_options, build, budget, limit)
    o = plan.options
    exact = unet_tile is None and o.vae_tile is None and o.vae_encode_tile is None
    need = f"needs about {budget.need(plan) / GiB:.1f} of {limit / GiB:.1f} GiB ({MEMORY_FRACTION:.0%} of {budget.memory_name})"
    if exact:
        reason = f"whole canvas and whole VAE frames (exact): {need}"
    else:
        whole_need = budget.need(whole) / GiB
        reason = (
            f"tiled because whole frames would need about {whole_need:.1f} GiB: UNet "
            f"{'whole canvas' if unet_tile is None else f'{unet_tile[1]}x{unet_tile[0]} px tiles'}, "
            f"VAE decode in {_tile_text(o.vae_tile)}, encode in {_tile_text(o.vae_encode_tile)}; {need}"
        )
    if not (fits and unet_fits):
        reason += "; even the smallest tiles do not fit"
    note = _flops_note(whole, plan)
    return replace(plan, tiling=f"{reason}; {note}" if note else reason)
