"""The `layersync-hooks` command line (also `python -m layersync_hooks`).

Each command lives in its own module with `add_arguments(parser)` and `run(args) -> int`; this file only
dispatches. Command modules import heavy dependencies (matplotlib, accelerate trackers) inside `run`.

One convention for errors, in every command: a `LayerSyncError` (a bad argument is a `UsageError`, raised before
any work starts) is printed as `error: <what and the fix>` on stderr, without a traceback, and the exit code is 2,
as for argparse's own usage errors.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from typing import Optional, Sequence

from .. import __version__
from ..errors import LayerSyncError

# command -> (module, one-line help). One line per command.
COMMANDS: dict[str, tuple[str, str]] = {
    "run": (
        "layersync_hooks.commands.run",
        "Run an unmodified accelerate training script with LayerSync: run [options] -- SCRIPT [ARGS...].",
    ),
    "demo": (
        "layersync_hooks.commands.demo",
        "Train a small PixArt on generated shapes with LayerSync (--compare: and without).",
    ),
    "layouts": (
        "layersync_hooks.commands.layouts",
        "List the layout table: each model class, its block stacks, target tokens and depths.",
    ),
    "probe": (
        "layersync_hooks.commands.probe",
        "Measure block-to-block similarity and recommend student/teacher pairs.",
    ),
}


def build_parser() -> argparse.ArgumentParser:
    description = "LayerSync (arXiv 2510.12581) for Hugging Face diffusion transformers."
    parser = argparse.ArgumentParser(prog="layersync-hooks", description=description)
    parser.add_argument("--version", action="version", version=f"layersync_hooks {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module, help_text) in COMMANDS.items():
        aliases = ["families"] if name == "layouts" else []  # its name before 0.2
        command = commands.add_parser(name, help=help_text, description=help_text, aliases=aliases)
        command.set_defaults(module=module)
        importlib.import_module(module).add_arguments(command)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    try:
        return int(importlib.import_module(args.module).run(args) or 0)
    except LayerSyncError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
