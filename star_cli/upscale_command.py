"""`star upscale` on a terminal: the request from the options, the plans shown, progress as a bar or log lines.

The work itself is `pipeline.upscale.prepare` + `execute`, the same two calls the
Python API makes; this module only adds what a terminal user gets: `--dry-run` and
`--verbose` plan tables, the offer to download missing weights, and the report.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from rich.console import Console

from star_cli.hub.layout import STAR_VARIANTS, WeightsPaths
from star_cli.pipeline.request import StarSettings
from star_cli.report import ConsoleReport


def _offer_weights(console: Console) -> Callable[[StarSettings], WeightsPaths]:
    """The CLI's weights resolver: on a terminal, missing weights can be downloaded on the spot."""

    def resolve(star: StarSettings) -> WeightsPaths:
        from star_cli.hub import ensure_weights

        variant = star.checkpoint if star.checkpoint in STAR_VARIANTS else STAR_VARIANTS[0]
        return ensure_weights(star.weights_dir, variant, console=console)

    return resolve


def run_upscale_command(options: dict[str, Any], console: Console) -> tuple[ConsoleReport, Callable[[], None]]:
    """The report (for the Ctrl-C message) and the action that runs `star upscale` with raw `options`."""
    report = ConsoleReport(console, quiet=options["quiet"], verbose=options["verbose"])

    def action() -> None:
        from star_cli.pipeline.render import plan_summary
        from star_cli.pipeline.request import build_request
        from star_cli.pipeline.upscale import execute, prepare

        request = build_request(**options)
        prepared = prepare(request)
        shown = Console() if request.dry_run else console
        if request.dry_run or request.verbose:
            for planned in prepared.jobs:
                summary = plan_summary(planned.plan, planned.estimate, source=planned.job.source, engine=request.engine, device=prepared.device)
                shown.print(summary)
        if request.dry_run:
            for skipped in prepared.skipped:
                report(skipped)
            return
        with report:
            execute(prepared, progress=report, weights=_offer_weights(console))

    return report, action
