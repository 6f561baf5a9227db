"""STAR's denoising network (UNet + ControlNet + LIEM) and its weight files."""

from star_cli.models.config import STARConfig
from star_cli.models.unet import STARUNet

__all__ = ["STARConfig", "STARUNet"]
