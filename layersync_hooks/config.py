"""The LayerSync config: one frozen dataclass, validated on construction.

Each option is written once, as a dataclass field whose metadata holds its config key (SimpleTuner's
`layersync_*` seed keys), the paper code's spellings (`--encoder-depth`, `--gt-encoder-depth`, `--reg-weight`)
and its help. Reading a dict or JSON file, the script flags, and `to_dict` are all derived from those fields, so
a value means the same in `LayerSync(...)`, in a dict, in a JSON file and as a flag. The blocks are stored in one
form only, `pairs`; `student_block` and `teacher_block` are a way to write one pair.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import warnings
from dataclasses import Field, InitVar, dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Optional, Sequence, Union

from .errors import LayerSyncConfigError
from .schedule import WeightSchedule, check_weight

BlockRef = Union[int, str]
Pair = tuple[BlockRef, Optional[BlockRef]]


def parse_block(value: Any, *, name: str = "block") -> Optional[BlockRef]:
    """Normalise a block reference: an int depth, a digit string (from a CLI or JSON) as int, or a path."""
    if value is None or (isinstance(value, int) and not isinstance(value, bool)):
        return value
    if isinstance(value, str) and value.strip():
        text = value.strip()
        # ASCII digits only: str.isdigit() also accepts '¹', which int() refuses
        return int(text) if re.fullmatch(r"-?[0-9]+", text) else text
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
        f"A LayerSync pair (`pairs`, `layersync_pairs`) must be (student, teacher), e.g. (8, 16), [8, 16] or "
        f"'8:16', got {value!r}."
    )


def parse_pairs(value: Any) -> tuple[Pair, ...]:
    """A list of pairs, or one string of them separated by commas: `"4:12,8:16"`."""
    if isinstance(value, str):
        value = [part for part in value.split(",") if part.strip()]
    if not isinstance(value, Sequence) or not all(isinstance(pair, (str, list, tuple)) for pair in value):
        raise LayerSyncConfigError(
            f"`pairs` (`layersync_pairs`) must be a list of (student, teacher) pairs such as [(4, 12), (8, 16)], "
            f"got {value!r}."
        )
    return tuple(parse_pair(pair) for pair in value)


def _option(default: Any, key: str, *aliases: str, help: str, flag: Mapping[str, Any]) -> Any:
    """A config field: its default, its config key, the paper code's spellings, its help and its script flag."""
    return field(default=default, metadata={"key": key, "aliases": aliases, "help": help, "flag": flag})


def _flag_type(parse: Callable[[str], Any]) -> Callable[[str], Any]:
    """An argparse `type` that shows the package's explanation (argparse replaces a ValueError's message)."""

    def convert(text: str) -> Any:
        try:
            return parse(text)
        except ValueError as error:
            raise argparse.ArgumentTypeError(str(error)) from None

    convert.__name__ = parse.__name__
    return convert


