"""`python -m layersync_hooks ...` (and `accelerate launch -m layersync_hooks ...`)."""

import sys

from .cli import main

sys.exit(main())
