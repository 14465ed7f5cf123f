"""Several student/teacher pairs, and the weight schedule (warm-up, stop step) counted in optimizer steps."""

import argparse
import json

import pytest
import torch
from accelerate import Accelerator
from helpers import hook_count
from tiny_models import build, prediction

from layersync_hooks import LayerSync, LayerSyncConfig, LayerSyncError
from layersync_hooks.errors import LayerSyncConfigError
from layersync_hooks.schedule import WeightSchedule

pytestmark = pytest.mark.usefixtures("fresh_accelerate_state")  # a new Accelerator per test


@pytest.mark.parametrize(
    "spelling",
    [
        dict(pairs=[(8, 16)]),
        dict(pairs=[[8, 16]]),
        dict(pairs=["8:16"]),
        dict(pairs="8:16"),
        dict(student_block=8, teacher_block=16, pairs=[(8, 16)]),
        dict(student_block="8", teacher_block="16"),
    ],
)
def test_one_pair_is_the_single_spelling(spelling):
    """A one-pair list and student/teacher are two spellings of the same config."""
    assert LayerSyncConfig.from_dict(spelling) == LayerSyncConfig(pairs=[(8, 16)])


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(pairs=[(4, 12), (8, 16)], student_block=8), r"`pairs=\[\(4, 12\), \(8, 16\)\]` and `student_block=8`"),
        (dict(pairs=[(8, 16)], student_block=8, teacher_block=12), r"both set the blocks; keep one"),
        (dict(pairs=(8, 16)), r"must be \(student, teacher\).*got 8 in \(8, 16\)"),
        (dict(pairs=[(8, 16, 24)]), r"must be \(student, teacher\).*got \(8, 16, 24\)"),
        (dict(pairs=[(None, 16)]), r"must be \(student, teacher\)"),
        (dict(pairs="4:12,x"), r"must be \(student, teacher\).*got 'x' in '4:12,x'"),
        (dict(pairs=[(4, 12), (4, 12)]), r"lists a pair twice"),
        (dict(pairs=[(4, 12), (16, 8)]), r"teacher_block` must be deeper.*student_block=16, teacher_block=8"),
        (dict(student_block=8, warmup_steps=-1), r"`warmup_steps` must be an integer >= 0, got -1"),
        (dict(student_block=8, stop_step=0), r"`stop_step` must be an integer >= 1, got 0"),
        (dict(student_block=8, stop_step=2.5), r"`stop_step` must be an integer, got 2.5"),
        (dict(student_block=8, stop_step="3.0"), r"`stop_step` must be an integer, got '3.0'"),
        (
            dict(student_block=8, warmup_steps=100, stop_step=50),
            r"`stop_step=50` comes before the end of `warmup_steps",
        ),
    ],
)
def test_bad_pairs_and_schedules(kwargs, match):
    """Inconsistent spellings, malformed or repeated pairs and impossible schedules are errors naming the values."""
    with pytest.raises(LayerSyncConfigError, match=match):
        LayerSyncConfig.from_dict(kwargs)


def test_simpletuner_style_keys_json_and_flags(tmp_path):
    """`layersync_pairs`, `layersync_warmup_steps`, `layersync_stop_step` work from JSON and argparse flags."""
    keys = {
        "layersync_enabled": True,
        "layersync_pairs": [[4, 12], [8, "single_transformer_blocks.3"]],
        "layersync_lambda": 0.1,
        "layersync_warmup_steps": 500,
        "layersync_stop_step": 40000,
    }
    expected = LayerSyncConfig(
        pairs=[(4, 12), (8, "single_transformer_blocks.3")], weight=0.1, warmup_steps=500, stop_step=40000
    )
    path = tmp_path / "layersync.json"
    path.write_text(json.dumps(keys))
    assert LayerSyncConfig.from_json(path) == expected and expected.to_dict() == keys
    parser = LayerSync.add_arguments(argparse.ArgumentParser())
    args = parser.parse_args(
        [
            "--layersync_enabled",
            "--layersync_pairs",
            "4:12",
            "8:single_transformer_blocks.3",
            "--layersync_lambda",
            "0.1",
            "--layersync_warmup_steps",
            "500",
            "--layersync_stop_step",
            "40000",
        ]
    )
    assert LayerSyncConfig.from_args(args) == expected


