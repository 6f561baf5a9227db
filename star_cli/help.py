"""How `star ... --help` reads: `INPUT` in the usage line, flags without a `<bool>` placeholder.

Typer shows required arguments as `{input}` and every option's type, even for
on/off flags that take no value; this command class tidies both for every command.
"""

from __future__ import annotations

from typing import Any

from typer.core import TyperCommand


class StarCommand(TyperCommand):
    """A Typer command whose help shows arguments plainly and flags without a value type."""

    def collect_usage_pieces(self, ctx: Any) -> list[str]:
        return [piece.strip("{}") for piece in super().collect_usage_pieces(ctx)]

    def get_params(self, ctx: Any) -> list[Any]:
        params = super().get_params(ctx)
        for param in params:
            if getattr(param, "is_flag", False) and param.metavar is None:
                param.metavar = ""  # a flag takes no value: nothing to show in the type column
        return params
