"""The demo trainer: flow matching on a small PixArt transformer, with LayerSync attached as in a diffusers script.

A plain Accelerate training loop, so `accelerate launch` runs it on any number of processes, with gradient
accumulation and mixed precision from the launcher. Each process trains on its share of a global batch that
depends only on (seed, step) (see `data.py`): 1 process with batch 8, 2 processes with batch 4 and 1 process
with batch 4 x 2 accumulation steps all take the same optimizer steps. `--compare` trains its two runs
interleaved, step by step in one process: the same numbers as each run alone, under the same machine load.
"""

from __future__ import annotations

import contextlib
import csv
import json
import logging
import os
import statistics
import time
from pathlib import Path
from typing import Any, Optional

import torch
import torch.nn.functional as F

from ... import LayerSync, LayerSyncConfig
from ...errors import LayerSyncConfigError, UsageError
from .data import CAPTION_CHANNELS, IMAGE_SIZE, Batch, ShapesData
from .linear_probe import ProbeImages, linear_probe
from .plot import plot_runs
from .sample import predict_velocity, sample, save_run_samples

logger = logging.getLogger(__name__)

# The LayerSync config without --config: the `demo` preset, the paper heuristic for the model's 12 blocks.
DEFAULT_PRESET = "demo"

# What a run writes into its folder: a folder holding any of these holds an earlier run's results.
RUN_FILES = (
    "metrics.json",
    "metrics.csv",
    "curves.png",
    "samples.png",
    "samples_per_step.png",
    "model",
    "state",
    "tensorboard",
)

# What each evaluation step adds to its row of the curves.
EVALUATION_KEYS = ("val_loss", "linear_probe_student", "linear_probe_teacher")

# A real diffusers class, built from config: 12 blocks of width 128 over 8x8 = 64 patch tokens (3.3M parameters).
MODEL_CONFIG = dict(
    sample_size=IMAGE_SIZE,
    in_channels=3,
    out_channels=3,
    patch_size=2,
    num_layers=12,
    num_attention_heads=4,
    attention_head_dim=32,
    cross_attention_dim=128,
    caption_channels=CAPTION_CHANNELS,
    use_additional_conditions=False,
)


def build_model(seed: int):
    """The demo's `PixArtTransformer2DModel`, with random weights fixed by `seed`."""
    from diffusers import PixArtTransformer2DModel

    torch.manual_seed(seed)
    return PixArtTransformer2DModel(**MODEL_CONFIG)


def flow_matching_loss(model, batch: Batch) -> torch.Tensor:
    """Rectified-flow loss: predict the velocity `noise - image` at `x_t = (1 - t) image + t noise`."""
    t = batch.t.view(-1, 1, 1, 1)
    noisy = (1 - t) * batch.images + t * batch.noise
    prediction = predict_velocity(model, noisy, batch.t, batch.captions)
    return F.mse_loss(prediction.float(), (batch.noise - batch.images).float())


class TrainState:
    """The optimizer step, the curves and the sample grids so far (uint8, by step); saved with
    `accelerator.save_state`, so resume continues them."""

    def __init__(self):
        self.step = 0
        self.history: list[dict[str, float]] = []
        self.samples: dict[int, torch.Tensor] = {}

    def state_dict(self) -> dict[str, Any]:
        return {"step": self.step, "history": self.history, "samples": self.samples}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.step, self.history = int(state["step"]), list(state["history"])
        self.samples = dict(state.get("samples", {}))  # states saved before the demo drew samples have none


@torch.no_grad()
def validation_loss(model, data: ShapesData, layersync: LayerSync, device, chunk: int = 64) -> float:
    """Flow-matching loss on the held-out images with fixed noise and evenly spaced times (every process)."""
    model.eval()
    total = 0.0
    with layersync.paused():  # not a training forward: nothing to capture
        for start in range(0, len(data.val.t), chunk):
            batch = data.val.slice(start, start + chunk).to(device)
            total += flow_matching_loss(model, batch).item() * len(batch.t)
    model.train()
    return total / len(data.val.t)


