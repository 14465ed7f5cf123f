"""The weight schedule: constant, a linear warm-up, and a stop step; counted in optimizer steps.

With gradient accumulation `LayerSync.loss()` runs once per micro-batch, but "warm up over 1000 steps" means
optimizer steps. Accelerate's `GradientState().sync_gradients` says whether the current micro-batch ends an
optimizer step (inside `accelerator.accumulate(...)`), without needing the accelerator object; outside
`accumulate`, and without accelerate, it is always true, so every `loss()` call is one step.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import torch
from accelerate.state import GradientState

from .errors import LayerSyncConfigError


def ends_optimizer_step() -> bool:
    """Whether the current micro-batch is the last one before `optimizer.step()` (accelerate's view)."""
    return bool(GradientState().sync_gradients)


@dataclass(frozen=True)
class WeightSchedule:
    r"""
    The LayerSync weight at each optimizer step.

    Args:
        weight (`float`): The full weight (the paper's lambda).
        warmup_steps (`int`, defaults to 0): Ramp linearly: step 0 gets `weight / warmup_steps`, step
            `warmup_steps - 1` and later the full weight. 0 means a constant weight.
        stop_step (`int`, *optional*): From this step on the weight is 0 and LayerSync removes its hooks
            (stopping the alignment after early training, as studied for REPA-style regularizers).

    Example:
        ```python
        >>> [WeightSchedule(0.2, warmup_steps=4, stop_step=6).at(step) for step in range(7)]
        [0.05, 0.1, 0.15000000000000002, 0.2, 0.2, 0.2, 0.0]
        ```
    """

    weight: float
    warmup_steps: int = 0
    stop_step: Optional[int] = None

    def __post_init__(self):
        check_weight(self.weight, "`WeightSchedule.weight`", positive=False)
        _check_count(self.warmup_steps, "warmup_steps", 0)
        if self.stop_step is not None:
            _check_count(self.stop_step, "stop_step", 1)
            if self.stop_step <= self.warmup_steps:
                raise LayerSyncConfigError(
                    f"`stop_step={self.stop_step}` comes before the end of `warmup_steps={self.warmup_steps}`, so "
                    "the full weight is never reached. Use a stop step after the warm-up, or a shorter warm-up."
                )

    def stopped(self, step: int) -> bool:
        """Whether LayerSync is over at this step (0-based count of optimizer steps done)."""
        return self.stop_step is not None and step >= self.stop_step

    def at(self, step: int) -> float:
        """The weight of optimizer step `step` (0-based)."""
        if self.stopped(step):
            return 0.0
        if self.warmup_steps:
            return self.weight * min(1.0, (step + 1) / self.warmup_steps)
        return self.weight


# The term is computed in float32: a larger weight overflows it to inf.
_LARGEST_WEIGHT = torch.finfo(torch.float32).max


def check_weight(value, label: str, *, positive: bool = True) -> None:
    """A weight is a finite number, > 0 (or >= 0 for a schedule that is off), that float32 can hold."""
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    if number and math.isfinite(value) and (value > 0 or (not positive and value == 0)) and value < _LARGEST_WEIGHT:
        return
    raise LayerSyncConfigError(
        f"{label} must be a number > 0 that float32 can hold (finite, below 3.4e38), got {value!r}. Use 0.2 as in the "
        "paper (0.002 for LoRA fine-tunes of large video models), or turn LayerSync off with `enabled=False`."
    )


def _check_count(value, name: str, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise LayerSyncConfigError(f"`{name}` must be an integer >= {minimum}, got {value!r}.")
