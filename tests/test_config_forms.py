"""One value, one meaning: `LayerSync(...)` keywords, a dict, a JSON file and script flags agree on every key, and
every rejection is a `LayerSyncError` that names the key or the value."""

import argparse
import json
import math

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from layersync_hooks import LayerSync, LayerSyncConfig, LayerSyncError
from layersync_hooks.config import KEYS, SPELLINGS
from layersync_hooks.flags import from_flags

SIMPLETUNER_KEYS = {key.field: key.key for key in KEYS}  # field -> layersync_* key
BASE = {"student_block": 8, "teacher_block": 16}  # a valid pair, for the keys that do not set the blocks


def flag_text(value) -> list[str]:
    """The flag arguments that spell one value: pairs as `S:T` words, numbers as Python writes them."""
    if isinstance(value, (list, tuple)) and value and all(isinstance(v, (list, tuple, str)) for v in value):
        return [v if isinstance(v, str) else ":".join(map(str, v)) for v in value]
    return [repr(value) if isinstance(value, float) else str(value)]


def every_form(values: dict, tmp_path) -> list:
    """The config (or the error type) each form gives for the same `values` (field names), LayerSync on: keywords
    (`LayerSync(model, **values)` reads them this way), a dict of SimpleTuner's keys, a JSON file, `from_flags`
    and a script's own parser."""
    results = []

    def attempt(build):
        try:
            results.append(build())
        except LayerSyncError as error:
            results.append(type(error))

    attempt(lambda: LayerSyncConfig.from_dict({"enabled": True, **values}))
    simpletuner = {"layersync_enabled": True, **{SIMPLETUNER_KEYS[name]: value for name, value in values.items()}}
    attempt(lambda: LayerSyncConfig.from_dict(simpletuner))
    path = tmp_path / "config.json"
    path.write_text(json.dumps(simpletuner))
    attempt(lambda: LayerSyncConfig.from_json(path))
    argv = ["--layersync_enabled"]
    for name, value in values.items():  # one `--key=value` word: argparse takes a word starting with "-" for a flag
        argv.append(f"--{SIMPLETUNER_KEYS[name]}={','.join(flag_text(value))}")
    attempt(lambda: from_flags(argv))
    parser = LayerSync.add_arguments(argparse.ArgumentParser(exit_on_error=False))  # a script's own parser
    attempt(lambda: LayerSyncConfig.from_args(parse(parser, argv)))
    return results


def parse(parser: argparse.ArgumentParser, argv: list[str]) -> argparse.Namespace:
    """A script's parser: a bad value exits with argparse's usage error, counted here as a LayerSyncError."""
    try:
        return parser.parse_args(argv)
    except (argparse.ArgumentError, SystemExit) as error:
        raise LayerSyncError(str(error)) from None


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
        ({"pairs": "2:6,4:8"}, {"pairs": ((2, 6), (4, 8))}),  # a flag's comma list, as in a dict or JSON
        ({"pairs": ["2:6", "4:8"]}, {"pairs": ((2, 6), (4, 8))}),
        ({"weight": "0.5"}, {"weight": 0.5}),  # a number's text is the number, as a flag's is
        ({"weight": "1e39"}, LayerSyncError),
        ({"warmup_steps": "2"}, {"warmup_steps": 2}),
        ({"warmup_steps": "2.0"}, LayerSyncError),  # not rounded in any form
        ({"stop_step": 2.0}, LayerSyncError),
    ],
)
def test_every_key_means_the_same_in_every_form(values, expected, tmp_path):
    """Keywords, a dict, JSON, `from_flags` and a script's parsed flags give the same config or the same error."""
    full = values if "pairs" in values or "student_block" in values else {**BASE, **values}
    results = every_form(full, tmp_path)
    if expected is LayerSyncError:
        assert all(isinstance(r, type) and issubclass(r, LayerSyncError) for r in results), results
        return
    assert all(r == results[0] for r in results), results
    for name, value in expected.items():
        assert getattr(results[0], name) == value


# -- property-based: random input in every form -----------------------------------------------------------------
NAMES = sorted(SPELLINGS)
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
    fields = {SPELLINGS[str(key).lstrip("-")].field if str(key).lstrip("-") in SPELLINGS else key for key in keys}
    spellings = (
        {s for s, k in SPELLINGS.items() if k.field in fields} | {str(key) for key in keys} | {repr(k) for k in keys}
    )
    return any(s in message for s in spellings) or any(repr(v) in message or str(v) in message for v in values)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.dictionaries(st.one_of(st.sampled_from(NAMES), st.text(max_size=10)), VALUES, max_size=4))
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
        st.dictionaries(st.sampled_from(NAMES), VALUES, max_size=4).map(json.dumps),
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
    st.sampled_from([f"--{key.key}" for key in KEYS] + ["--layersync_s", "--nope", "-x"]),
    st.sampled_from(["0", "8", "-4", "0.2", "nan", "inf", "1e39", "4:12", "8:16", "8", "a.b", "x:y:z", ""]),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(FLAG_WORDS, max_size=6))
def test_random_flag_lists_are_accepted_or_refused_by_name(argv):
    """Random flag lists give a config, or a LayerSyncError naming a flag (dashes or not) or a value; argparse never
    exits."""
    try:
        from_flags(argv)
    except LayerSyncError as error:
        message = str(error)
        missing = "is missing" in message and "layersync_student_block" in message
        named = any(word.strip() and (word in message or word.lstrip("-") in message) for word in argv)
        assert missing or named or any(repr(word) in message for word in argv), (argv, message)


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
    """Whatever random values a config takes, keywords, a dict, JSON and flags give equal configs, or all refuse it."""
    results = every_form(values, tmp_path_factory.mktemp("forms"))
    kinds = [LayerSyncError if isinstance(r, type) else LayerSyncConfig for r in results]
    assert len(set(kinds)) == 1, (values, results)
    if kinds[0] is LayerSyncConfig:
        assert all(r == results[0] for r in results), (values, results)
        assert LayerSyncConfig.from_dict(results[0].to_dict()) == results[0]


# Any value a flag can spell (no None, no bool): numbers, their text, block paths, pair lists and junk.
ANY_VALUE = st.one_of(
    st.integers(-12, 24),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=8),
    st.sampled_from(["3", " 3 ", "-2", "0.5", "1e39", "2.0", "nan", "4:12", "4:12,8:16", "transformer_blocks.1", ""]),
)
ANY_PAIRS = st.one_of(
    st.sampled_from(["2:6,4:8", "2:6", "x:y:z", "4:12,", ",", "2:transformer_blocks.3"]),
    st.lists(st.tuples(st.integers(-4, 12), st.integers(-4, 12)), min_size=1, max_size=3),
    st.lists(st.sampled_from(["2:6", "4:8", "2:6,4:8", "a"]), min_size=1, max_size=3),
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    st.fixed_dictionaries(
        {},
        optional={
            **{name: ANY_VALUE for name in ("student_block", "teacher_block", "weight", "warmup_steps", "stop_step")},
            "pairs": ANY_PAIRS,
        },
    )
)
def test_any_value_means_the_same_in_every_form(tmp_path_factory, values):
    """The same value, whatever its type, gives equal configs in keywords, a dict, JSON, `from_flags` and a script's
    parser, or an error in every one of them."""
    results = every_form(values, tmp_path_factory.mktemp("forms"))
    kinds = [LayerSyncError if isinstance(r, type) else LayerSyncConfig for r in results]
    assert len(set(kinds)) == 1, (values, results)
    if kinds[0] is LayerSyncConfig:
        assert all(r == results[0] for r in results), (values, results)
