"""`layersync-hooks demo`: train a small PixArt with flow matching on generated shapes, with LayerSync.

Runs on a laptop CPU in a few minutes, and under `accelerate launch` on any number of processes:

    layersync-hooks demo                      # LayerSync run: curves, samples, checkpoint under layersync_runs/demo
    layersync-hooks demo --compare            # the same run with and without LayerSync, plotted together
    accelerate launch -m layersync_hooks demo --steps 200
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ...errors import UsageError
from ..checks import (
    agree,
    clip_norm,
    existing,
    non_negative_int,
    positive_float,
    positive_int,
    remove,
    require_modules,
    seed,
    writable_folder,
)
from .plot import plot_runs
from .sample import save_compare_samples
from .train import RUN_FILES, load_layersync_config, resume_dir, saved_step, train

# What `--compare` writes next to the two run folders.
COMPARE_FILES = ("compare.png", "compare.json", "compare_samples.png")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--steps", type=positive_int, default=400, help="Optimizer steps (default 400).")
    parser.add_argument("--batch-size", type=positive_int, default=32, help="Images per process per micro-step.")
    parser.add_argument(
        "--gradient-accumulation-steps",
        type=positive_int,
        default=1,
        help="Micro-steps per optimizer step (the update equals one batch that many times larger).",
    )
    parser.add_argument("--learning-rate", type=positive_float, default=1e-3, help="AdamW learning rate.")
    parser.add_argument(
        "--max-grad-norm", type=clip_norm, default=1.0, help="Gradient clipping norm (inf: no clipping)."
    )
    parser.add_argument("--output-dir", default="layersync_runs/demo", help="Where runs, metrics and plots go.")
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="Replace the results of an earlier run in --output-dir (without it the demo refuses to).",
    )
    parser.add_argument(
        "--config",
        default=None,
        help="A LayerSync JSON file or preset name (e.g. demo); default: student 3 <- teacher 6, weight 0.2.",
    )
    parser.add_argument(
        "--seed", type=seed, default=0, help="Fixes the images, the initial weights, every batch and the samples."
    )
    runs = parser.add_mutually_exclusive_group()
    runs.add_argument("--no-layersync", action="store_true", help="Train without the LayerSync term (baseline).")
    runs.add_argument("--compare", action="store_true", help="Train with and without LayerSync; plot both.")
    parser.add_argument(
        "--resume",
        nargs="?",
        const="latest",
        default=None,
        metavar="PATH",
        help="Continue from the run's last saved state (or from PATH, an accelerate save_state "
        "folder) up to --steps; its curves continue too.",
    )
    parser.add_argument(
        "--eval-every", type=positive_int, default=50, help="Validation loss and sample grid every N steps."
    )
    parser.add_argument(
        "--checkpoint-every",
        type=non_negative_int,
        default=0,
        help="Also save the training state every N steps (it is always saved at the end).",
    )
    parser.add_argument(
        "--report-to",
        default="auto",
        help="Accelerate tracker: 'tensorboard', 'wandb', ..., 'none'; 'auto' = TensorBoard if installed.",
    )


def run(args: argparse.Namespace) -> int:
    output = Path(args.output_dir)
    plans = (
        [("layersync", True), ("baseline", False)]
        if args.compare
        else [("baseline", False)]
        if args.no_layersync
        else [("layersync", True)]
    )
    names = [name for name, _ in plans]
    agree(lambda: check_arguments(args, output, names))  # on every process, before any of them trains
    from accelerate import PartialState

    state = PartialState()
    if args.overwrite:
        if state.is_main_process:
            _remove_earlier_results(args, output, names)
        state.wait_for_everyone()
    summaries = train(args, {name: (output / name, on) for name, on in plans})
    if state.is_main_process:  # files and prints once, however many processes run
        if args.compare:
            _compare(output, summaries)
        _report(output, summaries)
    return 0


def check_arguments(args: argparse.Namespace, output: Path, names: list[str]) -> None:
    """Every check that can fail, before the first step: flags that conflict, the modules, --config,
    --report-to, --resume, earlier results, and that every folder can be written. Raises `UsageError`."""
    if args.resume not in (None, "latest") and args.compare:
        raise UsageError(
            f"--resume {args.resume} names one run's state; with --compare use plain --resume "
            "(each run continues from its own folder)."
        )
    if args.overwrite and any(_continues(args, output / name) for name in names):
        raise UsageError(
            "--overwrite replaces the run that --resume continues; pass --resume to continue it, or --overwrite "
            "(without --resume) to train anew."
        )
    require_modules(
        {"matplotlib": "matplotlib", "PIL": "pillow", "tqdm": "tqdm"},
        why="The demo (its progress bar, curves and sample grids)",
    )
    load_layersync_config(args.config)
    _check_report_to(args.report_to)
    for name in names:
        path = resume_dir(args, output / name)
        step = saved_step(path) if path is not None else 0
        if step >= args.steps:
            raise UsageError(
                f"--resume: the state in {path} is already at step {step}; pass --steps larger than {step} to train on."
            )
    _refuse_earlier_results(args, output, names)
    writable_folder(output, "--output-dir")
    for name in names:
        writable_folder(output / name, "--output-dir")


def _continues(args: argparse.Namespace, run_dir: Path) -> bool:
    """Whether `--resume` continues the run in `run_dir` (its own state), which may then write there."""
    if args.resume == "latest":
        return True
    return args.resume is not None and Path(args.resume).resolve() == (run_dir / "state").resolve()


def _earlier_results(args: argparse.Namespace, output: Path, names: list[str]) -> dict[Path, list[str]]:
    """The files of earlier runs that this run would replace, by folder (the runs it continues excluded)."""
    found = {output / name: existing(output / name, RUN_FILES) for name in names if not _continues(args, output / name)}
    if args.compare and not args.resume:
        found[output] = existing(output, COMPARE_FILES)
    return {folder: held for folder, held in found.items() if held}


def _refuse_earlier_results(args: argparse.Namespace, output: Path, names: list[str]) -> None:
    """Never replace a result silently: the results of earlier runs need --overwrite."""
    found = _earlier_results(args, output, names)
    if found and not args.overwrite:
        where = "; ".join(f"{folder}: {', '.join(held)}" for folder, held in found.items())
        raise UsageError(
            f"--output-dir {output} already holds an earlier run's results ({where}). Pass --overwrite to replace "
            "them, --resume to continue that run, or choose another --output-dir."
        )


def _remove_earlier_results(args: argparse.Namespace, output: Path, names: list[str]) -> None:
    """--overwrite: delete the earlier results (and only them), so no stale file (a TensorBoard log, a
    checkpoint) is left next to the new run's."""
    for folder in _earlier_results(args, output, names):
        remove(folder, COMPARE_FILES if folder == output else RUN_FILES)


