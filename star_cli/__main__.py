"""`python -m star_cli ...` (and `accelerate launch -m star_cli train ...`) runs the CLI."""

from star_cli.cli import main

main()
