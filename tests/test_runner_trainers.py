"""`layersync-hooks run` in the trainers' own loops: each stand-in of tests/scripts/trainers/ (musubi-tuner's,
kohya sd-scripts' and ai-toolkit's accelerate usage) trained unmodified under the runner ends with the LoRA of the same
stand-in edited as the README says (`--hand_edit`), to 1e-6, on one and two processes; the metrics appear where the
trainer shows its own; a checkpoint resumes both ways. tests/with_trainers/ does the same with the real scripts."""

import json
import os
import subprocess
from pathlib import Path

import pytest
from helpers import STAND_INS, run_stand_in
from launch import CPU_ENV, two_processes
from safetensors.torch import load_file

from layersync_hooks.commands.cli import main

pytestmark = pytest.mark.usefixtures("fresh_accelerate_state")  # a new Accelerator per test

SCRIPTS = STAND_INS
SITE = Path(__file__).parent / "with_trainers" / "site"  # the CPU work-around for frozen modules under DDP
PAIR = ["--layersync_student_block", "2", "--layersync_teacher_block", "4"]


def hand_edit(script, out, *args):
    """`python SCRIPT --hand_edit PAIR ...`: the README's edit, in this process."""
    return run_stand_in(script, out, "--hand_edit", *PAIR, *args)


def runner(script, out, *args, options=()):
    """`layersync-hooks run PAIR -- SCRIPT ...`: the unmodified stand-in under the runner, in this process."""
    assert main(["run", *PAIR, *options, "--", str(SCRIPTS / script), "--output_dir", str(out), *args]) == 0
    return Path(out)


def lora(out):
    return load_file(Path(out) / "tiny.safetensors")


def distance(a, b):
    return max((a[name] - b[name]).abs().max().item() for name in a)


def rows(path):
    return [json.loads(line) for line in Path(path).read_text().splitlines()]


CASES = {  # (stand-in, its arguments)
    "musubi, eval-mode DiT": ("musubi_like.py", ["--logging_dir", "logs"]),
    "musubi, checkpointing, accumulation 2": (
        "musubi_like.py",
        ["--logging_dir", "logs", "--gradient_checkpointing", "--gradient_accumulation_steps", "2"],
    ),
    "musubi, blocks compiled after prepare": ("musubi_like.py", ["--compile", "--compile_backend", "eager"]),
    "musubi, block swap's prepare": ("musubi_like.py", ["--blocks_to_swap", "2"]),
    "sd-scripts, direct tracker log, validation": (
        "sd_scripts_like.py",
        ["--logging_dir", "logs", "--validate_every_n_steps", "2"],
    ),
    "sd-scripts, text encoder and DeepSpeed wrapper": (
        "sd_scripts_like.py",
        ["--train_text_encoder", "--deepspeed", "--gradient_checkpointing"],
    ),
    "ai-toolkit": ("ai_toolkit_like.py", []),
    "ai-toolkit, own accumulation": ("ai_toolkit_like.py", ["--gradient_accumulation", "2"]),
    "ai-toolkit, diff output preservation": ("ai_toolkit_like.py", ["--diff_output_preservation"]),
    "ai-toolkit, blocks compiled after prepare": (
        "ai_toolkit_like.py",
        ["--block_compile", "--compile_backend", "eager"],
    ),
    "ai-toolkit, Wan 2.2's two experts": ("ai_toolkit_like.py", ["--model", "dual_wan"]),
}


@pytest.mark.parametrize("case", CASES, ids=list(CASES))
def test_runner_equals_the_hand_edit_in_each_trainers_loop(case, tmp_path, monkeypatch):
    """Unmodified under the runner, each loop ends with the hand-edited loop's LoRA (1e-6); without LayerSync it ends
    elsewhere, so the equality is LayerSync's term, added exactly as the edit adds it."""
    monkeypatch.chdir(tmp_path)  # `--logging_dir logs` and the like land here
    script, args = CASES[case]
    edit = hand_edit(script, tmp_path / "edit", *args)
    run = runner(script, tmp_path / "runner", *args)
    off = run_stand_in(script, tmp_path / "plain", *args)
    assert distance(lora(run), lora(edit)) <= 1e-6
    assert distance(lora(run), lora(off)) > 1e-5


