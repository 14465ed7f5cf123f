"""Layouts: where a model class keeps its blocks, and which tokens of their outputs are the noisy target.

Everything a custom layout needs is importable from here in one line:

    from layersync_hooks.layouts import BlockLayout, Last, Latents, Stack, register_layout

Imports point one way: `types` <- `rules`, `counts` <- `table` (the diffusers classes, as data) <- `registry`.
"""

from .counts import Attribute, FirstMarked, ImageShapes, Latents, Less, Valid
from .registry import layout_for, lookup_layout, register_layout, unregister_layout
from .rules import ChannelsFirst, Indexed, Last, Marked, SequenceFirst, Span, ZImageTarget, span
from .table import LAYOUTS, RELEASED, TRAINERS
from .types import BlockLayout, CallInputs, Released, Stack, TokenRule

__all__ = [
    "Attribute",
    "BlockLayout",
    "CallInputs",
    "ChannelsFirst",
    "FirstMarked",
    "ImageShapes",
    "Indexed",
    "LAYOUTS",
    "Less",
    "Last",
    "Latents",
    "Marked",
    "RELEASED",
    "Released",
    "SequenceFirst",
    "Span",
    "Stack",
    "TRAINERS",
    "TokenRule",
    "Valid",
    "ZImageTarget",
    "layout_for",
    "lookup_layout",
    "register_layout",
    "span",
    "unregister_layout",
]
