"""Cut the target tokens out of a raw block output, after the forward returned.

The capture stores each block's output object as the block returned it; `select` reads the latent stream
element (the stack's `output` index), applies the stack's token rule, and flattens `(B, T, P, D)` video states.
"""

from __future__ import annotations

from typing import Any, NamedTuple, Optional

import torch
from torch import nn

from ..errors import LayerSyncError, ShapeMismatchError
from ..layouts import CallInputs
from .blocks import Block


class Activation(NamedTuple):
    """The target tokens of one block: `hidden` (B, N, D) in the model's dtype, `mask` (B, N) bool or None."""

    hidden: torch.Tensor
    mask: Optional[torch.Tensor]


def _stream(block: Block, output: Any) -> torch.Tensor:
    """The latent-stream tensor of one block output, per the layout's `output` index."""
    if hasattr(output, "to_tuple"):  # a transformers/diffusers ModelOutput
        output = output.to_tuple()
    if isinstance(output, (tuple, list)):
        index = block.stack.output
        if not -len(output) <= index < len(output):
            raise LayerSyncError(
                f"Block {block.path!r} returned a {type(output).__name__} of {len(output)} elements, but the "
                f"layout reads element {index}. Fix `Stack({block.stack.path!r}, output=...)`."
            )
        output = output[index]
    if not isinstance(output, torch.Tensor):
        raise LayerSyncError(
            f"Block {block.path!r} gave {type(output).__name__} where the layout expects the latent stream "
            f"tensor. Fix `Stack({block.stack.path!r}, output=...)` to the index of the image tokens."
        )
    return output


def select(block: Block, output: Any, block_arguments: Any, root: nn.Module, model_call: Any) -> Activation:
    """Cut the target tokens out of one raw block output: stream element, token rule, (B,T,P,D) -> (B,T*P,D)."""
    hidden = _stream(block, output)
    if hidden.dim() == 2:  # unbatched (N, D) tokens, one sample per call (musubi-tuner's Kandinsky 5)
        hidden = hidden.unsqueeze(0)
    mask = None
    if block.stack.rule is not None:  # the rule sees the stream as returned: (S, B, D) and (B, C, H, W) exist
        hidden, mask = block.stack.rule(hidden, CallInputs(root, model_call, block_arguments))
    if hidden.dim() == 4:
        hidden = hidden.flatten(1, 2)
    if hidden.dim() != 3:
        raise ShapeMismatchError(
            f"Block {block.path!r} gave target tokens of shape {tuple(hidden.shape)}; LayerSync needs "
            "(batch, tokens, channels), (batch, frames, tokens, channels) or unbatched (tokens, channels)."
        )
    if hidden.shape[1] == 0:  # a mean over no tokens is NaN, and one NaN step ruins the weights
        raise LayerSyncError(
            f"The token rule of {block.stack.path!r} ({block.stack.rule}) selected no tokens from "
            f"{block.path!r} of {type(root).__name__}. It reads the model's inputs: pass them as the family's "
            "diffusers pipeline builds them, or give `layout=` a rule that fits your inputs."
        )
    return Activation(hidden, mask)
