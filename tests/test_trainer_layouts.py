"""The layouts of musubi-tuner's and kohya sd-scripts' own DiT classes, proven row by row with the gradient probe on
stand-ins that reproduce each class's structure and training call (tests/trainer_models.py); tests/with_trainers/
runs the same proof on the real classes when their checkouts are given."""

import pytest
from layout_proof import prove
from tiny_models import build
from torch import nn
from torch.distributed.fsdp import FSDPModule
from trainer_models import BUILDERS

from layersync_hooks.errors import UnknownModelError
from layersync_hooks.layouts import (
    LAYOUTS,
    TRAINERS,
    layout_for,
    lookup_layout,
    register_layout,
    unregister_layout,
)


@pytest.mark.parametrize("checkpointing", [False, True], ids=["plain", "checkpointing"])
@pytest.mark.parametrize("name", list(BUILDERS))
def test_trainer_layout_aligns_exactly_the_target_tokens(name, checkpointing):
    """Student rows with LayerSync's gradient == the last block's rows feeding the compared prediction, per sample
    and per DiT call, in eval mode (as the trainers keep the DiT) or with the trainer's own checkpointing."""
    calls = prove(BUILDERS[name](), name, checkpointing=checkpointing)
    assert calls == (2 if name == "musubi.kandinsky5" else 1)  # one DiT call per sample there


def test_every_trainer_row_has_a_stand_in():
    """Each trainer class of the table is built by a stand-in here (DiffSynth-Studio's in tests/with_diffsynth)."""
    rows = {name for name in LAYOUTS if name.split(".")[0] in TRAINERS and not name.startswith("diffsynth.")}
    built = {f"{type(BUILDERS[n]().model).__module__}.{type(BUILDERS[n]().model).__qualname__}" for n in BUILDERS}
    assert rows == built, rows ^ built


def qualified(cls):
    return f"{cls.__module__}.{cls.__qualname__}"


def test_a_qualified_row_wins_over_diffusers_bare_name():
    """musubi-tuner's `QwenImageTransformer2DModel` and `ZImageTransformer2DModel` reuse diffusers' class names: they
    get their own rows; a class of that name from another package gets no layout from diffusers' row."""
    for name in ("musubi.qwen_image", "musubi.zimage"):
        cls = type(BUILDERS[name]().model)
        assert lookup_layout(cls) is LAYOUTS[qualified(cls)] is not LAYOUTS[cls.__name__]
    stranger = type("QwenImageTransformer2DModel", (nn.Module,), {"__module__": "somebody_else.models"})
    assert lookup_layout(stranger) is None


def test_a_subclass_with_its_own_token_order_never_inherits_silently():
    """sd-scripts' `Chroma` subclasses its `Flux` but puts the image first: it has its own row. A subclass without a
    row is an error naming its base and the fix, and register_layout applies the fix."""
    flux, chroma = (type(BUILDERS[name]().model) for name in ("sd-scripts.flux", "sd-scripts.chroma"))
    assert issubclass(chroma, flux) and lookup_layout(chroma) is LAYOUTS["library.chroma_models.Chroma"]
    assert lookup_layout(chroma).stacks != lookup_layout(flux).stacks
    mine = type("MyFlux", (flux,), {"__module__": "my_trainer"})
    with pytest.raises(
        UnknownModelError, match=r"`my_trainer.MyFlux`.*subclasses `library.flux_models.Flux`.*register"
    ):
        layout_for(mine())
    register_layout(mine, LAYOUTS["library.flux_models.Flux"])
    try:
        assert layout_for(mine()) is LAYOUTS["library.flux_models.Flux"]
    finally:
        unregister_layout(mine)


def test_fsdp2_derived_classes_keep_their_model_layout():
    """FSDP2 derives a class from the model's (in a torch module): diffusers' and the trainers' classes keep theirs."""
    flux = type(BUILDERS["sd-scripts.flux"]().model)
    derived = type("FSDPFlux", (FSDPModule, flux), {"__module__": FSDPModule.__module__})
    assert lookup_layout(derived) is LAYOUTS["library.flux_models.Flux"]
    pixart = type(build("PixArt")[0])
    assert lookup_layout(type("FSDPPixArt", (FSDPModule, pixart), {})) is LAYOUTS["PixArtTransformer2DModel"]
