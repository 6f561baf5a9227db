"""`star upscale` on a terminal: the request from the options, the plans shown, progress as a bar or log lines.

The work itself is `pipeline.prepare.prepare` + `pipeline.upscale.execute`, the same
two calls the Python API makes; this module only adds what a terminal user gets:
`--dry-run` and `--verbose` plan tables, the offer to download missing weights, the
report, and the launch of one worker per device (`--gpus`/`--devices`) or a launched
rank's part.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

from rich.console import Console

from star_cli.hub.layout import WeightsPaths
from star_cli.pipeline.ranks import Ranks
from star_cli.pipeline.request import StarSettings, UpscaleRequest
from star_cli.report import ConsoleReport


def _offer_weights(console: Console) -> Callable[[StarSettings], WeightsPaths]:
    """The CLI's weights resolver: on a terminal, missing weights can be downloaded on the spot."""

    def resolve(star: StarSettings) -> WeightsPaths:
        from star_cli.hub import ensure_weights
        from star_cli.pipeline.upscale import weights_variant

        return ensure_weights(star.weights_dir, weights_variant(star), console=console)

    return resolve


def run_upscale_command(options: dict[str, Any], console: Console) -> tuple[ConsoleReport, Callable[[], None]]:
    """The report (for the Ctrl-C message) and the action that runs `star upscale` with raw `options`."""
    report = ConsoleReport(console, quiet=options["quiet"], verbose=options["verbose"])

    def action() -> None:
        from star_cli.pipeline.launch import launch_workers, must_launch
        from star_cli.pipeline.request import build_request

        request = build_request(**options)
        if must_launch(request):
            return launch_workers(sys.argv[1:], request, console)
        ranks = Ranks.from_env()
        if ranks.distributed and not request.dry_run:
            from star_cli.pipeline.scaleout import run_distributed

            return run_distributed(request, ranks, console)
        if request.devices and not request.dry_run:  # one process of a --gpus/--devices list: its entry is the device
            from star_cli.pipeline.distributed import rank_device

            request = rank_device(request, ranks)
        _run_here(request, ranks, console, report)

    return report, action


def _run_here(request: UpscaleRequest, ranks: Ranks, console: Console, report: ConsoleReport) -> None:
    """`prepare`, the plans shown (and, for a dry run of several ranks, who takes which video), then `execute`."""
    from star_cli.families import get_family
    from star_cli.pipeline.events import Notice
    from star_cli.pipeline.render import jobs_table, plan_summary
    from star_cli.pipeline.prepare import prepare
    from star_cli.pipeline.upscale import execute

    prepared = prepare(request)
    shown = Console(quiet=not ranks.is_main) if request.dry_run else console
    world = ranks.world if ranks.distributed else max(1, len(request.devices))
    sharing = 1 if request.input.is_dir() else world  # a folder's videos go to ranks whole
    if request.dry_run or request.verbose:
        for planned in prepared.jobs:
            shown.print(
                plan_summary(
                    planned.plan,
                    planned.estimate,
                    source=planned.job.source,
                    engine=request.engine,
                    family=get_family(request.star.model),
                    ranks=sharing,
                    device=prepared.device,
                )
            )
    if request.dry_run:
        if not ranks.is_main:
            return
        if world > 1 and request.input.is_dir():
            shown.print(jobs_table([(p.job, p.plan) for p in prepared.jobs], world))
        if request.engine == "star" and prepared.jobs:
            family = get_family(request.star.model)
            note = family.compile_note(request.star, [p.plan for p in prepared.jobs], prepared.device or "cpu", 1 / world)
            if note is not None:
                report(Notice(note))
        for note in (note for planned in prepared.jobs for note in planned.notes):  # a run says them as it starts each file
            report(Notice(note, "warning"))
        for skipped in prepared.skipped:
            report(skipped)
        return
    with report:
        execute(prepared, progress=report, weights=_offer_weights(console))
