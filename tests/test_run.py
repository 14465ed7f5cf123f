"""`layersync-hooks run`: an unmodified accelerate script trained through the runner ends exactly where the same
script with the README's lines added by hand ends; its state, logs and errors behave as a user expects."""

import json
import re
import runpy
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from launch import CPU_ENV, two_processes
from safetensors.torch import load_file

from layersync_hooks.commands.cli import main
from layersync_hooks.errors import UsageError
from layersync_hooks.integrations import AutoAttach
from layersync_hooks.integrations.accelerate import METRICS_FILE

pytestmark = pytest.mark.usefixtures("fresh_accelerate_state")  # a new Accelerator per test

SCRIPT = Path(__file__).parent / "scripts" / "accelerate_train.py"
PAIR = ["--layersync_student_block", "1", "--layersync_teacher_block", "3"]
CASES = {
    "accumulation": ["--gradient_accumulation_steps", "2"],
    "bf16": ["--mixed_precision", "bf16"],
    "wrapper": ["--wrap", "--model", "Flux"],  # a training module holding Flux, whose token rule reads img_ids
    "fp16 + loss scaler": ["--mixed_precision", "fp16", "--cpu_grad_scaler"],
}


def script(out, *args):
    """Run the script in this process as `python accelerate_train.py ...` would."""
    saved = sys.argv
    sys.argv = [str(SCRIPT), "--output_dir", str(out), *args]
    try:
        runpy.run_path(str(SCRIPT), run_name="__main__")
    finally:
        sys.argv = saved


def runner(out, *args, options=()):
    """`layersync-hooks run PAIR options -- accelerate_train.py --output_dir out args`, in this process."""
    return main(["run", *PAIR, *options, "--", str(SCRIPT), "--output_dir", str(out), *args])


def params(out):
    return load_file(Path(out) / "params.safetensors")


def assert_same(a, b, atol=1e-6):
    assert a.keys() == b.keys()
    for name in a:
        torch.testing.assert_close(a[name], b[name], atol=atol, rtol=0, msg=name)


def differs(a, b):
    return any(not torch.allclose(a[name], b[name], atol=1e-6, rtol=0) for name in a)


@pytest.mark.parametrize("case", CASES, ids=list(CASES))
def test_runner_equals_the_hand_edited_script(case, tmp_path):
    """Through the runner, the unmodified script ends with the parameters of the README-edited one (1e-6); without
    LayerSync it ends elsewhere, so the equality is LayerSync's term, applied identically (for fp16: scaled and
    unscaled with the task loss)."""
    args = CASES[case]
    script(tmp_path / "edited", "--layersync_enabled", *PAIR, *args)
    assert runner(tmp_path / "runner", *args) == 0
    script(tmp_path / "plain", *args)
    assert_same(params(tmp_path / "runner"), params(tmp_path / "edited"))
    assert differs(params(tmp_path / "runner"), params(tmp_path / "plain"))


def test_metrics_join_the_scripts_log_and_the_runners_file(tmp_path, capsys):
    """The script's accelerator.log calls carry LayerSync's metrics on its own steps; the runner also writes its
    own report file (main process) and line, with LayerSync's optimizer step."""
    assert runner(tmp_path, "--max_train_steps", "4", options=["--report-every", "2"]) == 0
    logs = [json.loads(line) for line in (tmp_path / "logs.jsonl").read_text().splitlines()]
    assert [row["step"] for row in logs] == [1, 2, 3, 4]
    assert all(-1 <= row["layersync_similarity"] <= 1 and row["layersync_loss"] < 0 for row in logs)
    report = [json.loads(line) for line in (tmp_path / METRICS_FILE).read_text().splitlines()]
    assert [row["layersync_step"] for row in report] == [2, 4]
    assert report[-1]["layersync_similarity"] == pytest.approx(
        (logs[2]["layersync_similarity"] + logs[3]["layersync_similarity"]) / 2, rel=1e-5
    )
    assert "layersync step 4: layersync_loss" in capsys.readouterr().out


def test_state_resumes_with_layersync_step_and_from_a_checkpoint_written_without_it(tmp_path):
    """A checkpoint written under the runner resumes with LayerSync's step (a warm-up makes it matter: 2 + 2 steps
    equal 4 straight); one written by the plain script resumes under the runner, LayerSync from step 0."""
    warmup = ["--layersync_warmup_steps", "4"]
    assert runner(tmp_path / "straight", "--max_train_steps", "4", options=warmup) == 0
    assert runner(tmp_path / "resumed", "--max_train_steps", "2", "--checkpointing_steps", "2", options=warmup) == 0
    saved = json.loads((tmp_path / "resumed" / "checkpoint-2" / "layersync_state.json").read_text())
    assert saved["step"] == 2
    assert runner(tmp_path / "resumed", "--max_train_steps", "4", "--resume_from_checkpoint", "latest",
                  options=warmup) == 0  # fmt: skip
    assert_same(params(tmp_path / "resumed"), params(tmp_path / "straight"))
    script(tmp_path / "mixed", "--max_train_steps", "2", "--checkpointing_steps", "2")  # no LayerSync at all
    assert not (tmp_path / "mixed" / "checkpoint-2" / "layersync_state.json").exists()
    assert runner(tmp_path / "mixed", "--max_train_steps", "4", "--resume_from_checkpoint", "latest") == 0
    report = [json.loads(line) for line in (tmp_path / "mixed" / METRICS_FILE).read_text().splitlines()]
    assert report[-1]["layersync_step"] == 2  # two steps under the runner, from 0


