"""Forward inputs for a model known only by its config, at a chosen noise level: one builder per class.

A builder draws random clean latents, mixes them with noise as flow matching does,
`x_t = (1 - sigma) * x_0 + sigma * noise`, and adds random text states of the config's widths, with the
timestep convention of the class's pipeline. Classes without a builder take a safetensors file of forward
keyword arguments instead (`save_forward_kwargs`). Like the layout table, the table is keyed by class name
and looked up along the MRO.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Any, Callable, Optional

import torch
from torch import nn

from ..errors import UnknownModelError


@dataclass(frozen=True)
class ProbeSize:
    """The probe's input size: latent height and width (before patching), latent frames, text tokens."""

    batch: int = 2
    height: int = 32
    width: int = 32
    frames: int = 4
    text_tokens: int = 16


class _Draw:
    """Random tensors on the model's device and dtype, from one seeded generator."""

    def __init__(self, model: nn.Module, seed: int):
        parameter = next(model.parameters())
        self.device, self.dtype = parameter.device, parameter.dtype
        self.generator = torch.Generator().manual_seed(seed)

    def randn(self, *shape) -> torch.Tensor:
        return torch.randn(*shape, generator=self.generator).to(self.device, self.dtype)

    def noisy(self, sigma: float, *shape) -> torch.Tensor:
        return (1 - sigma) * self.randn(*shape) + sigma * self.randn(*shape)

    def text(self, size: ProbeSize, width: int) -> torch.Tensor:
        """Random text-encoder states: the target tokens never include them, only their width matters."""
        return self.randn(size.batch, size.text_tokens, width)

    def full(self, value: float, size: ProbeSize, dtype=None) -> torch.Tensor:
        return torch.full((size.batch,), float(value), device=self.device, dtype=dtype or self.dtype)

    def ones(self, *shape) -> torch.Tensor:
        return torch.ones(*shape, device=self.device, dtype=self.dtype)


def _flux(c, d: _Draw, s: ProbeSize, sigma: float) -> dict:
    # The pipeline packs 2x2 latent patches into tokens and passes timestep / 1000.
    h, w = s.height // 2, s.width // 2
    rows, cols = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    img_ids = torch.stack((torch.zeros_like(rows), rows, cols), -1).reshape(-1, 3).to(d.device, d.dtype)
    inputs = dict(
        hidden_states=d.noisy(sigma, s.batch, h * w, c.in_channels),
        encoder_hidden_states=d.text(s, c.joint_attention_dim),
        pooled_projections=d.randn(s.batch, c.pooled_projection_dim),
        timestep=d.full(sigma, s),
        img_ids=img_ids,
        txt_ids=torch.zeros(s.text_tokens, 3, device=d.device, dtype=d.dtype),
    )
    if c.guidance_embeds:
        inputs["guidance"] = d.full(3.5, s)
    return inputs


def _sd3(c, d: _Draw, s: ProbeSize, sigma: float) -> dict:
    return dict(
        hidden_states=d.noisy(sigma, s.batch, c.in_channels, s.height, s.width),
        encoder_hidden_states=d.text(s, c.joint_attention_dim),
        pooled_projections=d.randn(s.batch, c.pooled_projection_dim),
        timestep=d.full(1000 * sigma, s),
    )


def _pixart(c, d: _Draw, s: ProbeSize, sigma: float) -> dict:
    conditions = {"resolution": None, "aspect_ratio": None}
    if c.use_additional_conditions or (c.use_additional_conditions is None and c.sample_size == 128):  # as diffusers
        pixels = torch.tensor([[8.0 * s.height, 8.0 * s.width]] * s.batch)  # the VAE's 8x downsampling
        conditions = {
            "resolution": pixels.to(d.device, d.dtype),
            "aspect_ratio": d.ones(s.batch, 1) * (s.height / s.width),
        }
    return dict(
        hidden_states=d.noisy(sigma, s.batch, c.in_channels, s.height, s.width),
        encoder_hidden_states=d.text(s, c.caption_channels or c.cross_attention_dim),
        timestep=d.full(1000 * sigma, s),
        added_cond_kwargs=conditions,
    )


def _sana(c, d: _Draw, s: ProbeSize, sigma: float) -> dict:
    inputs = dict(
        hidden_states=d.noisy(sigma, s.batch, c.in_channels, s.height, s.width),
        encoder_hidden_states=d.text(s, c.caption_channels),
        timestep=d.full(1000 * sigma, s),
    )
    if getattr(c, "guidance_embeds", False):
        inputs["guidance"] = d.full(4.5, s)
    return inputs


def _wan(c, d: _Draw, s: ProbeSize, sigma: float) -> dict:
    inputs = dict(
        hidden_states=d.noisy(sigma, s.batch, c.in_channels, s.frames, s.height, s.width),
        encoder_hidden_states=d.text(s, c.text_dim),
        timestep=d.full(1000 * sigma, s),
    )
    if c.image_dim is not None:  # image-to-video: 257 CLIP image tokens
        inputs["encoder_hidden_states_image"] = d.randn(s.batch, 257, c.image_dim)
    return inputs


