"""The config: seed keys, paper-code names, JSON, argparse, and its errors."""

import argparse
import json

import pytest

from layersync_hooks import LayerSyncConfig
from layersync_hooks.errors import LayerSyncConfigError

SEED = {"layersync_enabled": True, "layersync_student_block": 8, "layersync_teacher_block": 16, "layersync_lambda": 0.3}


def test_seed_keys():
    """The seed keys set the four fields."""
    assert LayerSyncConfig.from_dict(SEED) == LayerSyncConfig(True, 8, 16, 0.3)


@pytest.mark.parametrize(
    "student,teacher,weight",
    [
        ("encoder_depth", "gt_encoder_depth", "reg_weight"),
        ("encoder-depth", "gt-encoder-depth", "reg-weight"),
        ("--encoder-depth", "--gt-encoder-depth", "--reg-weight"),
    ],
)
def test_paper_code_names(student, teacher, weight):
    """The paper code's flag names map onto student, teacher and weight."""
    config = LayerSyncConfig.from_dict({"enabled": True, student: 4, teacher: 12, weight: 0.5})
    assert (config.pairs, config.weight) == (((4, 12),), 0.5)


def test_weight_defaults_to_paper_value():
    """Enabled without a weight gives the paper's 0.2."""
    assert LayerSyncConfig.from_dict({"layersync_enabled": True, "layersync_student_block": 8}).weight == 0.2


def test_enabled_defaults_off_with_a_warning():
    """As in SimpleTuner, `layersync_enabled` defaults to off; setting other keys without it warns."""
    with pytest.warns(UserWarning, match="layersync_enabled"):
        config = LayerSyncConfig.from_dict({"layersync_student_block": 8})
    assert not config.enabled


def test_empty_config_is_silently_off(recwarn):
    """An empty config is off without a warning (the script simply does not use LayerSync)."""
    assert not LayerSyncConfig.from_dict({}).enabled
    assert not recwarn.list


def test_disabled_config_skips_validation():
    """A disabled config may keep partial or zero values (a toggle, not an error)."""
    assert not LayerSyncConfig.from_dict({"layersync_enabled": False, "layersync_lambda": 0}).enabled


@pytest.mark.parametrize("weight", [0, 0.0, -0.1, float("nan"), float("inf"), True, "0.2"])
def test_weight_must_be_positive(weight):
    """A weight <= 0 (0 included) or not a finite number is an error, never silently 0.2."""
    with pytest.raises(
        LayerSyncConfigError, match=r"must be a number > 0 that float32 can hold \(finite, below 3.4e38\), got"
    ):
        LayerSyncConfig(student_block=8, teacher_block=16, weight=weight)


def test_student_missing():
    """Enabled without a student block names the keys to set."""
    with pytest.raises(LayerSyncConfigError, match=r"needs a student block.*layersync_student_block"):
        LayerSyncConfig.from_dict({"layersync_enabled": True, "layersync_teacher_block": 16})


@pytest.mark.parametrize("student,teacher", [(8, 8), (16, 8), (0, 1), (1, 0), (-1, -2)])
def test_teacher_must_be_deeper(student, teacher):
    """Equal or shallower teachers are rejected (0 and 1 both mean the first block)."""
    with pytest.raises(LayerSyncConfigError, match=r"must be deeper than `student_block`, got student_block"):
        LayerSyncConfig(student_block=student, teacher_block=teacher)


def test_unknown_key_lists_valid_keys():
    """A typo is an error that lists every valid key; `_comment` keys are ignored."""
    with pytest.raises(LayerSyncConfigError, match=r"Unknown LayerSync config key 'techer_block'.*layersync_lambda"):
        LayerSyncConfig.from_dict({"layersync_enabled": True, "student_block": 8, "techer_block": 16})
    assert LayerSyncConfig.from_dict({"_comment": "x", **SEED}).pairs == ((8, 16),)


def test_conflicting_aliases():
    """Two spellings of one field with different values is an error."""
    with pytest.raises(LayerSyncConfigError, match=r"both set `student_block`"):
        LayerSyncConfig.from_dict({"layersync_enabled": True, "layersync_student_block": 8, "encoder_depth": 6})


@pytest.mark.parametrize(
    "value,parsed",
    [("8", 8), ("-2", -2), (" 3 ", 3), ("transformer_blocks.3", "transformer_blocks.3"), ("\u00b9", "\u00b9"),
     ("--2", "--2")],
)  # fmt: skip
def test_block_strings(value, parsed):
    """ASCII digit strings (from CLIs, JSON) are depths; other strings, '¹' included, are block paths."""
    assert LayerSyncConfig(student_block=value, teacher_block=None).pairs == ((parsed, None),)


@pytest.mark.parametrize("value", [8.0, True, "", [8]])
def test_bad_block_types(value):
    """Floats, bools, empty strings and lists are not block references."""
    with pytest.raises(LayerSyncConfigError, match="must be a 1-based depth"):
        LayerSyncConfig(student_block=value)


def test_json_file(tmp_path):
    """A JSON file of seed keys round-trips through `to_dict`."""
    path = tmp_path / "layersync.json"
    path.write_text(json.dumps(SEED))
    config = LayerSyncConfig.from_json(path)
    assert config.to_dict() == SEED
    assert LayerSyncConfig.load(str(path)) == config
    path.write_text("[1, 2]")
    with pytest.raises(LayerSyncConfigError, match="must hold a JSON object"):
        LayerSyncConfig.from_json(path)


def test_argparse_two_lines():
    """`add_arguments` then `from_args` turns a script's flags into a config."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--learning_rate", type=float, default=1e-4)
    LayerSyncConfig.add_arguments(parser)
    args = parser.parse_args(
        [
            "--layersync_enabled",
            "--layersync_student_block",
            "8",
            "--layersync_teacher_block",
            "single_transformer_blocks.3",
            "--layersync_lambda",
            "0.1",
        ]
    )
    assert LayerSyncConfig.from_args(args) == LayerSyncConfig(True, 8, "single_transformer_blocks.3", 0.1)
    assert not LayerSyncConfig.from_args(parser.parse_args([])).enabled
    with pytest.warns(UserWarning, match="layersync_enabled"):
        assert not LayerSyncConfig.from_args(parser.parse_args(["--layersync_student_block", "8"])).enabled
    with pytest.raises(LayerSyncConfigError, match="add_arguments"):
        LayerSyncConfig.from_args(argparse.Namespace(learning_rate=1))


def test_config_is_frozen():
    """The config cannot be changed after validation."""
    config = LayerSyncConfig(student_block=8, teacher_block=16)
    with pytest.raises(AttributeError):
        config.weight = 0


def test_pairs_are_the_one_stored_form():
    """`student_block`/`teacher_block` write one pair: the config stores `pairs` only, and reading the two names
    fails loudly instead of returning a stale None."""
    config = LayerSyncConfig(student_block=8, teacher_block=16)
    assert config == LayerSyncConfig(pairs=[(8, 16)]) and config.pairs == ((8, 16),)
    with pytest.raises(AttributeError):
        _ = config.student_block
