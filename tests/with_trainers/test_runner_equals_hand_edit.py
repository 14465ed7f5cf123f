"""Under `layersync-hooks run`, the trainers' unmodified scripts train exactly as the same scripts with LayerSync added
by hand (`hand_edit/`; ai-toolkit's in a copy of its checkout): the same LoRA (1e-6) and the same LayerSync metrics
where the trainer shows its own, on 1 and 2 CPU processes, resumed either way; and a run that cannot get the term
stops at its first step instead of training without it.

Skipped unless MUSUBI_TUNER_SRC / SD_SCRIPTS_SRC / AI_TOOLKIT_SRC name checkouts (README.md). With
LAYERSYNC_TRAINER_RESULTS naming a file, each comparison appends its numbers to it as a JSON line.
"""

import json
import os
from dataclasses import replace

import pytest
import runs
from runs import LAYERSYNC, hand_edited, metrics_lines, tensorboard_scalars
from safetensors.torch import load_file

TOLERANCE = 1e-6  # runner vs hand edit, LoRA weights and metrics
MOVED = 1e-4  # the term changes the LoRA at least this much in 4 steps (measured: 2e-3 to 8e-3)
METRICS = ("layersync_loss", "layersync_similarity")
STEPS = [1, 2, 3, 4]  # the kohya trainers' optimizer steps, as they log them

MUSUBI, SD_SCRIPTS = "musubi_wan_layersync.py", "sd_scripts_flux_layersync.py"
# id: (the run's fixture, its hand edit, the script's own extra flags)
CASES = {
    "musubi-wan, eval-mode DiT": ("musubi_wan", MUSUBI, []),
    "musubi-wan, gradient checkpointing": ("musubi_wan", MUSUBI, ["--gradient_checkpointing"]),
    "sd-scripts-flux, eval-mode DiT": ("sd_scripts_flux", SD_SCRIPTS, []),
    "sd-scripts-flux, gradient checkpointing": ("sd_scripts_flux", SD_SCRIPTS, ["--gradient_checkpointing"]),
    "musubi-wan, gradient accumulation 2": ("musubi_wan", MUSUBI, ["--gradient_accumulation_steps", "2"]),
    "sd-scripts-flux, gradient accumulation 2": ("sd_scripts_flux", SD_SCRIPTS, ["--gradient_accumulation_steps", "2"]),
}
# Flags that change how the blocks run, and the flags the trainers' docs launch with, one process each: (the run's
# fixture, its hand edit, the script's extra flags, the mixed precision). On this CPU machine the offload target is
# the device itself, sd-scripts' block swap takes its path without CUDA (untested, its docstring says: the swapped
# blocks share storage there), bf16 stands for the docs' fp16 (no fp16 autocast on a CPU), fp8 needs --fp8_scaled.
FLAG_CASES = {
    "musubi-wan --compile (eager)": ("musubi_wan", MUSUBI, ["--compile", "--compile_backend", "eager"], "no"),
    "musubi-wan --gradient_checkpointing_cpu_offload": (
        "musubi_wan",
        MUSUBI,
        ["--gradient_checkpointing", "--gradient_checkpointing_cpu_offload"],
        "no",
    ),
    "sd-scripts-flux --blocks_to_swap 2": ("sd_scripts_flux", SD_SCRIPTS, ["--blocks_to_swap", "2"], "no"),
    "musubi-wan as documented: bf16, fp8 (scaled), 8-bit AdamW, checkpointing": (
        "musubi_wan",
        MUSUBI,
        ["--fp8_base", "--fp8_scaled", "--optimizer_type", "adamw8bit", "--gradient_checkpointing"],
        "bf16",
    ),
    "sd-scripts-flux as documented: bf16, 8-bit AdamW, checkpointing, block swap": (
        "sd_scripts_flux",
        SD_SCRIPTS,
        ["--optimizer_type", "AdamW8bit", "--gradient_checkpointing", "--blocks_to_swap", "2"],
        "bf16",
    ),
}


def max_difference(a, b) -> float:
    """The largest |a - b| over the LoRA files of two runs, which must hold the same tensors."""
    first, second = load_file(a.lora), load_file(b.lora)
    assert first.keys() == second.keys()
    return max((first[k] - second[k]).abs().max().item() for k in first)


def record(**row):
    """One comparison's numbers, appended to LAYERSYNC_TRAINER_RESULTS when it names a file."""
    path = os.environ.get("LAYERSYNC_TRAINER_RESULTS")
    if path:
        with open(path, "a", encoding="utf-8") as f:
            f.write(json.dumps(row) + "\n")


def assert_ran(*launched):
    for run in launched:
        assert run.returncode == 0, run.tail()


def assert_same_metrics(runner, hand):
    """Both logged LayerSync's metrics at the same steps of the trainer's own log (with accumulation, every micro-step
    under the step number it logs), the same to 1e-6."""
    for key in METRICS:
        assert [step for step, _ in runner[key]] == [step for step, _ in hand[key]], key
        assert [v for _, v in runner[key]] == pytest.approx([v for _, v in hand[key]], abs=TOLERANCE), key