def _qwen_image(c, d: _Draw, s: ProbeSize, sigma: float) -> dict:
    h, w = s.height // 2, s.width // 2
    inputs = dict(
        hidden_states=d.noisy(sigma, s.batch, h * w, c.in_channels),
        encoder_hidden_states=d.text(s, c.joint_attention_dim),
        encoder_hidden_states_mask=torch.ones(s.batch, s.text_tokens, dtype=torch.int64, device=d.device),
        timestep=d.full(sigma, s),
        img_shapes=[[(1, h, w)]] * s.batch,
    )
    if c.guidance_embeds:
        inputs["guidance"] = d.full(4.0, s)
    return inputs


def _hunyuan_video(c, d: _Draw, s: ProbeSize, sigma: float) -> dict:
    inputs = dict(
        hidden_states=d.noisy(sigma, s.batch, c.in_channels, s.frames, s.height, s.width),
        timestep=d.full(1000 * sigma, s),
        encoder_hidden_states=d.text(s, c.text_embed_dim),
        encoder_attention_mask=d.ones(s.batch, s.text_tokens),
        pooled_projections=d.randn(s.batch, c.pooled_projection_dim),
    )
    if c.guidance_embeds:
        inputs["guidance"] = d.full(6.0 * 1000, s)  # the pipeline passes guidance_scale * 1000
    return inputs


def _cosmos(c, d: _Draw, s: ProbeSize, sigma: float) -> dict:
    inputs = dict(
        hidden_states=d.noisy(sigma, s.batch, c.in_channels, s.frames, s.height, s.width),
        timestep=d.full(1000 * sigma, s),
        encoder_hidden_states=d.text(s, c.text_embed_dim),
        attention_mask=d.ones(s.batch, s.text_tokens),
        fps=24,
    )
    if c.concat_padding_mask:
        inputs["padding_mask"] = torch.zeros(s.batch, 1, s.height, s.width, device=d.device, dtype=d.dtype)
    return inputs


def _dit(c, d: _Draw, s: ProbeSize, sigma: float) -> dict:
    labels = torch.randint(0, c.num_embeds_ada_norm, (s.batch,), generator=d.generator).to(d.device)
    return dict(
        hidden_states=d.noisy(sigma, s.batch, c.in_channels, s.height, s.width),
        timestep=d.full(1000 * sigma, s, dtype=torch.long),
        class_labels=labels,
    )


InputBuilder = Callable[[Any, _Draw, ProbeSize, float], dict]

# Class name -> builder of forward kwargs from the model's config. Conventions from each class's pipeline.
INPUT_BUILDERS: dict[str, InputBuilder] = {
    "FluxTransformer2DModel": _flux,
    "SD3Transformer2DModel": _sd3,
    "PixArtTransformer2DModel": _pixart,
    "SanaTransformer2DModel": _sana,
    "WanTransformer3DModel": _wan,
    "QwenImageTransformer2DModel": _qwen_image,
    "HunyuanVideoTransformer3DModel": _hunyuan_video,
    "CosmosTransformer3DModel": _cosmos,
    "DiTTransformer2DModel": _dit,
}


def forward_inputs(model: nn.Module, size: ProbeSize, sigma: float, *, seed: int = 0) -> dict:
    """Forward kwargs for `model` at noise level `sigma` in (0, 1), built from its config."""
    for cls in type(model).__mro__:
        if cls.__name__ in INPUT_BUILDERS:
            return INPUT_BUILDERS[cls.__name__](model.config, _Draw(model, seed), size, sigma)
    raise UnknownModelError(
        f"The probe has no input builder for `{type(model).__name__}` (it has one for "
        f"{', '.join(sorted(INPUT_BUILDERS))}). Save the keyword arguments of one forward with "
        "`layersync_hooks.probe.save_forward_kwargs('inputs.safetensors', kwargs)` and pass "
        "`--inputs inputs.safetensors`."
    )


def save_forward_kwargs(path: str | os.PathLike, kwargs: dict[str, Any]) -> None:
    """Save forward kwargs: tensors as safetensors tensors, other values (ints, lists, dicts) as JSON metadata."""
    from safetensors.torch import save_file

    tensors = {k: v.detach().cpu().contiguous() for k, v in kwargs.items() if isinstance(v, torch.Tensor)}
    others = {k: json.dumps(v) for k, v in kwargs.items() if not isinstance(v, torch.Tensor)}
    save_file(tensors, os.fspath(path), metadata=others)


def load_forward_kwargs(path: str | os.PathLike, model: Optional[nn.Module] = None) -> dict[str, Any]:
    """The kwargs saved by `save_forward_kwargs`, floating tensors moved to the model's device and dtype."""
    from safetensors import safe_open

    with safe_open(os.fspath(path), framework="pt") as f:
        kwargs: dict[str, Any] = {k: json.loads(v) for k, v in (f.metadata() or {}).items()}
        kwargs.update({k: f.get_tensor(k) for k in f.keys()})
    if model is not None:
        parameter = next(model.parameters())
        for key, value in kwargs.items():
            if isinstance(value, torch.Tensor):
                dtype = parameter.dtype if value.is_floating_point() else value.dtype
                kwargs[key] = value.to(parameter.device, dtype)
    return kwargs
