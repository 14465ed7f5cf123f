"""Token rules: which tokens of a block's latent stream belong to the noisy target.

A rule is called as `rule(hidden, inputs)` with the stream the block returned and the call's `CallInputs`, and
returns the target tokens compacted to the front, in order, as `(B, N', D)`, plus a `(B, N')` bool mask of the
ones that count (or None when all do). Compacting keeps the tokens of one model comparable across its stacks:
Flux.2's double blocks hold `[image]` and its single blocks `[text; image]`, and both give the same `(B, N_img, D)`.

Every count comes from what the model receives (a model or block argument, the model's config), never from a
constant: the number of image tokens changes with the resolution. Rules read arguments through `CallInputs`,
which binds them by name, since under gradient checkpointing blocks get positional arguments only.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Optional, Sequence, Union

import torch

from ..errors import LayerSyncError

Count = Union[int, Sequence[int], torch.Tensor]  # one for all samples, one per sample, or a (B,) tensor


def _resolve(count: Any, inputs) -> Count:
    return count(inputs) if callable(count) else count


def _uniform(value: Count) -> Count:
    """A per-sample list whose entries are all equal, as one int (a slice is cheaper than a gather)."""
    if isinstance(value, (list, tuple)) and len(set(value)) == 1:
        return int(value[0])
    return value


def span(hidden: torch.Tensor, start: Count, count: Count) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
    """`hidden[b, start_b : start_b + count_b]` for every row, compacted to `(B, max count, D)`; no host sync."""
    start, count = _uniform(start), _uniform(count)
    if isinstance(start, int) and isinstance(count, int):
        return hidden[:, start : start + count], None
    batch, length = hidden.shape[:2]
    if isinstance(count, torch.Tensor):
        raise LayerSyncError("A token count must be Python ints (a tensor count would need a host sync).")
    width = count if isinstance(count, int) else max(count)
    positions = torch.arange(width, device=hidden.device)
    start = _on_device(start, hidden.device).reshape(-1, 1).expand(batch, 1)
    index = (start + positions).clamp(max=length - 1)
    tokens = hidden.gather(1, index.unsqueeze(-1).expand(-1, -1, hidden.shape[-1]))
    if isinstance(count, int):
        return tokens, None
    return tokens, positions < _on_device(count, hidden.device).unsqueeze(1)


def _on_device(values: Union[int, Sequence[int], torch.Tensor], device) -> torch.Tensor:
    """Ints (one, or one per sample) as a device tensor, each filled in place: a tensor made of them would be a copy
    from host memory, which on a GPU waits for the stream at every step."""
    if isinstance(values, torch.Tensor):
        return values.to(device)
    values = [values] if isinstance(values, int) else values
    return torch.stack([torch.full((), int(v), dtype=torch.long, device=device) for v in values])


@dataclass(frozen=True)
class Span:
    r"""
    `[other; target; other]`: `count` tokens from `start` (0 is the image-first `[:, :N]`). Both may be per sample.

    Args:
        count: The number of target tokens (an int or a source such as `Latents`), per sample or for all.
        start: Where they begin (an int or a source such as `Valid` for Lumina2's per-sample caption length).
        valid (`str`, *optional*): A model argument `(B, N)` marking the valid target tokens (HiDream's padding).
    """

    count: Any
    start: Any = 0
    valid: Optional[str] = None
    reads_inputs = True

    def __call__(self, hidden, inputs):
        tokens, mask = span(hidden, _resolve(self.start, inputs), _resolve(self.count, inputs))
        valid = inputs.model_arg(self.valid) if self.valid else None
        if valid is not None:
            valid = valid[:, : tokens.shape[1]].bool()
            mask = valid if mask is None else mask & valid
        return tokens, mask

    def __str__(self):
        where = "first" if self.start == 0 else f"from {self.start}, the"
        valid = f" where `{self.valid}`" if self.valid else ""
        return f"{where} {self.count}{valid}"


@dataclass(frozen=True)
class Last:
    """`[other; target]`: the last `count` tokens, then optionally another rule on them (`[text; target; refs]`)."""

    count: Any
    then: Any = None
    reads_inputs = True

    def __call__(self, hidden, inputs):
        count = _uniform(_resolve(self.count, inputs))
        if not isinstance(count, int):
            raise LayerSyncError(f"`Last` needs one token count for the whole batch, got {count}.")
        hidden = hidden[:, hidden.shape[1] - count :]
        return self.then(hidden, inputs) if self.then is not None else (hidden, None)

    def __str__(self):
        return f"last {self.count}" + (f", {self.then}" if self.then is not None else "")


@dataclass(frozen=True)
class Marked:
    r"""
    The tokens a model argument marks: `arg == value`. A mask, not a slice, so it needs no host sync; the stream
    keeps its length.

    Args:
        arg (`str`): Argument name, e.g. `"img_ids"` or `"indicator"`.
        value (`int`): The marker of target tokens.
        column (`int`, *optional*): For position ids `(N, k)` or `(B, N, k)`: the coordinate to compare
            (Flux Kontext gives its context image `img_ids[:, 0] = 1`, the target 0).
    """

    arg: str
    value: int = 1
    column: Optional[int] = None
    reads_inputs = True

    def __call__(self, hidden, inputs):
        marks = inputs.model_arg(self.arg)
        if marks is None:
            raise LayerSyncError(
                f"LayerSync reads the target tokens from `{self.arg}`, but the model was called without it."
            )
        if self.column is not None:
            marks = marks[..., self.column]
        return hidden, (marks == self.value).expand(hidden.shape[:2])

    def __str__(self):
        column = f"[..., {self.column}]" if self.column is not None else ""
        return f"where `{self.arg}{column} == {self.value}`"


@dataclass(frozen=True)
class Indexed:
    """The tokens at the positions a model argument lists (MiniMax-H3's `video_indices` into its packed sequence)."""

    arg: str
    reads_inputs = True

    def __call__(self, hidden, inputs):
        return hidden.index_select(1, inputs.model_arg(self.arg)), None

    def __str__(self):
        return f"at `{self.arg}`"


@dataclass(frozen=True)
class SequenceFirst:
    """Blocks that run sequence-first `(S, B, D)` (ErnieImage): transpose to `(B, S, D)`, then apply `rule`."""

    rule: Any
    reads_inputs = True

    def __call__(self, hidden, inputs):
        return self.rule(hidden.transpose(0, 1), inputs)

    def __str__(self):
        return f"sequence-first, {self.rule}"


@dataclass(frozen=True)
class ChannelsFirst:
    """Convolutional blocks returning `(B, C, H, W)` (Stable Cascade): every pixel is a token, `(B, H*W, C)`."""

    reads_inputs = False

    def __call__(self, hidden, inputs):
        return hidden.flatten(2).transpose(1, 2), None

    def __str__(self):
        return "every pixel of (B, C, H, W)"


@dataclass(frozen=True)
class ZImageTarget:
    r"""
    Z-Image's target image. Basic mode takes lists `x[b]` `(C, F, H, W)`: each sample's image tokens come first,
    padded to a multiple of 32, then its caption. Omni mode takes nested lists (condition images, then the target
    last) and puts the captions first. Counts and offsets are rebuilt from `x`, `cap_feats` and the patch sizes,
    as the model's `patchify_and_embed(_omni)` does.

    Args:
        unified (`bool`): The `layers` stream (captions included) rather than the `noise_refiner` stream.
    """

    unified: bool
    reads_inputs = True
    multiple = 32  # ZImage's SEQ_MULTI_OF: each image and caption is padded to a multiple of it

    def __call__(self, hidden, inputs):
        images, captions = inputs.model_arg("x"), inputs.model_arg("cap_feats")
        patch = (inputs.model_arg("f_patch_size"), inputs.model_arg("patch_size"), inputs.model_arg("patch_size"))
        starts, counts = [], []
        for sample, caption in zip(images, captions):
            if not isinstance(sample, (list, tuple)):  # basic mode: [image; caption]
                starts.append(0)
                counts.append(self._tokens(sample, patch))
                continue
            start = sum(self._padded(len(c)) for c in caption) if self.unified else 0
            start += sum(self._padded(self._tokens(x, patch)) if x is not None else self.multiple for x in sample[:-1])
            starts.append(start)
            counts.append(self._tokens(sample[-1], patch))
        return span(hidden, starts, counts)

    @staticmethod
    def _tokens(image, patch) -> int:
        return math.prod(size // p for size, p in zip(image.shape[1:], patch))

    def _padded(self, length: int) -> int:
        return length + (-length) % self.multiple

    def __str__(self):
        return "the target image of each sample (from `x`, `cap_feats`)"