def compare(run, hand_script, extra, processes, tmp_path, case):
    """The plain script, the script under the runner and the hand edit, launched alike; returns them."""
    plain = run.launch(tmp_path / "plain", processes, extra=extra)
    runner = run.launch(tmp_path / "runner", processes, runner=LAYERSYNC, extra=extra)
    hand = hand_edited(run, hand_script).launch(tmp_path / "hand", processes, extra=extra)
    assert_ran(plain, runner, hand)
    same, moved = max_difference(runner, hand), max_difference(runner, plain)
    record(case=case, processes=processes, runner_vs_hand=same, runner_vs_plain=moved,
           seconds={"plain": plain.seconds, "runner": runner.seconds, "hand edit": hand.seconds})  # fmt: skip
    assert same <= TOLERANCE
    assert moved > MOVED
    logged = tensorboard_scalars(run.python, tmp_path / "runner" / "logs")
    assert_same_metrics(logged, tensorboard_scalars(run.python, tmp_path / "hand" / "logs"))
    assert set(STEPS) <= {step for step, _ in logged["layersync_loss"]}
    report = metrics_lines(tmp_path / "runner" / runs.METRICS_FILE)
    assert report[-1]["layersync_step"] == 4


RUNS = [(case, processes) for case in CASES for processes in (1, 2)]


@pytest.mark.slow
@pytest.mark.parametrize(("case", "processes"), RUNS)
def test_the_runner_trains_as_the_hand_edit(case, processes, request, tmp_path):
    """The unmodified script under the runner ends with the hand edit's LoRA (1e-6), not the plain script's, and
    logs the hand edit's LayerSync metrics in the trainer's tensorboard log at each of its steps."""
    fixture, hand_script, extra = CASES[case]
    compare(request.getfixturevalue(fixture), hand_script, extra, processes, tmp_path, case)


@pytest.mark.slow
@pytest.mark.parametrize("case", FLAG_CASES)
def test_the_runner_follows_the_trainers_flags(case, request, tmp_path):
    """With the trainer's flags that compile, offload or swap its blocks, and with those its docs launch with, the
    runner still trains as the hand edit."""
    fixture, hand_script, extra, precision = FLAG_CASES[case]
    run = runs.in_precision(request.getfixturevalue(fixture), precision)
    compare(run, hand_script, extra, 1, tmp_path, case)


RESUMES = {"musubi-wan": ("musubi_wan", MUSUBI), "sd-scripts-flux": ("sd_scripts_flux", SD_SCRIPTS)}
WARMED_UP = [*LAYERSYNC, "--layersync_warmup_steps", "8"]  # the weight depends on LayerSync's step
SAVE = ["--save_every_n_steps", "2", "--save_state"]
STATE = "tiny-step00000002-state"  # the state both trainers save at their step 2


def layersync_step(state_dir) -> int:
    return json.loads((state_dir / "layersync_state.json").read_text())["step"]


RESUME_CASES = [("musubi-wan", 1), ("musubi-wan", 2), ("sd-scripts-flux", 1), ("sd-scripts-flux", 2)]


@pytest.mark.slow
@pytest.mark.parametrize(("trainer", "processes"), RESUME_CASES)
def test_a_resume_goes_on_either_way(trainer, processes, request, tmp_path):
    """The runner resumes from a hand edit's state and the hand edit from the runner's, both with LayerSync's step
    read back (2) and going on (2 + the steps after the resume), the warm-up weight going on from there while the
    trainer's own step starts over at 1, and the same LoRA at the end."""
    fixture, hand_script = RESUMES[trainer]
    run = request.getfixturevalue(fixture)
    hand = hand_edited(run, hand_script, WARMED_UP)
    hand_first = hand.launch(tmp_path / "hand", processes, extra=SAVE)
    runner_first = run.launch(tmp_path / "runner", processes, runner=WARMED_UP, extra=SAVE)
    assert_ran(hand_first, runner_first)
    assert layersync_step(tmp_path / "hand" / STATE) == layersync_step(tmp_path / "runner" / STATE) == 2
    from_hand = ["--resume", str(tmp_path / "hand" / STATE)]
    runner_resumed = run.launch(tmp_path / "runner-resumed", processes, runner=WARMED_UP, extra=[*SAVE, *from_hand])
    from_runner = ["--resume", str(tmp_path / "runner" / STATE)]
    hand_resumed = hand.launch(tmp_path / "hand-resumed", processes, extra=[*SAVE, *from_runner])
    assert_ran(runner_resumed, hand_resumed)
    same = max_difference(runner_resumed, hand_resumed)
    steps = [layersync_step(tmp_path / name / "tiny-state") for name in ("runner-resumed", "hand-resumed")]
    logged = tensorboard_scalars(run.python, tmp_path / "runner-resumed" / "logs")
    # musubi trains --max_train_steps more; sd-scripts the epochs left (4 steps on 1 process, 2 on 2)
    taken = len(logged["loss/current"])
    record(case=f"{trainer} resume", processes=processes, resumed_runner_vs_hand=same, layersync_steps=steps,
           steps_after_resume=taken,
           seconds={"runner resumed": runner_resumed.seconds, "hand edit resumed": hand_resumed.seconds})  # fmt: skip
    assert same <= TOLERANCE
    assert steps == [2 + taken, 2 + taken]
    assert metrics_lines(tmp_path / "runner-resumed" / runs.METRICS_FILE)[-1]["layersync_step"] == 2 + taken
    before = tensorboard_scalars(run.python, tmp_path / "runner" / "logs")["layersync_weight"]
    after = logged["layersync_weight"]
    assert [w for _, w in after[:2]] == pytest.approx([w for _, w in before[2:]])  # LayerSync's step goes on from 2
    assert [step for step, _ in after] == list(range(1, taken + 1))  # the trainer's own step starts over
    assert_same_metrics(logged, tensorboard_scalars(run.python, tmp_path / "hand-resumed" / "logs"))


