"""The capture: hooks that hand over the target tokens of chosen blocks from each recorded forward.

`BlockCapture` (in `engine`) owns its hooks; `gates` says which forwards it records, `blocks` finds and numbers a
model's blocks, `selection` cuts the target tokens out of a stored output, `block_arguments` picks the block
arguments a token rule reads, `compiled` refuses what torch.compile would silently break, and `torch_internals`
holds every private torch call.
"""

from .blocks import Block, block_classes, describe, list_blocks, resolve, unwrap, wrappers
from .engine import BlockCapture
from .gates import any_forward, training_forward
from .selection import Activation

__all__ = [
    "Activation",
    "Block",
    "BlockCapture",
    "block_classes",
    "any_forward",
    "describe",
    "list_blocks",
    "resolve",
    "training_forward",
    "unwrap",
    "wrappers",
]
