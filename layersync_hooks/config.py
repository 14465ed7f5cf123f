"""The LayerSync config: a plain frozen dataclass of what LayerSync aligns and how strongly, checked on construction.

Every other form a config takes (a dict, a JSON file, a preset, a training script's parsed flags, `LayerSync(...)`
keywords) is read by `LayerSyncConfig.from_dict`, through the spellings in `KEYS`: SimpleTuner's `layersync_*`
keys, the paper code's `--encoder-depth` / `--gt-encoder-depth` / `--reg-weight`, and the field names. Each value is
read by one function whatever form it came in, so a value means the same everywhere (`flags.py` builds the script
flags from the same table).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import warnings
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Callable, Mapping, Optional, Union

from .errors import LayerSyncConfigError
from .schedule import WeightSchedule, check_weight

BlockRef = Union[int, str]
Pair = tuple[BlockRef, Optional[BlockRef]]


# -- reading one value, whatever form it came in -------------------------------------------------------------
INTEGER_TEXT = re.compile(r"\s*-?[0-9]+\s*")  # ASCII digits: int() also takes '¹', which isdigit() calls a digit


def read_bool(value: Any, label: str) -> bool:
    """`True` or `False` (a flag is present or absent; a JSON file writes true or false)."""
    if isinstance(value, bool):
        return value
    raise LayerSyncConfigError(f"{label} must be true or false, got {value!r}.")


def read_number(value: Any, label: str) -> float:
    """A number, or its text as a flag or a hand-written config gives it (`"0.2"`, `"1e-3"`)."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return value
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            pass
    raise LayerSyncConfigError(f"{label} must be a number, got {value!r}.")