def test_every_pair_counts_as_the_mean():
    """Two pairs give the mean of the two single-pair terms, in value and gradient (not the last pair only)."""
    model, inputs = build("Sana")
    both = LayerSync(model, pairs=[(1, 3), (2, 4)], weight=0.2)
    first = LayerSync(model, student_block=1, teacher_block=3)
    second = LayerSync(model, student_block=2, teacher_block=4)
    prediction(model, inputs)
    terms = {name: ls.loss() for name, ls in (("both", both), ("first", first), ("second", second))}
    gradients = {}
    for name, term in terms.items():
        model.zero_grad()
        term.backward(retain_graph=True)
        gradients[name] = torch.cat(
            [(p.grad if p.grad is not None else torch.zeros_like(p)).flatten() for p in model.parameters()]
        )
    assert abs(terms["first"].item() - terms["second"].item()) > 1e-2, "the two pairs must differ to tell them apart"
    torch.testing.assert_close(terms["both"], (terms["first"] + terms["second"]) / 2)
    torch.testing.assert_close(gradients["both"], (gradients["first"] + gradients["second"]) / 2)
    metrics = both.metrics()
    assert set(metrics) == {
        "layersync_loss",
        "layersync_similarity",
        "layersync_similarity/1-3",
        "layersync_similarity/2-4",
    }
    assert metrics["layersync_similarity/1-3"] == pytest.approx(first.metrics()["layersync_similarity"], abs=1e-6)
    assert metrics["layersync_similarity/2-4"] == pytest.approx(second.metrics()["layersync_similarity"], abs=1e-6)
    assert metrics["layersync_loss"] == pytest.approx(-0.2 * metrics["layersync_similarity"], rel=1e-6)


@pytest.mark.parametrize(
    "warmup,stop,expected",
    [
        (0, None, [0.2, 0.2, 0.2, 0.2, 0.2]),
        (4, None, [0.05, 0.1, 0.15, 0.2, 0.2]),
        (0, 3, [0.2, 0.2, 0.2, 0.0, 0.0]),
        (2, 4, [0.1, 0.2, 0.2, 0.2, 0.0]),
    ],
)
def test_weight_schedule(warmup, stop, expected):
    """Constant, linear warm-up from weight/N at step 0, and 0 from the stop step on."""
    schedule = WeightSchedule(0.2, warmup_steps=warmup, stop_step=stop)
    assert [schedule.at(step) for step in range(5)] == pytest.approx(expected)


def test_warmup_counts_optimizer_steps_under_accumulation():
    """With 2 micro-batches per optimizer step, both get the same weight and the step advances once."""
    accelerator = Accelerator(gradient_accumulation_steps=2, cpu=True)
    model, inputs = build("PixArt")
    layersync = LayerSync(model, student_block=1, teacher_block=3, weight=0.2, warmup_steps=4)
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3)
    model, optimizer = accelerator.prepare(model, optimizer)
    ratios, steps = [], []
    for _ in range(6):
        with accelerator.accumulate(model):
            prediction(model, inputs)
            term = layersync.loss()
            ratios.append(term.item() / layersync.metrics()["layersync_similarity"])
            steps.append(layersync.step)
            accelerator.backward(term)
            optimizer.step()
            optimizer.zero_grad()
    assert ratios == pytest.approx([-0.05, -0.05, -0.1, -0.1, -0.15, -0.15], rel=1e-5)
    assert steps == [0, 1, 1, 2, 2, 3]
    assert layersync.state_dict()["step"] == 3


def test_stop_step_detaches_and_resuming_past_it_does_not_reattach():
    """After `stop_step` optimizer steps the hooks are gone and loss() is 0; a resumed run stays stopped."""
    model, inputs = build("PixArt")
    layersync = LayerSync(model, pairs=[(1, 3), (2, 4)], stop_step=2)
    for _ in range(2):
        prediction(model, inputs)
        assert layersync.loss().item() != 0
    assert layersync.stopped and hook_count(model) == 0 and "stopped" in repr(layersync)
    prediction(model, inputs)
    assert layersync.loss().item() == 0 and layersync.loss().item() == 0  # no error, every call
    assert set(layersync.metrics()) >= {"layersync_similarity/1-3"} and layersync.metrics() == {}
    state = layersync.state_dict()
    assert state["step"] == 4 and state["pairs"] == [
        ["transformer_blocks.0", "transformer_blocks.2"],
        ["transformer_blocks.1", "transformer_blocks.3"],
    ]

    resumed = LayerSync(model, pairs=[(1, 3), (2, 4)], stop_step=2)
    assert hook_count(model) > 0
    resumed.load_state_dict(state)
    assert resumed.stopped and hook_count(model) == 0
    prediction(model, inputs)
    assert resumed.loss().item() == 0
    resumed.load_state_dict({**state, "step": 1})  # an earlier checkpoint: aligning again
    assert not resumed.stopped and hook_count(model) > 0
    prediction(model, inputs)
    assert resumed.loss().item() != 0


def test_remove_is_not_a_stop():
    """After remove() (no stop step reached) loss() still says the hooks are gone."""
    model, inputs = build("PixArt")
    layersync = LayerSync(model, student_block=1, teacher_block=3, stop_step=10)
    layersync.remove()
    prediction(model, inputs)
    with pytest.raises(LayerSyncError, match=r"after `remove\(\)`"):
        layersync.loss()
