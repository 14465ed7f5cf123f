"""`layersync-hooks probe` checks every flag and path before the model loads, refuses the classes the layout table
refuses (with the reason), never replaces a report silently, and prints `error: ...` with exit code 2."""

import json
import os
import subprocess
import sys

import diffusers
import pytest
import torch
from helpers import save_tiny
from tiny_models import REFUSED

from layersync_hooks.commands.cli import main

SMALL = ["--height", "8", "--width", "8", "--noise-levels", "0.5"]


@pytest.mark.parametrize(
    "flag,value",
    [
        ("--height", "0"),
        ("--width", "-8"),
        ("--frames", "0"),
        ("--text-tokens", "0"),
        ("--batch-size", "0"),
        ("--repeats", "0"),
        ("--cka-tokens", "1"),
        ("--top", "0"),
        ("--top", "two"),
        ("--noise-levels", "0"),
        ("--noise-levels", "1"),
        ("--noise-levels", "nan"),
        ("--noise-levels", "-0.5"),
        ("--seed", "-1"),
        ("--device", "gpu0"),
    ],
)
def test_bad_numbers_are_usage_errors(tmp_path, capsys, flag, value):
    """Each numeric flag is range-checked by argparse: exit 2, naming the flag and the value."""
    folder = save_tiny(tmp_path / "pixart", "PixArt")
    with pytest.raises(SystemExit) as exited:
        main(["probe", str(folder), "--output-dir", str(tmp_path / "out"), *SMALL, f"{flag}={value}"])
    err = capsys.readouterr().err
    assert exited.value.code == 2 and f"argument {flag}: " in err and f"got {value!r}" in err, err
    assert not (tmp_path / "out").exists()


def assert_usage_error(capsys, code, *fragments):
    """Exit code 2, `error: ...` naming each fragment, no traceback, and no forward run."""
    captured = capsys.readouterr()
    assert code == 2, captured.err
    assert "error: " in captured.err and "Traceback" not in captured.err
    assert "Probing" not in captured.out
    for fragment in fragments:
        assert fragment in captured.err, captured.err


@pytest.mark.parametrize(
    "class_name,reason", [("Cosmos3OmniTransformer", "no batch axis"), ("StableCascadeUNet", "run several times")]
)
def test_a_refused_class_is_reported_with_the_reason(tmp_path, capsys, class_name, reason):
    """The probe says why the layout table refuses the class, not that it has no input builder."""
    getattr(diffusers, class_name)(**REFUSED[class_name]).save_pretrained(tmp_path / "model")
    code = main(["probe", str(tmp_path / "model"), "--output-dir", str(tmp_path / "out")])
    assert_usage_error(capsys, code, f"cannot align the image tokens of `{class_name}`: ", reason)
    assert not (tmp_path / "out" / "similarity.json").exists()


def test_bad_paths_fail_before_the_model_loads(tmp_path, capsys):
    """An output folder under a file, a missing or foreign --inputs file, a model path without a config."""
    folder = save_tiny(tmp_path / "pixart", "PixArt")
    (tmp_path / "file").write_text("")
    code = main(["probe", str(folder), *SMALL, "--output-dir", str(tmp_path / "file" / "out")])
    assert_usage_error(capsys, code, f"--output-dir {tmp_path / 'file' / 'out'} cannot be written")
    code = main(["probe", str(folder), *SMALL, "--inputs", str(tmp_path / "missing.safetensors")])
    assert_usage_error(capsys, code, "--inputs", "missing.safetensors")
    code = main(["probe", str(folder), *SMALL, "--inputs", str(folder / "config.json")])
    assert_usage_error(capsys, code, "cannot be read as a safetensors file", "save_forward_kwargs")
    assert_usage_error(capsys, main(["probe", str(tmp_path / "nowhere")]), "No diffusers model config")


def test_sizes_must_tile_the_patches(tmp_path, capsys):
    """--height 7 for a model with 2x2 patches is refused with the next multiple, before any forward."""
    folder = save_tiny(tmp_path / "pixart", "PixArt")
    code = main(["probe", str(folder), *SMALL, "--height", "7", "--output-dir", str(tmp_path / "out")])
    assert_usage_error(capsys, code, "--height 7 is not a multiple of PixArtTransformer2DModel's patch size 2", "8")


@pytest.mark.skipif(torch.cuda.device_count() > 7, reason="this machine has a cuda:7")
def test_a_missing_device_is_refused(tmp_path, capsys):
    """--device cuda:7 where there is no such GPU: a clear error before loading anything onto it."""
    folder = save_tiny(tmp_path / "pixart", "PixArt")
    assert_usage_error(capsys, main(["probe", str(folder), "--device", "cuda:7"]), "--device cuda:7: this machine has")


def test_an_earlier_report_needs_overwrite(tmp_path, capsys):
    """A second probe into the same folder refuses and keeps the report; --overwrite replaces it."""
    folder = save_tiny(tmp_path / "pixart", "PixArt")
    out = tmp_path / "out"
    assert main(["probe", str(folder), *SMALL, "--output-dir", str(out)]) == 0
    first = (out / "similarity.json").read_text()
    capsys.readouterr()
    code = main(["probe", str(folder), *SMALL, "--noise-levels", "0.3", "--output-dir", str(out)])
    assert_usage_error(capsys, code, f"--output-dir {out} already holds an earlier probe report", "--overwrite")
    assert (out / "similarity.json").read_text() == first
    assert main(["probe", str(folder), *SMALL, "--noise-levels", "0.3", "--output-dir", str(out), "--overwrite"]) == 0
    assert json.loads((out / "similarity.json").read_text())["noise_levels"] == [0.3]


def test_the_command_line_prints_no_traceback(tmp_path):
    """`python -m layersync_hooks probe` with a refused class: `error: ...` with the reason, exit 2, no traceback."""
    diffusers.Cosmos3OmniTransformer(**REFUSED["Cosmos3OmniTransformer"]).save_config(tmp_path / "model")
    command = [sys.executable, "-m", "layersync_hooks", "probe", str(tmp_path / "model"), "--output-dir", str(tmp_path)]
    done = subprocess.run(command, env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True)
    assert done.returncode == 2 and "error: LayerSync cannot align" in done.stderr and "no batch axis" in done.stderr
    assert "Traceback" not in done.stderr