def load_layersync_config(path: Optional[str]) -> LayerSyncConfig:
    """The LayerSync config of the run: `--config` or the `demo` preset. It must turn LayerSync on."""
    if path is None:
        return LayerSyncConfig.from_preset(DEFAULT_PRESET)
    try:
        config = LayerSyncConfig.load(path)
    except (OSError, UnicodeDecodeError) as error:
        reason = getattr(error, "strerror", None) or error
        raise UsageError(
            f"--config {path} cannot be read ({reason}). Pass a LayerSync JSON file or a preset name such as "
            "demo, or leave --config out for the default (student 3 <- teacher 6, weight 0.2)."
        ) from None
    except LayerSyncConfigError as error:
        raise UsageError(f"--config {path}: {error}") from None
    if not config.enabled:
        raise UsageError(
            f"--config {path} turns LayerSync off (`layersync_enabled` is false or missing). Set "
            '`"layersync_enabled": true` in it; for a run without LayerSync pass --no-layersync instead.'
        )
    return config


def optimizer_step(
    accelerator,
    model,
    optimizer,
    layersync: LayerSync,
    micro_batches: list[Batch],
    *,
    use_layersync: bool,
    max_grad_norm: float,
) -> torch.Tensor:
    """One optimizer step over this process's micro-batches, as a diffusers script takes it: the LayerSync term
    is added to the loss before `accelerator.backward`. Returns this process's mean flow-matching loss."""
    task = torch.zeros((), device=accelerator.device)
    for batch in micro_batches:
        with accelerator.accumulate(model):
            loss = flow_matching_loss(model, batch.to(accelerator.device))
            term = layersync.loss()  # the baseline computes it too, for the similarity, but never trains on it
            accelerator.backward(loss + term if use_layersync else loss)
            if accelerator.sync_gradients:
                accelerator.clip_grad_norm_(model.parameters(), max_grad_norm)
            optimizer.step()
            optimizer.zero_grad()
        task += loss.detach() / len(micro_batches)
    return task


def resume_dir(args, run_dir: Path) -> Optional[Path]:
    """The state folder `--resume` names for this run (None without --resume); it must hold a saved state."""
    if not args.resume:
        return None
    path = run_dir / "state" if args.resume == "latest" else Path(args.resume)
    if not (path / "custom_checkpoint_0.pkl").is_file():
        raise UsageError(
            f"--resume: no saved training state in {path}. Run without --resume first, "
            "or pass --resume PATH to a `state` folder written by a previous run."
        )
    if (path / "custom_checkpoint_1.pkl").is_file():  # 0.1.0 registered LayerSync itself; accelerate would refuse
        raise UsageError(
            f"--resume: the training state in {path} was written by layersync-hooks 0.1 (LayerSync's step in "
            "custom_checkpoint_1.pkl), which this version cannot resume. Train anew with --overwrite "
            "(without --resume)."
        )
    return path


def saved_step(path: Path) -> int:
    """The optimizer step of the training state saved in `path` (its `TrainState`, registered first)."""
    try:
        state = torch.load(path / "custom_checkpoint_0.pkl", map_location="cpu", weights_only=True)
        return int(state["step"])
    except Exception as error:  # unpickling raises many kinds; all mean the same here
        raise UsageError(
            f"--resume: the training state in {path} cannot be read ({type(error).__name__}: {error}). Pass "
            "--resume PATH to a `state` folder written by the demo, or train anew with --overwrite (without --resume)."
        ) from None


