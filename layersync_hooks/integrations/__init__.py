"""LayerSync on training loops it does not own: `AutoAttach` rides on an unmodified accelerate script."""

from .accelerate import AutoAttach

__all__ = ["AutoAttach"]
