"""`LayerSync`: the object users attach to their transformer. It wires the parts and holds the run's state.

The config (`config.py`) says what to align; `pairs.py` resolves the pairs to the model's blocks; one
`BlockCapture` per pair (`capture/`) folds the pair inside each training forward (`loss.align`) and hands the result
over at `loss()`; the weight follows the schedule (`schedule.py`); `metrics.py` keeps the running sums and
`checkpoint.py` the state file in accelerate's checkpoints.
"""

from __future__ import annotations

import contextlib
import logging
import os
import warnings
import weakref
from typing import Any, Mapping, Optional, Sequence, Union

import torch
from torch import nn

from .capture import Activation, Block, BlockCapture, list_blocks, unwrap, wrappers
from .checkpoint import register as register_checkpoint
from .config import FIELDS, ONE_PAIR, LayerSyncConfig
from .errors import LayerSyncConfigError, LayerSyncError, copy_refused
from .flags import add_arguments
from .layouts import BlockLayout, layout_for
from .loss import Aligned, align, mean_cosine
from .metrics import Meter, Window
from .pairs import resolve_pairs
from .schedule import WeightSchedule, ends_optimizer_step

logger = logging.getLogger(__name__)

ConfigLike = Union[LayerSyncConfig, Mapping[str, Any], str, os.PathLike, Any]