@pytest.mark.parametrize(
    "script,log", [("musubi_like.py", "logs.jsonl"), ("sd_scripts_like.py", "logs.jsonl")], ids=["musubi", "sd-scripts"]
)
def test_metrics_appear_in_the_trainers_own_log(script, log, tmp_path, monkeypatch):
    """musubi-tuner logs through `accelerator.log`, kohya sd-scripts' LoRA scripts through the tracker's own `log`:
    under the runner both logs carry `layersync_loss` and `layersync_similarity` on the trainer's own steps, with the
    values of the hand edit."""
    monkeypatch.chdir(tmp_path)
    edit = rows(hand_edit(script, tmp_path / "edit", "--logging_dir", "logs") / log)
    run = rows(runner(script, tmp_path / "runner", "--logging_dir", "logs") / log)
    assert [row["step"] for row in run] == [row["step"] for row in edit] == [1, 2, 3, 4]
    for mine, theirs in zip(run, edit):
        for key in ("layersync_loss", "layersync_similarity"):
            assert mine[key] == pytest.approx(theirs[key], rel=1e-6)


def test_ai_toolkit_metrics_go_to_the_runners_own_report(tmp_path, monkeypatch, capsys):
    """ai-toolkit logs through its own logger: the runner's report line and `layersync_metrics.jsonl` in the output
    folder carry the metrics, one row per `--report-every` optimizer steps."""
    monkeypatch.chdir(tmp_path)
    run = runner("ai_toolkit_like.py", tmp_path / "runner", options=["--report-every", "2"])
    reported = rows(run / "layersync_metrics.jsonl")
    assert [row["layersync_step"] for row in reported] == [2, 4]
    assert all(-1 <= row["layersync_similarity"] <= 1 for row in reported)
    assert "layersync step 4: layersync_loss" in capsys.readouterr().out


def test_resume_both_ways_keeps_layersync_s_step(tmp_path, monkeypatch):
    """musubi-tuner strips every model but the network from its states; `layersync_state.json` is written beside
    them all the same. The runner resumes a hand-edited run's state and the hand edit a runner's, each continuing
    LayerSync's step (4 after 2 more steps; musubi restarts its own count) to the LoRA of the other path."""
    monkeypatch.chdir(tmp_path)
    args = ["--max_train_steps", "2", "--save_every_n_steps", "2", "--save_state",
            "--layersync_warmup_steps", "4"]  # fmt: skip
    first_edit = hand_edit("musubi_like.py", tmp_path / "edit", *args)
    first_run = runner("musubi_like.py", tmp_path / "runner", *args, options=["--layersync_warmup_steps", "4"])
    state = "tiny-step00000002-state"
    for first in (first_edit, first_run):
        assert json.loads((first / state / "layersync_state.json").read_text())["step"] == 2
    resumed = ["--max_train_steps", "2", "--layersync_warmup_steps", "4"]
    run = runner("musubi_like.py", tmp_path / "run_from_edit", "--resume", str(first_edit / state),
                 "--max_train_steps", "2", options=["--layersync_warmup_steps", "4"])  # fmt: skip
    edit = hand_edit("musubi_like.py", tmp_path / "edit_from_run", "--resume", str(first_run / state), *resumed)
    assert distance(lora(run), lora(edit)) <= 1e-6
    fresh = runner("musubi_like.py", tmp_path / "fresh", "--max_train_steps", "2",
                   options=["--layersync_warmup_steps", "4"])  # fmt: skip
    assert distance(lora(run), lora(fresh)) > 1e-5  # the resumed weights (and warm-up step) were used


@pytest.mark.slow
@pytest.mark.parametrize(
    "script,args",
    [
        ("musubi_like.py", ["--gradient_checkpointing", "--gradient_accumulation_steps", "2", "--logging_dir", "logs"]),
        ("sd_scripts_like.py", ["--logging_dir", "logs"]),
        ("ai_toolkit_like.py", []),
    ],
    ids=["musubi", "sd-scripts", "ai-toolkit"],
)
def test_two_processes_runner_equals_the_hand_edit(script, args, tmp_path):
    """On 2 CPU processes (each trainer prepares frozen modules, which DDP refuses on a CPU: the test-only site
    work-around skips DDP for them, as accelerate does on GPUs), the runner's LoRA equals the hand edit's and its
    logged metrics are the edit's: the means over both processes."""
    env = {**CPU_ENV, "PYTHONPATH": os.pathsep.join([str(SITE), CPU_ENV.get("PYTHONPATH", "")])}
    outs = {}
    for name, command in {
        "edit": [str(SCRIPTS / script), "--hand_edit", *PAIR],
        "runner": ["-m", "layersync_hooks", "run", *PAIR, "--", str(SCRIPTS / script)],
    }.items():
        outs[name] = tmp_path / name
        done = subprocess.run(two_processes(*command, "--output_dir", str(outs[name]), *args), env=env,
                              cwd=tmp_path, capture_output=True, text=True, timeout=300)  # fmt: skip
        assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    assert distance(lora(outs["runner"]), lora(outs["edit"])) <= 1e-6
    if "--logging_dir" in args:
        for mine, theirs in zip(rows(outs["runner"] / "logs.jsonl"), rows(outs["edit"] / "logs.jsonl")):
            assert mine["layersync_similarity"] == pytest.approx(theirs["layersync_similarity"], rel=1e-6)


