"""The config: SimpleTuner's keys, the paper code's names, JSON, argparse, and its errors."""

import argparse
import json
import re

import pytest

from layersync_hooks import LayerSync, LayerSyncConfig
from layersync_hooks.errors import LayerSyncConfigError

SIMPLETUNER = {
    "layersync_enabled": True,
    "layersync_student_block": 8,
    "layersync_teacher_block": 16,
    "layersync_lambda": 0.3,
}


def test_simpletuner_keys():
    """SimpleTuner's keys set the fields; the one pair is stored as `pairs` and read back by name."""
    config = LayerSyncConfig.from_dict(SIMPLETUNER)
    assert config == LayerSyncConfig(True, ((8, 16),), 0.3)
    assert (config.student_block, config.teacher_block) == (8, 16)


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


@pytest.mark.parametrize("weight", [0, 0.0, -0.1, float("nan"), float("inf"), True, "0.2", "0", "-1"])
def test_weight_must_be_positive(weight):
    """A weight <= 0 (0 included) or not a finite number is an error, never silently 0.2; the dataclass takes
    numbers only."""
    with pytest.raises(
        LayerSyncConfigError, match=r"must be a number > 0 that float32 can hold \(finite, below 3.4e38\), got"
    ):
        LayerSyncConfig(pairs=[(8, 16)], weight=weight)


@pytest.mark.parametrize("weight,read", [("0.2", 0.2), ("1e-3", 1e-3), (2, 2)])
def test_weight_text_means_its_number_in_a_dict(weight, read):
    """In a dict (a flag's text, a hand-written JSON), a number's text is that number, as it is for a flag."""
    assert LayerSyncConfig.from_dict({"student_block": 8, "weight": weight}).weight == read


@pytest.mark.parametrize("weight", ["0", "-1", "x", "", None, [0.2]])
def test_bad_weight_text_is_refused_naming_it(weight):
    """A dict value that is not a positive number is an error that shows the value as given."""
    with pytest.raises(LayerSyncConfigError, match=re.escape(repr(float(weight))) if weight in ("0", "-1") else
                       re.escape(repr(weight))):  # fmt: skip
        LayerSyncConfig.from_dict({"enabled": True, "student_block": 8, "layersync_lambda": weight})


def test_student_missing():
    """Enabled without a student block names the keys to set."""
    with pytest.raises(LayerSyncConfigError, match=r"needs a student block.*layersync_student_block"):
        LayerSyncConfig.from_dict({"layersync_enabled": True, "layersync_teacher_block": 16})


@pytest.mark.parametrize("student,teacher", [(8, 8), (16, 8), (0, 1), (1, 0), (-1, -2)])
def test_teacher_must_be_deeper(student, teacher):
    """Equal or shallower teachers are rejected (0 and 1 both mean the first block)."""
    with pytest.raises(LayerSyncConfigError, match=r"must be deeper than `student_block`, got student_block"):
        LayerSyncConfig(pairs=[(student, teacher)])


def test_unknown_key_lists_valid_keys():
    """A typo is an error that lists every valid key; `_comment` keys are ignored."""
    with pytest.raises(LayerSyncConfigError, match=r"Unknown LayerSync config key 'techer_block'.*layersync_lambda"):
        LayerSyncConfig.from_dict({"layersync_enabled": True, "student_block": 8, "techer_block": 16})
    assert LayerSyncConfig.from_dict({"_comment": "x", **SIMPLETUNER}).pairs == ((8, 16),)


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
    assert LayerSyncConfig(pairs=[(value, None)]).pairs == ((parsed, None),)
    assert LayerSyncConfig.from_dict({"student_block": value}).pairs == ((parsed, None),)


@pytest.mark.parametrize("value", [8.0, True, "", [8]])
def test_bad_block_types(value):
    """Floats, bools, empty strings and lists are not block references."""
    with pytest.raises(LayerSyncConfigError, match="must be a 1-based depth"):
        LayerSyncConfig.from_dict({"student_block": value})


def test_json_file(tmp_path):
    """A JSON file of SimpleTuner's keys round-trips through `to_dict`."""
    path = tmp_path / "layersync.json"
    path.write_text(json.dumps(SIMPLETUNER))
    config = LayerSyncConfig.from_json(path)
    assert config.to_dict() == SIMPLETUNER
    assert LayerSyncConfig.load(str(path)) == config
    path.write_text("[1, 2]")
    with pytest.raises(LayerSyncConfigError, match="must hold a JSON object"):
        LayerSyncConfig.from_json(path)


def test_argparse_two_lines():
    """`add_arguments` then `from_args` turns a script's flags into a config."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--learning_rate", type=float, default=1e-4)
    LayerSync.add_arguments(parser)
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
    assert LayerSyncConfig.from_args(args) == LayerSyncConfig(True, ((8, "single_transformer_blocks.3"),), 0.1)
    assert not LayerSyncConfig.from_args(parser.parse_args([])).enabled
    with pytest.warns(UserWarning, match="layersync_enabled"):
        assert not LayerSyncConfig.from_args(parser.parse_args(["--layersync_student_block", "8"])).enabled
    with pytest.raises(LayerSyncConfigError, match="add_arguments"):
        LayerSyncConfig.from_args(argparse.Namespace(learning_rate=1))


def test_pairs_are_the_one_stored_form():
    """`student_block`/`teacher_block` write one pair: the config stores `pairs`, and the two names read its first
    pair back (None without pairs), whatever form set it."""
    config = LayerSyncConfig.from_dict({"student_block": 8, "teacher_block": 16})
    assert config == LayerSyncConfig(pairs=[(8, 16)]) and config.pairs == ((8, 16),)
    assert (config.student_block, config.teacher_block) == (8, 16)
    several = LayerSyncConfig(pairs=[(4, 12), (8, None)])
    assert (several.student_block, several.teacher_block) == (4, 12)
    assert LayerSyncConfig(enabled=False).student_block is None


def test_keywords_over_a_config():
    """`updated` puts keys of any spelling over a config; blocks given replace all of its blocks."""
    config = LayerSyncConfig(pairs=[(4, 12), (8, 16)], weight=0.1, warmup_steps=3)
    assert config.updated({"layersync_lambda": "0.5"}) == LayerSyncConfig(pairs=[(4, 12), (8, 16)], weight=0.5,
                                                                           warmup_steps=3)  # fmt: skip
    assert config.updated({"student_block": 2}).pairs == ((2, None),)
    assert config.updated({"encoder-depth": 2, "gt-encoder-depth": 6}).pairs == ((2, 6),)
