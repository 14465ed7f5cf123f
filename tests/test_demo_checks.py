"""`layersync-hooks demo` checks every flag and path before the first step, never replaces a result silently, and
prints every mistake as `error: ...` with exit code 2, without a traceback, on every process of a launch."""

import json
import os
import subprocess
import sys

import pytest
import torch
from accelerate.state import AcceleratorState
from launch import free_port

from layersync_hooks.commands import checks
from layersync_hooks.commands.cli import main

pytestmark = pytest.mark.usefixtures("fresh_accelerate_state")  # a new Accelerator per test

ENV = {**os.environ, "OMP_NUM_THREADS": "1"}
# One tiny step: were a check missing, the run would start (and these tests fail) within seconds.
TINY = ["--steps", "1", "--batch-size", "2", "--eval-every", "1", "--report-to", "none"]


def demo(*arguments, output):
    return main(["demo", *TINY, "--output-dir", str(output), *arguments])


@pytest.mark.parametrize(
    "flag,value",
    [
        ("--steps", "0"),
        ("--steps", "ten"),
        ("--batch-size", "-2"),
        ("--gradient-accumulation-steps", "0"),
        ("--learning-rate", "nan"),
        ("--learning-rate", "inf"),
        ("--learning-rate", "0"),
        ("--learning-rate", "-1e-3"),
        ("--max-grad-norm", "-1"),
        ("--max-grad-norm", "0"),
        ("--max-grad-norm", "nan"),
        ("--eval-every", "0"),
        ("--checkpoint-every", "-1"),
        ("--seed", "-1"),
        ("--seed", "1.5"),
    ],
)
def test_bad_numbers_are_usage_errors(tmp_path, capsys, flag, value):
    """Each numeric flag is range-checked by argparse: exit 2, the flag and the value named, nothing trained."""
    with pytest.raises(SystemExit) as exited:
        demo(f"{flag}={value}", output=tmp_path)  # `=`: "-1e-3" would read as a flag
    err = capsys.readouterr().err
    assert exited.value.code == 2 and f"argument {flag}: " in err and f"got {value!r}" in err, err
    assert not (tmp_path / "layersync").exists()


def test_max_grad_norm_inf_means_no_clipping():
    """`inf` is a valid norm (clip_grad_norm_ then never scales); everything above 0 parses as given."""
    assert checks.clip_norm("inf") == float("inf") and checks.clip_norm("0.5") == 0.5
    assert checks.positive_float("3e-4") == 3e-4 and checks.seed(str(checks.MAX_SEED)) == checks.MAX_SEED


def assert_usage_error(capsys, code, *fragments):
    """Exit code 2 and one `error: ...` line naming each fragment, no traceback."""
    err = capsys.readouterr().err
    assert code == 2, err
    assert "error: " in err and "Traceback" not in err
    for fragment in fragments:
        assert fragment in err, err


def test_an_unwritable_output_dir_fails_before_the_first_step(tmp_path, capsys):
    """A folder under a file cannot be created: error at once, naming the folder, not after training."""
    (tmp_path / "file").write_text("")
    assert_usage_error(capsys, demo(output=tmp_path / "file" / "runs"), f"--output-dir {tmp_path / 'file'}")
    assert_usage_error(capsys, demo(output=tmp_path / "file"), "is a file, not a folder")
    assert "[layersync]" not in capsys.readouterr().out


def test_bad_paths_fail_before_the_first_step(tmp_path, capsys):
    """A missing or broken --config, a --resume without a state, --resume PATH with --compare: errors, no run."""
    out = tmp_path / "out"
    assert_usage_error(capsys, demo("--config", str(tmp_path / "missing.json"), output=out), "--config", "No such file")
    (tmp_path / "broken.json").write_text("{")
    assert_usage_error(
        capsys, demo("--config", str(tmp_path / "broken.json"), output=out), "--config", "not valid JSON"
    )
    (tmp_path / "off.json").write_text(json.dumps({"layersync_enabled": False}))
    assert_usage_error(capsys, demo("--config", str(tmp_path / "off.json"), output=out), "turns LayerSync off")
    assert_usage_error(capsys, demo("--resume", output=out), "--resume: no saved training state")
    assert_usage_error(capsys, demo("--resume", str(tmp_path), "--compare", output=out), "--resume", "--compare")
    old = tmp_path / "old_state"  # written by 0.1.0, which registered LayerSync as a second custom object
    old.mkdir()
    for index in (0, 1):
        torch.save({"step": 0}, old / f"custom_checkpoint_{index}.pkl")
    assert_usage_error(capsys, demo("--resume", str(old), output=out), "written by layersync-hooks 0.1", "--overwrite")
    assert_usage_error(capsys, demo("--report-to", "tensorbored", output=out), "--report-to 'tensorbored'")
    assert not out.exists()


