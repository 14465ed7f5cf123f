"""Helpers the tests share: counting hooks, a guard against host syncs, a float64 reference of the loss, reading
the demo's PNG grids, importing a benchmark script, and saving a tiny model. Test modules import from here (or use
the fixtures in conftest.py), never from each other."""

import importlib.util
import runpy
import sys
from pathlib import Path

import diffusers
import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from tiny_models import TINY, build, prediction
from torch.utils._python_dispatch import TorchDispatchMode

import layersync_hooks
from layersync_hooks import LayerSync
from layersync_hooks.commands.demo.sample import CELL, SCALE, cell_origin, grid_size

HOOK_DICTS = ("_forward_pre_hooks", "_forward_hooks", "_backward_hooks", "_backward_pre_hooks")


def hook_count(model: torch.nn.Module) -> int:
    """Every forward and backward hook on every module of `model` (the with-kwargs and always-called dicts are
    views of these, keyed by the same hook ids)."""
    return sum(len(getattr(module, name)) for module in model.modules() for name in HOOK_DICTS)


def hook_calls(model, path):
    """Count every call of a block's forward hook, to show the scenario really re-runs blocks."""
    calls = []
    model.get_submodule(path).register_forward_hook(lambda *a: calls.append(torch.is_grad_enabled()))
    return calls


# -- host syncs ------------------------------------------------------------------------------------------------
# Tensor methods that return host values, and the ATen ops under the implicit conversions and mask indexing.
SYNC_METHODS = ("item", "tolist", "numpy", "cpu", "__bool__", "__float__", "__int__", "__index__")
# `lift_fresh`: a tensor made from Python values (`torch.tensor`, `new_tensor`, `as_tensor` of a list or number): on a
# GPU, a copy from pageable host memory, which waits for the stream.
SYNC_OPS = {"aten::_local_scalar_dense", "aten::nonzero", "aten::masked_select", "aten::is_nonzero", "aten::lift_fresh"}
PACKAGE = str(Path(layersync_hooks.__file__).parent)


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


# -- the loss in float64 ------------------------------------------------------------------------------------
def reference_grad(student, teacher, mask=None):
    """Loss and student gradient of the formula in float64, with autograd (the independent computation)."""
    student = student.detach().double().requires_grad_()
    cosine = F.cosine_similarity(student, teacher.double(), dim=-1)
    value = cosine.mean() if mask is None else cosine[mask].mean()
    value.backward()
    return value, student.grad


# -- the demo's grids, the benchmarks, tiny saved models ----------------------------------------------------
def read_cells(path, rows, columns, panels=1):
    """The samples drawn in a grid PNG, (panels, rows, columns, 3, 16, 16) uint8; asserts the PNG's size and that
    each cell is its sample scaled up by SCALE (nearest)."""
    image = np.asarray(Image.open(path).convert("RGB"))
    assert (image.shape[1], image.shape[0]) == grid_size(rows, columns, panels)
    out = torch.empty(panels, rows, columns, 3, CELL // SCALE, CELL // SCALE, dtype=torch.uint8)
    for panel in range(panels):
        for row in range(rows):
            for column in range(columns):
                left, top = cell_origin(row, column, columns=columns, panel=panel)
                block = torch.from_numpy(image[top : top + CELL, left : left + CELL].copy()).permute(2, 0, 1)
                small = block[:, ::SCALE, ::SCALE]
                assert torch.equal(block, small.repeat_interleave(SCALE, 1).repeat_interleave(SCALE, 2))
                out[panel, row, column] = small
    return out


BENCHMARKS = Path(__file__).parents[1] / "benchmarks"


def script(name):
    """Import benchmarks/<name>.py (the scripts import their helpers from their own folder)."""
    import sys

    sys.path.insert(0, str(BENCHMARKS))
    try:
        spec = importlib.util.spec_from_file_location(f"benchmarks_{name}", BENCHMARKS / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module
    finally:
        sys.path.remove(str(BENCHMARKS))


def save_tiny(folder, family, weights=True):
    class_name, config, _ = TINY[family]
    model = getattr(diffusers, class_name)(**config)
    if weights:
        model.save_pretrained(folder)
    else:
        model.save_config(folder)
    return folder


# -- the trainers' stand-ins -----------------------------------------------------------------------------------
STAND_INS = Path(__file__).parent / "scripts" / "trainers"


def run_stand_in(script: str, out, *args) -> Path:
    """`python tests/scripts/trainers/SCRIPT --output_dir OUT ARGS`, in this process; returns OUT."""
    saved_argv, saved_path = sys.argv, list(sys.path)
    sys.argv = [str(STAND_INS / script), "--output_dir", str(out), *args]
    sys.path.insert(0, str(STAND_INS))
    try:
        runpy.run_path(str(STAND_INS / script), run_name="__main__")
    finally:
        sys.argv, sys.path[:] = saved_argv, saved_path
    return Path(out)
