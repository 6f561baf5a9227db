"""Test and demo material.

`python -m star_cli.testing tiny-weights PATH [--variant light|heavy|all] [--model i2vgenxl|cogvideox]`
`python -m star_cli.testing clip PATH [--frames N --width W --height H]`
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from star_cli.errors import StarError
from star_cli.hub.layout import COGVIDEOX_VARIANT, STAR_VARIANTS, variants_of
from star_cli.testing.media import make_video
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
    clip = commands.add_parser("clip", help="write a small synthetic video with audio (for demos)")
    clip.add_argument("path", help="video file to write, e.g. demo.mp4")
    clip.add_argument("--frames", type=int, default=24)
    clip.add_argument("--width", type=int, default=64)
    clip.add_argument("--height", type=int, default=48)
    args = parser.parse_args(argv)
    if args.command == "clip":
        print(make_video(args.path, frames=args.frames, width=args.width, height=args.height))
        return 0
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
