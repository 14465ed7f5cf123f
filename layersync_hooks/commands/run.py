"""`layersync-hooks run [options] -- SCRIPT [ARGS...]`: LayerSync for an unmodified accelerate training script.

The script runs as `__main__` in this process, as `python SCRIPT ARGS...` would run it (`sys.argv` is
`[SCRIPT, ARGS...]`, the script's folder first on `sys.path`), so `accelerate launch -m layersync_hooks run ...`,
`torchrun -m layersync_hooks run ...` and plain `python -m layersync_hooks run ...` all work: every process runs the
runner, and the runner runs the script. Its exit code, argparse usage lines and tracebacks pass through.

Example:
    ```bash
    accelerate launch -m layersync_hooks run --layersync_student_block 8 --layersync_teacher_block 16 -- \\
        train_dreambooth_lora_flux.py --pretrained_model_name_or_path ... --output_dir out
    layersync-hooks run --config flux -- train.py --my-script-flag
    ```
"""

from __future__ import annotations

import argparse
import os
import runpy
import sys
import traceback
from pathlib import Path
from typing import Any, Optional, Sequence

import yaml

from ..config import KEYS, LayerSyncConfig
from ..errors import LayerSyncError, UsageError
from ..flags import add_arguments as add_layersync_flags
from ..integrations import AutoAttach
from ..integrations.accelerate import check_metrics_file
from .checks import positive_int

# Flags of the training scripts that name their output folder (diffusers examples, DiffSynth-Studio).
OUTPUT_FLAGS = ("--output_dir", "--output_path")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", help="A LayerSync JSON file or a preset name (flux, wan, ...); flags override it.")
    parser.add_argument("--module", dest="align_module",
                        help="The model to align when the script prepares several: a class name or a path inside "
                             "a prepared module (e.g. pipe.dit).")  # fmt: skip
    parser.add_argument("--report-every", type=positive_int, default=50,
                        help="Optimizer steps between LayerSync's own report lines (default 50).")  # fmt: skip
    parser.add_argument("--metrics-file", help="Where the report lines go (default: layersync_metrics.jsonl in the "
                                               "script's --output_dir or --output_path, else accelerate's "
                                               "project_dir, else the current folder).")  # fmt: skip
    add_layersync_flags(parser)
    parser.add_argument("script", nargs=argparse.REMAINDER, help="-- SCRIPT [ARGS...]: the training script and its own "
                                                                 "arguments, after a `--`.")  # fmt: skip


def run(args: argparse.Namespace) -> int:
    script_argv = _script_argv(args.script)
    config = runner_config(args)
    script = Path(script_argv[0])
    if not script.is_file():
        raise UsageError(f"No training script {script_argv[0]!r}: pass the path of a Python file after `--`.")
    if args.metrics_file is not None:  # before the script loads anything; a default path is checked at attach
        check_metrics_file(Path(args.metrics_file))
    auto = AutoAttach(config, module=args.align_module, report_every=args.report_every, metrics_file=args.metrics_file,
                      output_dir=_output_dir(script_argv[1:]) or _job_folder(script_argv[1:]))  # fmt: skip
    return run_script(script, script_argv[1:], auto)


def _script_argv(words: Sequence[str]) -> list[str]:
    words = list(words)
    if words and words[0] == "--":
        words = words[1:]
    if not words:
        raise UsageError(
            "No training script: put it after `--`, e.g. `layersync-hooks run --layersync_student_block 8 -- "
            "train.py --output_dir out`."
        )
    return words


def runner_config(args: argparse.Namespace) -> LayerSyncConfig:
    """The config of `--config` (file or preset), with the `--layersync_*` flags over it; on when given."""
    flags = {k.key: getattr(args, k.key) for k in KEYS if getattr(args, k.key) is not None}
    if args.config is None and not flags:
        raise UsageError(
            "Nothing for LayerSync to add: give `--config FILE_OR_PRESET` or `--layersync_*` flags (at least "
            "`--layersync_student_block`)."
        )
    if args.config is None:
        return LayerSyncConfig.from_dict({"layersync_enabled": True, **flags})  # the runner is asked: on
    config = LayerSyncConfig.load(args.config)
    return config.updated(flags) if flags else config


def _output_dir(script_args: Sequence[str]) -> Optional[str]:
    """The script's output folder, from its `--output_dir` / `--output_path` argument, if it has one."""
    for i, word in enumerate(script_args):
        for flag in OUTPUT_FLAGS:
            if word == flag and i + 1 < len(script_args):
                return script_args[i + 1]
            if word.startswith(flag + "="):
                return word.split("=", 1)[1]
    return None


def _job_folder(script_args: Sequence[str]) -> Optional[str]:
    """ai-toolkit's output folder (`run.py job.yaml`): `<training_folder>/<name>` of the job's first process, where
    it writes the LoRA; not its checkout, where it is launched from."""
    path = Path(script_args[0]) if script_args else None
    if path is None or path.suffix not in (".yaml", ".yml", ".json") or not path.is_file():
        return None
    try:
        job = yaml.safe_load(path.read_text(encoding="utf-8"))
        folder, name = job["config"]["process"][0]["training_folder"], job["config"]["name"]
    except (OSError, ValueError, yaml.YAMLError, KeyError, IndexError, TypeError):
        return None  # not an ai-toolkit job: the default folders apply
    return os.path.join(str(folder), str(name)) if isinstance(folder, str) and isinstance(name, str) else None


def run_script(script: Path, script_args: Sequence[str], auto: AutoAttach) -> int:
    """Run `script` as `__main__` inside `auto`; returns its exit code (1 for an exception, printed as Python does)."""
    saved_argv, saved_path = sys.argv, list(sys.path)
    sys.argv = [str(script), *script_args]
    sys.path[0:1] = [str(script.resolve().parent)]  # as `python script.py`: its folder first, not the runner's
    try:
        with auto:
            runpy.run_path(str(script), run_name="__main__")
    except SystemExit as done:  # the script's sys.exit() or its argparse usage error: its code, unchanged
        return _exit_code(done.code)
    except LayerSyncError:
        raise  # printed by the command line as `error: ...` (exit code 2)
    except Exception as error:
        _print_script_traceback(error, script)
        return 1
    finally:
        sys.argv, sys.path[:] = saved_argv, saved_path
    return 0


def _exit_code(code: Any) -> int:
    if code is None or isinstance(code, int):
        return code or 0
    print(code, file=sys.stderr)  # `sys.exit("message")` prints the message and exits with 1
    return 1


def _print_script_traceback(error: BaseException, script: Path) -> None:
    """The traceback from the script's frame on, as `python script.py` prints it (no runner frames above)."""
    tb = error.__traceback__
    target = os.path.realpath(script)
    while tb is not None and os.path.realpath(tb.tb_frame.f_code.co_filename) != target:
        tb = tb.tb_next
    traceback.print_exception(type(error), error, tb if tb is not None else error.__traceback__, file=sys.stderr)
