"""The capture engine: hooks that keep the target tokens of chosen blocks from each training forward.

`BlockCapture` is the engine's public face. `blocks` finds and numbers a model's blocks, `selection` cuts the
target tokens out of a stored output, `arguments` picks the block arguments a token rule reads, `compiled`
refuses what torch.compile would silently break, and `torch_internals` holds every private torch call.
"""

from .blocks import Block, describe, list_blocks, resolve, unwrap, wrappers
from .engine import BlockCapture
from .selection import Activation

__all__ = ["Activation", "Block", "BlockCapture", "describe", "list_blocks", "resolve", "unwrap", "wrappers"]
