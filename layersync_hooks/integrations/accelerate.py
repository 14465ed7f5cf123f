"""LayerSync on an unmodified accelerate training script: the methods it rides on, for one `with` block.

`AutoAttach` wraps `prepare`, `prepare_model`, `backward` and `log` of `accelerate.Accelerator`, and the `log` of
accelerate's trackers, and restores them on exit:

- `prepare` and `prepare_model`: attach LayerSync to the denoiser among the prepared modules (the prepared module
  itself, or a submodule of it, whose class has a layout; each expert of a module that holds several, as Wan 2.2's
  two experts) before accelerate wraps it (DDP, FSDP, DeepSpeed, compile), and register LayerSync's checkpoint file
  with `save_state` / `load_state` (`LayerSync.register_with`). Nothing else is prepared or registered.
- `backward`: adds the LayerSync term of the training forwards since the last backward to the loss before
  accelerate divides it for gradient accumulation (or hands it to DeepSpeed, which does) and scales it for fp16,
  exactly as `loss = loss + layersync.loss()` in the script would. There, every process starts summing LayerSync's
  totals over the processes, without waiting (`Meter.share`).
- `log`: adds the LayerSync metrics to the script's own `accelerator.log` calls, and to its trackers' `log` when a
  trainer calls a tracker directly (kohya sd-scripts' LoRA scripts). The values are the means over every process,
  as the README's edit logs them, with no collective there: trainers log on the main process only.
- and, for scripts that never log (ai-toolkit and DiffSynth-Studio log through their own loggers), it reports the
  LayerSync term and similarity itself every `report_every` optimizer steps: a printed line and a JSON line in
  `layersync_metrics.jsonl` (main process).

Example:
    ```python
    >>> from layersync_hooks.integrations import AutoAttach
    >>> with AutoAttach({"layersync_student_block": 8, "layersync_teacher_block": 16}):
    ...     main()                                   # your accelerate training loop, unchanged
    ```
"""

from __future__ import annotations

import json
import logging
import os
import time
import warnings
from pathlib import Path
from typing import Any, Callable, Mapping, Optional, Union

import accelerate
import accelerate.tracking
import torch
from torch import nn

from ..capture import unwrap
from ..config import LayerSyncConfig
from ..errors import MissingActivationsError, UsageError
from ..layersync import LayerSync
from ..layouts import lookup_layout
from ..metrics import Window

logger = logging.getLogger(__name__)

METRICS_FILE = "layersync_metrics.jsonl"
_WRAPPED = ("prepare", "prepare_model", "backward", "log")