@pytest.mark.slow
def test_ai_toolkit_under_the_runner_trains_as_its_hand_edit(ai_toolkit_flux, tmp_path):
    """`python run.py job.yaml` under the runner ends with the LoRA of ai-toolkit edited by hand (1e-6); its metrics
    are the runner's report lines in <training_folder>/<name>/layersync_metrics.jsonl, equal to what the hand edit
    puts into ai-toolkit's own tensorboard log (which logs from its second step on)."""
    run = ai_toolkit_flux
    plain = run.launch(tmp_path / "plain")  # also caches the latents, as every later run reads them
    runner = run.launch(tmp_path / "runner", runner=[*LAYERSYNC, "--report-every", "1"])
    config = {"layersync_enabled": True, "layersync_student_block": 2, "layersync_teacher_block": 4}
    hand = runs.ai_toolkit_hand_edited(run, tmp_path, config).launch(tmp_path / "hand")
    assert_ran(plain, runner, hand)
    same, moved = max_difference(runner, hand), max_difference(runner, plain)
    record(case="ai-toolkit flux", processes=1, runner_vs_hand=same, runner_vs_plain=moved,
           seconds={"plain": plain.seconds, "runner": runner.seconds, "hand edit": hand.seconds})  # fmt: skip
    assert same <= TOLERANCE
    assert moved > MOVED
    report = metrics_lines(tmp_path / "runner" / "tiny_flux_lora" / runs.METRICS_FILE)
    assert [line["layersync_step"] for line in report] == STEPS
    logged = tensorboard_scalars(run.python, tmp_path / "hand" / "logs")
    for key in METRICS:
        assert [v for _, v in logged[key]] == pytest.approx([line[key] for line in report[1:]], abs=TOLERANCE)
    assert not set(METRICS) & set(tensorboard_scalars(run.python, tmp_path / "runner" / "logs"))


# id: (the run's fixture, the runner's extra options, the environment, what the error says)
FAILURES = {
    "musubi's WanModel without a layout": (
        "musubi_wan",
        [],
        {"LAYERSYNC_TEST_NO_LAYOUT": "musubi_tuner.wan.modules.model.WanModel"},
        "none of the modules it prepared (WanModel, LoRANetwork) holds a model with a layout",
    ),
    "sd-scripts' Flux without a layout": (
        "sd_scripts_flux",
        [],
        {"LAYERSYNC_TEST_NO_LAYOUT": "library.flux_models.Flux"},
        "none of the modules it prepared (Flux, CLIPTextModel, LoRANetwork) holds a model with a layout",
    ),
    "--module naming a module without blocks": (
        "musubi_wan",
        ["--module", "text_embedding"],
        {},
        "LayerSync found no transformer block stack in `Sequential`",
    ),
    "--module naming no prepared module": (
        "musubi_wan",
        ["--module", "WanDiT"],
        {},
        "none of the modules it prepared (WanModel, LoRANetwork) is named 'WanDiT'",
    ),
}


@pytest.mark.slow
@pytest.mark.parametrize("case", FAILURES)
def test_a_run_that_cannot_get_the_term_stops_before_training(case, request, tmp_path):
    """A model the runner cannot align stops the run with an error that says why (exit code 2), before the trainer
    saves a LoRA trained without the term."""
    fixture, options, environment, message = FAILURES[case]
    run = request.getfixturevalue(fixture)
    run = replace(run, env={**run.env, **environment})
    launched = run.launch(tmp_path, runner=[*LAYERSYNC, *options])
    record(case=case, processes=1, returncode=launched.returncode, seconds={"runner": launched.seconds})
    errors = [line for line in launched.output.splitlines() if line.startswith("error: ")]
    assert launched.returncode != 0
    assert errors and message in errors[0]
    assert not launched.lora.exists()
