"""Which calls of the training module a `BlockCapture` records: the gate it is given.

A gate is called with the training module at the start of each of its calls and returns None to record the call,
or the reason it does not (that reason ends up in the error `pop()` raises when nothing was recorded). Whatever the
gate, calls that autograd makes during backward (gradient-checkpointing recomputation) are never recorded: they
repeat a forward that was recorded already.
"""

from __future__ import annotations

from typing import Callable, Optional

import torch
from torch import nn

Gate = Callable[[nn.Module], Optional[str]]


def training_forward(module: nn.Module) -> Optional[str]:
    """Record the training forward: the module in train mode, with gradients enabled."""
    if not module.training:
        return "the model was in eval mode (call `model.train()` before the training forward)"
    if not torch.is_grad_enabled():
        return "gradients were disabled (torch.no_grad() or torch.inference_mode())"
    return None


def any_forward(module: nn.Module) -> Optional[str]:
    """Record every forward, in any mode (the probe measures blocks under `torch.no_grad()`)."""
    return None
