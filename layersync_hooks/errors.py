"""Errors raised by layersync_hooks.

Each subclasses `LayerSyncError` and the built-in error a user would catch for that kind of problem, so
`except ValueError` keeps working in scripts that already guard their argument parsing.
"""


class LayerSyncError(Exception):
    """Base class of every error raised by layersync_hooks."""


class LayerSyncConfigError(LayerSyncError, ValueError):
    """A config value is missing, of the wrong type, or out of range."""


class BlockIndexError(LayerSyncError, IndexError):
    """A depth or path does not name a block of the model ("LayerSync could not find layer ...")."""


class UnknownModelError(LayerSyncError, ValueError):
    """No layout is registered for the model and no single block stack can be found in it."""


class UnsupportedModelError(LayerSyncError, ValueError):
    """The layout table knows the model class and why LayerSync cannot align its image tokens."""


class MissingActivationsError(LayerSyncError, RuntimeError):
    """`loss()` or `pop()` was called without a captured training forward."""


class ShapeMismatchError(LayerSyncError, ValueError):
    """Student and teacher activations cannot be compared token by token."""


class CompiledModelError(LayerSyncError, RuntimeError):
    """The model was compiled whole with `torch.compile` and ran before the hooks were attached."""


class UsageError(LayerSyncError, ValueError):
    """A command's argument, input file or output folder cannot be used; the command line prints it as
    `error: ...` and exits with 2, before any work starts."""


def copy_refused(handle: object) -> LayerSyncError:
    """The error for copying or pickling a `LayerSync` or `BlockCapture`: a handle on hooks in one model."""
    name = type(handle).__name__
    return LayerSyncError(
        f"A {name} cannot be copied or pickled: it is a handle on the hooks of one model, and a copy would report "
        "hooks it does not have. Save its `state_dict()` (LayerSync) and build a new one on the model you want to "
        "align, e.g. `LayerSync.from_config(model, layersync.config)`. The model itself can be copied and saved: "
        "a copy carries no LayerSync hook."
    )
