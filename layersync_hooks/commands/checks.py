"""Argument checks shared by the `demo` and `probe` commands, all run before the first step or forward.

Numbers are checked by argparse `type=` functions (argparse prints `argument --flag: <message>` and exits with 2);
paths and earlier results raise `UsageError`, which the command line prints as `error: ...` with exit code 2.
"""

from __future__ import annotations

import argparse
import importlib.util
import math
import os
import shutil
import socket
from pathlib import Path
from typing import Callable, Iterable, Optional

from ..config import read_integer, read_number
from ..errors import UsageError
from ..flags import flag_type

MAX_SEED = 2**32 - 1  # numpy's range, which every seeded library accepts


# Text read as the config reads it (`--layersync_*` flags and `--steps` mean numbers the same way).
_integer = flag_type(read_integer, "it")
_number = flag_type(read_number, "it")


def positive_int(text: str) -> int:
    """An integer >= 1 (steps, batch sizes, intervals, counts)."""
    value = _integer(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text!r}")
    return value


def non_negative_int(text: str) -> int:
    """An integer >= 0, where 0 means off."""
    value = _integer(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 (off) or a positive integer, got {text!r}")
    return value


def seed(text: str) -> int:
    """A seed in 0..2**32 - 1."""
    value = _integer(text)
    if not 0 <= value <= MAX_SEED:
        raise argparse.ArgumentTypeError(f"must be an integer from 0 to {MAX_SEED}, got {text!r}")
    return value


def positive_float(text: str) -> float:
    """A finite number > 0 (a learning rate: 0 freezes training, a negative one climbs the loss, NaN poisons it)."""
    value = _number(text)
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"must be a finite number > 0, got {text!r}")
    return value


def clip_norm(text: str) -> float:
    """A gradient-clipping norm > 0, or `inf` for no clipping (what `clip_grad_norm_` does with it)."""
    value = _number(text)
    if math.isnan(value) or value <= 0:
        raise argparse.ArgumentTypeError(
            f"must be a number > 0 (or inf: no clipping), got {text!r}; 0 would freeze training and a negative "
            "norm flips the gradients"
        )
    return value


def noise_level(text: str) -> float:
    """A noise level sigma strictly between 0 (clean) and 1 (pure noise)."""
    value = _number(text)
    if not 0 < value < 1:  # NaN fails this too
        raise argparse.ArgumentTypeError(f"must lie strictly between 0 and 1, got {text!r}")
    return value


def require_modules(modules: dict[str, str], *, why: str) -> None:
    """Raise `UsageError` naming the install command if a module the command needs later is missing."""
    missing = [name for name in modules if importlib.util.find_spec(name) is None]
    if missing:
        packages = " ".join(dict.fromkeys(modules[name] for name in missing))
        raise UsageError(
            f"{why} needs {', '.join(missing)}, which is not installed. Run `pip install {packages}` "
            "(or `pip install layersync_hooks[demo]`)."
        )


def writable_folder(path: Path, flag: str) -> None:
    """Create `path` and write (then remove) a file in it, so a bad folder fails now and not after the work.

    The file name holds the host and process id: every process of a launch checks at once, in the same folder.
    """
    if path.exists() and not path.is_dir():
        raise UsageError(f"{flag} {path} is a file, not a folder. Choose a folder (it is created if missing).")
    check = path / f".layersync-write-check-{socket.gethostname()}-{os.getpid()}"
    try:
        path.mkdir(parents=True, exist_ok=True)
        check.write_bytes(b"")
        check.unlink()
    except OSError as error:
        raise UsageError(
            f"{flag} {path} cannot be written ({type(error).__name__}: {error.strerror or error}). Choose a "
            "folder you can write to."
        ) from None


def existing(folder: Path, names: Iterable[str]) -> list[str]:
    """The entries among `names` that `folder` already holds."""
    return [name for name in names if (folder / name).exists()]


def remove(folder: Path, names: Iterable[str]) -> None:
    """Delete the entries `names` of `folder` (files or folders), leaving everything else in it alone."""
    for name in existing(folder, names):
        path = folder / name
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink()


def agree(check: Callable[[], None]) -> None:
    """Run `check` on every process of a launch; if any process refuses, every process raises its message.

    Each process sees its own file system view (and a fast process could create files before a slow one looks),
    so one process refusing must stop all of them: otherwise the others would train and then wait forever for it.
    """
    try:
        check()
        problem = None
    except UsageError as error:
        problem = str(error)
    first = next((found for found in _gather(problem) if found is not None), None)
    if first is not None:
        raise UsageError(first)


def _gather(problem: Optional[str]) -> list[Optional[str]]:
    """Every process's problem (None: no problem), in rank order; this is also a barrier."""
    from accelerate import PartialState
    from accelerate.utils import gather_object, parse_flag_from_env

    # The first state of the process fixes the backend for the whole run: take the CPU flag as `Accelerator` would
    # (`ACCELERATE_USE_CPU`, set by `accelerate launch --cpu`), or a CPU launch would run as one process each.
    if PartialState(cpu=parse_flag_from_env("ACCELERATE_USE_CPU")).num_processes == 1:
        return [problem]
    return gather_object([problem])