def read_integer(value: Any, label: str) -> int:
    """An integer, or its digits as text (`"3"`); `3.0` and `"3.0"` are refused rather than rounded."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str) and INTEGER_TEXT.fullmatch(value):
        return int(value)
    raise LayerSyncConfigError(f"{label} must be an integer, got {value!r}.")


def read_block(value: Any, label: str = "`block`") -> Optional[BlockRef]:
    """A block: an int depth, its digits as text (`"8"` from a flag or JSON), or a block path."""
    if value is None or (isinstance(value, int) and not isinstance(value, bool)):
        return value
    if isinstance(value, str) and value.strip() and not _float_text(value):
        text = value.strip()
        return int(text) if INTEGER_TEXT.fullmatch(text) else text
    raise LayerSyncConfigError(
        f"{label} must be a 1-based depth (int) or a block path such as 'transformer_blocks.7', "
        f"got {value!r} ({type(value).__name__})."
    )


def _float_text(text: str) -> bool:
    """A number that is not an integer (`"8.0"`, `"1e3"`, `"nan"`): never a block path, and no depth either."""
    try:
        float(text)
    except ValueError:
        return False
    return not INTEGER_TEXT.fullmatch(text)


def read_pairs(value: Any, label: str = "`pairs`") -> tuple[Pair, ...]:
    """Pairs as `[(4, 12), (8, 16)]`, `[[4, 12], [8, 16]]` (JSON), `["4:12", "8:16"]` (flags) or `"4:12,8:16"`."""
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, (list, tuple)):
        raise LayerSyncConfigError(
            f"{label} must be a list of (student, teacher) pairs such as [(4, 12), (8, 16)] or '4:12,8:16', got "
            f"{value!r}."
        )
    words = [part for item in items for part in (item.split(",") if isinstance(item, str) else [item])]
    return tuple(_read_pair(word, value, label) for word in words if not (isinstance(word, str) and not word.strip()))


def _read_pair(word: Any, whole: Any, label: str) -> Pair:
    if isinstance(word, str) and word.count(":") == 1:
        word = word.split(":")
    if isinstance(word, (list, tuple)) and len(word) == 2:
        student, teacher = (read_block(part, label) for part in word)
        if student is not None:
            return student, teacher
    raise LayerSyncConfigError(
        f"Each of {label} must be (student, teacher), e.g. (8, 16), [8, 16] or '8:16'; got {word!r} in {whole!r}."
    )


# -- the keys ---------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Key:
    """One config key: the field it sets, SimpleTuner's key (also the script flag), the paper code's spellings,
    its help, and the function that reads its value. `student_block` and `teacher_block` together set one pair."""

    field: str
    key: str
    aliases: tuple[str, ...]
    help: str
    read: Callable[[Any, str], Any]


KEYS: tuple[Key, ...] = (
    Key("enabled", "layersync_enabled", (), "Add the LayerSync loss.", read_bool),
    Key(
        "student_block",
        "layersync_student_block",
        ("encoder_depth", "encoder-depth"),
        "Student block: 1-based depth (8 = output of the 8th block) or a block path.",
        read_block,
    ),
    Key(
        "teacher_block",
        "layersync_teacher_block",
        ("gt_encoder_depth", "gt-encoder-depth"),
        "Teacher block, deeper than the student (default: about twice the student).",
        read_block,
    ),
    Key("weight", "layersync_lambda", ("reg_weight", "reg-weight"), "Weight of the loss (default 0.2).", read_number),
    Key("pairs", "layersync_pairs", (), "Several pairs, e.g. `4:12 8:16` (instead of student/teacher).", read_pairs),
    Key(
        "warmup_steps",
        "layersync_warmup_steps",
        (),
        "Ramp the weight linearly over this many optimizer steps (default 0: constant).",
        read_integer,
    ),
    Key(
        "stop_step",
        "layersync_stop_step",
        (),
        "Remove the hooks after this many optimizer steps (default: never).",
        read_integer,
    ),
)
# Every accepted spelling -> its key: the field name, SimpleTuner's key, the paper code's names.
SPELLINGS: dict[str, Key] = {spelling: k for k in KEYS for spelling in (k.field, k.key, *k.aliases)}
# The paper code's names: it has no on/off switch, so a config that uses them means LayerSync is on.
PAPER_NAMES = frozenset(alias for k in KEYS for alias in k.aliases)
ONE_PAIR = ("student_block", "teacher_block")
NONE_MEANS = (*ONE_PAIR, "stop_step")


def spellings(field: str) -> str:
    """'`layersync_lambda`, `reg_weight`, `reg-weight`' for a field."""
    return ", ".join(f"`{s}`" for s, k in SPELLINGS.items() if k.field == field and s != field)


@dataclass(frozen=True)
class LayerSyncConfig:
    r"""
    What LayerSync aligns and how strongly.

    Args:
        enabled (`bool`, defaults to `True`):
            When `False`, `LayerSync` registers nothing and `loss()` is 0. Read from a dict, JSON or flags,
            `layersync_enabled` defaults to off when only SimpleTuner's `layersync_*` keys are given (as in
            SimpleTuner), and to on when the paper code's names or these field names are used.
        pairs (`tuple` of `(student, teacher)`):
            The blocks: a student block pulled toward a deeper teacher block, once per pair. A block is an int,
            a 1-based depth over the model's stacks in forward order (`8` is the output of the 8th block, as in the
            paper code; `0` also means the first block; negative counts from the end), or a str, a block path such
            as `"single_transformer_blocks.3"`. A teacher of `None` is chosen when attaching: about twice the
            student depth, outside the last 20% of blocks. Dicts, flags and keywords also take one pair as
            `student_block` and `teacher_block`.
        weight (`float`, defaults to 0.2):
            The paper's lambda (`--reg-weight`, `layersync_lambda`); must be > 0. With several pairs the
            term is `-weight` times the mean similarity over the pairs, so the weight keeps its meaning.
        warmup_steps (`int`, defaults to 0):
            Ramp the weight linearly over this many optimizer steps: `weight * min(1, (step + 1) / warmup_steps)`.
        stop_step (`int`, *optional*):
            After this many optimizer steps LayerSync removes its hooks and `loss()` returns 0.

    Example:
        ```python
        >>> LayerSyncConfig(pairs=[(8, 16)])
        LayerSyncConfig(enabled=True, pairs=((8, 16),), weight=0.2, warmup_steps=0, stop_step=None)
        >>> LayerSyncConfig.from_dict({"layersync_enabled": True, "layersync_student_block": 8,
        ...                            "layersync_teacher_block": 16, "layersync_lambda": 0.2}).student_block
        8
        ```
    """

    enabled: bool = True
    pairs: tuple[Pair, ...] = ()
    weight: float = 0.2
    warmup_steps: int = 0
    stop_step: Optional[int] = None

    def __post_init__(self):
        read_bool(self.enabled, f"`enabled` ({spellings('enabled')})")
        object.__setattr__(self, "pairs", read_pairs(self.pairs, f"`pairs` ({spellings('pairs')})"))
        if self.enabled or self.weight != 0:  # a config that is off may keep weight 0 ("lambda 0")
            check_weight(self.weight, f"`weight` ({spellings('weight')})")
        WeightSchedule(self.weight, self.warmup_steps, self.stop_step)  # checks the schedule
        if self.enabled:
            _check_pairs(self.pairs)

    @property
    def student_block(self) -> Optional[BlockRef]:
        """The first pair's student block (None without pairs)."""
        return self.pairs[0][0] if self.pairs else None

    @property
    def teacher_block(self) -> Optional[BlockRef]:
        """The first pair's teacher block (None without pairs, or when the teacher is chosen when attaching)."""
        return self.pairs[0][1] if self.pairs else None

    # -- other forms --------------------------------------------------------------------------------------------
    @classmethod
    def from_dict(cls, config: Mapping[str, Any]) -> LayerSyncConfig:
        """Build from SimpleTuner's keys, the paper code's names or the field names, in any mix. Keys starting with
        `_` are comments."""
        values, given = _read_keys(config)
        if "enabled" not in values:
            values["enabled"] = _enabled_by_default(list(given.values()))
        return cls(**_one_pair_as_pairs(values, given))

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

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> LayerSyncConfig:
        """Build from a namespace parsed with the flags `LayerSync.add_arguments` adds to a script's parser."""
        missing = [k.key for k in KEYS if not hasattr(args, k.key)]
        if missing:
            raise LayerSyncConfigError(
                f"The parsed arguments lack {missing}; call `LayerSync.add_arguments(parser)` before parsing."
            )
        return cls.from_dict({k.key: getattr(args, k.key) for k in KEYS if getattr(args, k.key) is not None})

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
            f"Cannot read a LayerSync config from {type(config).__name__}; pass a dict, a JSON path, a preset name, "
            "parsed arguments or a LayerSyncConfig."
        )

    def updated(self, values: Mapping[str, Any]) -> LayerSyncConfig:
        """This config with the keys of `values` (any spelling) put over its own. Blocks given in `values`
        (`student_block`, `teacher_block` or `pairs`) replace all of this config's blocks."""
        _, given = _read_keys(values)
        own = self.to_dict()
        if any(SPELLINGS[key.lstrip("-")].field in (*ONE_PAIR, "pairs") for key in given.values()):
            own = {key: value for key, value in own.items() if SPELLINGS[key].field not in (*ONE_PAIR, "pairs")}
        return type(self).from_dict({**own, **values})

    def to_dict(self) -> dict[str, Any]:
        """SimpleTuner's keys, ready for JSON: `from_dict(config.to_dict()) == config`."""
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