def make_accelerator(args, run_dir: Path):
    """One Accelerator per run; TensorBoard logging when it is installed (or as `--report-to` says)."""
    from accelerate import Accelerator
    from accelerate.utils import ProjectConfiguration, is_tensorboard_available

    report_to = args.report_to
    if report_to == "auto":
        report_to = "tensorboard" if is_tensorboard_available() else None
    elif report_to == "none":
        report_to = None
    project = ProjectConfiguration(project_dir=str(run_dir), logging_dir=str(run_dir))
    return Accelerator(
        gradient_accumulation_steps=args.gradient_accumulation_steps, log_with=report_to, project_config=project
    )


class DemoRun:
    r"""
    One run of the demo, one optimizer step at a time: its accelerator, model, optimizer, LayerSync, data, curves
    and timings. `train` steps one run to the end, or the two runs of `--compare` in turn.

    Args:
        args (`argparse.Namespace`): The demo's flags.
        run_dir (`Path`): Where the run writes its files; its name names the run.
        use_layersync (`bool`): Whether the LayerSync term is added to the loss (the baseline only measures it).
        position (`int`, defaults to 0): The line of its progress bar (one per run).
    """

    def __init__(self, args, *, run_dir: Path, use_layersync: bool, position: int = 0):
        from tqdm.auto import tqdm

        self.args, self.run_dir, self.name, self.use_layersync = args, run_dir, run_dir.name, use_layersync
        self.accelerator = accelerator = make_accelerator(args, run_dir)
        self.data = ShapesData(seed=args.seed)
        self.probe_images = ProbeImages.draw(seed=args.seed)
        model = build_model(args.seed)
        # The baseline attaches LayerSync too but never adds its term: it measures the same student-teacher
        # similarity without training on it, so both runs report comparable curves.
        self.config = load_layersync_config(args.config)
        self.layersync = LayerSync.from_config(model, self.config)  # before accelerator.prepare
        optimizer = torch.optim.AdamW(model.parameters(), lr=args.learning_rate, weight_decay=0.0)
        self.model, self.optimizer = accelerator.prepare(model, optimizer)
        self.state = TrainState()
        accelerator.register_for_checkpointing(self.state)
        self.layersync.register_with(accelerator)  # its step in layersync_state.json, as the README's edit does
        resume_from = resume_dir(args, run_dir)
        if resume_from is not None:  # its step was checked against --steps before any run started
            accelerator.load_state(str(resume_from))
        accelerator.init_trackers(
            "tensorboard", config={k: v for k, v in vars(args).items() if isinstance(v, (int, float, str, bool))}
        )
        world, accumulation = accelerator.num_processes, args.gradient_accumulation_steps
        accelerator.print(
            f"[{self.name}] {type(accelerator.unwrap_model(self.model)).__name__}, {self.layersync!r}; "
            f"LayerSync term {'added to the loss' if use_layersync else 'measured, not trained on'}. "
            f"Batch {args.batch_size} x {world} processes x {accumulation} accumulation = "
            f"{args.batch_size * world * accumulation} per step ({accelerator.distributed_type})."
        )
        self.progress = tqdm(
            total=args.steps,
            initial=self.state.step,
            desc=self.name,
            position=position,
            disable=not accelerator.is_local_main_process,
        )
        self.probe_line = ""  # the last evaluation's probe, student/teacher, for the progress line
        self.timing = StepTiming()

    @property
    def done(self) -> bool:
        return self.state.step >= self.args.steps

    def step(self) -> dict[str, float]:
        """One optimizer step and its row of metrics; at evaluation steps also the validation loss, the linear
        probe and a sample grid. Returns the row (also in the curves, the tracker and the progress line)."""
        args, accelerator, state = self.args, self.accelerator, self.state
        micro_batches = self.data.micro_batches(state.step, rank=accelerator.process_index,
                                                batch_size=args.batch_size, num_processes=accelerator.num_processes,
                                                accumulation=args.gradient_accumulation_steps)  # fmt: skip
        with self.timing.step():
            task = optimizer_step(accelerator, self.model, self.optimizer, self.layersync, micro_batches,
                                  use_layersync=self.use_layersync, max_grad_norm=args.max_grad_norm)  # fmt: skip
            loss = accelerator.reduce(task, reduction="mean").item()  # waits for the step (a GPU runs ahead)
        state.step += 1
        row = {"step": state.step, "loss": loss, **self.layersync.metrics()}
        if not self.use_layersync:
            row.pop("layersync_loss", None)  # measured, but not part of this run's loss
        if state.step % args.eval_every == 0 or state.step == args.steps:
            row.update(self._evaluate())
        state.history.append(row)
        accelerator.log({k: v for k, v in row.items() if k != "step"}, step=state.step)
        # past a config's `layersync_stop_step` the hooks are gone and metrics() has nothing to report
        postfix = {key: f"{row[key]:.4f}" for key in ("loss", "layersync_similarity") if key in row}
        if "linear_probe_student" in row:  # shown until the next evaluation
            self.probe_line = f"{row['linear_probe_student']:.3f}/{row['linear_probe_teacher']:.3f}"
        self.progress.set_postfix(**postfix, **({"probe": self.probe_line} if self.probe_line else {}))
        self.progress.update(1)
        if args.checkpoint_every and state.step % args.checkpoint_every == 0 and not self.done:
            accelerator.save_state(str(self.run_dir / "state"))
        return row

    def _evaluate(self) -> dict[str, float]:
        """The validation loss and the linear probe of this step; its sample grid goes into the state."""
        model, layersync, device = self.model, self.layersync, self.accelerator.device
        with self.timing.part("validation"):
            numbers = {"val_loss": validation_loss(model, self.data, layersync, device)}
        with self.timing.part("probe"):
            numbers.update(linear_probe(model, self.probe_images, layersync, device))
        with self.timing.part("sample"):
            self.state.samples[self.state.step] = sample(model, self.data, layersync, device)
        return numbers

    def finish(self, *, interleaved_with: tuple[str, ...] = ()) -> dict[str, Any]:
        """Save the state and write the run's files; returns its summary (also `metrics.json`) and, under
        `"samples"`, its sample grids by step."""
        accelerator, state = self.accelerator, self.state
        self.progress.close()
        accelerator.save_state(str(self.run_dir / "state"))
        summary = {
            "run": self.name,
            "layersync": self.use_layersync,
            "config": self.config.to_dict(),
            "num_processes": accelerator.num_processes,
            "distributed_type": str(accelerator.distributed_type),
            "gradient_accumulation_steps": self.args.gradient_accumulation_steps,
            "batch_size": self.args.batch_size,
            "steps": state.step,
            "final": final_numbers(state.history),
            "timing": self.timing.summary(interleaved_with),
            "history": state.history,
        }
        _write_outputs(accelerator, self.model, summary, state.samples, self.run_dir)
        self.layersync.remove()
        return {**summary, "samples": state.samples}


