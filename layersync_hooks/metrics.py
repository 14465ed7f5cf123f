"""Running totals of what `LayerSync.loss()` measured, kept on the device, read through windows.

The meter keeps cumulative totals of each `loss()` call's values, weight and count. A window reads the means over the
calls since its own last read (the difference of the totals), so `LayerSync.metrics()`, the runner's `log` and its
report line each get their own, and none resets another's. Nothing is read back to the host until a window is read
(one host sync per read, none per step).

Over several processes a number must be the mean over all of them, with no collective where a trainer logs (on the
main process only, often): `share()`, called on every process at the same points (the runner calls it at each
`backward`), starts summing the totals over the processes without waiting; a shared window reads the
latest such sum, waiting for it there.
"""

from __future__ import annotations

from typing import Any, Callable, Optional

import torch
import torch.distributed as dist


def world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


class Meter:
    """Cumulative totals `(values..., weight, count)` of the `loss()` calls, in float64 on the model's device.

    Args:
        size (`int`): How many values each call adds.
        device (`callable`): The device of the model (where the totals live when nothing was added yet).
    """

    def __init__(self, size: int, device: Callable[[], Optional[torch.device]]):
        self.size, self._device = size, device
        self._totals: Optional[torch.Tensor] = None
        self._shared: Optional[tuple[Any, torch.Tensor]] = None  # (the pending sum over processes, its result)

    def _zeros(self, device: Optional[torch.device]) -> torch.Tensor:
        # float64 keeps differences of long-running totals exact; MPS has none (and runs one process)
        dtype = torch.float32 if device is not None and torch.device(device).type == "mps" else torch.float64
        return torch.zeros(self.size + 2, dtype=dtype, device=device)

    def add(self, values: torch.Tensor, weight: float) -> None:
        """Add one call's values (a 1-D tensor of `size`), its weight and 1 to the count."""
        if self._totals is None:
            self._totals = self._zeros(values.device)
        # Scalars added on the device: a tensor made of them would be a copy from host memory, which on a GPU
        # waits for the stream at every step.
        self._totals[: self.size] += values.detach()
        self._totals[-2] += weight
        self._totals[-1] += 1

    def totals(self) -> torch.Tensor:
        """This process's totals."""
        return self._totals if self._totals is not None else self._zeros(self._device())

    def share(self) -> None:
        """Start summing the totals over every process, without waiting. Every process must call it at the same
        points, whatever it did since (a process without a `loss()` adds zeros)."""
        snapshot = self.totals().clone()
        work = dist.all_reduce(snapshot, op=dist.ReduceOp.SUM, async_op=True) if world_size() > 1 else None
        self._shared = (work, snapshot)

    def shared_totals(self) -> torch.Tensor:
        """The totals over every process at the last `share()` (this process's own before any)."""
        if self._shared is None:
            return self.totals()
        work, snapshot = self._shared
        if work is not None:
            work.wait()  # on a GPU a stream wait, no host sync
        return snapshot

    def window(self, *, shared: bool = False) -> Window:
        """A new window on these totals; its first take covers the calls since the meter started. A shared window
        reads `shared_totals()`."""
        return Window(self, shared)


class Window:
    """The means over the `loss()` calls since the last `take()`."""

    def __init__(self, meter: Meter, shared: bool):
        self.meter, self.shared = meter, shared
        self._seen: Optional[torch.Tensor] = None
        self._collective: Any = None  # the last take's all-reduce (see `take`)

    def take(self, *, sync: bool) -> Optional[tuple[list[float], float]]:
        """The mean of each value and of the weight since the last take; None without a `loss()` call. With `sync`
        (and a window that is not shared), the means are over every process's calls: one all-reduce, which every
        process joins whatever it did since its last take. A shared window's sum over processes was started by
        `Meter.share()`: no collective here."""
        current = self.meter.shared_totals() if self.shared else self.meter.totals()
        seen = self._seen if self._seen is not None and self._seen.device == current.device else 0
        delta, self._seen = current - seen, current.clone()
        if sync and not self.shared and world_size() > 1:
            work = dist.all_reduce(delta, op=dist.ReduceOp.SUM, async_op=True)
            work.wait()
            # Kept until the next take: the collective must end here, on this thread. Released last by a gloo worker
            # (a later barrier holds it too), its tensor needs the GIL there, and a process group torn down right
            # after (end of training) joins that worker while holding the GIL: the process never exits.
            self._collective = work
        *values, weights, count = delta.tolist()  # the one host sync
        if count == 0:
            return None
        return [value / count for value in values], weights / count
