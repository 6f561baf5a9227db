"""star: real-world video super-resolution with STAR, from the command line."""

__version__ = "0.1.0"
