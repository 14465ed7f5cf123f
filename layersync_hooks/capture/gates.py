"""Which calls of the training module a `BlockCapture` records: the gate it is given.

A gate answers twice per call: when the call starts (`at_call(module)`, before any block runs) and when it returns
(`at_return(output)`); each answer is None to go on recording, or the reason the call is not recorded (the reason
ends up in the error `pop()` raises when nothing was recorded). Whatever the gate, calls that autograd makes during
backward (gradient-checkpointing recomputation) are never recorded: they repeat a forward recorded already.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Iterator, Optional

import torch
from torch import nn


@dataclass(frozen=True)
class Gate:
    """A gate: `at_call(module)` and `at_return(output)`, each None (record) or why not."""

    at_call: Callable[[nn.Module], Optional[str]]
    at_return: Callable[[Any], Optional[str]]


def _gradients_enabled(module: nn.Module) -> Optional[str]:
    if not torch.is_grad_enabled():
        return "gradients were disabled (torch.no_grad() or torch.inference_mode())"
    return None


def _reaches_a_trained_parameter(output: Any) -> Optional[str]:
    # Not `module.training`: trainers keep the model in eval() and still train it (musubi-tuner and kohya sd-scripts
    # without --gradient_checkpointing). Not the model's own parameters either: their LoRA networks live outside it.
    if any(tensor.requires_grad for tensor in tensors(output)):
        return None
    return "nothing it ran needs a gradient (every parameter it reached, adapters included, is frozen)"


def _always(_: Any) -> Optional[str]:
    return None


# A training forward: gradients enabled, and its output depends on something that trains, in train or eval mode.
# Validation, sampling and reference passes under no_grad are not; nor is a frozen model (a teacher, an EMA copy)
# run under enable_grad.
training_forward = Gate(_gradients_enabled, _reaches_a_trained_parameter)
# Every forward, in any mode (the probe measures blocks under `torch.no_grad()`).
any_forward = Gate(_always, _always)


def tensors(output: Any) -> Iterator[torch.Tensor]:
    """The tensors in a forward's output: a tensor, or tuples, lists and dicts of them (a `ModelOutput` is a dict)."""
    if isinstance(output, torch.Tensor):
        yield output
    elif isinstance(output, (tuple, list)):
        for item in output:
            yield from tensors(item)
    elif isinstance(output, dict):
        for item in output.values():
            yield from tensors(item)
