"""`layersync-hooks demo`: train a small PixArt with flow matching on generated shapes, with LayerSync.

Runs on a laptop CPU in a few minutes, and under `accelerate launch` on any number of processes:

    layersync-hooks demo                      # LayerSync run: curves, metrics, checkpoint under layersync_runs/demo
    layersync-hooks demo --compare            # the same run with and without LayerSync, plotted together
    accelerate launch -m layersync_hooks demo --steps 200
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from .plot import plot_runs
from .train import load_layersync_config, resume_dir, train


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--steps", type=_positive, default=400, help="Optimizer steps (default 400).")
    parser.add_argument("--batch-size", type=_positive, default=32, help="Images per process per micro-step.")
    parser.add_argument(
        "--gradient-accumulation-steps",
        type=_positive,
        default=1,
        help="Micro-steps per optimizer step (the update equals one batch that many times larger).",
    )
    parser.add_argument("--learning-rate", type=float, default=1e-3, help="AdamW learning rate.")
    parser.add_argument("--max-grad-norm", type=float, default=1.0, help="Gradient clipping norm.")
    parser.add_argument("--output-dir", default="layersync_runs/demo", help="Where runs, metrics and plots go.")
    parser.add_argument(
        "--config",
        default=None,
        help="A LayerSync JSON (e.g. configs/demo.json); default: student 3 <- teacher 6, weight 0.2.",
    )
    parser.add_argument("--seed", type=int, default=0, help="Fixes the images, the initial weights and every batch.")
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
    parser.add_argument("--eval-every", type=_positive, default=50, help="Validation loss every N steps.")
    parser.add_argument(
        "--checkpoint-every",
        type=_not_negative,
        default=0,
        help="Also save the training state every N steps (it is always saved at the end).",
    )
    parser.add_argument(
        "--report-to",
        default="auto",
        help="Accelerate tracker: 'tensorboard', 'wandb', ..., 'none'; 'auto' = TensorBoard if installed.",
    )


def _not_negative(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 (off) or a positive integer, got {text}")
    return value


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def run(args: argparse.Namespace) -> int:
    if args.resume not in (None, "latest") and args.compare:
        raise ValueError(
            "--resume PATH names one run's state; with --compare use plain --resume "
            "(each run continues from its own folder)."
        )
    output = Path(args.output_dir)
    plans = (
        [("layersync", True), ("baseline", False)]
        if args.compare
        else [("baseline", False)]
        if args.no_layersync
        else [("layersync", True)]
    )
    load_layersync_config(args.config)  # a bad --config or --resume fails here, before any training
    for name, _ in plans:
        resume_dir(args, output / name)
    summaries = {name: train(args, run_dir=output / name, use_layersync=on) for name, on in plans}
    from accelerate import PartialState

    if PartialState().is_main_process:  # files and prints once, however many processes run
        if args.compare:
            _compare(output, summaries)
        _report(output, summaries)
    return 0


def _compare(output: Path, summaries: dict) -> None:
    """compare.png (both runs' curves) and compare.json (their final numbers)."""
    histories = {name: summary["history"] for name, summary in summaries.items()}
    plot_runs(histories, output / "compare.png", title="LayerSync demo: with and without LayerSync")
    table = {name: {"steps": s["steps"], "seconds": s["seconds"], **s["final"]} for name, s in summaries.items()}
    (output / "compare.json").write_text(json.dumps(table, indent=1))


def _report(output: Path, summaries: dict) -> None:
    """Where everything went, and each run's final numbers."""
    for name in summaries:
        run_dir = output / name
        tensorboard = f", TensorBoard {run_dir / 'tensorboard'}" if (run_dir / "tensorboard").is_dir() else ""
        print(
            f"{name}: metrics {run_dir / 'metrics.json'} (and .csv), curves {run_dir / 'curves.png'}, "
            f"checkpoint {run_dir / 'model'}, training state {run_dir / 'state'}{tensorboard}"
        )
    if len(summaries) > 1:
        print(f"comparison: {output / 'compare.png'}, {output / 'compare.json'}")
    for name, summary in summaries.items():
        numbers = ", ".join(f"{key} {value:.4f}" for key, value in summary["final"].items())
        print(f"{name} after {summary['steps']} steps: {numbers}")
