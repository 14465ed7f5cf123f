"""The `--layersync_*` script flags, built from the config's keys (`config.KEYS`), and argparse types that read
values with the config's own readers, so a flag value means what the same value means in a dict or JSON file.

`LayerSync.add_arguments(parser)` adds the flags to a training script's parser; `from_flags` reads a list of them
without one; the `layersync-hooks` commands use `flag_type` for their own numbers.
"""

from __future__ import annotations

import argparse
from typing import Any, Callable, Sequence

from .config import KEYS, LayerSyncConfig
from .errors import LayerSyncConfigError


def flag_type(read: Callable[[Any, str], Any], label: str = "the value", *, keep_text: bool = False):
    """An argparse `type` that reads with `read` and shows its explanation (argparse would replace a ValueError's
    message with its own). With `keep_text`, the text is checked and kept as given."""

    def convert(text: str) -> Any:
        try:
            value = read(text, label)
        except ValueError as error:
            raise argparse.ArgumentTypeError(str(error)) from None
        return text if keep_text else value

    convert.__name__ = getattr(read, "__name__", "value")
    return convert


def add_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add the `--layersync_*` flags to an existing parser (a diffusers training script's)."""
    group = parser.add_argument_group("LayerSync (arXiv 2510.12581)")
    for key in KEYS:
        if key.field == "enabled":
            options: dict[str, Any] = {"action": "store_true"}
        elif key.field == "pairs":  # `4:12 8:16` or `4:12,8:16`: each word checked, the words read as one list
            options = {"type": flag_type(key.read, f"`--{key.key}`", keep_text=True), "nargs": "+"}
            options["metavar"] = "STUDENT:TEACHER"
        else:
            options = {"type": flag_type(key.read, f"`--{key.key}`")}
        # default None: a flag that was not given is left out, whatever value it could take
        group.add_argument(f"--{key.key}", default=None, help=key.help, **options)
    return parser


def from_flags(argv: Sequence[str]) -> LayerSyncConfig:
    """Build from a list of `--layersync_*` flags, e.g. `["--layersync_enabled", "--layersync_student_block", "8"]`.

    Bad flags and values raise `LayerSyncConfigError` (never argparse's exit), naming the flag.
    """
    # No abbreviations: argparse exits on an ambiguous one (`--layersync_s`) even with exit_on_error=False.
    parser = add_arguments(argparse.ArgumentParser(prog="layersync", add_help=False, allow_abbrev=False,
                                                   exit_on_error=False))  # fmt: skip
    try:
        args, unknown = parser.parse_known_args(list(argv))
    except argparse.ArgumentError as error:
        raise LayerSyncConfigError(f"{error}.") from None
    if unknown:
        raise LayerSyncConfigError(
            f"Unknown LayerSync flags {unknown}. Valid flags: {', '.join('--' + key.key for key in KEYS)}."
        )
    return LayerSyncConfig.from_args(args)
