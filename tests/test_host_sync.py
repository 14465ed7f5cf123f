"""No host synchronisation in the training step: hooks, `loss()` and its backward never read a tensor's value.

Anything that copies a value to the host (`.item()`, `.tolist()`, `.cpu()`, `bool(t)`, `float(t)`, a boolean
mask index, `nonzero`) stalls a GPU step. While a step runs, the guard below fails any such call made while
package code is on the Python stack; the model's own code is not policed. Only `metrics()` converts to floats,
and the first `loss()` of a run, once, to check that a masked token rule selected tokens.
"""

import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from tiny_models import TINY, build, prediction
from torch.utils._python_dispatch import TorchDispatchMode

import layersync_hooks
from layersync_hooks import LayerSync

PACKAGE = str(Path(layersync_hooks.__file__).parent)
# Tensor methods that return host values, and the ATen ops under the implicit conversions and mask indexing.
SYNC_METHODS = ("item", "tolist", "numpy", "cpu", "__bool__", "__float__", "__int__", "__index__")
SYNC_OPS = {"aten::_local_scalar_dense", "aten::nonzero", "aten::masked_select", "aten::is_nonzero"}


class HostSync(AssertionError):
    pass


def _package_frame():
    frame = sys._getframe(2)
    while frame is not None:
        if frame.f_code.co_filename.startswith(PACKAGE):
            return f"{frame.f_code.co_filename}:{frame.f_lineno}"
        frame = frame.f_back
    return None


class NoHostSync(TorchDispatchMode):
    """Fails host syncs (as methods or as ATen ops) that package code makes."""

    def __init__(self, monkeypatch):
        super().__init__()
        for name in SYNC_METHODS:
            monkeypatch.setattr(torch.Tensor, name, self._guarded(name, getattr(torch.Tensor, name)))

    def _guarded(self, name, method):
        def guarded(tensor, *args, **kwargs):
            where = _package_frame()
            if where is not None:
                raise HostSync(f"Tensor.{name}() syncs with the host, called from {where}")
            return method(tensor, *args, **kwargs)

        return guarded

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if _syncs(func, args) and (where := _package_frame()) is not None:
            raise HostSync(f"{func._schema.name} syncs with the host, called from {where}")
        return func(*args, **(kwargs or {}))


def _syncs(func, args) -> bool:
    """An op whose output size or value the host must read: scalar reads, nonzero, boolean-mask indexing."""
    if func is torch.ops.aten.index.Tensor:
        return any(index is not None and index.dtype == torch.bool for index in args[1])
    return func._schema.name in SYNC_OPS


def objective(prediction):
    """A task loss on the prediction (some models return a list of per-sample tensors)."""
    parts = prediction if isinstance(prediction, (list, tuple)) else [prediction]
    return sum(F.mse_loss(part, torch.zeros_like(part)) for part in parts)


def training_step(family, checkpointing, monkeypatch):
    model, inputs = build(family)
    if checkpointing:
        model.enable_gradient_checkpointing()
    layersync = LayerSync(model, student_block=1, teacher_block=2)  # every tiny model has two blocks
    # The first loss() of a run may read, once, whether a masked token rule selected any token (docs: how it works).
    objective(prediction(model, inputs)).add(layersync.loss()).backward()
    for _ in range(2):
        with NoHostSync(monkeypatch):
            loss = objective(prediction(model, inputs)) + layersync.loss()
            loss.backward()
        monkeypatch.undo()
    return layersync


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
