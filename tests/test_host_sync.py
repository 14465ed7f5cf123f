"""No host synchronisation in the training step: hooks, `loss()` and its backward never read a tensor's value.

Anything that copies a value to the host (`.item()`, `.tolist()`, `.cpu()`, `bool(t)`, `float(t)`, a boolean
mask index, `nonzero`) stalls a GPU step, and so does a tensor made from Python values (`torch.tensor`,
`new_tensor`: a copy from host memory, which waits for the stream). While a step runs, the guard below fails any
such call made while package code is on the Python stack; the model's own code is not policed. Only `metrics()`
converts to floats, and the first `loss()` of a run, once, to check that a masked token rule selected tokens.
"""

import pytest
from helpers import NoHostSync, objective, training_step
from tiny_models import TINY
from trainer_models import BUILDERS as TRAINER_BUILDERS

from layersync_hooks import LayerSync


@pytest.mark.parametrize(
    ("family", "checkpointing"), [(family, False) for family in TINY] + [("Flux", True), ("HunyuanVideo", True)]
)
def test_training_step_never_syncs(family, checkpointing, monkeypatch):
    """After the first step, forward with hooks, loss() and backward make no host sync; metrics() returns floats."""
    try:
        metrics = training_step(family, checkpointing, monkeypatch).metrics()
    except NotImplementedError as error:  # e.g. FlexAttention has no backward on CPU
        pytest.skip(f"{family} cannot train on CPU: {error}")
    assert set(metrics) == {"layersync_loss", "layersync_similarity"}
    assert all(isinstance(v, float) for v in metrics.values())


@pytest.mark.parametrize("name", list(TRAINER_BUILDERS))
def test_trainer_models_training_step_never_syncs(name, monkeypatch):
    """The trainers' own classes (stand-ins), whose token counts come per sample (uneven captions, per-sample
    latents, one call per sample): after the first step, no host sync and no copy from host memory either."""
    setup = TRAINER_BUILDERS[name]()
    layersync = LayerSync(setup.model, student_block=1, teacher_block=2)
    objective(setup.forward()).add(layersync.loss()).backward()  # the first loss() may check the masks once
    for _ in range(2):
        with NoHostSync(monkeypatch):
            (objective(setup.forward()) + layersync.loss()).backward()
        monkeypatch.undo()
    assert set(layersync.metrics()) == {"layersync_loss", "layersync_similarity"}
