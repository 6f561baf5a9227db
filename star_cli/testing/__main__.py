"""`python -m star_cli.testing tiny-weights PATH [--variant light|heavy|all] [--model i2vgenxl|cogvideox]`."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from star_cli.errors import StarError
from star_cli.hub.layout import COGVIDEOX_VARIANT, STAR_VARIANTS, variants_of
from star_cli.testing.weights import make_tiny_weights


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m star_cli.testing", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    tiny = commands.add_parser("tiny-weights", help="write a tiny random weights folder (for tests and demos)")
    tiny.add_argument("path", help="folder to write (created if needed)")
    tiny.add_argument("--variant", choices=[*STAR_VARIANTS, "all"], default="light")
    tiny.add_argument("--model", choices=["i2vgenxl", "cogvideox"], default="i2vgenxl",
                      help="cogvideox: the CogVideoX family's weights instead (64x96, 9-frame native size)")
    tiny.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    variants = (COGVIDEOX_VARIANT,) if args.model == "cogvideox" else variants_of(args.variant)
    try:
        root = make_tiny_weights(args.path, variants=variants, seed=args.seed)
    except StarError as error:
        print(f"error: {error}", file=sys.stderr)
        return error.exit_code
    print(root)
    return 0


if __name__ == "__main__":
    sys.exit(main())
