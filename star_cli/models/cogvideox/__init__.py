"""STAR on CogVideoX-5B: the denoiser, its checkpoint mapping, and the VAE, text and frame glue.

Each module does one thing: `dit` (the denoiser), `sat` (reference checkpoint names ->
ours), `vae` (diffusers' CogVideoX VAE as the reference uses it), `text` (T5-XXL),
`frames` (the reference's uint8 pre/post-processing).
"""

from star_cli.models.cogvideox.dit import STARCogVideoXTransformer
from star_cli.models.cogvideox.sat import convert_sat_state_dict, from_sat_state_dict

__all__ = ["STARCogVideoXTransformer", "convert_sat_state_dict", "from_sat_state_dict"]
