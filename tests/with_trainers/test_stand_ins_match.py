"""The stand-ins of tests/trainer_models.py behave as the trainers' own classes, measured by the same gradient probe.

Runs against checkouts given by `MUSUBI_TUNER_SRC` / `SD_SCRIPTS_SRC` (each case is skipped when its variable is
unset) in an environment where the trainers' model files import (torch, einops, safetensors, accelerate, and for
musubi's Wan and sd-scripts transformers, ftfy, diffusers and opencv: `venv-models` in tests/with_trainers/README.md):

    MUSUBI_TUNER_SRC=... SD_SCRIPTS_SRC=... venv-models/bin/python -m pytest tests/with_trainers/test_stand_ins_match.py
"""

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))  # real_models, truth
sys.path.insert(0, str(Path(__file__).parents[1]))  # trainer_models
import real_models  # noqa: E402
import trainer_models  # noqa: E402
from truth import probe  # noqa: E402

NAMES = list(real_models.BUILDERS)


def signature(truth):
    """Everything the layout depends on, without widths: stacks and counts, and per block its calls, output
    elements (index, form, shape less the width), receiving rows and target rows per sample."""
    blocks = [
        (
            block.path,
            tuple(block.calls),
            tuple((e.index, e.form, e.shape[:-1], tuple(e.receiving), tuple(e.target)) for e in block.elements),
        )
        for block in truth.blocks
    ]
    return truth.stacks, blocks, truth.recomputed


def qualified(model):
    return f"{type(model).__module__}.{type(model).__qualname__}"


def test_every_real_builder_has_a_stand_in():
    """The two builder tables name the same classes, in the same order."""
    assert list(trainer_models.BUILDERS) == NAMES


@pytest.mark.parametrize("checkpointing", [False, True], ids=["plain", "checkpointing"])
@pytest.mark.parametrize("name", NAMES)
def test_stand_in_matches_the_real_class(name, checkpointing):
    """Same qualified name, stacks, block calls, output elements, receiving and target rows per sample."""
    trainer = name.split(".")[0]
    if not real_models.available(trainer):
        pytest.skip(f"set {real_models.MUSUBI if trainer == 'musubi' else real_models.SD_SCRIPTS} to a checkout")
    torch.manual_seed(0)
    real, stand_in = real_models.build(name), trainer_models.BUILDERS[name]()
    assert qualified(stand_in.model) == qualified(real.model)
    assert not real.model.training and not stand_in.model.training, "both trainers keep the DiT in eval()"
    real_truth = signature(probe(real, checkpointing=checkpointing))
    stand_in_truth = signature(probe(stand_in, checkpointing=checkpointing))
    assert stand_in_truth[0] == real_truth[0]
    for real_block, stand_in_block in zip(real_truth[1], stand_in_truth[1]):
        assert stand_in_block == real_block
    assert stand_in_truth == real_truth