def _number(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise LayerSyncConfigError(f"expected a number, got {text!r}") from None


def _integer(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise LayerSyncConfigError(f"expected an integer, got {text!r}") from None


@dataclass(frozen=True)
class LayerSyncConfig:
    r"""
    What LayerSync aligns and how strongly.

    Args:
        enabled (`bool`, defaults to `True`):
            When `False`, `LayerSync` registers nothing and `loss()` is 0. Read from a dict, JSON or flags,
            `layersync_enabled` defaults to off when only SimpleTuner's `layersync_*` keys are given (as in
            SimpleTuner), and to on when the paper code's names or these field names are used.
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
        LayerSyncConfig(enabled=True, weight=0.2, pairs=((8, 16),), warmup_steps=0, stop_step=None)
        ```
    """

    enabled: bool = _option(True, "layersync_enabled", help="Add the LayerSync loss.", flag={"action": "store_true"})
    student_block: InitVar[Optional[BlockRef]] = _option(
        None,
        "layersync_student_block",
        "encoder_depth",
        "encoder-depth",
        help="Student block: 1-based depth (8 = output of the 8th block) or a block path.",
        flag={"type": _flag_type(lambda text: parse_block(text, name="layersync_student_block"))},
    )
    teacher_block: InitVar[Optional[BlockRef]] = _option(
        None,
        "layersync_teacher_block",
        "gt_encoder_depth",
        "gt-encoder-depth",
        help="Teacher block, deeper than the student (default: about twice the student).",
        flag={"type": _flag_type(lambda text: parse_block(text, name="layersync_teacher_block"))},
    )
    weight: float = _option(
        0.2,
        "layersync_lambda",
        "reg_weight",
        "reg-weight",
        help="Weight of the loss (default 0.2).",
        flag={"type": _flag_type(_number)},
    )
    pairs: tuple[Pair, ...] = _option(
        (),
        "layersync_pairs",
        help="Several pairs, e.g. `4:12 8:16` (instead of the student/teacher flags).",
        flag={"type": _flag_type(parse_pair), "nargs": "+", "metavar": "STUDENT:TEACHER"},
    )
    warmup_steps: int = _option(
        0,
        "layersync_warmup_steps",
        help="Ramp the weight linearly over this many optimizer steps (default 0: constant).",
        flag={"type": _flag_type(_integer)},
    )
    stop_step: Optional[int] = _option(
        None,
        "layersync_stop_step",
        help="Remove the hooks after this many optimizer steps (default: never).",
        flag={"type": _flag_type(_integer)},
    )

    def __post_init__(self, student_block: Optional[BlockRef], teacher_block: Optional[BlockRef]):
        if not isinstance(self.enabled, bool):
            raise LayerSyncConfigError(
                f"`enabled` ({_spellings('enabled')}) must be true or false, got {self.enabled!r}."
            )
        object.__setattr__(self, "pairs", _merge_pairs(self.pairs, student_block, teacher_block))
        if self.enabled or self.weight != 0:  # a config that is off may keep weight 0 ("lambda 0")
            check_weight(self.weight, f"`weight` ({_spellings('weight')})")
        WeightSchedule(self.weight, self.warmup_steps, self.stop_step)  # validates the schedule
        if self.enabled:
            _check_pairs(self.pairs)

    @classmethod
    def from_dict(cls, config: Mapping[str, Any]) -> LayerSyncConfig:
        """Build from seed keys, paper-code names or field names. Keys starting with `_` are comments."""
        values: dict[str, Any] = {}
        given: dict[str, str] = {}
        for key, value in config.items():
            if not isinstance(key, str):
                raise LayerSyncConfigError(f"LayerSync config keys are strings, got {key!r}.")
            if key.startswith("_"):
                continue
            name = KEY_ALIASES.get(key.lstrip("-"))
            if name is None:
                raise LayerSyncConfigError(
                    f"Unknown LayerSync config key {key!r}. Valid keys: {', '.join(sorted(KEY_ALIASES))}."
                )
            if name in values and values[name] != value:
                raise LayerSyncConfigError(
                    f"`{given[name]}={values[name]!r}` and `{key}={value!r}` both set `{name}`; keep one."
                )
            values[name], given[name] = value, key
        if "enabled" not in values:
            values["enabled"] = _enabled_by_default(list(given.values()))
        return cls(**values)

    @classmethod
    def from_json(cls, path: Union[str, os.PathLike]) -> LayerSyncConfig:
        """Read a JSON object of config keys (see `from_dict`)."""
        try:
            with open(path, encoding="utf-8") as f:
                text = f.read()
        except OSError as error:
            raise LayerSyncConfigError(
                f"Cannot read the LayerSync config {os.fspath(path)!r}: {error.strerror}. "
                f"Pass a JSON file or a preset name ({', '.join(presets())})."
            ) from None
        try:
            data = json.loads(text)
        except json.JSONDecodeError as error:
            raise LayerSyncConfigError(
                f"{os.fspath(path)!r} is not valid JSON: {error.msg} at line {error.lineno}, column {error.colno}."
            ) from None
        if not isinstance(data, dict):
            raise LayerSyncConfigError(f"{os.fspath(path)!r} must hold a JSON object, got {type(data).__name__}.")
        return cls.from_dict(data)

    @classmethod
    def from_preset(cls, name: str) -> LayerSyncConfig:
        """A preset for a released model, by name: `"flux"`, `"wan"`, ... (`presets()` lists them)."""
        if name not in presets():
            raise LayerSyncConfigError(f"No LayerSync preset {name!r}; the presets are {', '.join(presets())}.")
        return cls.from_json(PRESETS / f"{name}.json")

    @staticmethod
    def add_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
        """Add the `--layersync_*` flags to an existing parser (a diffusers training script's)."""
        group = parser.add_argument_group("LayerSync (arXiv 2510.12581)")
        for option in OPTIONS:
            # default None: a flag that was not given is left out, whatever value it could take
            group.add_argument(
                f"--{option.metadata['key']}", default=None, help=option.metadata["help"], **option.metadata["flag"]
            )
        return parser

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> LayerSyncConfig:
        """Build from a namespace parsed with the flags of `add_arguments`."""
        keys = [option.metadata["key"] for option in OPTIONS]
        missing = [key for key in keys if not hasattr(args, key)]
        if missing:
            raise LayerSyncConfigError(
                f"The parsed arguments lack {missing}; call `LayerSyncConfig.add_arguments(parser)` before parsing."
            )
        return cls.from_dict({key: getattr(args, key) for key in keys if getattr(args, key) is not None})

    @classmethod
    def from_flags(cls, argv: Sequence[str]) -> LayerSyncConfig:
        """Build from a list of `--layersync_*` flags, e.g. `["--layersync_enabled", "--layersync_student_block", "8"]`.

        Bad flags and values raise `LayerSyncConfigError` (never argparse's exit), naming the flag.
        """
        # No abbreviations: argparse exits on an ambiguous one (`--layersync_s`) even with exit_on_error=False.
        parser = argparse.ArgumentParser(prog="layersync", add_help=False, allow_abbrev=False, exit_on_error=False)
        parser = cls.add_arguments(parser)
        try:
            args, unknown = parser.parse_known_args(list(argv))
        except argparse.ArgumentError as error:
            raise LayerSyncConfigError(f"{error}.") from None
        if unknown:
            raise LayerSyncConfigError(
                f"Unknown LayerSync flags {unknown}. Valid flags: "
                f"{', '.join('--' + option.metadata['key'] for option in OPTIONS)}."
            )
        return cls.from_args(args)

    @classmethod
    def load(cls, config: Union[LayerSyncConfig, Mapping[str, Any], str, os.PathLike, argparse.Namespace]):
        """Accept any of the forms above: a config, a dict, a JSON path, a preset name or parsed arguments."""
        if isinstance(config, cls):
            return config
        if isinstance(config, Mapping):
            return cls.from_dict(config)
        if isinstance(config, argparse.Namespace):
            return cls.from_args(config)
        if isinstance(config, str) and not os.path.exists(config) and config in presets():
            return cls.from_preset(config)
        if isinstance(config, (str, os.PathLike)):
            return cls.from_json(config)
        raise LayerSyncConfigError(
            f"Cannot read a LayerSync config from {type(config).__name__}; pass a dict, a JSON path, "
            "parsed arguments or a LayerSyncConfig."
        )

    def to_dict(self) -> dict[str, Any]:
        """The seed-key form, ready for JSON: `from_dict(config.to_dict()) == config`."""
        out: dict[str, Any] = {"layersync_enabled": self.enabled}
        if len(self.pairs) == 1:
            out["layersync_student_block"], out["layersync_teacher_block"] = self.pairs[0]
        elif self.pairs:
            out["layersync_pairs"] = [list(pair) for pair in self.pairs]
        out["layersync_lambda"] = self.weight
        if self.warmup_steps:
            out["layersync_warmup_steps"] = self.warmup_steps
        if self.stop_step is not None:
            out["layersync_stop_step"] = self.stop_step
        return out


# Presets for released models (package data): the paper heuristic for each family's block count.
PRESETS = Path(__file__).parent / "presets"


def presets() -> list[str]:
    """The names of the presets, e.g. `["auraflow", "chroma", ...]`."""
    return sorted(path.stem for path in PRESETS.glob("*.json"))


# The options in declaration order, InitVars included (`dataclasses.fields` leaves those out).
OPTIONS: tuple[Field, ...] = tuple(LayerSyncConfig.__dataclass_fields__.values())
# Every accepted spelling -> the field it sets: the field name, the seed key, the paper code's names.
KEY_ALIASES: dict[str, str] = {
    spelling: option.name
    for option in OPTIONS
    for spelling in (option.name, option.metadata["key"], *option.metadata["aliases"])
}
# The paper code's names: it has no on/off switch, so a config that uses them means LayerSync is on.
PAPER_KEYS = frozenset(alias for option in OPTIONS for alias in option.metadata["aliases"])
# `student_block`/`teacher_block` are InitVars: the class attribute dataclasses leaves behind would read None
# whatever the config says. The blocks are read from `pairs`.
del LayerSyncConfig.student_block, LayerSyncConfig.teacher_block


def _spellings(name: str) -> str:
    """'`layersync_lambda`, `reg_weight`, `reg-weight`' for a field."""
    return ", ".join(
        f"`{spelling}`" for spelling, field_name in KEY_ALIASES.items() if field_name == name and spelling != name
    )


def _enabled_by_default(keys: list[str]) -> bool:
    """`layersync_enabled` absent: on for the paper code's names and field names, off for seed keys only."""
    seed_keys = [key for key in keys if key.startswith("layersync_")]
    if not keys:
        return False
    if any(key.lstrip("-") in PAPER_KEYS for key in keys) or not seed_keys:
        return True
    warnings.warn(
        f"LayerSync is off because the config sets {sorted(keys)} but not `layersync_enabled` (SimpleTuner's "
        'default). Add `"layersync_enabled": true` (or `--layersync_enabled`) to turn it on.',
        stacklevel=3,
    )
    return False


def _merge_pairs(pairs: Any, student: Any, teacher: Any) -> tuple[Pair, ...]:
    """The one stored form of the blocks, from `pairs` or from `student_block` + `teacher_block`."""
    student = parse_block(student, name="student_block")
    teacher = parse_block(teacher, name="teacher_block")
    listed = parse_pairs(pairs) if pairs is not None else ()
    single = () if student is None and teacher is None else ((student, teacher),)
    if listed and single and listed != single:
        raise LayerSyncConfigError(
            f"`pairs={list(listed)}` and `student_block={student!r}`, `teacher_block={teacher!r}` both set the "
            "blocks; keep one (one pair is `student_block` + `teacher_block`, several are `pairs`)."
        )
    return listed or single


def _check_pairs(pairs: tuple[Pair, ...]) -> None:
    """What can be checked without the model: a student, a teacher deeper than it, no pair twice."""
    if not pairs or any(student is None for student, _ in pairs):
        raise LayerSyncConfigError(
            "LayerSync needs a student block, but `student_block` (`layersync_student_block`, `--encoder-depth`) "
            "or `pairs` (`layersync_pairs`) is missing. Set it to a depth such as 8 (the paper's choice for a "
            "28-block DiT) or a path such as 'transformer_blocks.7'."
        )
    for student, teacher in pairs:
        if not _deeper(teacher, student):
            raise LayerSyncConfigError(
                f"`teacher_block` must be deeper than `student_block`, got student_block={student}, "
                f"teacher_block={teacher}. An equal pair has exactly zero gradient; the paper uses "
                "student 8 <- teacher 16 on 28 blocks."
            )
    if len(set(pairs)) != len(pairs):
        raise LayerSyncConfigError(f"`pairs` lists a pair twice: {list(pairs)}. Keep each pair once.")


def _deeper(teacher: Optional[BlockRef], student: BlockRef) -> bool:
    """Whether `teacher` is deeper than `student`, or it cannot be told without the model (paths, mixed signs)."""
    if not (isinstance(student, int) and isinstance(teacher, int)) or (student < 0) != (teacher < 0):
        return True
    if student >= 0:
        return max(teacher, 1) > max(student, 1)  # 0 and 1 both mean the first block
    return teacher > student  # both from the end: -4 is deeper than -8
