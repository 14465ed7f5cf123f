"""One value, one meaning: `LayerSync(...)` keywords, a dict, a JSON file and script flags agree on every key, and
every rejection is a `LayerSyncError` that names the key or the value."""

import argparse
import json
import math

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from layersync_hooks import LayerSyncConfig, LayerSyncError
from layersync_hooks.config import KEY_ALIASES, OPTIONS

SEED_KEYS = {option.name: option.metadata["key"] for option in OPTIONS}  # field -> layersync_* key
BASE = {"student_block": 8, "teacher_block": 16}  # a valid pair, for the keys that do not set the blocks


def flag_text(value) -> list[str]:
    """The flag arguments that spell one value: pairs as `S:T` words, numbers as Python writes them."""
    if isinstance(value, (list, tuple)) and value and isinstance(value[0], (list, tuple)):
        return [f"{s}:{t}" for s, t in value]
    return [repr(value) if isinstance(value, float) else str(value)]


def three_forms(values: dict, tmp_path) -> list:
    """The config (or the error type) each form gives for the same `values` (field names), LayerSync on."""
    results = []

    def attempt(build):
        try:
            results.append(build())
        except LayerSyncError as error:
            results.append(type(error))

    attempt(lambda: LayerSyncConfig(enabled=True, **values))
    seed = {"layersync_enabled": True, **{SEED_KEYS[name]: value for name, value in values.items()}}
    path = tmp_path / "config.json"
    path.write_text(json.dumps(seed))
    attempt(lambda: LayerSyncConfig.from_json(path))
    argv = ["--layersync_enabled"]
    for name, value in values.items():
        argv += [f"--{SEED_KEYS[name]}", *flag_text(value)]
    attempt(lambda: LayerSyncConfig.from_flags(argv))
    parser = LayerSyncConfig.add_arguments(argparse.ArgumentParser())  # a script's own parser, then from_args
    attempt(lambda: LayerSyncConfig.from_args(parser.parse_args(argv)))
    return results


@pytest.mark.parametrize(
    "values,expected",
    [
        ({"weight": 0.0}, LayerSyncError),  # `--layersync_lambda 0` is an error, never a silent 0.2
        ({"weight": 0.5}, {"weight": 0.5}),
        ({"weight": 1e39}, LayerSyncError),  # beyond float32: an infinite term
        ({"weight": math.inf}, LayerSyncError),
        ({"weight": -0.2}, LayerSyncError),
        ({"student_block": 0, "teacher_block": 16}, {"pairs": ((0, 16),)}),  # 0 is the first block, not missing
        ({"student_block": -8, "teacher_block": -4}, {"pairs": ((-8, -4),)}),  # depths 5 and 9 of 12
        ({"student_block": -4, "teacher_block": -8}, LayerSyncError),
        ({"student_block": 8, "teacher_block": 0}, LayerSyncError),  # 0 is the first block: not deeper
        ({"student_block": "transformer_blocks.3"}, {"pairs": (("transformer_blocks.3", None),)}),
        ({"stop_step": 0}, LayerSyncError),  # `--layersync_stop_step 0` is an error, never ignored
        ({"stop_step": 5}, {"stop_step": 5}),
        ({"warmup_steps": 0}, {"warmup_steps": 0}),
        ({"warmup_steps": 3, "stop_step": 2}, LayerSyncError),
        ({"warmup_steps": -1}, LayerSyncError),
        ({"pairs": [[4, 12], [8, 16]]}, {"pairs": ((4, 12), (8, 16))}),
        ({"pairs": [[4, 12], [4, 12]]}, LayerSyncError),
    ],
)
def test_every_key_means_the_same_in_every_form(values, expected, tmp_path):
    """Keywords, JSON, `from_flags` and a script's parsed flags give the same config or the same error."""
    full = values if "pairs" in values or "student_block" in values else {**BASE, **values}
    results = three_forms(full, tmp_path)
    if expected is LayerSyncError:
        assert all(isinstance(r, type) and issubclass(r, LayerSyncError) for r in results), results
        return
    assert all(r == results[0] for r in results), results
    for name, value in expected.items():
        assert getattr(results[0], name) == value


