"""LayerSync (arXiv 2510.12581) for any Hugging Face diffusion transformer, through forward hooks."""

from .blocks import Block, default_teacher, recommend_pair, unwrap
from .call_inputs import CallInputs
from .capture import BlockCapture
from .config import LayerSyncConfig
from .errors import (
    BlockIndexError,
    CompiledModelError,
    LayerSyncConfigError,
    LayerSyncError,
    MissingActivationsError,
    ShapeMismatchError,
    UnknownModelError,
    UnsupportedModelError,
)
from .families import LAYOUTS
from .layersync import LayerSync
from .layouts import BlockLayout, Stack, lookup_layout, register_layout, unregister_layout
from .loss import layersync_loss, token_similarity
from .selection import Activation

__version__ = "0.1.0"

__all__ = [
    "Activation",
    "Block",
    "BlockCapture",
    "BlockIndexError",
    "BlockLayout",
    "CallInputs",
    "CompiledModelError",
    "LAYOUTS",
    "LayerSync",
    "LayerSyncConfig",
    "LayerSyncConfigError",
    "LayerSyncError",
    "MissingActivationsError",
    "ShapeMismatchError",
    "Stack",
    "UnknownModelError",
    "UnsupportedModelError",
    "default_teacher",
    "layersync_loss",
    "lookup_layout",
    "recommend_pair",
    "register_layout",
    "token_similarity",
    "unregister_layout",
    "unwrap",
]
