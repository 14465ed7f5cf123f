"""Tiny real diffusers models, built from config with random weights, and inputs for them.

TINY[name] = (class name, init kwargs, inputs(batch) -> forward kwargs). Configs follow the diffusers model
tests (checked against shared/reference/tiny_configs.py) with block counts raised so that a student and a
deeper teacher exist in every stack.
"""

from __future__ import annotations

import diffusers
import torch

TINY: dict[str, tuple] = {}


def _g(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _randn(*shape, seed=0):
    return torch.randn(*shape, generator=_g(seed))


def _flux_inputs(batch=2):
    return dict(hidden_states=_randn(batch, 16, 4), encoder_hidden_states=_randn(batch, 8, 32, seed=1),
                pooled_projections=_randn(batch, 32, seed=2), img_ids=_randn(16, 3, seed=3),
                txt_ids=_randn(8, 3, seed=4), timestep=torch.full((batch,), 0.5))


TINY["Flux"] = ("FluxTransformer2DModel", dict(
    patch_size=1, in_channels=4, num_layers=2, num_single_layers=3, attention_head_dim=16, num_attention_heads=2,
    joint_attention_dim=32, pooled_projection_dim=32, axes_dims_rope=[4, 4, 8]), _flux_inputs)


def _sd3_inputs(batch=2):
    return dict(hidden_states=_randn(batch, 4, 8, 8), encoder_hidden_states=_randn(batch, 8, 32, seed=1),
                pooled_projections=_randn(batch, 64, seed=2), timestep=torch.arange(batch) * 100 + 44)


TINY["SD3"] = ("SD3Transformer2DModel", dict(
    sample_size=8, patch_size=1, in_channels=4, num_layers=4, attention_head_dim=8, num_attention_heads=4,
    caption_projection_dim=32, joint_attention_dim=32, pooled_projection_dim=64, out_channels=4,
    pos_embed_max_size=16, dual_attention_layers=(), qk_norm=None), _sd3_inputs)


def _pixart_inputs(batch=2):
    return dict(hidden_states=_randn(batch, 4, 8, 8), timestep=torch.arange(batch) * 100 + 44,
                encoder_hidden_states=_randn(batch, 8, 8, seed=1),
                added_cond_kwargs={"aspect_ratio": None, "resolution": None})


TINY["PixArt"] = ("PixArtTransformer2DModel", dict(
    sample_size=8, num_layers=4, patch_size=2, attention_head_dim=4, num_attention_heads=2, in_channels=4,
    cross_attention_dim=8, out_channels=8, attention_bias=True, activation_fn="gelu-approximate",
    num_embeds_ada_norm=8, norm_type="ada_norm_single", norm_elementwise_affine=False, norm_eps=1e-6,
    use_additional_conditions=False, caption_channels=None), _pixart_inputs)


def _sana_inputs(batch=2):
    return dict(hidden_states=_randn(batch, 4, 8, 8), encoder_hidden_states=_randn(batch, 8, 8, seed=1),
                timestep=torch.arange(batch) * 100 + 44)


TINY["Sana"] = ("SanaTransformer2DModel", dict(
    patch_size=1, in_channels=4, out_channels=4, num_layers=4, attention_head_dim=4, num_attention_heads=2,
    num_cross_attention_heads=2, cross_attention_head_dim=4, cross_attention_dim=8, caption_channels=8,
    sample_size=8), _sana_inputs)


def _wan_inputs(batch=2):
    return dict(hidden_states=_randn(batch, 4, 2, 8, 8), encoder_hidden_states=_randn(batch, 12, 16, seed=1),
                timestep=torch.arange(batch) * 100 + 44)


TINY["Wan"] = ("WanTransformer3DModel", dict(
    patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=12, in_channels=4, out_channels=4,
    text_dim=16, freq_dim=256, ffn_dim=32, num_layers=4, cross_attn_norm=True, qk_norm="rms_norm_across_heads",
    rope_max_seq_len=32), _wan_inputs)


def _qwen_inputs(batch=2):
    return dict(hidden_states=_randn(batch, 16, 16), encoder_hidden_states=_randn(batch, 8, 16, seed=1),
                encoder_hidden_states_mask=torch.ones(batch, 8, dtype=torch.int64),
                timestep=torch.full((batch,), 0.5), img_shapes=[(1, 4, 4)] * batch)


TINY["QwenImage"] = ("QwenImageTransformer2DModel", dict(
    patch_size=2, in_channels=16, out_channels=4, num_layers=4, attention_head_dim=16, num_attention_heads=4,
    joint_attention_dim=16, guidance_embeds=False, axes_dims_rope=(8, 4, 4)), _qwen_inputs)


def _hunyuan_video_inputs(batch=2):
    return dict(hidden_states=_randn(batch, 4, 1, 8, 8), timestep=torch.full((batch,), 44.0),
                encoder_hidden_states=_randn(batch, 12, 16, seed=1), pooled_projections=_randn(batch, 8, seed=2),
                encoder_attention_mask=torch.ones(batch, 12), guidance=torch.full((batch,), 44.0))


TINY["HunyuanVideo"] = ("HunyuanVideoTransformer3DModel", dict(
    in_channels=4, out_channels=4, num_attention_heads=2, attention_head_dim=10, num_layers=2, num_single_layers=2,
    num_refiner_layers=1, patch_size=1, patch_size_t=1, guidance_embeds=True, text_embed_dim=16,
    pooled_projection_dim=8, rope_axes_dim=(2, 4, 4), image_condition_type=None), _hunyuan_video_inputs)


def _cosmos_inputs(batch=2):
    return dict(hidden_states=_randn(batch, 4, 1, 16, 16), timestep=torch.arange(batch) * 100 + 44,
                encoder_hidden_states=_randn(batch, 12, 16, seed=1), attention_mask=torch.ones(batch, 12), fps=30)


# concat_padding_mask=True needs torchvision, which has no CPU build here.
TINY["Cosmos"] = ("CosmosTransformer3DModel", dict(
    in_channels=4, out_channels=4, num_attention_heads=2, attention_head_dim=12, num_layers=4, mlp_ratio=2,
    text_embed_dim=16, adaln_lora_dim=4, max_size=(4, 32, 32), patch_size=(1, 2, 2), rope_scale=(2.0, 1.0, 1.0),
    concat_padding_mask=False, extra_pos_embed_type="learnable"), _cosmos_inputs)


def _dit_inputs(batch=2):
    return dict(hidden_states=_randn(batch, 4, 8, 8), timestep=torch.arange(batch) * 100 + 44,
                class_labels=torch.arange(batch) % 4)


TINY["DiT"] = ("DiTTransformer2DModel", dict(
    in_channels=4, out_channels=8, activation_fn="gelu-approximate", num_attention_heads=2, attention_head_dim=4,
    attention_bias=True, num_layers=4, norm_type="ada_norm_zero", num_embeds_ada_norm=8, patch_size=2,
    sample_size=8), _dit_inputs)


def randomize_zero_params(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Re-draw all-zero weights (adaLN-zero gates, zero-init heads) so blocks differ and gradients flow."""
    generator = _g(seed)
    with torch.no_grad():
        for parameter in model.parameters():
            if parameter.numel() and not parameter.any():
                parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.1)
    return model


def build(name: str, *, batch: int = 2, seed: int = 0):
    """(model, inputs) for a TINY entry: a real diffusers class, random weights, zero weights re-drawn."""
    class_name, config, inputs = TINY[name]
    torch.manual_seed(seed)
    model = getattr(diffusers, class_name)(**config)
    return randomize_zero_params(model, seed), inputs(batch)


def prediction(model: torch.nn.Module, inputs: dict) -> torch.Tensor:
    """The model's predicted sample (first output)."""
    return model(**inputs, return_dict=False)[0]
