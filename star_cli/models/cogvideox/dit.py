"""STAR's CogVideoX-5B denoiser: diffusers' CogVideoX transformer plus STAR's two changes.

STAR fine-tunes CogVideoX-5B for super-resolution with:
- the LR latent concatenated to the noisy latent on channels, so the patch
  embedding sees 32 channels (diffusers' `in_channels=32` does exactly that);
- LIEM gates (a spatial 7x7 gate, then a per-token temporal gate) on the image
  tokens of every layer, between the first adaLN norm and attention;
- LoRA on the attention projections, merged into plain Linear weights when the
  checkpoint is converted (see `sat.py`), so nothing of it remains here;
- the final adaLN norm with eps 1e-6 (diffusers uses `norm_eps`, 1e-5).

Everything else (time embedding, patch embedding, adaLN-zero norms, joint
attention with QK-LayerNorm and 3D RoPE on the image tokens, feed-forward,
output norm and projection) is diffusers' own modules. Only the block forward is
written out again, because the LIEM gates sit in its middle, and the model
forward, because the blocks need the token grid that diffusers' loop does not
pass. Both follow `CogVideoXBlock.forward` / `CogVideoXTransformer3DModel.forward`
line for line otherwise.
"""

from __future__ import annotations

import inspect

import torch
from diffusers import CogVideoXTransformer3DModel
from diffusers.models.embeddings import get_3d_rotary_pos_embed
from diffusers.models.transformers.cogvideox_transformer_3d import CogVideoXBlock
from torch import Tensor

from star_cli.models.liem import SpatialLIEM, TemporalLIEM

FINAL_NORM_EPS = 1e-6
Grid = tuple[int, int, int]
RotaryEmbedding = tuple[Tensor, Tensor]
_DEFAULT_LAYERS = inspect.signature(CogVideoXTransformer3DModel.__init__).parameters["num_layers"].default


