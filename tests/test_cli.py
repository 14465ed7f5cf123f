"""The command line dispatches to its commands and answers --help and --version."""

import subprocess
import sys

from layersync_hooks import __version__
from layersync_hooks.commands.cli import COMMANDS, main


def test_help_and_version(capsys):
    """No command prints the help listing every command; --version prints the version."""
    assert main([]) == 0
    out = capsys.readouterr().out
    assert "layersync-hooks" in out and all(name in out for name in COMMANDS)
    done = subprocess.run([sys.executable, "-m", "layersync_hooks", "--version"], capture_output=True, text=True)
    assert done.returncode == 0 and __version__ in done.stdout