def train(args, runs: dict[str, tuple[Path, bool]]) -> dict[str, dict[str, Any]]:
    """Train `runs` (name -> (run folder, whether LayerSync is on)) and return their summaries by name. Several
    runs (`--compare`) are interleaved: each takes its step k in turn, in one process, on the same batch of step
    k, so both see the same machine load, and each run's numbers are those of the run trained alone."""
    demo_runs = [
        DemoRun(args, run_dir=run_dir, use_layersync=on, position=position)
        for position, (run_dir, on) in enumerate(runs.values())
    ]
    while not all(run.done for run in demo_runs):
        for run in demo_runs:
            if not run.done:  # a resumed run may be ahead of the other
                run.step()
    names = tuple(run.name for run in demo_runs)
    summaries = {run.name: run.finish(interleaved_with=tuple(n for n in names if n != run.name)) for run in demo_runs}
    for run in demo_runs:  # last: it also ends the process group, which every run's finish() still needs
        run.accelerator.end_training()
    if demo_runs[0].accelerator.num_processes > 1:
        # gloo's worker thread lets go of the last collective's tensors just after it completes; a rank whose
        # interpreter shuts down before then aborts (SIGABRT), as the group outlives end_training() in the model
        time.sleep(0.2)
    return summaries


class StepTiming:
    """Per-step wall and CPU seconds of the optimizer steps, the seconds of each evaluation part, and the load
    average at the first and last step: a loaded machine shows in the load average, not as a slower method."""

    def __init__(self):
        self.wall: list[float] = []
        self.cpu: list[float] = []
        self.parts: dict[str, float] = {"validation": 0.0, "probe": 0.0, "sample": 0.0}
        self.load = [_load_average(), None]

    @contextlib.contextmanager
    def step(self):
        wall, cpu = time.perf_counter(), time.process_time()
        yield
        self.wall.append(time.perf_counter() - wall)
        self.cpu.append(time.process_time() - cpu)
        self.load[1] = _load_average()

    @contextlib.contextmanager
    def part(self, name: str):
        started = time.perf_counter()
        yield
        self.parts[name] += time.perf_counter() - started

    def summary(self, interleaved_with: tuple[str, ...]) -> dict[str, Any]:
        steps = sum(self.wall)
        return {
            "method": (
                f"interleaved step by step with {', '.join(interleaved_with)} in one process"
                if interleaved_with
                else "alone"
            ),
            "step_seconds_median": round(statistics.median(self.wall), 5) if self.wall else None,
            "step_cpu_seconds_median": round(statistics.median(self.cpu), 5) if self.cpu else None,
            "torch_threads": torch.get_num_threads(),
            "load_average_1min": self.load,  # at the first and the last step
            "step_seconds": round(steps, 2),  # the optimizer steps' wall time, summed
            **{f"{name}_seconds": round(seconds, 2) for name, seconds in self.parts.items()},
            "probe_share": round(self.parts["probe"] / (steps + sum(self.parts.values())), 4) if steps else None,
        }