def _check_report_to(value: str) -> None:
    """--report-to names an accelerate tracker that is installed (accelerate would silently skip it)."""
    from accelerate.tracking import get_available_trackers
    from accelerate.utils import LoggerType

    if value in ("auto", "none", "all"):
        return
    if value not in LoggerType.list():
        raise UsageError(
            f"--report-to {value!r} is not an accelerate tracker. Pass one of auto, none, "
            f"{', '.join(LoggerType.list())}."
        )
    if LoggerType(value) not in get_available_trackers():
        raise UsageError(
            f"--report-to {value}: {value} is not installed. Run `pip install {value}`, or pass --report-to none "
            "(or auto: TensorBoard when it is installed)."
        )


def _compare(output: Path, summaries: dict) -> None:
    """compare.png (both runs' curves), compare.json (their final numbers and step times) and compare_samples.png
    (their last sample grids side by side, from the same noise)."""
    histories = {name: summary["history"] for name, summary in summaries.items()}
    plot_runs(histories, output / "compare.png", title="LayerSync demo: with and without LayerSync")
    table = {name: {"steps": s["steps"], **s["final"], **_step_times(s["timing"])} for name, s in summaries.items()}
    first, second = (summaries[name]["timing"] for name in ("layersync", "baseline"))
    table["timing"] = {
        "method": "the two runs interleaved step by step in one process (same batches), per-step medians",
        "step_cpu_seconds_ratio": round(first["step_cpu_seconds_median"] / second["step_cpu_seconds_median"], 4),
        "step_seconds_ratio": round(first["step_seconds_median"] / second["step_seconds_median"], 4),
        "torch_threads": first["torch_threads"],
        "load_average_1min": first["load_average_1min"],  # at the first and last step
    }
    (output / "compare.json").write_text(json.dumps(table, indent=1))
    finals = {name: (s["steps"], s["samples"][max(s["samples"])]) for name, s in summaries.items()}
    save_compare_samples(output / "compare_samples.png", finals)


def _step_times(timing: dict) -> dict:
    """The per-step medians and the probe's share of a run's time, for compare.json."""
    return {key: timing[key] for key in ("step_seconds_median", "step_cpu_seconds_median", "probe_share")}


def _report(output: Path, summaries: dict) -> None:
    """Where everything went, and each run's final numbers."""
    for name in summaries:
        run_dir = output / name
        tensorboard = f", TensorBoard {run_dir / 'tensorboard'}" if (run_dir / "tensorboard").is_dir() else ""
        print(
            f"{name}: metrics {run_dir / 'metrics.json'} (and .csv), curves {run_dir / 'curves.png'}, "
            f"samples {run_dir / 'samples.png'} (at each evaluation step: {run_dir / 'samples_per_step.png'}), "
            f"checkpoint {run_dir / 'model'}, training state {run_dir / 'state'}{tensorboard}"
        )
    if len(summaries) > 1:
        print(
            f"comparison: {output / 'compare.png'}, {output / 'compare.json'}, "
            f"samples side by side {output / 'compare_samples.png'}"
        )
    for name, summary in summaries.items():
        numbers = ", ".join(f"{key} {value:.4f}" for key, value in summary["final"].items())
        print(f"{name} after {summary['steps']} steps: {numbers}")
    for name, summary in summaries.items():
        timing = summary["timing"]
        print(
            f"{name} step time: median {timing['step_cpu_seconds_median']:.3f} CPU-s, "
            f"{timing['step_seconds_median']:.3f} s wall on {timing['torch_threads']} thread(s), 1-min load average "
            f"{timing['load_average_1min'][0]} -> {timing['load_average_1min'][1]} ({timing['method']}); "
            f"the probe took {100 * timing['probe_share']:.1f}% of the steps and evaluations"
        )