def test_everything_accelerate_had_is_restored(tmp_path):
    """After the run every wrapped Accelerator method is the original again and no hook remains."""
    import accelerate

    before = {name: accelerate.Accelerator.__dict__[name] for name in ("prepare", "prepare_model", "backward", "log")}
    assert runner(tmp_path, "--max_train_steps", "1") == 0
    assert all(accelerate.Accelerator.__dict__[name] is original for name, original in before.items())


@pytest.mark.parametrize(
    "args,code,message",
    [
        (["--prepare", "two_models"], 2, r"error: LayerSync found several models .*PixArt.*Flux.*--module"),
        (["--prepare", "no_model"], 2, r"error: The script started training, but none of the modules it prepared"),
        (["--prepare", "nothing"], 2, r"error: The training script finished, but LayerSync never ran"),
        (["--fail_at_step", "1"], 1, r"Traceback .*accelerate_train.py.*ValueError: the script failed at step 1"),
        (["--no_such_flag"], 2, r"usage: accelerate_train.py .*unrecognized arguments: --no_such_flag"),
    ],
    ids=["two candidates", "no candidate", "no accelerator", "script raises", "script usage error"],
)
def test_bad_runs_say_why_with_the_scripts_exit_code(tmp_path, capsys, args, code, message):
    """Each bad run ends with a clear message and the right exit code; a script's own traceback or usage error is
    printed as `python script.py` prints it (no runner frames)."""
    assert runner(tmp_path, *args) == code
    err = capsys.readouterr().err
    assert re.search(message, err, flags=re.S), err
    assert "runpy" not in err and "layersync_hooks/commands" not in err


def test_module_names_the_model_to_align(tmp_path):
    """With two candidates, `--module` picks one by class name (or by its path inside a prepared module)."""
    assert runner(tmp_path / "class", "--prepare", "two_models", options=["--module", "PixArtTransformer2DModel"]) == 0
    assert runner(tmp_path / "path", "--wrap", options=["--module", "transformer"]) == 0


@pytest.mark.parametrize(
    "argv,message",
    [
        (["run", *PAIR], "No training script: put it after `--`"),
        (["run", *PAIR, "--", "missing.py"], "No training script 'missing.py'"),
        (["run", "--", "x.py"], "Nothing for LayerSync to add"),
        (["run", "--layersync_lambda", "0", *PAIR, "--", str(SCRIPT)], "weight"),
        (["run", "--config", "no_such_preset", "--", str(SCRIPT)], "preset name"),
        (["run", *PAIR, "--metrics-file", "/dev/null/m.jsonl", "--", str(SCRIPT)], "metrics file /dev/null/m.jsonl"),
        (["run", *PAIR, "--metrics-file", ".", "--", str(SCRIPT)], "IsADirectoryError"),
    ],
)
def test_runner_arguments_are_checked_before_the_script_runs(argv, message, capsys):
    """Bad runner arguments fail with `error: ...` and exit code 2 before the script starts."""
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err, err


def test_an_unwritable_metrics_file_fails_at_attach_not_at_the_first_report(tmp_path):
    """From Python, a metrics file that cannot be written stops the script at `prepare`, before any step."""
    with pytest.raises(UsageError, match="cannot write its metrics file .*--metrics-file"):
        with AutoAttach({"layersync_student_block": 1, "layersync_teacher_block": 3}, metrics_file="/dev/null/m"):
            script(tmp_path, "--max_train_steps", "1")
    assert not (tmp_path / "params.safetensors").exists()


def launch(out, *args, runner_args=None):
    """`accelerate launch` with 2 CPU processes, of the script or of the runner around it."""
    command = two_processes()
    if runner_args is not None:
        command += ["-m", "layersync_hooks", "run", *runner_args, "--"]
    command += [str(SCRIPT), "--output_dir", str(out), *args]
    done = subprocess.run(command, env=CPU_ENV, capture_output=True, text=True, timeout=300)  # a hang fails here
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]


@pytest.mark.slow
def test_two_processes_runner_equals_the_hand_edited_script(tmp_path):
    """On 2 CPU processes (DDP, gloo), with accumulation and a script that logs on the main process only, the runner
    ends with the hand-edited script's parameters, and nothing hangs."""
    args = ["--gradient_accumulation_steps", "2", "--log_main_only"]
    launch(tmp_path / "edited", "--layersync_enabled", *PAIR, *args)
    launch(tmp_path / "runner", *args, runner_args=PAIR)
    assert_same(params(tmp_path / "runner"), params(tmp_path / "edited"))
    logs = [json.loads(line) for line in (tmp_path / "runner" / "logs.jsonl").read_text().splitlines()]
    assert len(logs) == 4 and all("layersync_similarity" in row for row in logs)