class STARCogVideoXBlock(CogVideoXBlock):
    """diffusers' CogVideoX block with STAR's LIEM gates on the image tokens before attention."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)
        self.spa_local = SpatialLIEM()
        self.temp_local = TemporalLIEM()

    def liem(self, image: Tensor, grid: Grid) -> Tensor:
        """Spatial gate per frame, then the temporal (per-token) gate; tokens (b, t*h*w, c) in (t, h, w) order."""
        batch, _, channels = image.shape
        frames, height, width = grid
        per_frame = image.reshape(batch * frames, height * width, channels)
        gated = self.spa_local(per_frame, height, width).reshape(batch, frames * height * width, channels)
        return self.temp_local(gated)

    def forward(  # type: ignore[override]
        self,
        hidden_states: Tensor,
        encoder_hidden_states: Tensor,
        temb: Tensor,
        image_rotary_emb: RotaryEmbedding,
        grid: Grid,
    ) -> tuple[Tensor, Tensor]:
        """(image tokens, text tokens) -> the same after attention and feed-forward."""
        text_length = encoder_hidden_states.size(1)
        norm_image, norm_text, gate_msa, text_gate_msa = self.norm1(hidden_states, encoder_hidden_states, temb)
        norm_image = self.liem(norm_image, grid)
        attn_image, attn_text = self.attn1(
            hidden_states=norm_image, encoder_hidden_states=norm_text, image_rotary_emb=image_rotary_emb
        )
        hidden_states = hidden_states + gate_msa * attn_image
        encoder_hidden_states = encoder_hidden_states + text_gate_msa * attn_text

        norm_image, norm_text, gate_ff, text_gate_ff = self.norm2(hidden_states, encoder_hidden_states, temb)
        ff_output = self.ff(torch.cat([norm_text, norm_image], dim=1))
        hidden_states = hidden_states + gate_ff * ff_output[:, text_length:]
        encoder_hidden_states = encoder_hidden_states + text_gate_ff * ff_output[:, :text_length]
        return hidden_states, encoder_hidden_states


class STARCogVideoXTransformer(CogVideoXTransformer3DModel):
    """The STAR CogVideoX denoiser: `forward(x_noisy, lr_latent, timesteps, context) -> v`.

    Takes `CogVideoXTransformer3DModel`'s keyword arguments (STAR-5B: in_channels=32,
    42 layers, 48 heads, RoPE); its state dict is diffusers' plus
    `transformer_blocks.{i}.spa_local.conv1.weight` / `temp_local.conv1.weight`.
    diffusers' constructor is asked for no blocks, so ours are the only ones
    allocated; the config still records the real layer count.
    """

    def __init__(self, **kwargs: object) -> None:
        num_layers = kwargs.get("num_layers", _DEFAULT_LAYERS)
        super().__init__(**{**kwargs, "num_layers": 0})
        self.register_to_config(num_layers=num_layers)
        config = self.config
        self.transformer_blocks = torch.nn.ModuleList(
            STARCogVideoXBlock(
                dim=config.num_attention_heads * config.attention_head_dim,
                num_attention_heads=config.num_attention_heads,
                attention_head_dim=config.attention_head_dim,
                time_embed_dim=config.time_embed_dim,
                dropout=config.dropout,
                activation_fn=config.activation_fn,
                attention_bias=config.attention_bias,
                norm_elementwise_affine=config.norm_elementwise_affine,
                norm_eps=config.norm_eps,
            )
            for _ in range(num_layers)
        )
        self.norm_out.norm.eps = FINAL_NORM_EPS
        self._rotary_cache: dict[tuple[Grid, torch.device], RotaryEmbedding] = {}

    # diffusers' from_config reads the constructor's parameter names from its signature.
    __init__.__signature__ = inspect.signature(CogVideoXTransformer3DModel.__init__)  # type: ignore[attr-defined]

    def rotary_embedding(self, grid: Grid, device: torch.device) -> RotaryEmbedding:
        """3D RoPE (cos, sin) for a (frames, rows, cols) patch grid at integer positions, cached per grid."""
        key = (grid, device)
        if key not in self._rotary_cache:
            frames, height, width = grid
            self._rotary_cache[key] = get_3d_rotary_pos_embed(
                self.config.attention_head_dim,
                crops_coords=((0, 0), (height, width)),
                grid_size=(height, width),
                temporal_size=frames,
                device=device,
            )
        return self._rotary_cache[key]

    def forward(  # type: ignore[override]
        self, x_noisy: Tensor, lr_latent: Tensor, timesteps: Tensor, context: Tensor
    ) -> Tensor:
        """v-prediction (b, t, c, h, w) for noisy latents and LR latents (b, t, c, h, w).

        `timesteps` (b,) are float (integer values); `context` (b, tokens, text_dim).
        The height and width must be multiples of the patch size.
        """
        dtype = self.proj_out.weight.dtype
        latents = torch.cat([x_noisy, lr_latent], dim=2).to(dtype)
        batch, frames, _, height, width = latents.shape
        patch = self.config.patch_size
        if height % patch or width % patch:
            raise ValueError(f"latent size {height}x{width} is not a multiple of the patch size {patch}")
        grid = (frames, height // patch, width // patch)

        temb = self.time_embedding(self.time_proj(timesteps).to(dtype))
        tokens = self.patch_embed(context.to(dtype), latents)
        text_length = context.shape[1]
        text, image = tokens[:, :text_length], tokens[:, text_length:]
        rotary = self.rotary_embedding(grid, latents.device)
        for block in self.transformer_blocks:
            image, text = block(image, text, temb, rotary, grid)

        image = self.proj_out(self.norm_out(self.norm_final(image), temb=temb))
        out = image.reshape(batch, frames, grid[1], grid[2], -1, patch, patch)
        return out.permute(0, 1, 4, 2, 5, 3, 6).flatten(5, 6).flatten(3, 4)