NO_TERM_SCRIPT = """
import sys
import torch
from accelerate import Accelerator

sys.path.insert(0, {tests!r})
from tiny_models import build, prediction

model, inputs = build("PixArt")
accelerator = Accelerator()
optimizer = torch.optim.SGD(model.parameters(), lr=1e-3)
model, optimizer = accelerator.prepare(model, optimizer)
for step in range(2):
    with torch.no_grad():  # a loop LayerSync cannot follow: the denoiser never runs with gradients
        target = prediction(model, inputs)
    loss = sum(p.sum() for p in model.parameters()) * 0 + target.mean()
    accelerator.backward(loss)
    optimizer.step()
"""


def test_a_run_that_cannot_get_the_term_stops_at_the_first_step(tmp_path, capsys, monkeypatch):
    """A denoiser that never runs a training forward: the runner stops at the first backward with the capture's
    reason (exit 2), instead of training without the term and exiting 0; so does a model the runner cannot find."""
    monkeypatch.chdir(tmp_path)  # the script names no output folder: the runner's file lands here
    script = tmp_path / "train.py"
    script.write_text(NO_TERM_SCRIPT.format(tests=str(Path(__file__).parent)))
    assert main(["run", *PAIR, "--", str(script)]) == 2
    assert "first backward came with no LayerSync term" in capsys.readouterr().err
    assert main(["run", *PAIR, "--module", "NoSuchModel", "--", str(SCRIPTS / "musubi_like.py"), "--output_dir",
                 str(tmp_path / "out")]) == 2  # fmt: skip
    assert "none of the modules it prepared" in capsys.readouterr().err


TRACKERS_SCRIPT = """
import sys
import torch
from accelerate import Accelerator

sys.path.insert(0, {tests!r})
sys.path.insert(0, {scripts!r})
from accelerate_train import JsonTracker
from tiny_models import build, prediction


class Other(JsonTracker):
    name = "other"


model, inputs = build("PixArt")
first, second = JsonTracker("first.jsonl"), Other("second.jsonl")
accelerator = Accelerator(log_with=[first, second])
accelerator.init_trackers("tiny")
optimizer = torch.optim.SGD(model.parameters(), lr=1e-3)
model, optimizer = accelerator.prepare(model, optimizer)
for step in (1, 2):
    accelerator.backward(prediction(model, inputs).mean())
    optimizer.step()
    logs = {{"loss": 1.0}}
    for tracker in accelerator.trackers:  # sd-scripts' LoRA scripts: each tracker's own log, one dict of values
        tracker.log(logs, step=step)
for tracker in accelerator.trackers:  # an epoch's log whose step is the last step's
    tracker.log({{"loss/epoch": 1.0}}, step=2)
"""


def test_trackers_called_directly_get_the_metrics_once_per_log(tmp_path, monkeypatch):
    """A trainer that calls each tracker's `log` with one dict (kohya sd-scripts' LoRA scripts): every tracker gets
    LayerSync's metrics with its step logs; an epoch's log right after, at the same step, gets none (it would repeat
    the step's values)."""
    monkeypatch.chdir(tmp_path)
    script = tmp_path / "train.py"
    script.write_text(
        TRACKERS_SCRIPT.format(tests=str(Path(__file__).parent), scripts=str(Path(__file__).parent / "scripts"))
    )
    assert main(["run", "--layersync_student_block", "1", "--layersync_teacher_block", "3", "--", str(script)]) == 0
    for log in ("first.jsonl", "second.jsonl"):
        records = rows(tmp_path / log)
        assert [("layersync_similarity" in r, r["step"]) for r in records] == [(True, 1), (True, 2), (False, 2)]
