"""The models the overhead benchmark runs: real diffusers classes, random weights, from tiny to DiT-B-like.

CASES[name] = (class name, init kwargs, inputs(batch, generator) -> forward kwargs, default batch).
The family cases (Flux, SD3, PixArt, Wan) have 256 image tokens and width 256; `dit-b` is DiT-B/2 at 256x256
pixels (12 blocks, width 768, 256 tokens).
"""

from __future__ import annotations

import diffusers
import torch


def _dit(num_layers, heads, sample_size=32):
    config = dict(
        num_attention_heads=heads,
        attention_head_dim=64,
        in_channels=4,
        out_channels=4,
        num_layers=num_layers,
        sample_size=sample_size,
        patch_size=2,
        norm_type="ada_norm_zero",
        num_embeds_ada_norm=1000,
    )

    def inputs(batch, g):
        return dict(
            hidden_states=torch.randn(batch, 4, sample_size, sample_size, generator=g),
            timestep=torch.randint(0, 1000, (batch,), generator=g),
            class_labels=torch.randint(0, 1000, (batch,), generator=g),
        )

    return "DiTTransformer2DModel", config, inputs


def _flux(batch, g):
    # Position ids as the Flux pipeline makes them: (0, row, column) per latent; 0 in column 0 marks the target,
    # which is what LayerSync selects (random ids would select no token at all).
    rows, columns = torch.meshgrid(torch.arange(16.0), torch.arange(16.0), indexing="ij")
    img_ids = torch.stack([torch.zeros(16, 16), rows, columns], dim=-1).reshape(256, 3)
    return dict(
        hidden_states=torch.randn(batch, 256, 16, generator=g),
        encoder_hidden_states=torch.randn(batch, 32, 128, generator=g),
        pooled_projections=torch.randn(batch, 128, generator=g),
        img_ids=img_ids,
        txt_ids=torch.zeros(32, 3),
        timestep=torch.rand(batch, generator=g),
        guidance=None,
    )


def _sd3(batch, g):
    return dict(
        hidden_states=torch.randn(batch, 4, 32, 32, generator=g),
        encoder_hidden_states=torch.randn(batch, 32, 128, generator=g),
        pooled_projections=torch.randn(batch, 128, generator=g),
        timestep=torch.randint(0, 1000, (batch,), generator=g),
    )


def _pixart(batch, g):
    return dict(
        hidden_states=torch.randn(batch, 4, 32, 32, generator=g),
        encoder_hidden_states=torch.randn(batch, 32, 128, generator=g),
        timestep=torch.randint(0, 1000, (batch,), generator=g),
        added_cond_kwargs={"resolution": None, "aspect_ratio": None},
    )


def _wan(batch, g):
    return dict(
        hidden_states=torch.randn(batch, 16, 4, 16, 16, generator=g),
        encoder_hidden_states=torch.randn(batch, 32, 128, generator=g),
        timestep=torch.randint(0, 1000, (batch,), generator=g),
    )


CASES = {
    "dit-tiny": (*_dit(4, 1, sample_size=16), 4),
    "dit-s": (*_dit(12, 6), 4),
    "flux": (
        "FluxTransformer2DModel",
        dict(
            patch_size=1,
            in_channels=16,
            num_layers=2,
            num_single_layers=4,
            attention_head_dim=64,
            num_attention_heads=4,
            joint_attention_dim=128,
            pooled_projection_dim=128,
            axes_dims_rope=[16, 24, 24],
        ),
        _flux,
        4,
    ),
    "sd3": (
        "SD3Transformer2DModel",
        dict(
            sample_size=32,
            patch_size=2,
            in_channels=4,
            num_layers=6,
            attention_head_dim=64,
            num_attention_heads=4,
            caption_projection_dim=256,
            joint_attention_dim=128,
            pooled_projection_dim=128,
            out_channels=4,
            pos_embed_max_size=32,
        ),
        _sd3,
        4,
    ),
    "pixart": (
        "PixArtTransformer2DModel",
        dict(
            sample_size=32,
            num_layers=8,
            patch_size=2,
            attention_head_dim=64,
            num_attention_heads=4,
            in_channels=4,
            out_channels=4,
            cross_attention_dim=256,
            caption_channels=128,
            norm_type="ada_norm_single",
            use_additional_conditions=False,
        ),
        _pixart,
        4,
    ),
    "wan": (
        "WanTransformer3DModel",
        dict(
            patch_size=(1, 2, 2),
            num_attention_heads=4,
            attention_head_dim=64,
            in_channels=16,
            out_channels=16,
            text_dim=128,
            freq_dim=256,
            ffn_dim=1024,
            num_layers=6,
            rope_max_seq_len=64,
        ),
        _wan,
        4,
    ),
    "dit-b": (*_dit(12, 12), 2),
}


def redraw_zero_weights(model: torch.nn.Module, generator: torch.Generator) -> None:
    """Re-draw all-zero weights (adaLN-zero gates, zero-initialised output layers), as after some training:
    otherwise every block output is identical at step 0 and the LayerSync gradient is exactly zero."""
    with torch.no_grad():
        for parameter in model.parameters():
            if parameter.numel() and not parameter.any():
                parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.02)


def build(name: str, *, batch=None, device="cpu", dtype=torch.float32, seed: int = 0):
    """(model, inputs, batch) for a case, on `device` in `dtype`."""
    class_name, config, inputs, default_batch = CASES[name]
    batch = batch or default_batch
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    model = getattr(diffusers, class_name)(**config)
    redraw_zero_weights(model, generator)
    model.to(device=device, dtype=dtype)
    kwargs = {
        k: (
            v.to(device=device, dtype=dtype if v.is_floating_point() else v.dtype) if isinstance(v, torch.Tensor) else v
        )
        for k, v in inputs(batch, generator).items()
    }
    return model, kwargs, batch
