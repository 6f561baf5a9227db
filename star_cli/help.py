"""How `star ... --help` reads: `INPUT` in the usage line, flags without a `<bool>` placeholder.

Typer shows required arguments as `{input}` and every option's type, even for
on/off flags that take no value; these classes tidy both for the app and every command.
"""

from __future__ import annotations

from typing import Any

from typer.core import TyperCommand, TyperGroup


def _without_flag_types(params: list[Any]) -> list[Any]:
    for param in params:
        if getattr(param, "is_flag", False) and param.metavar is None:
            param.metavar = ""  # a flag takes no value: nothing to show in the type column
    return params


class StarCommand(TyperCommand):
    """A command whose help shows arguments plainly and flags without a value type."""

    def collect_usage_pieces(self, ctx: Any) -> list[str]:
        return [piece.strip("{}") for piece in super().collect_usage_pieces(ctx)]

    def get_params(self, ctx: Any) -> list[Any]:
        return _without_flag_types(super().get_params(ctx))


class StarGroup(TyperGroup):
    """The `star` app itself: its --version and --help without a value type."""

    def get_params(self, ctx: Any) -> list[Any]:
        return _without_flag_types(super().get_params(ctx))
