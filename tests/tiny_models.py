"""Tiny real diffusers models, built from config with random weights, and inputs for them.

TINY[name] = (class name, init kwargs, inputs(batch) -> forward kwargs). Configs follow the diffusers model
tests with block counts raised so that a student and a
deeper teacher exist in every stack.
"""

from __future__ import annotations

import inspect

import diffusers
import pytest
import torch

TINY: dict[str, tuple] = {}


def _g(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _randn(*shape, seed=0):
    return torch.randn(*shape, generator=_g(seed))


def image_ids(height, width, *, first=0, columns=3):
    """Position ids as the Flux pipelines build them: (first, row, column[, 0]) per token, row-major."""
    ids = torch.zeros(height, width, columns)
    ids[..., 0] = first
    ids[..., 1] = torch.arange(height)[:, None]
    ids[..., 2] = torch.arange(width)[None, :]
    return ids.reshape(height * width, columns)


def _flux_inputs(batch=2):
    return dict(
        hidden_states=_randn(batch, 16, 4),
        encoder_hidden_states=_randn(batch, 8, 32, seed=1),
        pooled_projections=_randn(batch, 32, seed=2),
        img_ids=image_ids(4, 4),
        txt_ids=torch.zeros(8, 3),
        timestep=torch.full((batch,), 0.5),
    )


TINY["Flux"] = (
    "FluxTransformer2DModel",
    dict(
        patch_size=1,
        in_channels=4,
        num_layers=2,
        num_single_layers=3,
        attention_head_dim=16,
        num_attention_heads=2,
        joint_attention_dim=32,
        pooled_projection_dim=32,
        axes_dims_rope=[4, 4, 8],
    ),
    _flux_inputs,
)


def _sd3_inputs(batch=2):
    return dict(
        hidden_states=_randn(batch, 4, 8, 8),
        encoder_hidden_states=_randn(batch, 8, 32, seed=1),
        pooled_projections=_randn(batch, 64, seed=2),
        timestep=torch.arange(batch) * 100 + 44,
    )


TINY["SD3"] = (
    "SD3Transformer2DModel",
    dict(
        sample_size=8,
        patch_size=1,
        in_channels=4,
        num_layers=4,
        attention_head_dim=8,
        num_attention_heads=4,
        caption_projection_dim=32,
        joint_attention_dim=32,
        pooled_projection_dim=64,
        out_channels=4,
        pos_embed_max_size=16,
        dual_attention_layers=(),
        qk_norm=None,
    ),
    _sd3_inputs,
)


def _pixart_inputs(batch=2):
    return dict(
        hidden_states=_randn(batch, 4, 8, 8),
        timestep=torch.arange(batch) * 100 + 44,
        encoder_hidden_states=_randn(batch, 8, 8, seed=1),
        added_cond_kwargs={"aspect_ratio": None, "resolution": None},
    )


TINY["PixArt"] = (
    "PixArtTransformer2DModel",
    dict(
        sample_size=8,
        num_layers=4,
        patch_size=2,
        attention_head_dim=4,
        num_attention_heads=2,
        in_channels=4,
        cross_attention_dim=8,
        out_channels=8,
        attention_bias=True,
        activation_fn="gelu-approximate",
        num_embeds_ada_norm=8,
        norm_type="ada_norm_single",
        norm_elementwise_affine=False,
        norm_eps=1e-6,
        use_additional_conditions=False,
        caption_channels=None,
    ),
    _pixart_inputs,
)


def _sana_inputs(batch=2):
    return dict(
        hidden_states=_randn(batch, 4, 8, 8),
        encoder_hidden_states=_randn(batch, 8, 8, seed=1),
        timestep=torch.arange(batch) * 100 + 44,
    )


TINY["Sana"] = (
    "SanaTransformer2DModel",
    dict(
        patch_size=1,
        in_channels=4,
        out_channels=4,
        num_layers=4,
        attention_head_dim=4,
        num_attention_heads=2,
        num_cross_attention_heads=2,
        cross_attention_head_dim=4,
        cross_attention_dim=8,
        caption_channels=8,
        sample_size=8,
    ),
    _sana_inputs,
)


def _wan_inputs(batch=2):
    return dict(
        hidden_states=_randn(batch, 4, 2, 8, 8),
        encoder_hidden_states=_randn(batch, 12, 16, seed=1),
        timestep=torch.arange(batch) * 100 + 44,
    )


TINY["Wan"] = (
    "WanTransformer3DModel",
    dict(
        patch_size=(1, 2, 2),
        num_attention_heads=2,
        attention_head_dim=12,
        in_channels=4,
        out_channels=4,
        text_dim=16,
        freq_dim=256,
        ffn_dim=32,
        num_layers=4,
        cross_attn_norm=True,
        qk_norm="rms_norm_across_heads",
        rope_max_seq_len=32,
    ),
    _wan_inputs,
)


def _qwen_inputs(batch=2):
    return dict(
        hidden_states=_randn(batch, 16, 16),
        encoder_hidden_states=_randn(batch, 8, 16, seed=1),
        encoder_hidden_states_mask=torch.ones(batch, 8, dtype=torch.int64),
        timestep=torch.full((batch,), 0.5),
        img_shapes=[(1, 4, 4)] * batch,
    )


TINY["QwenImage"] = (
    "QwenImageTransformer2DModel",
    dict(
        patch_size=2,
        in_channels=16,
        out_channels=4,
        num_layers=4,
        attention_head_dim=16,
        num_attention_heads=4,
        joint_attention_dim=16,
        guidance_embeds=False,
        axes_dims_rope=(8, 4, 4),
    ),
    _qwen_inputs,
)


def _hunyuan_video_inputs(batch=2):
    return dict(
        hidden_states=_randn(batch, 4, 1, 8, 8),
        timestep=torch.full((batch,), 44.0),
        encoder_hidden_states=_randn(batch, 12, 16, seed=1),
        pooled_projections=_randn(batch, 8, seed=2),
        encoder_attention_mask=torch.ones(batch, 12),
        guidance=torch.full((batch,), 44.0),
    )


TINY["HunyuanVideo"] = (
    "HunyuanVideoTransformer3DModel",
    dict(
        in_channels=4,
        out_channels=4,
        num_attention_heads=2,
        attention_head_dim=10,
        num_layers=2,
        num_single_layers=2,
        num_refiner_layers=1,
        patch_size=1,
        patch_size_t=1,
        guidance_embeds=True,
        text_embed_dim=16,
        pooled_projection_dim=8,
        rope_axes_dim=(2, 4, 4),
        image_condition_type=None,
    ),
    _hunyuan_video_inputs,
)


def _cosmos_inputs(batch=2):
    return dict(
        hidden_states=_randn(batch, 4, 1, 16, 16),
        timestep=torch.arange(batch) * 100 + 44,
        encoder_hidden_states=_randn(batch, 12, 16, seed=1),
        attention_mask=torch.ones(batch, 12),
        fps=30,
    )


# concat_padding_mask=True needs torchvision, which has no CPU build here.
TINY["Cosmos"] = (
    "CosmosTransformer3DModel",
    dict(
        in_channels=4,
        out_channels=4,
        num_attention_heads=2,
        attention_head_dim=12,
        num_layers=4,
        mlp_ratio=2,
        text_embed_dim=16,
        adaln_lora_dim=4,
        max_size=(4, 32, 32),
        patch_size=(1, 2, 2),
        rope_scale=(2.0, 1.0, 1.0),
        concat_padding_mask=False,
        extra_pos_embed_type="learnable",
    ),
    _cosmos_inputs,
)


def _dit_inputs(batch=2):
    return dict(
        hidden_states=_randn(batch, 4, 8, 8),
        timestep=torch.arange(batch) * 100 + 44,
        class_labels=torch.arange(batch) % 4,
    )


TINY["DiT"] = (
    "DiTTransformer2DModel",
    dict(
        in_channels=4,
        out_channels=8,
        activation_fn="gelu-approximate",
        num_attention_heads=2,
        attention_head_dim=4,
        attention_bias=True,
        num_layers=4,
        norm_type="ada_norm_zero",
        num_embeds_ada_norm=8,
        patch_size=2,
        sample_size=8,
    ),
    _dit_inputs,
)


# -- every other family in the layout table, in the compact form ----------------------------------------------------
# _inputs(name=spec, ...): a tuple containing "B" is a random tensor of that shape (batch filled in), a callable gets
# the batch size, anything else is passed as is.


def _inputs(**spec):
    def inputs(batch=2):
        made = {}
        for seed, (name, value) in enumerate(spec.items(), start=10):
            if isinstance(value, tuple) and "B" in value:
                made[name] = _randn(*(batch if d == "B" else d for d in value), seed=seed)
            else:
                made[name] = value(batch) if callable(value) else value
        return made

    return inputs


def _steps(batch):
    return torch.arange(batch) * 100 + 44


def _half(batch):
    return torch.full((batch,), 0.5)


def _ones(*shape, dtype=torch.bool):
    return lambda batch: torch.ones(batch, *shape, dtype=dtype)


def _lengths(length, *valid, dtype=torch.bool):
    """A (B, length) mask whose rows hold `valid[b]` leading ones (the last value repeats): different text lengths."""

    def mask(batch):
        counts = [valid[min(b, len(valid) - 1)] for b in range(batch)]
        return (torch.arange(length)[None] < torch.tensor(counts)[:, None]).to(dtype)

    return mask


def _ids(*grids, columns=3, batched=False):
    """Concatenated Flux-style position ids of (height, width, first coordinate) grids."""

    def ids(batch):
        ids = torch.cat([image_ids(h, w, first=f, columns=columns) for h, w, f in grids])
        return ids.expand(batch, -1, -1) if batched else ids

    return ids


def _flux_like(**extra):
    return dict(
        patch_size=1,
        in_channels=4,
        num_layers=2,
        num_single_layers=2,
        attention_head_dim=16,
        num_attention_heads=2,
        joint_attention_dim=32,
        **extra,
    )


_FLUX_INPUTS = dict(
    hidden_states=("B", 16, 4),
    encoder_hidden_states=("B", 8, 32),
    pooled_projections=("B", 32),
    img_ids=_ids((4, 4, 0)),
    txt_ids=torch.zeros(8, 3),
    timestep=_half,
)
TINY["FluxKontext"] = (
    "FluxTransformer2DModel",
    _flux_like(pooled_projection_dim=32, axes_dims_rope=[4, 4, 8]),
    _inputs(**{**_FLUX_INPUTS, "hidden_states": ("B", 32, 4), "img_ids": _ids((4, 4, 0), (4, 4, 1))}),
)
_FLUX2 = _flux_like(timestep_guidance_channels=256, axes_dims_rope=[4, 4, 4, 4])
_FLUX2_INPUTS = dict(
    hidden_states=("B", 16, 4),
    encoder_hidden_states=("B", 8, 32),
    timestep=_half,
    guidance=_half,
    img_ids=_ids((4, 4, 0), columns=4, batched=True),
    txt_ids=lambda b: torch.zeros(b, 8, 4),
)
TINY["Flux2"] = ("Flux2Transformer2DModel", _FLUX2, _inputs(**_FLUX2_INPUTS))
TINY["Flux2Refs"] = (
    "Flux2Transformer2DModel",
    _FLUX2,
    _inputs(
        **{  # a reference image after the target
            **_FLUX2_INPUTS,
            "hidden_states": ("B", 24, 4),
            "img_ids": _ids((4, 4, 0), (2, 4, 10), columns=4, batched=True),
        }
    ),
)
_FLUX3 = dict(
    in_channels=4,
    cond_in_channels=4,
    num_layers=2,
    num_single_layers=2,
    attention_head_dim=16,
    num_attention_heads=2,
    joint_attention_dim=32,
    timestep_channels=32,
    mlp_ratio=2.0,
    axes_dims_rope=(4, 4, 4, 4),
)
_FLUX3_INPUTS = dict(
    hidden_states=("B", 16, 4),
    encoder_hidden_states=("B", 8, 32),
    timestep=_half,
    img_ids=_ids((4, 4, 0), columns=4),
    txt_ids=torch.zeros(8, 4),
)
TINY["Flux3"] = ("Flux3Transformer2DModel", _FLUX3, _inputs(**_FLUX3_INPUTS))
TINY["Flux3Edit"] = (
    "Flux3Transformer2DModel",
    _FLUX3,
    _inputs(**_FLUX3_INPUTS, image_cond_hidden_states=("B", 12, 4), image_cond_ids=_ids((3, 4, 1), columns=4)),
)
TINY["Chroma"] = (
    "ChromaTransformer2DModel",
    _flux_like(
        axes_dims_rope=[4, 4, 8], approximator_num_channels=8, approximator_hidden_dim=16, approximator_layers=1
    ),
    _inputs(
        hidden_states=("B", 16, 4),
        encoder_hidden_states=("B", 8, 32),
        img_ids=_ids((4, 4, 0)),
        txt_ids=torch.zeros(8, 3),
        timestep=_half,
    ),
)
TINY["LongCatImage"] = (
    "LongCatImageTransformer2DModel",
    _flux_like(pooled_projection_dim=32, axes_dims_rope=[4, 4, 8]),
    _inputs(
        hidden_states=("B", 16, 4),
        encoder_hidden_states=("B", 8, 32),
        img_ids=_ids((4, 4, 1)),
        txt_ids=torch.zeros(8, 3),
        timestep=_half,
        guidance=_half,
    ),
)
TINY["LongCatImageEdit"] = (
    "LongCatImageTransformer2DModel",
    TINY["LongCatImage"][1],
    _inputs(
        hidden_states=("B", 32, 4),
        encoder_hidden_states=("B", 8, 32),
        img_ids=_ids((4, 4, 1), (4, 4, 2)),
        txt_ids=torch.zeros(8, 3),
        timestep=_half,
        guidance=_half,
    ),
)
TINY["Ovis"] = (
    "OvisImageTransformer2DModel",
    _flux_like(out_channels=4, axes_dims_rope=(4, 4, 8)),
    _inputs(
        hidden_states=("B", 16, 4),
        encoder_hidden_states=("B", 8, 32),
        img_ids=_ids((4, 4, 0)),
        txt_ids=torch.zeros(8, 3),
        timestep=_half,
    ),
)
TINY["Bria"] = (
    "BriaTransformer2DModel",
    dict(_flux_like(pooled_projection_dim=None, axes_dims_rope=[0, 4, 4]), attention_head_dim=8),
    _inputs(
        hidden_states=("B", 16, 4),
        encoder_hidden_states=("B", 8, 32),
        img_ids=_ids((4, 4, 0)),
        txt_ids=torch.zeros(8, 3),
        timestep=_half,
    ),
)
TINY["BriaFiboEdit"] = (
    "BriaFiboTransformer2DModel",
    dict(
        patch_size=1,
        in_channels=8,
        num_layers=2,
        num_single_layers=2,
        attention_head_dim=8,
        num_attention_heads=2,
        joint_attention_dim=32,
        text_encoder_dim=16,
        pooled_projection_dim=None,
        axes_dims_rope=[0, 4, 4],
    ),
    _inputs(
        hidden_states=("B", 24, 8),
        encoder_hidden_states=("B", 8, 32),
        img_ids=_ids((4, 4, 0), (2, 4, 1)),
        txt_ids=torch.zeros(8, 3),
        timestep=_half,
        text_encoder_layers=lambda b: [_randn(b, 8, 16, seed=i) for i in range(4)],
    ),
)
TINY["SD35"] = (
    "SD3Transformer2DModel",
    {**TINY["SD3"][1], "dual_attention_layers": (0,), "qk_norm": "rms_norm"},
    TINY["SD3"][2],
)
TINY["AuraFlow"] = (
    "AuraFlowTransformer2DModel",
    dict(
        sample_size=16,
        patch_size=2,
        in_channels=4,
        num_mmdit_layers=2,
        num_single_dit_layers=2,
        attention_head_dim=8,
        num_attention_heads=4,
        caption_projection_dim=32,
        joint_attention_dim=32,
        out_channels=4,
        pos_embed_max_size=64,
    ),
    _inputs(hidden_states=("B", 4, 16, 16), encoder_hidden_states=("B", 12, 32), timestep=_steps),
)
TINY["QwenImageEdit"] = (
    "QwenImageTransformer2DModel",
    TINY["QwenImage"][1],
    _inputs(
        hidden_states=("B", 32, 16),
        encoder_hidden_states=("B", 8, 16),
        encoder_hidden_states_mask=_ones(8, dtype=torch.int64),
        timestep=_half,
        img_shapes=lambda b: [[(1, 4, 4), (1, 4, 4)]] * b,
    ),
)
TINY["QwenImageLayered"] = (
    "QwenImageTransformer2DModel",
    {**TINY["QwenImage"][1], "use_layer3d_rope": True},
    _inputs(
        hidden_states=("B", 32, 16),
        encoder_hidden_states=("B", 8, 16),
        encoder_hidden_states_mask=_ones(8, dtype=torch.int64),
        timestep=_half,
        img_shapes=lambda b: [[(1, 2, 4), (1, 2, 4), (1, 4, 4)]] * b,
    ),
)
TINY["QwenImage21"] = (
    "QwenImage21Transformer2DModel",
    dict(
        patch_size=1,
        in_channels=16,
        out_channels=16,
        num_layers=2,
        attention_head_dim=16,
        num_attention_heads=2,
        context_in_dim=32,
        mlp_ratio=2,
        axes_dims_rope=(4, 6, 6),
    ),
    _inputs(
        hidden_states=("B", 16, 16),
        encoder_hidden_states=("B", 8, 32),
        timestep=_half,
        img_shapes=lambda b: [[(1, 4, 4)]] * b,
        img_mask=lambda b: (torch.arange(12) >= 8).expand(b, -1),
    ),
)
TINY["Krea2"] = (
    "Krea2Transformer2DModel",
    dict(
        in_channels=16,
        num_layers=2,
        attention_head_dim=8,
        num_attention_heads=4,
        num_key_value_heads=2,
        intermediate_size=32,
        timestep_embed_dim=8,
        text_hidden_dim=16,
        num_text_layers=3,
        text_num_attention_heads=2,
        text_num_key_value_heads=1,
        text_intermediate_size=16,
        num_layerwise_text_blocks=1,
        num_refiner_text_blocks=1,
        axes_dims_rope=(4, 2, 2),
        rope_theta=1000.0,
        norm_eps=1e-05,
    ),
    _inputs(
        hidden_states=("B", 4, 16),
        encoder_hidden_states=("B", 4, 3, 16),
        timestep=_half,
        position_ids=lambda b: _randn(8, 3, seed=3),
        encoder_attention_mask=_lengths(4, 4, 3),
    ),
)
TINY["HiDream"] = (
    "HiDreamImageTransformer2DModel",
    dict(
        patch_size=2,
        in_channels=4,
        out_channels=4,
        num_layers=2,
        num_single_layers=2,
        attention_head_dim=8,
        num_attention_heads=4,
        caption_channels=[8, 4],
        text_emb_dim=8,
        num_routed_experts=2,
        num_activated_experts=2,
        axes_dims_rope=(4, 2, 2),
        max_resolution=(16, 16),
        llama_layers=(0, 1, 2, 3),
        force_inference_output=True,
    ),
    _inputs(
        hidden_states=("B", 4, 8, 8),
        encoder_hidden_states_t5=("B", 8, 8),
        encoder_hidden_states_llama3=lambda b: _randn(4, b, 4, 4, seed=3),
        pooled_embeds=("B", 8),
        timesteps=_steps,
    ),
)
TINY["HiDreamWide"] = (
    "HiDreamImageTransformer2DModel",
    TINY["HiDream"][1],
    _inputs(  # non-square: padded to max_seq
        hidden_states=("B", 4, 8, 4),
        encoder_hidden_states_t5=("B", 8, 8),
        encoder_hidden_states_llama3=lambda b: _randn(4, b, 4, 4, seed=3),
        pooled_embeds=("B", 8),
        timesteps=_steps,
    ),
)
TINY["HiDreamPacked"] = (
    "HiDreamImageTransformer2DModel",
    TINY["HiDream"][1],
    _inputs(  # patchified by the caller
        hidden_states=("B", 16, 16),
        hidden_states_masks=lambda b: (torch.arange(16) < 8).float().expand(b, -1),
        img_sizes=lambda b: [(2, 4)] * b,
        img_ids=lambda b: torch.cat([image_ids(2, 4), torch.zeros(8, 3)]).expand(b, -1, -1),
        encoder_hidden_states_t5=("B", 8, 8),
        encoder_hidden_states_llama3=lambda b: _randn(4, b, 4, 4, seed=3),
        pooled_embeds=("B", 8),
        timesteps=_steps,
    ),
)
TINY["Lumina2"] = (
    "Lumina2Transformer2DModel",
    dict(
        sample_size=16,
        patch_size=2,
        in_channels=4,
        hidden_size=24,
        num_layers=2,
        num_refiner_layers=2,
        num_attention_heads=3,
        num_kv_heads=1,
        multiple_of=2,
        ffn_dim_multiplier=None,
        norm_eps=1e-05,
        scaling_factor=1.0,
        axes_dim_rope=(4, 2, 2),
        axes_lens=(128, 128, 128),
        cap_feat_dim=32,
    ),
    _inputs(
        hidden_states=("B", 4, 8, 8),
        encoder_hidden_states=("B", 16, 32),
        timestep=_half,
        encoder_attention_mask=_lengths(16, 16, 10),
    ),
)  # caption lengths differ per sample
TINY["ZImage"] = (
    "ZImageTransformer2DModel",
    dict(
        all_patch_size=(2,),
        all_f_patch_size=(1,),
        in_channels=16,
        dim=16,
        n_layers=2,
        n_refiner_layers=2,
        n_heads=1,
        n_kv_heads=2,
        qk_norm=True,
        cap_feat_dim=16,
        rope_theta=256.0,
        t_scale=1000.0,
        axes_dims=[8, 4, 4],
        axes_lens=[256, 32, 32],
    ),
    _inputs(  # images of different sizes (48 tokens pad to 64) and captions of 16 and 9
        x=lambda b: [_randn(16, 1, 16, 16 if i % 2 == 0 else 12, seed=i) for i in range(b)],
        cap_feats=lambda b: [_randn(16 if i % 2 == 0 else 9, 16, seed=20 + i) for i in range(b)],
        t=_half,
    ),
)
TINY["ZImageOmni"] = (
    "ZImageTransformer2DModel",
    {**TINY["ZImage"][1], "siglip_feat_dim": 8},
    _inputs(
        x=lambda b: [
            [_randn(16, 1, 8, 8, seed=i), _randn(16, 1, 16, 16 if i % 2 == 0 else 12, seed=10 + i)] for i in range(b)
        ],  # a condition image, then the target
        cap_feats=lambda b: [[_randn(5 + 4 * (i % 2), 16, seed=20 + i), _randn(7, 16, seed=30 + i)] for i in range(b)],
        siglip_feats=lambda b: [[None, None]] * b,
        image_noise_mask=lambda b: [[0, 1]] * b,
        t=_half,
    ),
)
TINY["OmniGen"] = (
    "OmniGenTransformer2DModel",
    dict(
        hidden_size=16,
        num_attention_heads=4,
        num_key_value_heads=4,
        intermediate_size=32,
        num_layers=2,
        pad_token_id=0,
        vocab_size=1000,
        in_channels=4,
        time_step_dim=4,
        rope_scaling={"long_factor": [1, 2], "short_factor": [1, 2]},
    ),
    _inputs(
        hidden_states=("B", 4, 8, 8),
        timestep=_half,
        input_ids=lambda b: torch.randint(1, 10, (b, 24), generator=_g()),
        input_img_latents=lambda b: [_randn(1, 4, 8, 8, seed=5)],
        input_image_sizes={0: [[0, 16]]},
        attention_mask=lambda b: torch.ones(b, 41, 41),
        position_ids=lambda b: torch.arange(41).expand(b, -1),
    ),
)
TINY["ErnieImage"] = (
    "ErnieImageTransformer2DModel",
    dict(
        hidden_size=16,
        num_attention_heads=1,
        num_layers=2,
        ffn_hidden_size=16,
        in_channels=16,
        out_channels=16,
        patch_size=1,
        text_in_dim=16,
        rope_theta=256,
        rope_axes_dim=(8, 4, 4),
        eps=1e-06,
        qk_layernorm=True,
    ),
    _inputs(
        hidden_states=("B", 16, 4, 4),
        timestep=_half,
        text_bth=("B", 8, 16),
        text_lens=lambda b: torch.tensor([8, 5] * b)[:b],
    ),
)  # text lengths differ per sample
TINY["BriaFibo2"] = (
    "BriaFibo2Transformer2DModel",
    dict(
        in_channels=4,
        patch_size=2,
        dim=32,
        n_layers=2,
        n_refiner_layers=2,
        n_heads=2,
        cap_feat_dim=32,
        injection_layer_ids=(1,),
        perceiver_num_layers=1,
        min_num_gist_tokens=4,
        max_num_gist_tokens=8,
        gist_step=4,
        gist_min_text_len=4,
        gist_max_text_len=16,
        axes_dims=(4, 6, 6),
        axes_lens=(64, 32, 32),
    ),
    _inputs(
        hidden_states=("B", 4, 8, 8),
        timestep=_half,
        encoder_hidden_states=("B", 2, 8, 32),
        context_latents=lambda b: [_randn(b, 4, 4, 8, seed=4)],
    ),
)  # [gist; image; context]
TINY["Ideogram4"] = (
    "Ideogram4Transformer2DModel",
    dict(
        in_channels=16,
        num_layers=2,
        attention_head_dim=8,
        num_attention_heads=4,
        intermediate_size=32,
        adaln_dim=16,
        llm_features_dim=24,
        rope_theta=10000,
        mrope_section=(2, 1, 1),
        norm_eps=1e-05,
    ),
    _inputs(
        hidden_states=("B", 8, 16),
        encoder_hidden_states=("B", 8, 24),
        timestep=_half,
        position_ids=lambda b: torch.tensor(
            [[i, i, i] for i in range(4)] + [[9, 9 + r, 9 + c] for r in (0, 1) for c in (0, 1)]
        ).expand(b, -1, -1),
        segment_ids=lambda b: torch.ones(b, 8, dtype=torch.int64),
        indicator=lambda b: torch.tensor([[3, 3, 3, 3, 2, 2, 2, 2], [3, 3, 2, 2, 2, 2, 3, 3]] * b)[:b],
    ),
)
TINY["MiniMaxH3"] = (
    "MiniMaxH3Transformer3DModel",
    dict(
        num_attention_heads=2,
        attention_head_dim=16,
        hidden_size=24,
        num_layers=2,
        num_refiner_layers=2,
        ffn_dim=32,
        in_channels=4,
        audio_in_channels=6,
        patch_size=(1, 2, 2),
        text_dim=8,
        freq_dim=8,
        time_embed_hidden_dim=24,
        time_embed_dim=16,
        rope_freq_dim=2,
    ),
    _inputs(
        hidden_states=("B", 8, 16),
        audio_hidden_states=("B", 6, 6),
        encoder_hidden_states=("B", 4, 8),
        timestep=lambda b: torch.linspace(0.3, 0.7, b),
        timestep_indices=torch.tensor([0] * 4 + [1] * 6 + [0] * 8),
        token_tags=torch.tensor([1] * 4 + [2] * 6 + [0] * 8),
        position_ids=lambda b: _randn(18, 3, seed=6),
        video_indices=torch.arange(10, 18),
        audio_indices=torch.arange(4, 10),
        text_indices=torch.arange(4),
    ),
)
_WAN_LIKE = dict(
    patch_size=(1, 2, 2),
    num_attention_heads=2,
    attention_head_dim=12,
    in_channels=4,
    out_channels=4,
    text_dim=16,
    freq_dim=256,
    ffn_dim=32,
    num_layers=2,
    cross_attn_norm=True,
    rope_max_seq_len=32,
)
_WAN_INPUTS = _inputs(hidden_states=("B", 4, 2, 8, 8), encoder_hidden_states=("B", 12, 16), timestep=_steps)
TINY["Helios"] = (
    "HeliosTransformer3DModel",
    dict(
        {k: v for k, v in _WAN_LIKE.items() if k != "rope_max_seq_len"},
        qk_norm="rms_norm_across_heads",
        rope_dim=(4, 4, 4),
        has_multi_term_memory_patch=True,
        guidance_cross_attn=True,
        zero_history_timestep=True,
        is_amplify_history=False,
    ),
    _inputs(
        hidden_states=("B", 4, 2, 8, 8),
        timestep=_steps,
        encoder_hidden_states=("B", 12, 16),
        indices_hidden_states=lambda b: torch.ones(b, 2),
        indices_latents_history_short=lambda b: torch.ones(b, 1),
        indices_latents_history_mid=lambda b: torch.ones(b, 1),
        indices_latents_history_long=lambda b: torch.ones(b, 4),
        latents_history_short=("B", 4, 1, 8, 8),
        latents_history_mid=("B", 4, 1, 8, 8),
        latents_history_long=("B", 4, 4, 8, 8),
    ),
)
TINY["SkyReelsV2"] = ("SkyReelsV2Transformer3DModel", dict(_WAN_LIKE, qk_norm="rms_norm_across_heads"), _WAN_INPUTS)
TINY["AnyFlow"] = (
    "AnyFlowTransformer3DModel",
    dict(_WAN_LIKE, gate_value=0.25, deltatime_type="r"),
    _inputs(
        hidden_states=("B", 2, 4, 8, 8),
        timestep=lambda b: torch.full((b, 2), 500.0),
        r_timestep=lambda b: torch.full((b, 2), 250.0),
        encoder_hidden_states=("B", 12, 16),
    ),
)
TINY["ChronoEdit"] = (
    "ChronoEditTransformer3DModel",
    dict(
        _WAN_LIKE,
        attention_head_dim=8,
        in_channels=16,
        out_channels=16,
        text_dim=32,
        freq_dim=16,
        qk_norm="rms_norm_across_heads",
        rope_max_seq_len=64,
        rope_temporal_skip_len=8,
    ),
    _inputs(hidden_states=("B", 16, 2, 8, 8), timestep=_steps, encoder_hidden_states=("B", 12, 32)),
)
TINY["WanVACE"] = (
    "WanVACETransformer3DModel",
    dict(
        _WAN_LIKE,
        in_channels=16,
        out_channels=16,
        text_dim=32,
        num_layers=4,
        qk_norm="rms_norm_across_heads",
        vace_layers=[0, 2],
        vace_in_channels=48,
    ),
    _inputs(
        hidden_states=("B", 16, 2, 8, 8),
        encoder_hidden_states=("B", 12, 32),
        control_hidden_states=("B", 48, 2, 8, 8),
        timestep=_steps,
    ),
)
TINY["WanAnimate"] = (
    "WanAnimateTransformer3DModel",
    dict(
        _WAN_LIKE,
        in_channels=12,
        latent_channels=4,
        qk_norm="rms_norm_across_heads",
        image_dim=16,
        motion_encoder_channel_sizes={"4": 16, "8": 16, "16": 16},
        motion_encoder_size=16,
        motion_style_dim=8,
        motion_dim=4,
        motion_encoder_dim=16,
        face_encoder_hidden_dim=16,
        face_encoder_num_heads=2,
        inject_face_latents_blocks=2,
    ),
    _inputs(
        hidden_states=("B", 12, 5, 8, 8),
        timestep=_steps,
        encoder_hidden_states=("B", 12, 16),
        encoder_hidden_states_image=("B", 12, 16),
        pose_hidden_states=("B", 4, 4, 8, 8),
        face_pixel_values=("B", 3, 13, 16, 16),
    ),
)
_HUNYUAN = dict(
    in_channels=4,
    out_channels=4,
    num_attention_heads=2,
    attention_head_dim=10,
    num_layers=2,
    num_single_layers=2,
    num_refiner_layers=1,
    patch_size=2,
    patch_size_t=1,
    guidance_embeds=True,
    text_embed_dim=16,
    pooled_projection_dim=8,
    rope_axes_dim=(2, 4, 4),
    image_condition_type=None,
)
TINY["HunyuanVideoFramepack"] = (
    "HunyuanVideoFramepackTransformer3DModel",
    dict(_HUNYUAN, has_image_proj=True, image_proj_dim=16, has_clean_x_embedder=True),
    _inputs(  # [history; noisy]
        hidden_states=("B", 4, 3, 4, 4),
        timestep=_steps,
        encoder_hidden_states=("B", 12, 16),
        pooled_projections=("B", 8),
        encoder_attention_mask=_lengths(12, 12, 9, dtype=torch.float32),
        guidance=_steps,
        image_embeds=("B", 12, 16),
        indices_latents=torch.ones(3),
        latents_clean=("B", 4, 2, 4, 4),
        indices_latents_clean=torch.ones(2),
        latents_history_2x=("B", 4, 2, 4, 4),
        indices_latents_history_2x=torch.ones(2),
        latents_history_4x=("B", 4, 8, 4, 4),
        indices_latents_history_4x=torch.ones(8),
    ),
)
TINY["HunyuanVideo15"] = (
    "HunyuanVideo15Transformer3DModel",
    dict(
        in_channels=4,
        out_channels=4,
        num_attention_heads=2,
        attention_head_dim=8,
        num_layers=2,
        num_refiner_layers=1,
        mlp_ratio=2.0,
        patch_size=1,
        patch_size_t=1,
        text_embed_dim=16,
        text_embed_2_dim=8,
        image_embed_dim=12,
        rope_axes_dim=(2, 2, 4),
        target_size=16,
        task_type="t2v",
    ),
    _inputs(
        hidden_states=("B", 4, 1, 8, 8),
        timestep=_half,
        encoder_hidden_states=("B", 6, 16),
        encoder_hidden_states_2=("B", 4, 8),
        encoder_attention_mask=_lengths(6, 6, 4, dtype=torch.float32),
        encoder_attention_mask_2=_ones(4, dtype=torch.float32),
        image_embeds=("B", 3, 12),
    ),
)
TINY["HunyuanImage"] = (
    "HunyuanImageTransformer2DModel",
    dict(
        in_channels=4,
        out_channels=4,
        num_attention_heads=4,
        attention_head_dim=8,
        num_layers=2,
        num_single_layers=2,
        num_refiner_layers=1,
        patch_size=(1, 1),
        guidance_embeds=False,
        text_embed_dim=32,
        text_embed_2_dim=32,
        rope_axes_dim=(4, 4),
    ),
    _inputs(
        hidden_states=("B", 4, 4, 4),
        timestep=_half,
        encoder_hidden_states=("B", 8, 32),
        encoder_attention_mask=_ones(8),
        encoder_hidden_states_2=("B", 6, 32),
        encoder_attention_mask_2=_ones(6),
    ),
)
TINY["MotifVideo"] = (
    "MotifVideoTransformer3DModel",
    dict(
        in_channels=33,
        out_channels=16,
        num_attention_heads=2,
        attention_head_dim=12,
        num_layers=2,
        num_single_layers=2,
        num_decoder_layers=0,
        mlp_ratio=4.0,
        patch_size=1,
        patch_size_t=1,
        qk_norm="rms_norm",
        norm_type="layer_norm",
        text_embed_dim=32,
        image_embed_dim=4,
        rope_theta=256.0,
        rope_axes_dim=(4, 4, 4),
        enable_text_cross_attention_dual=False,
        enable_text_cross_attention_single=False,
    ),
    _inputs(hidden_states=("B", 33, 1, 4, 4), encoder_hidden_states=("B", 12, 32), timestep=_steps),
)
_COG = dict(
    num_attention_heads=2,
    attention_head_dim=8,
    in_channels=4,
    out_channels=4,
    time_embed_dim=2,
    text_embed_dim=8,
    num_layers=2,
    sample_width=8,
    sample_height=8,
    sample_frames=8,
    patch_size=2,
    temporal_compression_ratio=4,
    max_text_seq_length=8,
)
TINY["CogVideoX"] = (
    "CogVideoXTransformer3DModel",
    _COG,
    _inputs(hidden_states=("B", 1, 4, 8, 8), encoder_hidden_states=("B", 8, 8), timestep=_steps),
)
TINY["ConsisID"] = (
    "ConsisIDTransformer3DModel",
    dict(
        _COG,
        cross_attn_interval=1,
        is_kps=False,
        is_train_face=True,
        cross_attn_dim_head=1,
        cross_attn_num_heads=1,
        LFE_id_dim=2,
        LFE_vit_dim=2,
        LFE_depth=5,
        LFE_dim_head=8,
        LFE_num_heads=2,
        LFE_num_id_token=1,
        LFE_num_querie=1,
        LFE_output_dim=10,
        LFE_ff_mult=1,
        LFE_num_scale=1,
    ),
    _inputs(
        hidden_states=("B", 1, 4, 8, 8),
        encoder_hidden_states=("B", 8, 8),
        timestep=_steps,
        id_vit_hidden=lambda b: [torch.ones(b, 2, 2)],
        id_cond=lambda b: torch.ones(b, 2),
    ),
)
_SIZES = dict(
    original_size=lambda b: torch.full((b, 2), 8),
    target_size=lambda b: torch.full((b, 2), 8),
    crop_coords=lambda b: torch.zeros(b, 2, dtype=torch.int64),
)
TINY["CogView3Plus"] = (
    "CogView3PlusTransformer2DModel",
    dict(
        patch_size=2,
        in_channels=4,
        num_layers=2,
        attention_head_dim=4,
        num_attention_heads=2,
        out_channels=4,
        text_embed_dim=8,
        time_embed_dim=8,
        condition_dim=2,
        pos_embed_max_size=8,
        sample_size=8,
    ),
    _inputs(hidden_states=("B", 4, 8, 8), encoder_hidden_states=("B", 8, 8), timestep=_steps, **_SIZES),
)
TINY["CogView4"] = (
    "CogView4Transformer2DModel",
    dict(
        patch_size=2,
        in_channels=4,
        num_layers=2,
        attention_head_dim=4,
        num_attention_heads=4,
        out_channels=4,
        text_embed_dim=8,
        time_embed_dim=8,
        condition_dim=4,
    ),
    _inputs(hidden_states=("B", 4, 8, 8), encoder_hidden_states=("B", 8, 8), timestep=_steps, **_SIZES),
)
TINY["GlmImage"] = (
    "GlmImageTransformer2DModel",
    dict(
        patch_size=2,
        in_channels=4,
        out_channels=4,
        num_layers=2,
        attention_head_dim=8,
        num_attention_heads=2,
        text_embed_dim=32,
        time_embed_dim=16,
        condition_dim=8,
        prior_vq_quantizer_codebook_size=64,
    ),
    _inputs(
        hidden_states=("B", 4, 8, 8),
        encoder_hidden_states=("B", 12, 32),
        prior_token_id=lambda b: torch.arange(16).expand(b, -1),
        prior_token_drop=lambda b: torch.zeros(b, dtype=torch.bool),
        timestep=_steps,
        target_size=lambda b: torch.full((b, 2), 8.0),
        crop_coords=lambda b: torch.zeros(b, 2),
    ),
)
TINY["EasyAnimate"] = (
    "EasyAnimateTransformer3DModel",
    dict(
        attention_head_dim=16,
        num_attention_heads=2,
        in_channels=4,
        mmdit_layers=2,
        num_layers=2,
        out_channels=4,
        patch_size=2,
        sample_height=60,
        sample_width=90,
        text_embed_dim=16,
        time_embed_dim=8,
        time_position_encoding_type="3d_rope",
        timestep_activation_fn="silu",
    ),
    _inputs(hidden_states=("B", 4, 2, 8, 8), timestep=_steps, encoder_hidden_states=("B", 16, 16)),
)
TINY["Mochi"] = (
    "MochiTransformer3DModel",
    dict(
        patch_size=2,
        num_attention_heads=2,
        attention_head_dim=8,
        num_layers=2,
        pooled_projection_dim=16,
        in_channels=4,
        out_channels=None,
        qk_norm="rms_norm",
        text_embed_dim=16,
        time_embed_dim=4,
        activation_fn="swiglu",
        max_sequence_length=16,
    ),
    _inputs(
        hidden_states=("B", 4, 2, 8, 8),
        encoder_hidden_states=("B", 16, 16),
        timestep=_steps,
        encoder_attention_mask=_lengths(16, 16, 11),
    ),
)
_JOY = dict(
    patch_size=[1, 2, 2],
    in_channels=16,
    hidden_size=32,
    num_attention_heads=2,
    text_dim=16,
    num_layers=2,
    rope_dim_list=[4, 6, 6],
    theta=256,
)
TINY["JoyImageEdit"] = (
    "JoyImageEditTransformer3DModel",
    _JOY,
    _inputs(  # (B, items, C, T, H, W): reference, target
        hidden_states=("B", 2, 16, 1, 4, 4), encoder_hidden_states=("B", 12, 16), timestep=lambda b: torch.ones(b)
    ),
)
TINY["JoyImageEditPlus"] = (
    "JoyImageEditPlusTransformer3DModel",
    _JOY,
    _inputs(  # target grid first, then a reference
        hidden_states=("B", 8, 16, 1, 2, 2),
        encoder_hidden_states=("B", 12, 16),
        timestep=lambda b: torch.ones(b),
        encoder_hidden_states_mask=_ones(12, dtype=torch.int64),
        shape_list=lambda b: [[(1, 2, 2), (1, 1, 3)]] * b,
    ),
)
_LTX_INPUTS = dict(
    hidden_states=("B", 32, 4),
    encoder_hidden_states=("B", 8, 16),
    encoder_attention_mask=_ones(8),
    num_frames=2,
    height=4,
    width=4,
)
TINY["LTX"] = (
    "LTXVideoTransformer3DModel",
    dict(
        in_channels=4,
        out_channels=4,
        num_attention_heads=2,
        attention_head_dim=8,
        cross_attention_dim=16,
        num_layers=2,
        qk_norm="rms_norm_across_heads",
        caption_channels=16,
    ),
    _inputs(**_LTX_INPUTS, timestep=_steps),
)
TINY["LTX2"] = (
    "LTX2VideoTransformer3DModel",
    dict(
        in_channels=4,
        out_channels=4,
        patch_size=1,
        patch_size_t=1,
        num_attention_heads=2,
        attention_head_dim=8,
        cross_attention_dim=16,
        audio_in_channels=4,
        audio_out_channels=4,
        audio_num_attention_heads=2,
        audio_attention_head_dim=4,
        audio_cross_attention_dim=8,
        num_layers=2,
        qk_norm="rms_norm_across_heads",
        caption_channels=16,
        rope_double_precision=False,
    ),
    _inputs(
        **_LTX_INPUTS,
        audio_hidden_states=("B", 9, 4),
        audio_encoder_hidden_states=("B", 8, 16),
        timestep=lambda b: torch.full((b,), 500.0),
        audio_num_frames=9,
        fps=25.0,
    ),
)
_KANDINSKY = dict(
    in_visual_dim=16,
    in_text_dim=32,
    in_text_dim2=32,
    time_dim=16,
    out_visual_dim=16,
    patch_size=(1, 2, 2),
    model_dim=16,
    ff_dim=32,
    num_text_blocks=2,
    num_visual_blocks=2,
    visual_cond=False,
)


def _kandinsky_inputs(frames):
    return _inputs(
        hidden_states=("B", frames, 8, 8, 16),
        encoder_hidden_states=("B", 8, 32),
        pooled_projections=("B", 32),
        timestep=lambda b: torch.full((b,), 500.0),
        visual_rope_pos=[torch.arange(frames), torch.arange(4), torch.arange(4)],
        text_rope_pos=torch.arange(8),
        scale_factor=(1.0, 1.0, 1.0),
        sparse_params=None,
    )


TINY["Kandinsky5Video"] = (
    "Kandinsky5Transformer3DModel",
    dict(_KANDINSKY, axes_dims=(1, 1, 2), attention_type="regular"),
    _kandinsky_inputs(2),
)
TINY["Kandinsky5Image"] = ("Kandinsky5Transformer3DModel", TINY["Kandinsky5Video"][1], _kandinsky_inputs(1))
TINY["Kandinsky6"] = (
    "Kandinsky6Transformer3DModel",
    dict(_KANDINSKY, axes_dims=(2, 2, 4), in_audio_dim=4, out_audio_dim=4),
    _inputs(
        hidden_states=("B", 2, 8, 8, 16),
        encoder_hidden_states=("B", 8, 32),
        pooled_projections=("B", 32),
        timestep=lambda b: torch.full((b,), 500.0),
    ),
)
TINY["Kandinsky6SR"] = (
    "Kandinsky6SRTransformer3DModel",
    dict(
        in_visual_dim=8,
        out_visual_dim=8,
        time_dim=16,
        patch_size=(1, 1, 1),
        model_dim=16,
        ff_dim=32,
        num_visual_blocks=2,
        axes_dims=(2, 2, 4),
    ),
    _inputs(hidden_states=("B", 2, 8, 8, 17), timestep=lambda b: torch.full((b,), 500.0)),
)
TINY["SanaVideo"] = (
    "SanaVideoTransformer3DModel",
    dict(
        in_channels=16,
        out_channels=16,
        num_attention_heads=2,
        attention_head_dim=12,
        num_layers=2,
        num_cross_attention_heads=2,
        cross_attention_head_dim=12,
        cross_attention_dim=24,
        caption_channels=16,
        mlp_ratio=2.5,
        sample_size=8,
        patch_size=(1, 2, 2),
        norm_elementwise_affine=False,
        norm_eps=1e-06,
        qk_norm="rms_norm_across_heads",
        rope_max_seq_len=32,
    ),
    _inputs(hidden_states=("B", 16, 2, 8, 8), encoder_hidden_states=("B", 12, 16), timestep=_steps),
)
TINY["SanaWM"] = (
    "SanaWMTransformer3DModel",
    dict(
        in_channels=4,
        num_layers=2,
        hidden_size=32,
        num_attention_heads=2,
        softmax_every_n=2,
        linear_head_dim=16,
        chunk_plucker_channels=6,
        chunk_plucker_post_attn_blocks=2,
        image_size=64,
        caption_channels=16,
        mixed_precision="fp32",
        fp32_attention=False,
        use_chunk_plucker_post_attn=False,
    ),
    _inputs(
        hidden_states=("B", 4, 2, 4, 4),
        timestep=lambda b: torch.full((b, 1, 2), 500.0),
        encoder_hidden_states=("B", 1, 8, 16),
        mask=_ones(8, dtype=torch.int64),
    ),
)
TINY["Allegro"] = (
    "AllegroTransformer3DModel",
    dict(
        num_attention_heads=2,
        attention_head_dim=8,
        in_channels=4,
        out_channels=4,
        num_layers=2,
        cross_attention_dim=16,
        sample_width=8,
        sample_height=8,
        sample_frames=8,
        caption_channels=8,
    ),
    _inputs(hidden_states=("B", 4, 2, 8, 8), encoder_hidden_states=("B", 16, 8), timestep=_steps),
)
TINY["Latte"] = (
    "LatteTransformer3DModel",
    dict(
        sample_size=8,
        num_layers=2,
        patch_size=2,
        attention_head_dim=4,
        num_attention_heads=2,
        caption_channels=8,
        in_channels=4,
        cross_attention_dim=8,
        out_channels=8,
        attention_bias=True,
        activation_fn="gelu-approximate",
        num_embeds_ada_norm=1000,
        norm_type="ada_norm_single",
        norm_elementwise_affine=False,
        norm_eps=1e-06,
        video_length=2,
    ),
    _inputs(
        hidden_states=("B", 4, 2, 8, 8),
        encoder_hidden_states=("B", 8, 8),
        timestep=_steps,
        enable_temporal_attentions=True,
    ),
)
TINY["Transformer2D"] = (
    "Transformer2DModel",
    dict(
        num_attention_heads=2,
        attention_head_dim=4,
        in_channels=4,
        num_layers=2,
        norm_num_groups=1,
        cross_attention_dim=8,
    ),
    _inputs(hidden_states=("B", 4, 4, 4), encoder_hidden_states=("B", 6, 8)),
)
TINY["HunyuanDiT"] = (
    "HunyuanDiT2DModel",
    dict(
        sample_size=8,
        patch_size=2,
        in_channels=4,
        num_layers=2,
        attention_head_dim=8,
        num_attention_heads=2,
        cross_attention_dim=8,
        cross_attention_dim_t5=8,
        pooled_projection_dim=4,
        hidden_size=16,
        text_len=4,
        text_len_t5=4,
        activation_fn="gelu-approximate",
    ),
    _inputs(
        hidden_states=("B", 4, 8, 8),
        encoder_hidden_states=("B", 4, 8),
        text_embedding_mask=_ones(4, dtype=torch.float32),
        encoder_hidden_states_t5=("B", 4, 8),
        text_embedding_mask_t5=_ones(4, dtype=torch.float32),
        timestep=lambda b: torch.full((b,), 44.0),
        image_meta_size=lambda b: torch.tensor([[64.0, 64, 8, 8, 0, 0]] * b),
        style=lambda b: torch.zeros(b, dtype=torch.int64),
        image_rotary_emb=[torch.ones(16, 8), torch.zeros(16, 8)],
    ),
)
TINY["LuminaNext"] = (
    "LuminaNextDiT2DModel",
    dict(
        sample_size=16,
        patch_size=2,
        in_channels=4,
        hidden_size=24,
        num_layers=2,
        num_attention_heads=3,
        num_kv_heads=1,
        multiple_of=16,
        ffn_dim_multiplier=None,
        norm_eps=1e-05,
        learn_sigma=False,
        qk_norm=True,
        cross_attention_dim=32,
        scaling_factor=1.0,
    ),
    _inputs(
        hidden_states=("B", 4, 8, 8),
        encoder_hidden_states=("B", 16, 32),
        timestep=_half,
        encoder_mask=_ones(16, dtype=torch.float32),
        image_rotary_emb=lambda b: _randn(384, 384, 4, seed=7),
        cross_attention_kwargs={},
    ),
)
TINY["NucleusMoE"] = (
    "NucleusMoEImageTransformer2DModel",
    dict(
        patch_size=2,
        in_channels=16,
        out_channels=4,
        num_layers=2,
        attention_head_dim=16,
        num_attention_heads=4,
        joint_attention_dim=16,
        axes_dims_rope=(8, 4, 4),
        moe_enabled=False,
        capacity_factors=[8.0, 8.0],
    ),
    _inputs(
        hidden_states=("B", 16, 16),
        encoder_hidden_states=("B", 8, 16),
        encoder_hidden_states_mask=_ones(8, dtype=torch.int64),
        timestep=_half,
        img_shapes=lambda b: [(1, 4, 4)] * b,
    ),
)
TINY["PRX"] = (
    "PRXTransformer2DModel",
    dict(  # the diffusers test config has 302M parameters; this one is tiny
        in_channels=16,
        patch_size=2,
        context_in_dim=32,
        hidden_size=32,
        mlp_ratio=2.0,
        num_heads=2,
        depth=2,
        axes_dim=[8, 8],
        theta=10000,
    ),
    _inputs(hidden_states=("B", 16, 8, 8), encoder_hidden_states=("B", 8, 32), timestep=_half),
)
TINY["AceStep"] = (
    "AceStepTransformer1DModel",
    dict(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=8,
        in_channels=24,
        audio_acoustic_hidden_dim=8,
        patch_size=2,
        rope_theta=10000.0,
        rms_norm_eps=1e-06,
        sliding_window=16,
    ),
    _inputs(
        hidden_states=("B", 8, 8),
        timestep=_half,
        timestep_r=_half,
        encoder_hidden_states=("B", 10, 32),
        context_latents=("B", 8, 16),
    ),
)
TINY["LongCatAudioDiT"] = (
    "LongCatAudioDiTTransformer",
    dict(dit_dim=64, dit_depth=2, dit_heads=4, dit_text_dim=32, latent_dim=8, text_conv=False),
    _inputs(
        hidden_states=("B", 16, 8),
        encoder_hidden_states=("B", 10, 32),
        encoder_attention_mask=_lengths(10, 10, 7),
        attention_mask=_ones(16),
        timestep=lambda b: torch.ones(b),
    ),
)
TINY["StableAudio"] = (
    "StableAudioDiTModel",
    dict(
        sample_size=4,
        in_channels=3,
        num_layers=2,
        attention_head_dim=4,
        num_key_value_attention_heads=2,
        out_channels=3,
        cross_attention_dim=4,
        time_proj_dim=8,
        global_states_input_dim=8,
        cross_attention_input_dim=4,
    ),
    _inputs(
        hidden_states=("B", 3, 8),
        timestep=_half,
        encoder_hidden_states=("B", 6, 4),
        global_hidden_states=("B", 1, 8),
        rotary_embedding=lambda b: (_randn(9, 2, seed=8), _randn(9, 2, seed=9)),
    ),
)
TINY["StableAudio3"] = (
    "StableAudio3DiTModel",
    dict(
        io_channels=8,
        patch_size=1,
        embed_dim=32,
        depth=2,
        num_heads=4,
        cond_token_dim=16,
        global_cond_dim=12,
        local_add_cond_dim=5,
        timestep_features_dim=16,
        ff_mult=2,
        num_memory_tokens=3,
        use_differential_attention=False,
    ),
    _inputs(
        hidden_states=("B", 8, 16), timestep=_half, encoder_hidden_states=("B", 4, 16), global_hidden_states=("B", 12)
    ),
)
TINY["MiniMaxMusic3"] = (
    "MiniMaxMusic3Transformer1DModel",
    dict(
        in_channels=8,
        condition_dim=16,
        num_layers=2,
        num_attention_heads=2,
        attention_head_dim=8,
        ff_inner_dim=32,
        rotary_dim=4,
        fourier_embedding_dim=8,
    ),
    _inputs(hidden_states=("B", 8, 24), encoder_hidden_states=("B", 24, 16), timestep=_half),
)
_UNET = dict(
    layers_per_block=2,
    sample_size=32,
    in_channels=4,
    out_channels=4,
    use_linear_projection=True,
    addition_embed_type="text_time",
    addition_time_embed_dim=8,
    projection_class_embeddings_input_dim=80,
    cross_attention_dim=64,
)
_UNET_INPUTS = dict(
    sample=("B", 4, 16, 16),
    timestep=_steps,
    encoder_hidden_states=("B", 7, 64),
    added_cond_kwargs=lambda b: {"text_embeds": _randn(b, 32, seed=5), "time_ids": _randn(b, 6, seed=6)},
)
TINY["SDXL"] = (
    "UNet2DConditionModel",
    dict(  # SDXL's topology: blocks at two resolutions, width 32 then 64
        _UNET,
        block_out_channels=(16, 32, 64),
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
        attention_head_dim=(2, 4, 8),
        transformer_layers_per_block=(1, 1, 2),
        norm_num_groups=8,
    ),
    _inputs(**_UNET_INPUTS),
)
TINY["Kolors"] = (
    "UNet2DConditionModel",
    dict(  # Kolors: an SDXL UNet with a text projection of its ChatGLM states
        _UNET,
        block_out_channels=(32, 64),
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        attention_head_dim=(2, 4),
        transformer_layers_per_block=(1, 2),
        norm_num_groups=1,
        encoder_hid_dim=32,
        encoder_hid_dim_type="text_proj",
    ),
    _inputs(**{**_UNET_INPUTS, "encoder_hidden_states": ("B", 7, 32)}),
)
TINY["StableCascade"] = (
    "StableCascadeUNet",
    dict(  # the Stage C prior's layout, tiny
        in_channels=4,
        out_channels=4,
        timestep_ratio_embedding_dim=16,
        conditioning_dim=32,
        block_out_channels=(32, 32),
        num_attention_heads=(2, 2),
        down_num_layers_per_block=(2, 2),
        up_num_layers_per_block=(2, 2),
        clip_text_in_channels=16,
        clip_text_pooled_in_channels=16,
        clip_image_in_channels=16,
        clip_seq=2,
        dropout=(0.0, 0.0),
        switch_level=(False,),
    ),
    _inputs(
        sample=("B", 4, 8, 8),
        timestep_ratio=lambda b: torch.linspace(0.2, 0.8, b),
        clip_text_pooled=("B", 1, 16),
        clip_text=("B", 6, 16),
        clip_img=("B", 1, 16),
    ),
)

TINY["SanaWMRefiner"] = (
    "SanaWMLTX2RefinerTransformer3DModel",
    dict(
        in_channels=4,
        out_channels=4,
        num_attention_heads=2,
        attention_head_dim=8,
        cross_attention_dim=16,
        audio_in_channels=4,
        audio_out_channels=4,
        audio_num_attention_heads=2,
        audio_attention_head_dim=4,
        audio_cross_attention_dim=8,
        num_layers=2,
        caption_channels=16,
        rope_double_precision=False,
    ),
    _inputs(
        hidden_states=("B", 32, 4),
        encoder_hidden_states=("B", 8, 16),
        timestep=_half,
        video_rotary_emb=lambda b: (torch.ones(b, 32, 16), torch.zeros(b, 32, 16)),
    ),
)
TINY["WanAnimate2"] = (
    "WanAnimate2Transformer3DModel",
    dict(  # its reference ("extract") pass: dense attention
        patch_size=(1, 2, 2),
        text_len=8,
        in_dim=8,
        dim=24,
        ffn_dim=32,
        freq_dim=256,
        text_dim=16,
        out_dim=4,
        num_heads=2,
        num_layers=2,
        use_img_emb=False,
    ),
    _inputs(
        hidden_states=lambda b: [_randn(4, 2, 8, 8, seed=i) for i in range(b)],
        timestep=_steps,
        encoder_hidden_states=lambda b: [_randn(8, 16, seed=10 + i) for i in range(b)],
        condition_latents=lambda b: [_randn(4, 2, 8, 8, seed=20 + i) for i in range(b)],
        kv_cache=lambda b: diffusers.models.transformers.transformer_wan_animate_2.WanAnimate2KVCache(2),
        kv_cache_mode="extract",
        seq_len=32,
        offset_grid_sizes=torch.tensor([[2, 4, 4]]),
    ),
)


def randomize_zero_params(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Re-draw all-zero weights (adaLN-zero gates, zero-init heads) so blocks differ and gradients flow."""
    generator = _g(seed)
    with torch.no_grad():
        for parameter in model.parameters():
            if parameter.numel() and not parameter.any():
                parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.1)
    return model


# Classes the layout table refuses, tiny: class name -> init kwargs. Each command and `LayerSync` must say why.
REFUSED: dict[str, dict] = {
    "Cosmos3OmniTransformer": dict(  # packed sequences without a batch axis
        head_dim=6,
        hidden_act="relu2",
        hidden_size=12,
        intermediate_size=24,
        latent_channel=2,
        latent_patch_size=1,
        num_attention_heads=2,
        num_hidden_layers=2,
        num_key_value_heads=1,
        patch_latent_dim=2,
        qk_norm_for_text=False,
        rope_axes_dim=[1, 1, 1],
        vocab_size=32,
    ),
    "AnyFlowFARTransformer3DModel": dict(  # FlexAttention: no CPU backward for the gradient probe
        patch_size=(1, 2, 2),
        compressed_patch_size=(1, 4, 4),
        num_attention_heads=2,
        attention_head_dim=12,
        in_channels=4,
        out_channels=4,
        text_dim=16,
        freq_dim=256,
        ffn_dim=32,
        num_layers=2,
    ),
    "StableCascadeUNet": dict(  # a Stage B-style decoder, refused on the built model: its up blocks run twice
        in_channels=4,
        out_channels=4,
        timestep_ratio_embedding_dim=16,
        conditioning_dim=32,
        block_out_channels=(32, 32),
        num_attention_heads=(2, 2),
        down_num_layers_per_block=(1, 1),
        up_num_layers_per_block=(1, 1),
        up_blocks_repeat_mappers=(2, 2),
        clip_text_pooled_in_channels=16,
    ),
}


def build(name: str, *, batch: int = 2, seed: int = 0):
    """(model, inputs) for a TINY entry: a real diffusers class, random weights, zero weights re-drawn. Under an older
    diffusers (the oldest the package declares, tested in CI) a class it lacks, or one whose constructor lacks an
    argument of the tiny config, skips the test rather than failing it: that is the test's model, not the package."""
    class_name, config, inputs = TINY[name]
    torch.manual_seed(seed)
    cls = getattr(diffusers, class_name, None)
    if cls is None:
        pytest.skip(f"diffusers {diffusers.__version__} has no {class_name}")
    unknown = set(config) - set(inspect.signature(cls.__init__).parameters)
    if unknown:
        pytest.skip(f"diffusers {diffusers.__version__}'s {class_name} takes no {sorted(unknown)}")
    model = cls(**config)
    return randomize_zero_params(model, seed), inputs(batch)


def prediction(model: torch.nn.Module, inputs: dict) -> torch.Tensor:
    """The model's predicted sample (first output; Kandinsky 5 returns the tensor itself without return_dict)."""
    output = model(**inputs, return_dict=False)
    return output if isinstance(output, torch.Tensor) else output[0]


def enable_checkpointing(model: torch.nn.Module, function=None) -> None:
    """`model.enable_gradient_checkpointing(function)`: a diffusers older than 0.33 takes no function (the default
    checkpointing only; a test that needs another skips there)."""
    if "gradient_checkpointing_func" in inspect.signature(model.enable_gradient_checkpointing).parameters:
        model.enable_gradient_checkpointing(function)
    elif function is not None:
        pytest.skip(f"diffusers {diffusers.__version__} takes no gradient checkpointing function")
    else:
        try:
            model.enable_gradient_checkpointing()
        except TypeError as error:  # diffusers 0.32's StableCascadeUNet: `_set_gradient_checkpointing` breaks
            pytest.skip(f"diffusers {diffusers.__version__} cannot checkpoint {type(model).__name__}: {error}")
