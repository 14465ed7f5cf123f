"""torch.compile on CPU backends: hooks attached before compiling match eager with no graph break; attaching
after a whole-model compiled run is a clear error; regional compilation works in any order."""

import copy

import pytest
import torch
from tiny_models import build, prediction
from torch._dynamo.utils import counters

from layersync_hooks import LayerSync
from layersync_hooks.errors import CompiledModelError

pytestmark = pytest.mark.slow  # each case compiles a tiny model: seconds, not milliseconds


@pytest.fixture(autouse=True)
def fresh_dynamo():
    """Compiled code is cached per class in the process: start and leave every test without any."""
    torch._dynamo.reset()
    counters.clear()
    yield
    torch._dynamo.reset()


def whole(model):
    return torch.compile(model, backend="aot_eager")


def regional(model):
    model.compile_repeated_blocks(backend="aot_eager", fullgraph=True)  # Flux sets `_repeated_blocks`
    return model


def steps(model, layersync, runner, inputs, n=2):
    """n training steps without an update: (loss, LayerSync term, gradients) of each."""
    out = []
    for _ in range(n):
        model.zero_grad()
        pred = prediction(runner, inputs)
        term = layersync.loss()
        loss = pred.float().pow(2).mean() + term
        loss.backward()
        out.append(
            (
                loss.detach(),
                term.detach(),
                {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None},
            )
        )
    return out


@pytest.mark.parametrize(
    "family, compile_, attach_after_run, checkpointing",
    [
        ("PixArt", whole, False, False),
        ("PixArt", whole, False, True),
        ("Flux", regional, True, False),
    ],
    ids=[
        "torch.compile(model)",
        "torch.compile(model) + gradient checkpointing",
        "compile_repeated_blocks, attached after a run",
    ],
)
def test_compiled_training_matches_eager(family, compile_, attach_after_run, checkpointing):
    """Loss, LayerSync term and gradients equal eager for 2 steps, and the hooks cause no graph break."""
    model, inputs = build(family)
    reference = copy.deepcopy(model)
    if checkpointing:
        model.enable_gradient_checkpointing()
        reference.enable_gradient_checkpointing()
    expected = steps(reference, LayerSync(reference, pairs=[(1, 3), (2, 3)]), reference, inputs)
    runner = compile_(model)
    if attach_after_run:
        prediction(runner, inputs)
    layersync = LayerSync(runner, pairs=[(1, 3), (2, 3)])
    # The hook's store is a side effect inside each checkpointed block; LayerSync ignores the backward
    # recomputation anyway, so not replaying it is exactly right (README: torch.compile and mixed precision).
    # A recompile limit below the 3 hooked blocks: hooks must not be compiled once per block (fullgraph fails).
    with torch._dynamo.config.patch(
        skip_fwd_side_effects_in_bwd_under_checkpoint=checkpointing, recompile_limit=2 if compile_ is regional else 8
    ):
        got = steps(model, layersync, runner, inputs)
    assert counters["stats"]["unique_graphs"] >= 1, "nothing was compiled"
    assert sum(counters["graph_break"].values()) == 0, dict(counters["graph_break"])
    for (loss, term, grads), (loss0, term0, grads0) in zip(got, expected):
        torch.testing.assert_close(loss, loss0)
        torch.testing.assert_close(term, term0)
        assert grads.keys() == grads0.keys()
        for name in grads:
            torch.testing.assert_close(grads[name], grads0[name], atol=1e-6, rtol=1e-5, msg=name)


def test_attaching_after_a_compiled_run_is_an_error():
    """Hooks added after a whole-model compiled call would never run: refused at attach time, with the fixes."""
    model, inputs = build("PixArt")
    compiled = torch.compile(model, backend="eager")
    LayerSync(compiled, student_block=1, teacher_block=3).remove()  # compiled but not run yet: fine
    prediction(compiled, inputs)
    match = r"PixArtTransformer2DModel: it was compiled whole.*compile_repeated_blocks.*torch._dynamo.reset\(\)"
    with pytest.raises(CompiledModelError, match=match):
        LayerSync(compiled, student_block=1, teacher_block=3)
    other = build("PixArt")[0]
    other.compile(backend="eager")  # `Module.compile()`: compiled in place; the class's code already ran
    with pytest.raises(CompiledModelError, match=match):
        LayerSync(other, student_block=1, teacher_block=3)
    with pytest.warns(UserWarning, match=r"PixArtTransformer2DModel.forward already has torch.compile code"):
        LayerSync(build("PixArt")[0], student_block=1, teacher_block=3).remove()
    torch._dynamo.reset()
    layersync = LayerSync(compiled, student_block=1, teacher_block=3)  # after a reset it recompiles with hooks
    prediction(compiled, inputs)
    assert torch.isfinite(layersync.loss())
