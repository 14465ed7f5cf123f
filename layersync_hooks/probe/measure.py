"""Which blocks to pair? Measure how similar every block's target tokens are to every other block's.

`probe` runs a few forwards of the model at several noise levels, captures the noisy-target tokens of every block
with `BlockCapture`, and computes block-by-block mean per-token cosine and linear CKA, then recommends
student/teacher pairs by the paper heuristic, with reasons. `load_model` builds a diffusers model from a local
folder or config for the `probe` command.
"""

from __future__ import annotations

import contextlib
import json
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Optional

import torch
from torch import nn

from ..capture import Block, BlockCapture, any_forward, list_blocks, unwrap
from ..errors import LayerSyncError
from ..layouts import BlockLayout, layout_for
from .similarity import Recommendation, cosine_matrix, linear_cka_matrix, recommend

_WEIGHTS = ("*.safetensors", "*.bin")


@dataclass
class ProbeResult:
    """Similarity matrices per noise level, `(levels, blocks, blocks)`, and the recommended pairs."""

    model_name: str
    blocks: list[Block]
    noise_levels: list[float]
    cosine: torch.Tensor
    cka: torch.Tensor
    recommendations: list[Recommendation]


@contextlib.contextmanager
def _evaluating(model: nn.Module):
    """Forwards without training side effects: every module in eval mode (no dropout, no label dropping) and no
    autograd graph (only the captured block outputs stay in memory); the modes are restored after."""
    modes = {module: module.training for module in model.modules()}
    model.eval()
    try:
        with torch.no_grad():
            yield
    finally:
        for module, mode in modes.items():
            module.training = mode


def probe(
    model: nn.Module,
    batches: Iterable[tuple[float, dict]],
    *,
    layout: Optional[BlockLayout] = None,
    cka_tokens: int = 1024,
    top: int = 3,
    progress: bool = True,
) -> ProbeResult:
    r"""
    Block-by-block similarity of the target tokens of `model`, averaged over the batches of each noise level.

    Args:
        model (`nn.Module`): The transformer.
        batches (`Iterable[tuple[float, dict]]`): `(noise level, forward kwargs)` pairs.
        layout (`BlockLayout`, *optional*): Overrides the layout table for this model.
        cka_tokens (`int`, defaults to 1024): Tokens sampled (seeded) for linear CKA.
        top (`int`, defaults to 3): How many pairs to recommend.

    Example:
        ```python
        >>> result = probe(transformer, [(0.5, inputs)])
        >>> result.recommendations[0].student, result.recommendations[0].teacher
        ```
    """
    root = unwrap(model)
    blocks = list_blocks(root, layout_for(root, layout))
    per_level: dict[str, tuple[float, list[torch.Tensor], list[torch.Tensor]]] = {}  # str: NaN is one level
    batches = list(batches)
    with BlockCapture(model, blocks, layout=layout, gate=any_forward) as capture, _evaluating(root):
        for level, kwargs in _progress(batches, progress):
            model(**kwargs)
            (activations,) = capture.pop()
            ordered = [activations[block.path] for block in blocks]
            _, cosines, ckas = per_level.setdefault(str(level), (level, [], []))
            cosines.append(cosine_matrix(ordered))
            ckas.append(linear_cka_matrix(ordered, max_tokens=cka_tokens))
    cosine = torch.stack([torch.stack(cosines).mean(0) for _, cosines, _ in per_level.values()])
    cka = torch.stack([torch.stack(ckas).mean(0) for _, _, ckas in per_level.values()])
    levels = [level for level, _, _ in per_level.values()]
    return ProbeResult(
        type(root).__name__, blocks, levels, cosine, cka, recommend(cosine.mean(0), cka.mean(0), top=top)
    )


def _progress(batches: list, enabled: bool):
    try:
        from tqdm.auto import tqdm
    except ImportError:  # the bar is optional (the `demo` extra installs tqdm)
        return batches
    return tqdm(batches, desc="probe forwards", unit="forward", disable=not enabled)


def read_model_config(path: str | Path) -> tuple[Path, dict, type]:
    """The config file of a local diffusers model folder (or its `transformer/` subfolder) or `config.json`, its
    contents and the diffusers model class it names. Reads no weights.

    Raises `FileNotFoundError` without a config file, and `LayerSyncError` for one that is not a model's.
    """
    import diffusers

    path = Path(path)
    if path.is_dir() and not (path / "config.json").exists() and (path / "transformer" / "config.json").exists():
        path = path / "transformer"  # a pipeline folder
    config_path = path / "config.json" if path.is_dir() else path
    if not config_path.is_file():
        raise FileNotFoundError(
            f"No diffusers model config at {str(config_path)!r}: pass a model folder with a "
            "config.json (weights optional) or the config.json itself."
        )
    try:
        config = json.loads(config_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise LayerSyncError(
            f"{str(config_path)!r} is not valid JSON ({error}); pass a diffusers model's config.json."
        ) from None
    name = config.get("_class_name") if isinstance(config, dict) else None
    model_class = getattr(diffusers, name, None) if isinstance(name, str) else None
    if not (isinstance(model_class, type) and issubclass(model_class, diffusers.ModelMixin)):
        what = "has no `_class_name`"
        if name:
            what = (
                f"names {name!r}, which is not a model class of diffusers {diffusers.__version__}"
                if model_class
                else f"names model class {name!r}, which diffusers {diffusers.__version__} does not have"
            )
        raise LayerSyncError(
            f"{str(config_path)!r} {what}: the probe needs the config.json of a diffusers model "
            "(as written by `save_pretrained` or `save_config`)."
        )
    return config_path, config, model_class


def load_model(path: str | Path, *, device: str = "cpu", dtype: torch.dtype = torch.float32) -> nn.Module:
    """A diffusers model from a local folder (or its `transformer/` subfolder) or a `config.json`.

    Without weight files next to the config, the model is randomly initialised, with a warning.
    """
    config_path, config, model_class = read_model_config(path)
    folder = config_path.parent
    if any(any(folder.glob(pattern)) for pattern in _WEIGHTS):
        model = model_class.from_pretrained(folder, torch_dtype=dtype, local_files_only=True)
    else:
        warnings.warn(
            f"No weights next to {str(config_path)!r}: probing a randomly initialised {model_class.__name__}. The "
            "map then shows the architecture at initialisation, not what training learned.",
            stacklevel=2,
        )
        model = model_class.from_config(config)
        model = model.to(dtype) if dtype != torch.float32 else model
    return model.to(device)
