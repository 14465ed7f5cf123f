"""LayerSync (arXiv 2510.12581) for any Hugging Face diffusion transformer, through forward hooks.

The public API is the names below. Error subclasses are in `layersync_hooks.errors`, token rules and the layout
table in `layersync_hooks.layouts`, the probe in `layersync_hooks.probe`.
"""

from .capture import Activation, BlockCapture
from .config import LayerSyncConfig
from .errors import LayerSyncError
from .layersync import LayerSync
from .layouts import BlockLayout, Stack, register_layout
from .loss import layersync_loss, token_similarity
from .pairs import recommend_pair

__version__ = "0.3.0"

__all__ = [
    "Activation",
    "BlockCapture",
    "BlockLayout",
    "LayerSync",
    "LayerSyncConfig",
    "LayerSyncError",
    "Stack",
    "layersync_loss",
    "recommend_pair",
    "register_layout",
    "token_similarity",
]
