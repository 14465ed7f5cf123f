"""Helpers for tests that start accelerate processes, or run several accelerate scripts in one process."""

import os
import socket
import sys
import time
from pathlib import Path
from typing import Optional

import torch
import yaml
from accelerate.state import AcceleratorState, GradientState, PartialState


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def two_processes(*args: str) -> list[str]:
    """`accelerate launch` of `args` on 2 CPU processes (MULTI_CPU, gloo); run it with `CPU_ENV`.
    (`--cpu --num_processes 2` would silently run one process.)"""
    return [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
            "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port",
            str(free_port()), *args]  # fmt: skip


def end_processes() -> None:
    """The last call of a script launched on several CPU processes, after its `main()` has returned: the process
    group ends (if `accelerator.end_training()` did not end it), then a moment passes before the interpreter shuts down.

    gloo's worker thread lets go of a collective's tensors just after the collective completes. A rank that exits right
    then (one that skips the main process's last save) shuts the interpreter down while that thread still needs the
    GIL for them, and the process aborts ("terminate called without an active exception", SIGABRT). Destroying the
    group does not join the thread: the prepared model still holds the group (DDP's reducer, ZeRO-3's parameters,
    which DeepSpeed keeps for the life of the process). Measured on the 2 cores beside 3 busy loops, 2 processes whose
    gloo group outlives a script of 3 all-gathers: 4 of 12 launches aborted without the pause, 0 of 30 with it.
    """
    if torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:  # launched, not run in the test's own process
        time.sleep(0.2)


CPU_ENV = {**os.environ, "ACCELERATE_USE_CPU": "1", "OMP_NUM_THREADS": "1"}


def reset_accelerate() -> None:
    """Forget accelerate's process-wide state, as a new process would start without it."""
    AcceleratorState._reset_state(True)
    GradientState._reset_state()
    PartialState._reset_state()


ROOT = Path(__file__).parents[1]
CONFIGS = ROOT / "configs"
# Test-only CPU work-arounds for FSDP and DeepSpeed, loaded at start-up by every launched process (engine_shim/).
SHIM = Path(__file__).parent / "engine_shim"


def with_config(config: str, *args: str, port: Optional[int] = None) -> tuple[list[str], dict[str, str]]:
    """`accelerate launch --config_file configs/<config>` on 2 CPU processes, and the environment that makes that
    config run on a CPU. Run it from the repository root (deepspeed_zero3.yaml names its JSON from there).

    DDP: `ACCELERATE_USE_CPU=1` (the multi-GPU launcher does not pass the config's `use_cpu` on; without it each
    process trains alone). FSDP and DeepSpeed: the start-up shim in tests/engine_shim, which needs
    `ACCELERATE_TORCH_DEVICE=cpu`. `--mixed_precision no`: the configs say bf16, for GPUs. `port`: the main
    process's port, which the launches of one run on several machines share (default: a free one).
    """
    command = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(CONFIGS / config),
               "--num_processes", "2", "--mixed_precision", "no", "--main_process_port", str(port or free_port()),
               *args]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    if yaml.safe_load((CONFIGS / config).read_text())["distributed_type"] == "MULTI_GPU":
        env["ACCELERATE_USE_CPU"] = "1"
    else:
        path = [str(SHIM), *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
        env.update(LAYERSYNC_TEST_CPU_ENGINE="1", ACCELERATE_TORCH_DEVICE="cpu", PYTHONPATH=os.pathsep.join(path))
    return command, env
