"""`python -m layersync_hooks ...` (and `accelerate launch -m layersync_hooks ...`)."""

import sys

from .commands.cli import main

sys.exit(main())