FIELDS = tuple(f.name for f in fields(LayerSyncConfig))

# Presets for released models (package data): the paper heuristic for each family's block count.
PRESETS = Path(__file__).parent / "presets"


def presets() -> list[str]:
    """The names of the presets, e.g. `["auraflow", "chroma", ...]`."""
    return sorted(path.stem for path in PRESETS.glob("*.json"))


def _read_keys(config: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, str]]:
    """(field -> value read, field -> the key as given) of a dict of config keys; one value per field."""
    if not isinstance(config, Mapping):
        raise LayerSyncConfigError(f"A LayerSync config is a dict of keys, got {type(config).__name__}.")
    values: dict[str, Any] = {}
    given: dict[str, str] = {}
    for key, value in config.items():
        if not isinstance(key, str):
            raise LayerSyncConfigError(f"LayerSync config keys are strings, got {key!r}.")
        if key.startswith("_"):
            continue
        spec = SPELLINGS.get(key.lstrip("-"))
        if spec is None:
            raise LayerSyncConfigError(f"Unknown LayerSync config key {key!r}. Valid keys: {', '.join(SPELLINGS)}.")
        # None is a value only where it means something: no stop step, a teacher chosen when attaching
        read = None if value is None and spec.field in NONE_MEANS else spec.read(value, f"`{key}`")
        if spec.field in values and values[spec.field] != read:
            raise LayerSyncConfigError(
                f"`{given[spec.field]}={config[given[spec.field]]!r}` and `{key}={value!r}` both set "
                f"`{spec.field}`; keep one."
            )
        values[spec.field], given[spec.field] = read, key
    return values, given


def _one_pair_as_pairs(values: dict[str, Any], given: dict[str, str]) -> dict[str, Any]:
    """`student_block` + `teacher_block` as one pair; with `pairs` too, they must name that same pair."""
    student, teacher = values.pop("student_block", None), values.pop("teacher_block", None)
    if student is None:  # no pair (a teacher alone is no pair: an enabled config then asks for its student)
        return values
    pairs = values.get("pairs") or ()
    if pairs and pairs != ((student, teacher),):
        raise LayerSyncConfigError(
            f"`{given['pairs']}={list(pairs)}` and `student_block={student!r}`, `teacher_block={teacher!r}` both set "
            "the blocks; keep one (one pair is `student_block` + `teacher_block`, several are `pairs`)."
        )
    return {**values, "pairs": ((student, teacher),)}


def _enabled_by_default(keys: list[str]) -> bool:
    """`layersync_enabled` absent: on for the paper code's names and field names, off for SimpleTuner's keys only."""
    simpletuner = [key for key in keys if key.startswith("layersync_")]
    if not keys:
        return False
    if any(key.lstrip("-") in PAPER_NAMES for key in keys) or not simpletuner:
        return True
    warnings.warn(
        f"LayerSync is off because the config sets {sorted(keys)} but not `layersync_enabled` (SimpleTuner's "
        'default). Add `"layersync_enabled": true` (or `--layersync_enabled`) to turn it on.',
        stacklevel=3,
    )
    return False


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