def fake_results(run_dir):
    """An earlier run's files, without training one."""
    run_dir.mkdir(parents=True)
    (run_dir / "metrics.json").write_text('{"earlier": true}')
    return run_dir


def test_earlier_results_are_never_replaced_silently(tmp_path, capsys):
    """A folder with an earlier run refuses a new run (and --compare one with an earlier comparison)."""
    fake_results(tmp_path / "layersync")
    assert_usage_error(
        capsys, demo(output=tmp_path), f"{tmp_path / 'layersync'}: metrics.json", "--overwrite", "--resume"
    )
    assert json.loads((tmp_path / "layersync" / "metrics.json").read_text()) == {"earlier": True}
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "compare.json").write_text("{}")
    assert_usage_error(capsys, demo("--compare", output=tmp_path / "other"), "compare.json")
    assert demo("--overwrite", "--resume", output=tmp_path) == 2  # --overwrite would delete what --resume continues
    assert "pass --resume to continue it, or --overwrite" in capsys.readouterr().err


@pytest.mark.slow
def test_overwrite_replaces_and_resume_continues(tmp_path, capsys, one_thread):
    """--overwrite deletes the earlier run's files (a stale log too) and trains anew, leaving other files alone;
    --resume continues the run in place; a state already at --steps is refused."""
    run_dir = fake_results(tmp_path / "layersync")
    (run_dir / "tensorboard").mkdir()
    (run_dir / "tensorboard" / "events.old").write_text("")
    (tmp_path / "notes.txt").write_text("mine")
    assert demo("--overwrite", output=tmp_path) == 0
    summary = json.loads((run_dir / "metrics.json").read_text())
    assert summary["steps"] == 1 and not (run_dir / "tensorboard").exists()
    assert (tmp_path / "notes.txt").read_text() == "mine"
    assert demo("--resume", output=tmp_path) == 2
    assert "already at step 1; pass --steps larger than 1" in capsys.readouterr().err
    AcceleratorState._reset_state(True)
    assert main(["demo", *TINY, "--steps", "2", "--resume", "--output-dir", str(tmp_path)]) == 0
    assert json.loads((run_dir / "metrics.json").read_text())["steps"] == 2


def test_one_process_refusing_stops_every_process(tmp_path, capsys, monkeypatch):
    """When another process of a launch refuses, this one raises that process's error and does not train."""
    monkeypatch.setattr(checks, "_gather", lambda problem: [problem, "--output-dir x is a file (on rank 1)."])
    assert_usage_error(capsys, demo(output=tmp_path), "on rank 1")
    assert not (tmp_path / "layersync" / "metrics.json").exists() and "[layersync]" not in capsys.readouterr().out


def test_the_command_line_prints_no_traceback(tmp_path):
    """`python -m layersync_hooks demo` with an unwritable folder: `error: ...`, exit 2, no traceback."""
    (tmp_path / "file").write_text("")
    command = [sys.executable, "-m", "layersync_hooks", "demo", *TINY, "--output-dir", str(tmp_path / "file" / "x")]
    done = subprocess.run(command, env=ENV, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "error: --output-dir" in done.stderr, done.stderr
    assert "Traceback" not in done.stderr


@pytest.mark.slow
def test_every_process_of_a_launch_refuses(tmp_path):
    """`accelerate launch --num_processes 2` into a folder with an earlier run: both ranks print the error, exit
    with 2, and neither trains."""
    fake_results(tmp_path / "layersync")
    command = [
        *(sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2"),
        *("--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no"),
        *("--main_process_port", str(free_port()), "-m", "layersync_hooks", "demo", *TINY),
        *("--output-dir", str(tmp_path)),
    ]
    done = subprocess.run(command, env={**ENV, "ACCELERATE_USE_CPU": "1"}, capture_output=True, text=True, timeout=300)
    assert done.returncode != 0
    assert done.stderr.count("error: --output-dir") == 2, done.stderr[-3000:]
    assert "[layersync]" not in done.stdout
    assert json.loads((tmp_path / "layersync" / "metrics.json").read_text()) == {"earlier": True}