def _load_average() -> Optional[float]:
    """The 1-minute load average (None where the system has none, e.g. Windows)."""
    try:
        return round(os.getloadavg()[0], 2)
    except (AttributeError, OSError):
        return None


def _write_outputs(accelerator, model, summary: dict[str, Any], samples: dict, run_dir: Path) -> None:
    """metrics.json / metrics.csv, the safetensors checkpoint, curves.png and the sample PNGs (main process only)."""
    from safetensors.torch import save_file

    weights = accelerator.get_state_dict(model)  # every process takes part (FSDP gathers here)
    history = summary["history"]
    if accelerator.is_main_process:
        model_dir = run_dir / "model"
        accelerator.unwrap_model(model).save_config(model_dir)
        save_file({k: v.contiguous() for k, v in weights.items()}, model_dir / "diffusion_pytorch_model.safetensors")
        (run_dir / "metrics.json").write_text(json.dumps(summary, indent=1))
        columns = list(dict.fromkeys(key for row in history for key in row))
        with open(run_dir / "metrics.csv", "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=columns)
            writer.writeheader()
            writer.writerows(history)
        plot_runs({run_dir.name: history}, run_dir / "curves.png")
        save_run_samples(run_dir, run_dir.name, samples)
    accelerator.wait_for_everyone()


def final_numbers(history: list[dict[str, float]]) -> dict[str, float]:
    """The last evaluation's validation loss and linear probes, and the train loss and similarity averaged over
    the last 10% of steps."""
    tail = history[-max(1, len(history) // 10) :]
    numbers = {}
    for key in ("loss", "layersync_similarity"):  # no similarity after a `layersync_stop_step`
        values = [row[key] for row in tail if key in row]
        if values:
            numbers[key] = sum(values) / len(values)
    evaluations = [row for row in history if "val_loss" in row]
    if evaluations:
        numbers.update({key: evaluations[-1][key] for key in EVALUATION_KEYS if key in evaluations[-1]})
    return numbers
