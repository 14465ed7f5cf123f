"""The layout table: where each model class keeps its blocks and which tokens are the noisy target.

Plain data keyed by class name, looked up along the MRO (`layouts.lookup_layout`). Facts come from
`shared/reference/diffusers-families.md` (diffusers 0.42).
"""

from __future__ import annotations

from .layouts import BlockLayout, Stack


def _stacks(*stacks, output: int = 0) -> BlockLayout:
    """Stacks that share one output index."""
    return BlockLayout(stacks=tuple(Stack(path, output=output) for path in stacks))


LAYOUTS: dict[str, BlockLayout] = {
    "FluxTransformer2DModel": _stacks("transformer_blocks", "single_transformer_blocks", output=1),
    "SD3Transformer2DModel": _stacks("transformer_blocks", output=1),  # its last block returns (None, hidden)
    "QwenImageTransformer2DModel": _stacks("transformer_blocks", output=1),
    "PixArtTransformer2DModel": _stacks("transformer_blocks"),
    "SanaTransformer2DModel": _stacks("transformer_blocks"),
    "WanTransformer3DModel": _stacks("blocks"),
    "CosmosTransformer3DModel": _stacks("transformer_blocks"),
    "HunyuanVideoTransformer3DModel": _stacks("transformer_blocks", "single_transformer_blocks"),  # (image, text)
}