class LayerSync:
    r"""
    Adds LayerSync to the training of a transformer through forward hooks: the student block's target tokens
    are pulled, by cosine similarity, toward the deeper teacher block's detached tokens of the same forward.

    Attach it before `accelerator.prepare` (and before a whole-model `torch.compile`); after each training forward,
    add `loss()` to the task loss before `accelerator.backward`.

    Args:
        model (`nn.Module`): The transformer (DDP, FSDP, `torch.compile` and PEFT wrappers are unwrapped).
        config (`LayerSyncConfig`, `dict`, JSON path, preset name or argparse results, *optional*): What to
            align; see `LayerSyncConfig` for every key and the forms it takes.
        layout (`BlockLayout`, *optional*): Overrides the layout table for this model.
        training_module (`nn.Module`, *optional*): The module whose forward is the training forward, when the
            training loop never calls `model`'s own forward (DiffSynth-Studio's training module calls the DiT's
            blocks itself). Defaults to `model`.
        meter (`Meter`, *optional*): Another LayerSync's `meter`, to report one number for both (the runner gives
            the two experts of Wan 2.2 one). Defaults to a meter of its own.
        **fields: The config's fields as keywords (`student_block`, `teacher_block`, `pairs`, `weight`,
            `warmup_steps`, `stop_step`, `enabled`), over `config` when both are given.

    Example:
        ```python
        >>> layersync = LayerSync(transformer, student_block=8, teacher_block=16, weight=0.2)
        >>> model_pred = transformer(**inputs).sample
        >>> loss = F.mse_loss(model_pred, target) + layersync.loss()
        >>> accelerator.backward(loss)
        >>> logs.update(layersync.metrics())
        ```
    """

    add_arguments = staticmethod(add_arguments)

    def __init__(
        self,
        model: nn.Module,
        config: Optional[ConfigLike] = None,
        *,
        layout: Optional[BlockLayout] = None,
        training_module: Optional[nn.Module] = None,
        meter: Optional[Meter] = None,
        **fields: Any,
    ):
        self.config = _read_config(config, fields)
        enabled = self.config.enabled
        # A disabled LayerSync has weight 0 at every step.
        self.schedule = (
            WeightSchedule(self.config.weight, self.config.warmup_steps, self.config.stop_step)
            if enabled
            else WeightSchedule(0.0)
        )
        self.model = unwrap(model)
        # The wrapper, if any (weakly: LayerSync must not keep a DDP or compiled wrapper alive): re-attaching
        # checks it for a whole-model compile.
        self._given_model = weakref.ref(model)
        self._training_module = weakref.ref(training_module) if training_module is not None else None
        self._step = 0  # optimizer steps (see schedule.py), saved by state_dict()
        self._targets_checked = False  # whether a loss() has checked that the token rules select tokens
        self._removed = False
        self._captures: list[BlockCapture] = []  # one per pair, while attached
        self.pairs: tuple[tuple[Block, Block], ...] = ()
        if enabled:
            check_not_pipelined(model, training_module)
            self._layout = layout_for(self.model, layout)
            self._blocks = list_blocks(self.model, self._layout)
            self.pairs = resolve_pairs(self.config.pairs, self.model, self._layout)
        # the running totals (term, similarity, unaligned share, per pair...); `metrics()` reads its own window
        self.meter = meter if meter is not None else Meter(_values(len(self.pairs)), self._device)
        if self.meter.size != _values(len(self.pairs)):
            raise LayerSyncConfigError(
                f"A shared `meter` sums {self.meter.size} values per call, this LayerSync's {len(self.pairs)} pairs "
                f"{_values(len(self.pairs))}: share a meter between LayerSyncs with as many pairs."
            )
        self._window = self.meter.window()
        if not enabled:
            logger.info("LayerSync is disabled: no hooks registered, loss() is 0.")
            return
        self._sync_hooks()
        for s, t in self.pairs:
            logger.info("LayerSync on %s: student %s (depth %d) <- teacher %s (depth %d), weight %g",
                        type(self.model).__name__, s.path, s.depth, t.path, t.depth, self.config.weight)  # fmt: skip

    @classmethod
    def from_config(
        cls,
        model: nn.Module,
        config: ConfigLike,
        *,
        layout: Optional[BlockLayout] = None,
        training_module: Optional[nn.Module] = None,
    ) -> LayerSync:
        """`LayerSync(model, config)`: from a `LayerSyncConfig`, a dict of config keys, a JSON path or preset name,
        or a training script's parsed `--layersync_*` flags."""
        return cls(model, config, layout=layout, training_module=training_module)

    # -- state ---------------------------------------------------------------------------------------------
    @property
    def state(self) -> str:
        """`"disabled"` (the config is off), `"attached"`, `"stopped"` (past `stop_step`) or `"removed"`.

        Only an attached LayerSync has hooks; `loss()`, `load_state_dict()` and `repr` all follow this.
        """
        if not self.config.enabled:
            return "disabled"
        if self._removed:
            return "removed"
        return "stopped" if self.schedule.stopped(self._step) else "attached"

    def _sync_hooks(self) -> None:
        """Captures in place exactly while attached: one per pair, folding it inside each training forward."""
        if self.state == "attached" and not self._captures:
            given = self._given_model()
            trainer = self._training_module() if self._training_module is not None else None
            self._captures = [
                BlockCapture(
                    given if given is not None else self.model,
                    pair,
                    layout=self._layout,
                    training_module=trainer,
                    fold=_align_pair,
                )  # fmt: skip
                for pair in self.pairs
            ]
        elif self.state != "attached":
            for capture in self._captures:
                capture.remove()
            self._captures = []

    @property
    def step(self) -> int:
        """Optimizer steps counted so far (saved by `state_dict`)."""
        return self._step

    @property
    def stopped(self) -> bool:
        """Whether the schedule's `stop_step` has passed: the hooks are gone and `loss()` is 0."""
        return self.state == "stopped"

    @property
    def weight(self) -> float:
        """The weight of the current optimizer step, after the warm-up and stop schedule."""
        return self.schedule.at(self._step)

    @property
    def has_activations(self) -> bool:
        """Whether a training forward has run whose term `loss()` has not built yet."""
        return any(capture.captured for capture in self._captures)

    @property
    def student(self) -> Optional[Block]:
        """The first pair's student block (None when disabled)."""
        return self.pairs[0][0] if self.pairs else None

    @property
    def teacher(self) -> Optional[Block]:
        """The first pair's teacher block (None when disabled)."""
        return self.pairs[0][1] if self.pairs else None

    # -- the term --------------------------------------------------------------------------------------------
    def loss(self) -> torch.Tensor:
        """The weighted LayerSync term of the training forwards since the last call, a 0-dim float32 tensor: call it
        once per backward. A trainer that runs several forwards before one backward (one per sample, micro-batches)
        gets one term over all of them, each target token counted once.

        No host sync, except once, at the first call of the run, for layouts whose token rules select tokens with
        a mask: a forward whose inputs select no target token at all (e.g. Flux position ids unlike the
        pipeline's) is an error there, not a silent zero term.
        """
        state = self.state
        if state == "removed":
            raise LayerSyncError("`LayerSync.loss()` was called after `remove()`; the hooks are gone.")
        if state != "attached":
            self._count_step()
            return torch.zeros((), device=self._device())
        aligned = [capture.pop() for capture in self._captures]  # per pair: what each recorded forward folded
        self._check_students_learn(aligned)
        similarities = [mean_cosine(*_joined(forwards)) for forwards in aligned]
        similarity = similarities[0] if len(similarities) == 1 else torch.stack(similarities).mean()
        weight = self.weight
        term = -weight * similarity
        unaligned = _unaligned_share(aligned, term)
        if not self._targets_checked and any(a.mask is not None for forwards in aligned for a in forwards):
            self._check_aligned(float(unaligned), "in the first training forward")  # the one host sync
        self._targets_checked = True
        per_pair = similarities if len(similarities) > 1 else []
        self.meter.add(torch.stack([term, similarity, unaligned, *per_pair]), weight)
        self._count_step()
        return term

    def _check_students_learn(self, aligned: Sequence[Sequence[Aligned]]) -> None:
        """A student whose tokens need no gradient (it and everything before it frozen) would train nothing."""
        frozen = [self.pairs[i][0] for i, forwards in enumerate(aligned) if not all(a.trains for a in forwards)]
        if frozen:
            raise LayerSyncError(_no_gradient_message(frozen, self._blocks, type(self.model).__name__))

    def _count_step(self) -> None:
        if ends_optimizer_step():
            self._step += 1
            if self.state == "stopped" and self._captures:
                logger.info("LayerSync stopped after %d optimizer steps (stop_step): hooks removed.", self._step)
            self._sync_hooks()

    def _device(self) -> Optional[torch.device]:
        parameter = next(self.model.parameters(), None)
        return parameter.device if parameter is not None else None

    # -- metrics ---------------------------------------------------------------------------------------------
    def metrics(self, *, sync: bool = True, window: Optional[Window] = None) -> dict[str, float]:
        """`{"layersync_loss", "layersync_similarity"}`: means over the `loss()` calls since the last call.

        With several pairs, `layersync_similarity/8-16` (student and teacher depths) for each pair too; with a
        warm-up, `layersync_weight`. With several processes the values are averaged over every rank's calls (one
        all-reduce), so call it on every rank, as diffusers scripts do with their `logs`: every rank joins the
        same all-reduce whatever it did since its last call. `sync=False` reads this rank's values only.
        `window` reads another window of `meter` instead of this method's own (the runner reads a shared one: the
        mean over processes with no collective here).
        """
        if not self.pairs:
            return {}
        taken = (window or self._window).take(sync=sync)
        if taken is None:
            return {}
        (loss, similarity, unaligned, *per_pair), weight = taken
        self._check_aligned(unaligned)
        logs = {"layersync_loss": loss, "layersync_similarity": similarity}
        for (student, teacher), value in zip(self.pairs, per_pair):
            logs[f"layersync_similarity/{student.depth}-{teacher.depth}"] = value
        if self.config.warmup_steps:
            logs["layersync_weight"] = weight
        return logs

    def _check_aligned(self, share: float, when: str = "since the last metrics()") -> None:
        """Token rules read the model's inputs; inputs unlike the pipeline's can select no target token."""
        if share == 0:
            return
        rules = "; ".join(
            sorted({f"{b.stack.path}: {b.stack.rule}" for pair in self.pairs for b in pair if b.stack.rule is not None})
        )
        message = (
            f"LayerSync's token rules ({rules}) selected no target token in {share:.0%} of the samples {when}, "
            f"so those samples got no LayerSync gradient. The rules read the model's "
            "inputs: pass them as the family's diffusers pipeline builds them (e.g. Flux `img_ids[..., 0]` "
            "is 0 on the target image), or give `layout=` a rule that fits your inputs."
        )
        if share >= 1:  # nothing was aligned at all: LayerSync is a silent no-op
            raise LayerSyncError(message)
        warnings.warn(message, stacklevel=3)

    # -- lifecycle -------------------------------------------------------------------------------------------
    @contextlib.contextmanager
    def paused(self):
        """Capture nothing inside this block, e.g. around validation or a reference forward."""
        with contextlib.ExitStack() as stack:
            for capture in self._captures:
                stack.enter_context(capture.paused())
            yield self

    def remove(self) -> None:
        """Remove every hook; the model behaves exactly as before attaching."""
        self._removed = True
        self._sync_hooks()

    def register_with(self, accelerator: Any) -> tuple:
        """Keep LayerSync's step in accelerate's checkpoints: `save_state` writes `layersync_state.json` beside
        accelerate's files (main process only), and `load_state` reads it back when it is there.

        Unlike `accelerator.register_for_checkpointing(layersync)`, it changes nothing accelerate counts: a
        checkpoint written without LayerSync still resumes (at step 0), and one written with it resumes at its
        step. Returns the two hook handles (`handle.remove()` undoes it). A disabled LayerSync registers nothing.
        """
        return register_checkpoint(accelerator, self) if self.config.enabled else ()

    def state_dict(self) -> dict[str, Any]:
        """For `save_state`: the optimizer step count, the blocks it aligns and the weight."""
        return {"step": self._step, "pairs": [[s.path, t.path] for s, t in self.pairs], "weight": self.config.weight}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore the state saved by `state_dict` (accelerate's `load_state`). Past `stop_step`, the hooks go."""
        step = state.get("step") if isinstance(state, Mapping) else None
        if isinstance(step, bool) or not isinstance(step, int) or step < 0:
            raise LayerSyncConfigError(
                f"A LayerSync state needs `step`, the optimizer steps done, as an integer >= 0; got "
                f"{state!r}. Pass a state saved by `LayerSync.state_dict()`."
            )
        saved = state.get("pairs", [[state.get("student"), state.get("teacher")]])  # also the 0.1.0 form
        ours = self.state_dict()
        if [list(pair) for pair in saved] != ours["pairs"] or state.get("weight", ours["weight"]) != ours["weight"]:
            warnings.warn(
                f"Restoring LayerSync state saved for blocks {saved} with weight {state.get('weight')} into one on "
                f"{ours['pairs']} with weight {ours['weight']}: the step count is restored, the config's blocks and "
                "weight are kept.",
                stacklevel=2,
            )
        self._step = step
        self._sync_hooks()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.remove()

    def __deepcopy__(self, memo):
        raise copy_refused(self)

    def __reduce_ex__(self, protocol):
        raise copy_refused(self)

    def __repr__(self):
        name = type(self.model).__name__
        if not self.pairs:
            return f"LayerSync({name}, {self.state})"
        pairs = ", ".join(
            f"student={s.path} (depth {s.depth}) <- teacher={t.path} (depth {t.depth})" for s, t in self.pairs
        )
        return f"LayerSync({name}, {pairs}, weight={self.config.weight}, {self.state})"


def _read_config(config: Optional[ConfigLike], fields: Mapping[str, Any]) -> LayerSyncConfig:
    """The config of `LayerSync(model, config, **fields)`: the keywords over the config; keywords alone mean on."""
    unknown = sorted(set(fields) - {*FIELDS, *ONE_PAIR})
    if unknown:
        raise LayerSyncConfigError(
            f"`LayerSync()` got unknown keywords {unknown}; its config keywords are {', '.join((*ONE_PAIR, *FIELDS))}."
        )
    if config is None:
        return LayerSyncConfig.from_dict({"enabled": True, **fields})
    config = LayerSyncConfig.load(config)
    return config.updated(fields) if fields else config


def _align_pair(tokens: dict[str, Activation]) -> Aligned:
    """What a pair's capture keeps of each training forward: the capture's blocks are (student, teacher)."""
    student, teacher = tokens.values()
    return align(student.hidden, teacher.hidden, mask=_both(student.mask, teacher.mask))


def _values(pairs: int) -> int:
    """How many values each `loss()` adds to the meter: term, similarity, unaligned share, and per pair with several."""
    return 3 + (pairs if pairs > 1 else 0)


def check_not_pipelined(*modules: Optional[nn.Module]) -> None:
    """Pipeline parallelism runs the student and the teacher in different processes and computes the loss in its
    engine: nothing of LayerSync can work there. Refused where it can be seen (the model LayerSync is given)."""
    for module in modules:
        for wrapped in wrappers(module) if module is not None else ():
            if type(wrapped).__module__.startswith(PIPELINE_MODULES):
                raise LayerSyncError(
                    f"{type(wrapped).__name__} is a pipeline-parallel module: its stages run different blocks in "
                    "different processes, so a student and a deeper teacher are not in one forward, and its engine "
                    "computes the loss itself, with no place for LayerSync's term. Attach to the model before it is "
                    "split into stages and train with FSDP or DeepSpeed ZeRO (configs/) instead."
                )


# Where pipeline engines keep their module classes (DeepSpeed's PipelineModule, torch's pipelining stages).
PIPELINE_MODULES = ("deepspeed.runtime.pipe", "deepspeed.pipe", "torch.distributed.pipelining")


def _joined(forwards: Sequence[Aligned]) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
    """One pair's per-token cosines and mask over every forward since the last `loss()`: each token counts once."""
    if len(forwards) == 1:
        return forwards[0].cosine, forwards[0].mask
    masks = [a.mask.reshape(-1) if a.mask is not None else a.cosine.new_ones(a.cosine.shape, dtype=torch.bool)
             for a in forwards]  # fmt: skip
    mask = torch.cat(masks) if any(a.mask is not None for a in forwards) else None
    return torch.cat([a.cosine for a in forwards]), mask


def _unaligned_share(aligned: Sequence[Sequence[Aligned]], like: torch.Tensor) -> torch.Tensor:
    """The largest share, over the pairs, of samples in which the mask selects no token (0 without masks); no host
    sync."""
    shares = []
    for forwards in aligned:
        rows = [~a.mask.flatten(1).any(1) for a in forwards if a.mask is not None]
        if rows:
            shares.append(torch.cat(rows).float().mean())
    return torch.stack(shares).max() if shares else like.new_zeros(())


def _both(a: Optional[torch.Tensor], b: Optional[torch.Tensor]) -> Optional[torch.Tensor]:
    """Tokens that count in both masks (None = all tokens count)."""
    if a is None or b is None:
        return a if b is None else b
    return a & b


def _no_gradient_message(frozen: Sequence[Block], blocks: Sequence[Block], model_name: str) -> str:
    trainable = [b for b in blocks if any(p.requires_grad for p in b.module.parameters())]
    students = ", ".join(f"{b.path} (depth {b.depth})" for b in frozen)
    if trainable and trainable[0].depth <= frozen[0].depth:
        return (
            f"LayerSync's student {students} carries no gradient, although blocks before it train (depths "
            f"{_ranges([b.depth for b in trainable])}): its output was made without autograd, which happens inside "
            "a reentrant gradient-checkpointing segment that ends after the student. Use non-reentrant "
            "checkpointing (`use_reentrant=False`) or one checkpoint per block."
        )
    if trainable:
        where = f"the blocks that train are at depths {_ranges([b.depth for b in trainable])}"
        fix = f"choose a student at depth {trainable[0].depth} or deeper (with a deeper teacher)"
    else:
        where = f"no block of {model_name} has a parameter that trains"
        fix = "train the blocks (or LoRA on them)"
    return (
        f"LayerSync's student {students} gets no gradient: neither it nor anything before it has a parameter "
        f"that trains, so the LayerSync term would change nothing. In this model {where}. To fix: {fix}, or "
        "train the student's block too (for LoRA, e.g. diffusers' `--lora_layers`)."
    )


def _ranges(depths: Sequence[int]) -> str:
    """'1-4, 9, 12-13' for sorted depths."""
    spans: list[list[int]] = []
    for depth in depths:
        if spans and depth == spans[-1][1] + 1:
            spans[-1][1] = depth
        else:
            spans.append([depth, depth])
    return ", ".join(str(a) if a == b else f"{a}-{b}" for a, b in spans)