# -- property-based: random input in every form -----------------------------------------------------------------
SPELLINGS = sorted(KEY_ALIASES)
VALUES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-60, 60),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12),
    st.sampled_from(["8", "-3", "transformer_blocks.2", "4:12", "4:12,8:16", "", " "]),
    st.lists(st.one_of(st.integers(-5, 30), st.lists(st.integers(-5, 30), max_size=3)), max_size=3),
)


def names_the_input(message: str, keys, values) -> bool:
    """Whether an error message names one of the keys given (in any spelling of its field), one of the values, or
    the key that is missing (a config that turns LayerSync on without a student)."""
    if "`student_block` (`layersync_student_block`" in message and "is missing" in message:
        return True
    fields = {KEY_ALIASES.get(str(key).lstrip("-"), key) for key in keys}
    spellings = (
        {s for s, f in KEY_ALIASES.items() if f in fields} | {str(key) for key in keys} | {repr(k) for k in keys}
    )
    return any(s in message for s in spellings) or any(repr(v) in message or str(v) in message for v in values)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.dictionaries(st.one_of(st.sampled_from(SPELLINGS), st.text(max_size=10)), VALUES, max_size=4))
def test_random_dicts_are_accepted_or_refused_by_name(config):
    """A random dict gives a config or a LayerSyncError naming an offending key or value; never another error."""
    try:
        LayerSyncConfig.from_dict(config)
    except LayerSyncError as error:
        assert names_the_input(str(error), config, config.values()), (config, str(error))


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    st.one_of(
        st.text(max_size=40),
        st.dictionaries(st.sampled_from(SPELLINGS), VALUES, max_size=4).map(json.dumps),
        st.lists(VALUES, max_size=3).map(json.dumps),
    )
)
def test_random_json_texts_are_accepted_or_refused_by_name(tmp_path_factory, text):
    """A random JSON file gives a config, or a LayerSyncError naming the file (bad JSON) or a key or value."""
    path = tmp_path_factory.mktemp("json") / "layersync.json"
    path.write_text(text)
    try:
        LayerSyncConfig.from_json(path)
    except LayerSyncError as error:
        try:
            data = json.loads(text)
        except ValueError:
            assert str(path) in str(error) and "line" in str(error), str(error)
            return
        keys, values = (data, data.values()) if isinstance(data, dict) else ([], [])
        assert str(path) in str(error) or names_the_input(str(error), keys, values), (text, str(error))


FLAG_WORDS = st.one_of(
    st.sampled_from([f"--{option.metadata['key']}" for option in OPTIONS] + ["--layersync_s", "--nope", "-x"]),
    st.sampled_from(["0", "8", "-4", "0.2", "nan", "inf", "1e39", "4:12", "8:16", "8", "a.b", "x:y:z", ""]),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(FLAG_WORDS, max_size=6))
def test_random_flag_lists_are_accepted_or_refused_by_name(argv):
    """Random flag lists give a config, or a LayerSyncError naming a flag or value; argparse never exits."""
    try:
        LayerSyncConfig.from_flags(argv)
    except LayerSyncError as error:
        missing = "is missing" in str(error) and "layersync_student_block" in str(error)
        assert missing or any((word and word in str(error)) or repr(word) in str(error) for word in argv), argv


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    st.fixed_dictionaries(
        {},
        optional={
            "student_block": st.one_of(st.integers(-12, 12), st.sampled_from(["transformer_blocks.1", "3"])),
            "teacher_block": st.integers(-12, 24),
            "weight": st.floats(1e-4, 10),
            "warmup_steps": st.integers(0, 5),
            "stop_step": st.integers(1, 10),
        },
    )
)
def test_accepted_configs_mean_the_same_in_all_forms(tmp_path_factory, values):
    """Whatever random values a config takes, keywords, JSON and flags give equal configs, or all refuse it."""
    results = three_forms(values, tmp_path_factory.mktemp("forms"))
    kinds = [r if isinstance(r, type) else LayerSyncConfig for r in results]
    assert len(set(kinds)) == 1, (values, results)
    if kinds[0] is LayerSyncConfig:
        assert all(r == results[0] for r in results), (values, results)
        assert LayerSyncConfig.from_dict(results[0].to_dict()) == results[0]
