"""What every benchmark shares: the machine, its load and the library versions it records; LayerSync's variants."""

from __future__ import annotations

import contextlib
import json
import os
import platform
from pathlib import Path

import torch

from layersync_hooks import LayerSync

RESULTS = Path(__file__).parent / "results"


def cpu_model() -> str:
    """The CPU model name from /proc/cpuinfo (Linux), else what `platform` knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine(device: torch.device) -> dict:
    """CPU model, cores, torch threads, GPU, versions and the 1/5/15-minute load averages right now."""
    import diffusers

    info = {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "device": str(device),
        "torch": torch.__version__,
        "diffusers": diffusers.__version__,
        "python": platform.python_version(),
        "loadavg": load(),
    }
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


def load() -> list[float]:
    """os.getloadavg() rounded; other processes on the machine show up here."""
    return [round(x, 2) for x in os.getloadavg()]


def pick_device(name: str) -> torch.device:
    """`auto` takes the GPU when there is one."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(name)


def sync(device: torch.device) -> None:
    """Wait for queued GPU work, so that wall-clock times cover it (benchmark only; not in the step)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def save(result: dict, path: os.PathLike) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=1) + "\n")


@contextlib.contextmanager
def layersync_variant(variant: str, model, pair: tuple[int, int], weight: float):
    """LayerSync on `pair` for one step: yields its `loss`, or None for the "paused" variant (attached, paused)."""
    layersync = LayerSync(model, student_block=pair[0], teacher_block=pair[1], weight=weight)
    try:
        if variant == "paused":
            with layersync.paused():
                yield None
        else:
            yield layersync.loss
    finally:
        layersync.remove()