class AutoAttach:
    r"""
    LayerSync for the accelerate training loop that runs inside this `with` block, with no edit to it.

    Args:
        config (`LayerSyncConfig`, `dict`, JSON path or preset name): What to align. Given here, LayerSync is on:
            a config that leaves `layersync_enabled` out is enabled.
        module (`str`, *optional*): Which prepared module to align, when a script prepares several with a layout:
            a class name (`"FluxTransformer2DModel"`) or a dotted path inside a prepared module (`"pipe.dit"`).
        report_every (`int`, defaults to 50): Optimizer steps between LayerSync's own report lines.
        metrics_file (`str`, *optional*): Where the report lines go; by default `layersync_metrics.jsonl` in
            `output_dir`, else in accelerate's `project_dir`, else in the current folder.
        output_dir (`str`, *optional*): The training script's output folder, for the default metrics file.

    Attributes:
        layersyncs (`list` of `LayerSync`): Attached at the first `prepare` that holds the denoiser: one, or one per
            expert of a module that holds several (they share one meter, so the logs are one number).
        layersync (`LayerSync` or None): The first of them.
        skipped_backwards (`int`): `backward` calls with no training forward since the last one (loss unchanged).
    """

    def __init__(
        self,
        config: Union[LayerSyncConfig, Mapping[str, Any], str, os.PathLike],
        *,
        module: Optional[str] = None,
        report_every: int = 50,
        metrics_file: Optional[Union[str, os.PathLike]] = None,
        output_dir: Optional[Union[str, os.PathLike]] = None,
    ):
        if isinstance(config, Mapping) and "layersync_enabled" not in config and "enabled" not in config:
            config = {"layersync_enabled": True, **config}  # given to the runner: on
        self.config = LayerSyncConfig.load(config)
        if not self.config.enabled:
            raise UsageError(
                "The LayerSync config turns LayerSync off (`layersync_enabled: false`), so there is nothing to add: "
                "run the script on its own, or turn it on."
            )
        if isinstance(report_every, bool) or not isinstance(report_every, int) or report_every < 1:
            raise UsageError(f"`report_every` must be a positive number of optimizer steps, got {report_every!r}.")
        self.module, self.report_every = module, report_every
        self._metrics_file, self._output_dir = metrics_file, output_dir
        self.layersyncs: list[LayerSync] = []
        self.accelerator: Any = None
        self.skipped_backwards = 0
        self.seen: list[str] = []  # the modules prepared so far, described, for the errors
        self._originals: dict[tuple[type, str], Any] = {}
        self._handles: tuple = ()
        self._report: Optional[_Report] = None
        self._log_window: Optional[Window] = None
        self._logged: tuple[Any, dict] = (None, {})  # (the log call, metrics) of the last read, for every tracker of it
        self._in_log = False  # inside the script's `accelerator.log`, which calls the trackers' `log`
        self._terms = 0  # backwards that got a term
        self._preparing = 0

    @property
    def layersync(self) -> Optional[LayerSync]:
        return self.layersyncs[0] if self.layersyncs else None

    # -- the block -----------------------------------------------------------------------------------------------
    def __enter__(self) -> AutoAttach:
        cls = accelerate.Accelerator
        if any(getattr(cls.__dict__.get(name), "_layersync_wrapper", False) for name in _WRAPPED):
            raise UsageError("`AutoAttach` is already active: one LayerSync runner per process.")
        for name in _WRAPPED:
            self._wrap(cls, name, getattr(self, f"_wrap_{name}"))
        return self

    def _wrap(self, cls: type, name: str, make: Callable[[Callable], Callable]) -> None:
        self._originals[(cls, name)] = cls.__dict__[name]
        wrapper = make(cls.__dict__[name])
        wrapper._layersync_wrapper = True
        setattr(cls, name, wrapper)

    def __exit__(self, exc_type, exc, tb) -> None:
        for (cls, name), original in self._originals.items():
            setattr(cls, name, original)
        self._originals.clear()
        for handle in self._handles:
            handle.remove()
        self._handles = ()
        if self._report is not None:
            self._report.flush()
        for layersync in self.layersyncs:
            layersync.remove()
        if exc_type is None and not self.layersyncs:
            raise UsageError(
                "The training script finished, but LayerSync never ran: "
                + (f"it prepared {', '.join(self.seen)}, none of which holds a model with a layout. "
                   if self.seen else "it never called `Accelerator.prepare` on a model. ")
                + "LayerSync attaches when the script prepares its denoiser with accelerate."
            )  # fmt: skip

    # -- prepare ---------------------------------------------------------------------------------------------------
    def _wrap_prepare(self, original: Callable) -> Callable:
        def prepare(accelerator, *objects, **kwargs):
            if not self.layersyncs:
                self._attach(accelerator, [o for o in objects if isinstance(o, nn.Module)])
            self._preparing += 1  # prepare calls prepare_model for each module: seen once, here
            try:
                return original(accelerator, *objects, **kwargs)
            finally:
                self._preparing -= 1

        return prepare

    def _wrap_prepare_model(self, original: Callable) -> Callable:
        def prepare_model(accelerator, model, *args, **kwargs):
            if not self.layersyncs and not self._preparing and isinstance(model, nn.Module):
                self._attach(accelerator, [model])
            return original(accelerator, model, *args, **kwargs)

        return prepare_model

    def _attach(self, accelerator, modules: list[nn.Module]) -> None:
        """Attach to the denoiser among `modules`; none yet: wait for a later prepare (text encoders first)."""
        if not modules:
            return  # a sample dataloader, an optimizer: nothing to align
        self.seen += [type(unwrap(m)).__name__ for m in modules]
        found = [(top, path, module) for top in modules for path, module in _candidates(unwrap(top), self.module)]
        if not found:
            return
        if len({id(top) for top, _, _ in found}) > 1:
            listed = ", ".join(f"{type(m).__name__} ({_where(top, path)})" for top, path, m in found)
            raise UsageError(
                f"LayerSync found several models it could align among the prepared modules: {listed}. Name the one "
                "to align with `--module` (a class name or a path such as `pipe.dit`)."
            )
        for top, path, denoiser in found:  # one, or each expert inside one module (Wan 2.2's two experts)
            trainer = unwrap(top) if path else None  # the outer module's forward is the training forward
            meter = self.layersyncs[0].meter if self.layersyncs else None
            self.layersyncs.append(LayerSync(denoiser, self.config, training_module=trainer, meter=meter))
            logger.info("LayerSync runner: %r, attached at Accelerator.prepare (%s).", self.layersyncs[-1],
                        _where(top, path))  # fmt: skip
        self.accelerator = accelerator
        self._handles = self.layersync.register_with(accelerator)
        self._log_window = self.layersync.meter.window(shared=True)
        self._report = _Report(self.layersync, self._report_path(accelerator), self.report_every,
                               accelerator.is_main_process)  # fmt: skip
        for tracker in _tracker_classes():  # the trackers a trainer may call directly
            self._wrap(tracker, "log", self._wrap_tracker_log)
        if accelerator.is_main_process:
            attached = "; ".join(repr(layersync) for layersync in self.layersyncs)
            print(f"LayerSync: {attached}; metrics every {self.report_every} optimizer steps in {self._report.path}",
                  flush=True)  # fmt: skip

    def _report_path(self, accelerator) -> Path:
        if self._metrics_file is not None:
            return Path(self._metrics_file)
        folder = self._output_dir or getattr(accelerator, "project_dir", None) or os.getcwd()
        return Path(folder) / METRICS_FILE

    # -- backward ----------------------------------------------------------------------------------------------
    def _wrap_backward(self, original: Callable) -> Callable:
        def backward(accelerator, loss, **kwargs):
            if not self.layersyncs and self.seen:
                which = f"is named {self.module!r}" if self.module else "holds a model with a layout"
                raise UsageError(
                    f"The script started training, but none of the modules it prepared ({', '.join(self.seen)}) "
                    f"{which}. Name the model to align with `--module` (a class name or a path such as `pipe.dit`)."
                )
            if not self.layersyncs:
                raise UsageError(
                    "The script started training without preparing a model with accelerate (DiffSynth-Studio's "
                    "--enable_model_cpu_offload prepares only the optimizer), so LayerSync has nothing to attach to. "
                    "Train without that mode, or add LayerSync in Python (docs/training-scripts.md)."
                )
            if accelerator is self.accelerator:
                loss = self._add_term(loss)
            result = original(accelerator, loss, **kwargs)
            if accelerator is self.accelerator:
                self.layersync.meter.share()  # every process passes here: the means over processes, for `log`
                self._logged = (None, {})  # new values: the next log reads them
                if accelerator.sync_gradients:
                    self._report.step(self.skipped_backwards)
            return result

        return backward

    def _add_term(self, loss: torch.Tensor) -> torch.Tensor:
        attached = [layersync for layersync in self.layersyncs if layersync.state == "attached"]
        ran = [layersync for layersync in attached if layersync.has_activations]
        for layersync in self.layersyncs:
            if layersync.state == "stopped":
                layersync.loss()  # zero, and the step count goes on
        if ran:
            self._terms += 1
            term = sum(layersync.loss() for layersync in ran)  # before accelerate divides and scales
            if term.device != loss.device:
                raise UsageError(
                    f"LayerSync's term is on {term.device} but the loss on {loss.device}: the captured block outputs "
                    "were moved off the model's device. A trainer flag that offloads checkpointed activations to the "
                    "CPU does this (musubi-tuner's --gradient_checkpointing_cpu_offload, DiffSynth-Studio's "
                    "--use_gradient_checkpointing_offload): train without it under LayerSync."
                )
            return loss + term
        if attached and not self._terms:
            self._no_term_yet(attached[0])
        if attached:
            self.skipped_backwards += 1
            if self.skipped_backwards == 1:
                warnings.warn(
                    "Accelerator.backward was called with no training forward of the model since the last one, so "
                    "its loss is left as it is (counted on every report line: AutoAttach.skipped_backwards).",
                    stacklevel=3,
                )
        return loss

    def _no_term_yet(self, layersync: LayerSync) -> None:
        """The script's first backward, and no training forward was captured: LayerSync would change nothing at all.
        Stop here with the capture's reason instead of training without the term."""
        try:
            layersync.loss()
        except MissingActivationsError as error:
            raise UsageError(
                f"The script's first backward came with no LayerSync term, so the run would train without it. "
                f"{error} Flags that move block outputs off the model's device or run the model outside its own "
                "forward are listed in docs/training-scripts.md."
            ) from None

    # -- log ---------------------------------------------------------------------------------------------------
    def _metrics(self, values: Optional[dict] = None) -> dict[str, float]:
        """The means over every process since the last read (empty when no term was added since). The trackers a
        trainer calls one after another with one dict of values (kohya sd-scripts' `tracker.log(logs, ...)` for
        each tracker) get the same values: `values` is that dict, held until the next read; any other log reads
        afresh."""
        if values is None or values is not self._logged[0]:
            self._logged = (values, self.layersync.metrics(window=self._log_window))
        return self._logged[1]

    def _wrap_log(self, original: Callable) -> Callable:
        def log(accelerator, values, *args, **kwargs):
            if self.layersyncs and accelerator is self.accelerator and accelerator.is_main_process:
                values = {**values, **self._metrics()}
            self._in_log = True  # the trackers' own `log` gets these values already
            try:
                return original(accelerator, values, *args, **kwargs)
            finally:
                self._in_log = False

        return log

    def _wrap_tracker_log(self, original: Callable) -> Callable:
        def log(tracker, values, *args, **kwargs):
            if self.layersyncs and not self._in_log and self.accelerator.is_main_process:
                values = {**values, **self._metrics(values)}
            return original(tracker, values, *args, **kwargs)

        return log


