"""Peak memory of one training step: the allocator's high-water mark on GPU, a replayed one on CPU.

CPU has no allocator high-water mark, so `peak_bytes` records one step under `torch.profiler` with
`profile_memory=True`: the CPU allocator reports every allocation and free (with its size and time) to the
profiler, and the running sum of those events, in time order, peaks at the step's high-water mark above what
was allocated before the step (weights, optimizer state). This sees every allocation, kernel scratch space
included, and changes nothing about how autograd runs. (A `TorchDispatchMode` that tracks tensor storages is the
other common method; it was tried and rejected here: the Python wrappers it creates keep gradients from being
accumulated in place, which adds copies that a normal run does not make.)
"""

from __future__ import annotations

import gc
from typing import Callable

import torch
from torch.profiler import ProfilerActivity, profile


def peak_bytes(run: Callable[[], None], device: torch.device) -> int:
    """Peak bytes allocated while `run()` executes, above what was allocated when it started."""
    gc.collect()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        start = torch.cuda.memory_allocated(device)
        run()
        torch.cuda.synchronize(device)
        return torch.cuda.max_memory_allocated(device) - start
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as profiler:
        run()
    events = [
        e
        for e in profiler.profiler.kineto_results.events()
        if e.name() == "[memory]" and e.device_type() == torch.autograd.DeviceType.CPU
    ]
    live = peak = 0
    for event in sorted(events, key=lambda e: e.start_ns()):
        live += event.nbytes()  # negative for a free
        peak = max(peak, live)
    return peak
