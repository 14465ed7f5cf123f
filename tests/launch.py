"""Helpers for tests that start accelerate processes, or run several accelerate scripts in one process."""

import os
import socket
import sys

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


CPU_ENV = {**os.environ, "ACCELERATE_USE_CPU": "1", "OMP_NUM_THREADS": "1"}


def reset_accelerate() -> None:
    """Forget accelerate's process-wide state, as a new process would start without it."""
    AcceleratorState._reset_state(True)
    GradientState._reset_state()
    PartialState._reset_state()
