"""The LayerSync config: one frozen dataclass, validated on construction.

It reads the keys users already know (SimpleTuner's `layersync_*` seed keys and the paper code's
`--encoder-depth` / `--gt-encoder-depth` / `--reg-weight` flags), from a dict, a JSON file or argparse, plus
this package's `layersync_pairs`, `layersync_warmup_steps` and `layersync_stop_step`.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import warnings
from dataclasses import dataclass
from typing import Any, Mapping, Optional, Sequence, Union

from .errors import LayerSyncConfigError
from .schedule import WeightSchedule

BlockRef = Union[int, str]
Pair = tuple[BlockRef, Optional[BlockRef]]

# Every accepted spelling -> the dataclass field it sets. Seed keys first, then the paper code's names.
KEY_ALIASES: dict[str, str] = {
    "enabled": "enabled",
    "layersync_enabled": "enabled",
    "student_block": "student_block",
    "layersync_student_block": "student_block",
    "encoder_depth": "student_block",
    "encoder-depth": "student_block",
    "teacher_block": "teacher_block",
    "layersync_teacher_block": "teacher_block",
    "gt_encoder_depth": "teacher_block",
    "gt-encoder-depth": "teacher_block",
    "weight": "weight",
    "layersync_lambda": "weight",
    "reg_weight": "weight",
    "reg-weight": "weight",
    # This package's keys (several pairs, the weight schedule), in the seed style.
    "pairs": "pairs", "layersync_pairs": "pairs",
    "warmup_steps": "warmup_steps", "layersync_warmup_steps": "warmup_steps",
    "stop_step": "stop_step", "layersync_stop_step": "stop_step",
}
_SOURCES = "`student_block` (`layersync_student_block`, `--encoder-depth`) or `pairs` (`layersync_pairs`)"


def parse_block(value: Any, *, name: str = "block") -> BlockRef | None:
    """Normalise a block reference: an int depth, a digit string (from a CLI or JSON) as int, or a path."""
    if value is None or (isinstance(value, int) and not isinstance(value, bool)):
        return value
    if isinstance(value, str) and value.strip():
        text = value.strip()
        return int(text) if text.lstrip("-").isdigit() else text
    raise LayerSyncConfigError(
        f"`{name}` must be a 1-based depth (int) or a block path such as 'transformer_blocks.7', "
        f"got {value!r} ({type(value).__name__})."
    )


def parse_pair(value: Any) -> Pair:
    """One student/teacher pair: `(8, 16)`, `[8, 16]` (JSON) or `"8:16"` (a CLI), paths allowed."""
    if isinstance(value, str) and value.count(":") == 1:
        value = value.split(":")
    if isinstance(value, (list, tuple)) and len(value) == 2:
        student, teacher = (parse_block(v, name="pairs") for v in value)
        if student is not None:
            return student, teacher
    raise LayerSyncConfigError(
        f"A LayerSync pair must be (student, teacher), e.g. (8, 16), [8, 16] or '8:16', got {value!r}."
    )


def parse_pairs(value: Any) -> tuple[Pair, ...]:
    """A list of pairs, or one string of them separated by commas: `"4:12,8:16"`."""
    if isinstance(value, str):
        value = [part for part in value.split(",") if part.strip()]
    if not isinstance(value, Sequence) or (value and not isinstance(value[0], (str, list, tuple))):
        raise LayerSyncConfigError(
            f"`pairs` must be a list of (student, teacher) pairs such as [(4, 12), (8, 16)], got {value!r}."
        )
    return tuple(parse_pair(pair) for pair in value)


@dataclass(frozen=True)
class LayerSyncConfig:
    r"""
    What LayerSync aligns and how strongly.

    Args:
        enabled (`bool`, defaults to `True`):
            When `False`, `LayerSync` registers nothing and `loss()` is 0. The seed key `layersync_enabled`
            defaults to off when read with `from_dict` / `from_args`, as in SimpleTuner.
        student_block (`int` or `str`):
            The shallow block pulled toward the teacher. An int is a 1-based depth over the model's stacks in
            forward order (`8` is the output of the 8th block, as in the paper code; `0` also means the first
            block; negative counts from the end). A str is a block path such as `"single_transformer_blocks.3"`.
        teacher_block (`int` or `str`, *optional*):
            The deeper block whose detached tokens are the target. When omitted, LayerSync picks about twice
            the student depth, outside the last 20% of blocks, and logs the choice.
        weight (`float`, defaults to 0.2):
            The paper's lambda (`--reg-weight`, `layersync_lambda`); must be > 0. With several pairs the
            term is `-weight` times the mean similarity over the pairs, so the weight keeps its meaning.
        pairs (`list` of `(student, teacher)`, *optional*):
            Several pairs, each as above, e.g. `[(4, 12), (8, 16)]`. One pair is the same config as
            `student_block`/`teacher_block`; giving both spellings is an error unless they name that pair.
        warmup_steps (`int`, defaults to 0):
            Ramp the weight linearly over this many optimizer steps: `weight * min(1, (step + 1) / warmup_steps)`.
        stop_step (`int`, *optional*):
            After this many optimizer steps LayerSync removes its hooks and `loss()` returns 0.

    Example:
        ```python
        >>> LayerSyncConfig.from_dict({"layersync_enabled": True, "layersync_student_block": 8,
        ...                            "layersync_teacher_block": 16, "layersync_lambda": 0.2})
        LayerSyncConfig(enabled=True, student_block=8, teacher_block=16, weight=0.2, pairs=((8, 16),),
                        warmup_steps=0, stop_step=None)
        ```
    """

    enabled: bool = True
    student_block: BlockRef | None = None
    teacher_block: BlockRef | None = None
    weight: float = 0.2
    pairs: Sequence[Pair] | None = None
    warmup_steps: int = 0
    stop_step: int | None = None

    def __post_init__(self):
        if not isinstance(self.enabled, bool):
            raise LayerSyncConfigError(f"`enabled` must be true or false, got {self.enabled!r}.")
        # Digit strings arrive from CLIs and hand-written JSON; store them as the depths they mean.
        student = parse_block(self.student_block, name="student_block")
        teacher = parse_block(self.teacher_block, name="teacher_block")
        pairs = parse_pairs(self.pairs) if self.pairs is not None else ()
        single = () if student is None and teacher is None else ((student, teacher),)
        if pairs and single and pairs != single:
            raise LayerSyncConfigError(
                f"`pairs={list(pairs)}` and `student_block={student!r}`, `teacher_block={teacher!r}` both set the "
                "blocks; keep one (one pair is `student_block` + `teacher_block`, several are `pairs`)."
            )
        pairs = pairs or single
        # The two spellings of one pair give equal configs; several pairs leave the single fields empty.
        student, teacher = pairs[0] if len(pairs) == 1 else (None, None)
        object.__setattr__(self, "student_block", student)
        object.__setattr__(self, "teacher_block", teacher)
        object.__setattr__(self, "pairs", pairs)
        if self.enabled:
            self._validate()

    def _validate(self):
        if not self.pairs or any(student is None for student, _ in self.pairs):
            raise LayerSyncConfigError(
                f"LayerSync needs a student block, but {_SOURCES} is missing. Set it to a depth such as 8 "
                "(the paper's choice for a 28-block DiT) or a path such as 'transformer_blocks.7'."
            )
        weight = self.weight
        if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not math.isfinite(weight) or weight <= 0:
            raise LayerSyncConfigError(
                f"`weight` (`layersync_lambda`, `--reg-weight`) must be a number > 0, got {weight!r}. "
                "Use 0.2 as in the paper (0.002 for LoRA fine-tunes of large video models), or set "
                "`enabled=False` to turn LayerSync off."
            )
        for student, teacher in self.pairs:
            if isinstance(student, int) and isinstance(teacher, int) and (student >= 0) == (teacher >= 0):
                if max(teacher, 1) <= max(student, 1):  # 0 and 1 both mean the first block
                    raise LayerSyncConfigError(
                        f"`teacher_block` must be deeper than `student_block`, got student_block={student}, "
                        f"teacher_block={teacher}. An equal pair has exactly zero gradient; the paper uses "
                        "student 8 <- teacher 16 on 28 blocks."
                    )
        if len(set(self.pairs)) != len(self.pairs):
            raise LayerSyncConfigError(f"`pairs` lists a pair twice: {list(self.pairs)}. Keep each pair once.")
        WeightSchedule(weight, self.warmup_steps, self.stop_step)  # validates the schedule

    @classmethod
    def from_dict(cls, config: Mapping[str, Any]) -> "LayerSyncConfig":
        """Build from seed keys, paper-code names or field names. Keys starting with `_` are comments."""
        values: dict[str, Any] = {}
        given: dict[str, str] = {}
        for key, value in config.items():
            if key.startswith("_"):
                continue
            field = KEY_ALIASES.get(key.lstrip("-"))
            if field is None:
                raise LayerSyncConfigError(
                    f"Unknown LayerSync config key {key!r}. Valid keys: {', '.join(sorted(KEY_ALIASES))}."
                )
            if field in values and values[field] != value:
                raise LayerSyncConfigError(
                    f"`{given[field]}={values[field]!r}` and `{key}={value!r}` both set `{field}`; keep one."
                )
            values[field], given[field] = value, key
        if "enabled" not in values:
            values["enabled"] = False  # seed behaviour: `layersync_enabled` defaults to off
            if given:
                warnings.warn(
                    f"LayerSync is off because the config sets {sorted(given.values())} but not "
                    "`layersync_enabled`. Add `\"layersync_enabled\": true` to turn it on.",
                    stacklevel=2,
                )
        return cls(**values)

    @classmethod
    def from_json(cls, path: str | os.PathLike) -> "LayerSyncConfig":
        """Read a JSON object of config keys (see `from_dict`)."""
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
        if not isinstance(data, dict):
            raise LayerSyncConfigError(f"{os.fspath(path)!r} must hold a JSON object, got {type(data).__name__}.")
        return cls.from_dict(data)

    @staticmethod
    def add_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
        """Add the `--layersync_*` flags to an existing parser (a diffusers training script's)."""
        group = parser.add_argument_group("LayerSync (arXiv 2510.12581)")
        group.add_argument("--layersync_enabled", action="store_true", help="Add the LayerSync loss.")
        group.add_argument("--layersync_student_block", type=parse_block, default=None,
                           help="Student block: 1-based depth (8 = output of the 8th block) or a block path.")
        group.add_argument("--layersync_teacher_block", type=parse_block, default=None,
                           help="Teacher block, deeper than the student (default: about twice the student).")
        group.add_argument("--layersync_lambda", type=float, default=None, help="Weight of the loss (default 0.2).")
        group.add_argument("--layersync_pairs", type=parse_pair, nargs="+", default=None, metavar="STUDENT:TEACHER",
                           help="Several pairs, e.g. `4:12 8:16` (instead of the student/teacher flags).")
        group.add_argument("--layersync_warmup_steps", type=int, default=None,
                           help="Ramp the weight linearly over this many optimizer steps (default 0: constant).")
        group.add_argument("--layersync_stop_step", type=int, default=None,
                           help="Remove the hooks after this many optimizer steps (default: never).")
        return parser

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> "LayerSyncConfig":
        """Build from a namespace parsed with the flags of `add_arguments`."""
        keys = ("layersync_enabled", "layersync_student_block", "layersync_teacher_block", "layersync_lambda",
                "layersync_pairs", "layersync_warmup_steps", "layersync_stop_step")
        missing = [key for key in keys if not hasattr(args, key)]
        if missing:
            raise LayerSyncConfigError(
                f"The parsed arguments lack {missing}; call `LayerSyncConfig.add_arguments(parser)` before parsing."
            )
        # An unset store_true flag reads False; leave it out so from_dict warns when other flags are set.
        return cls.from_dict({key: getattr(args, key) for key in keys if getattr(args, key) not in (None, False)})

    @classmethod
    def load(cls, config: "LayerSyncConfig | Mapping[str, Any] | str | os.PathLike | argparse.Namespace"):
        """Accept any of the forms above: a config, a dict, a JSON path or parsed arguments."""
        if isinstance(config, cls):
            return config
        if isinstance(config, Mapping):
            return cls.from_dict(config)
        if isinstance(config, argparse.Namespace):
            return cls.from_args(config)
        if isinstance(config, (str, os.PathLike)):
            return cls.from_json(config)
        raise LayerSyncConfigError(
            f"Cannot read a LayerSync config from {type(config).__name__}; pass a dict, a JSON path, "
            "parsed arguments or a LayerSyncConfig."
        )

    def to_dict(self) -> dict[str, Any]:
        """The seed-key form, ready for JSON: the seed keys, then the other keys that differ from their default."""
        out = {"layersync_enabled": self.enabled, "layersync_student_block": self.student_block,
               "layersync_teacher_block": self.teacher_block, "layersync_lambda": self.weight}
        if len(self.pairs) > 1:
            del out["layersync_student_block"], out["layersync_teacher_block"]
            out["layersync_pairs"] = [list(pair) for pair in self.pairs]
        if self.warmup_steps:
            out["layersync_warmup_steps"] = self.warmup_steps
        if self.stop_step is not None:
            out["layersync_stop_step"] = self.stop_step
        return out
