"""Running sums of what `LayerSync.loss()` measured, kept on the device, each read through its own window.

`LayerSync.metrics()` reads one window and the runner's report line another: each gets the means over the `loss()`
calls since its own last read, so neither resets what the other reports. Nothing is read back to the host until a
window is read (one host sync per read, none per step).
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.distributed as dist


class Window:
    """The sums of the `loss()` calls since the last `take()`."""

    def __init__(self):
        self._sums: Optional[torch.Tensor] = None
        self._weights = 0.0
        self._count = 0

    def add(self, values: torch.Tensor, weight: float) -> None:
        self._sums = values if self._sums is None else self._sums + values
        self._weights += weight
        self._count += 1

    def take(self, size: int, device: Optional[torch.device], *, sync: bool) -> Optional[tuple[list[float], float]]:
        """The mean of each value and of the weight since the last take, then starts over; None without a `loss()`
        call. With `sync`, the means are over every process's calls: one all-reduce, which every process joins
        whatever it did since its last take (a process with no call adds zeros)."""
        sums = self._sums if self._sums is not None else torch.zeros(size, device=device)
        totals = torch.cat([sums, sums.new_tensor([self._weights, self._count])])
        self.__init__()
        if sync and dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            dist.all_reduce(totals, op=dist.ReduceOp.SUM)
        *values, weights, count = totals.tolist()  # the one host sync
        if count == 0:
            return None
        return [value / count for value in values], weights / count


class Meter:
    """Adds each `loss()` call's values (a 1-D float32 tensor) to every window opened on it."""

    def __init__(self):
        self._windows: list[Window] = []

    def window(self) -> Window:
        """A new window: it counts the calls from now on."""
        window = Window()
        self._windows.append(window)
        return window

    def add(self, values: torch.Tensor, weight: float) -> None:
        for window in self._windows:
            window.add(values, weight)
