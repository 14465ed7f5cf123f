"""Where token counts and offsets come from: the arguments a model actually receives, and its config (a diffusers
model's `config`, or the attributes of a model without one, as the trainers' own classes are).

A source is called with the call's `CallInputs` and returns an int (one for the whole batch), a list of ints (one
per sample) or a `(B,)` tensor (per-sample offsets). The rules in `rules.py` take them as their `count`/`start`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Optional, Union

import torch

from ..errors import LayerSyncError


@dataclass(frozen=True)
class Latents:
    r"""
    The number of tokens of the noisy latents in a model argument.

    Args:
        arg (`str`, defaults to `"hidden_states"`): The model argument holding the latents: a tensor, or a list of
            per-sample tensors without the batch axis (musubi-tuner's Wan), which gives one count per sample.
        patch (`int`, `str` or `tuple`, *optional*): `None` for packed `(B, N, C)` latents (N tokens). Otherwise the
            latents are channels-first `(B, C, *dims)` and are cut into patches: an int (or a config key holding
            one) patches every dim after C; a tuple (of ints or config keys) patches the trailing dims one each.
        condition_frames (`int`, defaults to 0): Leading latent frames that are conditions, not targets.
        packed_3d (`bool`, defaults to `False`): A 3-D argument is already packed `(B, N, C)` (HiDream takes both).
    """

    arg: str = "hidden_states"
    patch: Union[None, int, str, tuple] = None
    condition_frames: int = 0
    packed_3d: bool = False
    reads_inputs = True

    def __call__(self, inputs) -> Union[int, list[int]]:
        latents = inputs.model_arg(self.arg)
        if isinstance(latents, (list, tuple)) and latents and all(isinstance(x, torch.Tensor) for x in latents):
            return [self.count(sample.unsqueeze(0), inputs) for sample in latents]
        if not isinstance(latents, torch.Tensor):
            raise LayerSyncError(
                f"LayerSync needs the model argument `{self.arg}` to count the image tokens: a tensor or a list of "
                f"per-sample tensors, got {type(latents).__name__}."
            )
        return self.count(latents, inputs)

    def count(self, latents: torch.Tensor, inputs) -> int:
        """The target tokens of a batch of latents, `(B, N, C)` or channels-first."""
        if self.patch is None or (self.packed_3d and latents.dim() == 3):
            return latents.shape[1]
        patch = _config_value(inputs, self.patch)
        patch = tuple(_config_value(inputs, p) for p in patch) if isinstance(patch, (tuple, list)) else patch
        dims = latents.shape[2:] if isinstance(patch, int) else latents.shape[-len(patch) :]
        patch = (patch,) * len(dims) if isinstance(patch, int) else patch
        sizes = [d // p for d, p in zip(dims, patch)]
        if self.condition_frames:
            sizes[0] -= self.condition_frames // patch[0]
        return math.prod(sizes)

    def __str__(self):
        patch = "x".join(map(str, self.patch)) if isinstance(self.patch, tuple) else self.patch
        patch = "" if self.patch in (None, 1) else f" / {patch}"
        frames = f" after {self.condition_frames} frame" if self.condition_frames else ""
        return f"tokens of `{self.arg}{patch}`{frames}"


def _config_value(inputs, value):
    """A number given as is, or the name of a config entry (or, without a `config`, of a model attribute)."""
    return model_setting(inputs.model, value) if isinstance(value, str) else value


def model_setting(model, name: str, *default):
    """`model.config.<name>` for a diffusers model, `model.<name>` for a model without a config (musubi-tuner's
    and kohya sd-scripts' classes keep their patch size as an attribute)."""
    source = getattr(model, "config", model)
    if not hasattr(source, name) and not default:
        raise LayerSyncError(
            f"A token rule reads `{name}` from {type(model).__name__}, which has no such "
            f"{'config entry' if source is not model else 'attribute'}. Fix the layout's count source."
        )
    return getattr(source, name, *default)


@dataclass(frozen=True)
class Valid:
    """Per-sample counts: the number of True/nonzero entries of each row of a `(B, L)` mask argument."""

    arg: str
    reads_inputs = True

    def __call__(self, inputs) -> torch.Tensor:
        return inputs.model_arg(self.arg).bool().sum(1)

    def __str__(self):
        return f"`{self.arg}.sum(1)`"


@dataclass(frozen=True)
class FirstMarked:
    """Per-sample offsets: the first position where a block argument `(B, L)` equals `value`."""

    arg: str
    value: int = 1
    reads_inputs = True

    @property
    def block_args(self) -> tuple[str, ...]:
        return (self.arg,)

    def __call__(self, inputs) -> torch.Tensor:
        return (inputs.block_arg(self.arg) == self.value).int().argmax(1)

    def __str__(self):
        return f"first `{self.arg} == {self.value}`"


@dataclass(frozen=True)
class ImageShapes:
    r"""
    Per-sample token counts from a list of `(frames, height, width)` token grids per sample: Qwen-Image's
    `img_shapes` and JoyImage-Edit-Plus's `shape_list` put the target grid first (`index=0`), then the condition
    images; Qwen-Image 2.1 puts it last (`index=-1`). A model whose config sets `all_but_last`
    (Qwen-Image-Layered's `use_layer3d_rope`) denoises every grid but the last one, its condition image.
    """

    arg: str
    index: int = 0
    all_but_last: Optional[str] = None
    reads_inputs = True

    def __call__(self, inputs) -> list[int]:
        layered = self.all_but_last is not None and model_setting(inputs.model, self.all_but_last, False)
        counts = []
        for grids in inputs.model_arg(self.arg):
            grids = [grids] if isinstance(grids[0], int) else list(grids)  # [(1, h, w)] * B or [[(1, h, w), ...]] * B
            targets = grids[:-1] if layered else [grids[self.index]]
            counts.append(sum(math.prod(grid) for grid in targets))
        return counts

    def __str__(self):
        return f"tokens of the {'first' if self.index == 0 else 'last'} grid in `{self.arg}`"


@dataclass(frozen=True)
class Less:
    """A count less the per-sample counts in a model argument (missing or None: nothing less). musubi-tuner's
    Flux Kontext packs the target, then `control_lengths[i]` control tokens, into `img`."""

    count: Any
    arg: str
    reads_inputs = True

    def __call__(self, inputs) -> Union[int, list[int]]:
        total, less = self.count(inputs), inputs.model_arg(self.arg)
        if less is None:
            return total
        totals = total if isinstance(total, list) else [total] * len(less)
        return [t - int(n) for t, n in zip(totals, less)]

    def __str__(self):
        return f"{self.count} less `{self.arg}`"


@dataclass(frozen=True)
class Attribute:
    """A count held by an attribute of a block argument: the image length musubi-tuner's Z-Image passes its
    layers in `attn_params.img_len`, a Python int."""

    arg: str
    attribute: str
    reads_inputs = True

    @property
    def block_args(self) -> tuple[str, ...]:
        return (self.arg,)

    def __call__(self, inputs) -> int:
        return getattr(inputs.block_arg(self.arg), self.attribute)

    def __str__(self):
        return f"`{self.arg}.{self.attribute}`"