def _tracker_classes() -> list[type]:
    """accelerate's tracker classes (and any subclass defined so far) that define their own `log`."""
    found, todo = [], [accelerate.tracking.GeneralTracker]
    while todo:
        cls = todo.pop()
        todo += cls.__subclasses__()
        if cls is not accelerate.tracking.GeneralTracker and "log" in cls.__dict__:
            found.append(cls)
    return found


def _candidates(root: nn.Module, name: Optional[str]) -> list[tuple[str, nn.Module]]:
    """(path, module) of the models with a layout in `root`, outermost only; or the first module `name` names."""
    if name is not None:
        named = [(path, module) for path, module in root.named_modules() if name in (path, type(module).__name__)]
        return named[:1]
    found: list[tuple[str, nn.Module]] = []
    for path, module in root.named_modules():  # parents come before their children
        inside = any(outer == "" or path.startswith(f"{outer}.") for outer, _ in found)
        if not inside and lookup_layout(type(module)) is not None:
            found.append((path, module))
    return found


def _where(top: nn.Module, path: str) -> str:
    return f"the prepared {type(unwrap(top)).__name__}" + (f", at `{path}`" if path else "")


def check_metrics_file(path: Path) -> None:
    """Create the metrics file's folder and open the file for appending, so a path that cannot be written fails
    before training, not at the first report."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a", encoding="utf-8"):
            pass
    except OSError as error:
        raise UsageError(
            f"LayerSync cannot write its metrics file {path} ({type(error).__name__}: {error.strerror or error}). "
            "Pass `--metrics-file` (`AutoAttach(metrics_file=...)`) a file path you can write to."
        ) from None


class _Report:
    """LayerSync's own report: the mean term and similarity over every process every N optimizer steps, printed and
    in a JSON-lines file, on the main process. It reads its own shared window of LayerSync's totals (one host sync
    per report); the other processes open none."""

    def __init__(self, layersync: LayerSync, path: Path, every: int, main: bool):
        self.layersync, self.path, self.every = layersync, path, every
        self.window = layersync.meter.window(shared=True) if main else None
        self.steps = 0
        self.skipped = 0  # backwards without a training forward, at the last report
        if main:
            check_metrics_file(path)  # at attach, not at the first report after N steps

    def step(self, skipped: int) -> None:
        self.steps += 1
        if self.steps % self.every == 0:
            self.flush(skipped)

    def flush(self, skipped: Optional[int] = None) -> None:
        taken = self.window.take(sync=True) if self.window is not None else None
        if taken is None:
            return
        (term, similarity, *_), _ = taken
        row = {"layersync_step": self.layersync.step, "layersync_loss": term, "layersync_similarity": similarity,
               "time": round(time.time(), 3)}  # fmt: skip
        line = f"layersync step {self.layersync.step}: layersync_loss {term:.5f}, layersync_similarity {similarity:.4f}"
        if skipped is not None and skipped > self.skipped:  # said on every report line while it goes on
            row["skipped_backwards"] = skipped - self.skipped
            line += f"; {skipped - self.skipped} backwards without a training forward since the last report"
            self.skipped = skipped
        print(line, flush=True)
        with open(self.path, "a", encoding="utf-8") as f:  # appended: a resumed run never replaces earlier lines
            f.write(json.dumps(row) + "\n")
