"""The trainers' unmodified training scripts as runs a test can launch: the command line, the environment and the
output folder of each, in one object, so that the same run can be launched plainly, under `layersync-hooks run`, on
1 or 2 CPU processes.

Each trainer runs in its own Python environment (its pinned diffusers/accelerate/transformers): `python` is that
environment's interpreter. Nothing here imports the trainers; `tiny_files.py` runs inside their environments.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

HERE = Path(__file__).parent
SITE = HERE / "site"  # sitecustomize: the CPU work-arounds and the tiny config tables
REPO = HERE.parents[1]  # layersync_hooks, importable by the runner in the trainer's environment
LORA_FILE = "tiny.safetensors"  # every run's `--output_name tiny`
METRICS_FILE = "layersync_metrics.jsonl"  # the runner's report lines, in the script's output folder
HAND_EDITS = HERE / "hand_edit"  # the trainers' scripts with LayerSync added by hand, without editing their files
# What the runner and the hand edits align on every tiny model: block 2 to block 4 (of 5 to 7), weight 0.2.
LAYERSYNC = ["--layersync_student_block", "2", "--layersync_teacher_block", "4"]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class TrainerRun:
    """One trainer script with its arguments, ready to launch.

    Attributes:
        python: The trainer environment's interpreter.
        source: Where the trainer's package is importable from (put on `PYTHONPATH`, as its editable install would).
        script: The training script, unmodified.
        args: The script's arguments, without `--output_dir` / `--logging_dir` (see `launch`).
        env: The environment the script needs on top of the caller's.
        mixed_precision: `accelerate launch --mixed_precision` (the script's own flag is in `args`).
    """

    python: str
    source: Path
    script: Path
    args: list[str]
    env: dict[str, str] = field(default_factory=dict)
    mixed_precision: str = "no"

    def environment(self) -> dict[str, str]:
        path = os.pathsep.join([str(SITE), str(self.source), str(REPO)])
        return {**os.environ, "PYTHONPATH": path, "LAYERSYNC_TINY_TRAINERS": "1", "OMP_NUM_THREADS": "1",
                "ACCELERATE_USE_CPU": "1", **self.env}  # fmt: skip

    def command(self, output_dir: Path, processes: int = 1, runner: list[str] | None = None) -> list[str]:
        """`accelerate launch [--multi_gpu --num_processes 2] [-m layersync_hooks run RUNNER --] SCRIPT ARGS`."""
        launch = [self.python, "-m", "accelerate.commands.launch", "--num_machines", "1", "--mixed_precision",
                  self.mixed_precision, "--dynamo_backend", "no", "--num_cpu_threads_per_process", "1"]  # fmt: skip
        if processes > 1:  # MULTI_CPU (gloo) with ACCELERATE_USE_CPU=1; `--cpu --num_processes 2` would run one
            launch += ["--multi_gpu", "--num_processes", str(processes), "--main_process_port", str(_free_port())]
        else:
            launch += ["--num_processes", "1"]
        if runner is not None:
            launch += ["-m", "layersync_hooks", "run", *runner, "--"]
        outputs = ["--output_dir", str(output_dir), "--logging_dir", str(output_dir / "logs")]
        return [*launch, str(self.script), *self.args, *outputs]

    def launch(self, output_dir: Path, processes: int = 1, runner: list[str] | None = None, extra: tuple = (),
               timeout: int = 600) -> Launched:  # fmt: skip
        """Run to the end; the output (stdout and stderr) is kept in `output_dir/launch.log`."""
        output_dir.mkdir(parents=True, exist_ok=True)
        command = self.command(output_dir, processes, runner) + list(extra)
        started = time.perf_counter()
        done = subprocess.run(command, env=self.environment(), capture_output=True, text=True, timeout=timeout,
                              cwd=output_dir)  # fmt: skip
        seconds = time.perf_counter() - started
        (output_dir / "launch.log").write_text(" ".join(command) + "\n\n" + done.stdout + done.stderr)
        return Launched(done.returncode, done.stdout + done.stderr, output_dir, seconds)


@dataclass
class AiToolkitRun(TrainerRun):
    """ai-toolkit's `python run.py CONFIG`: one process, no `accelerate launch`; the job's YAML (`args[0]`, with
    `{output}` where its `training_folder` goes) is written into the output folder at launch."""

    def command(self, output_dir: Path, processes: int = 1, runner: list[str] | None = None) -> list[str]:
        if processes != 1:
            raise ValueError("ai-toolkit's run.py runs one process (its docs launch it with python, not accelerate).")
        config = output_dir / "job.yaml"
        config.write_text(Path(self.args[0]).read_text().replace("{output}", str(output_dir)))
        launch = [self.python] if runner is None else [self.python, "-m", "layersync_hooks", "run", *runner, "--"]
        return [*launch, str(self.script), str(config)]


def in_precision(run: TrainerRun, precision: str) -> TrainerRun:
    """The same run in mixed precision `precision` ("bf16": a CPU has no fp16 autocast): the script's
    `--mixed_precision` and `accelerate launch`'s."""
    args = list(run.args)
    args[args.index("--mixed_precision") + 1] = precision
    return replace(run, args=args, mixed_precision=precision)


def hand_edited(run: TrainerRun, script: str, layersync: list[str] = LAYERSYNC) -> TrainerRun:
    """The same run with the trainer's script replaced by its hand edit `hand_edit/SCRIPT`, LayerSync on through the
    script's own `--layersync_*` flags."""
    return replace(run, script=HAND_EDITS / script, args=[*run.args, "--layersync_enabled", *layersync])


# ai-toolkit has no place a subclass could add LayerSync: its SDTrainer.py is edited as the README says, in a copy
# of the checkout. Each anchor is the exact text at ai-toolkit 27a03a9, and must occur exactly once.
AI_TOOLKIT_TRAINER = "extensions_built_in/sd_trainer/SDTrainer.py"
AI_TOOLKIT_EDITS = [
    (  # LayerSync on the transformer before `prepare_accelerator` prepares it, its state in accelerate's checkpoints
        "    def hook_before_train_loop(self):\n        super().hook_before_train_loop()\n",
        "    def hook_before_train_loop(self):\n"
        "        from layersync_hooks import LayerSync\n\n"
        "        self.layersync = LayerSync.from_config(self.sd.unet, CONFIG)\n"
        "        self.layersync.register_with(self.accelerator)\n"
        "        super().hook_before_train_loop()\n",
    ),
    (  # the term, right before the training step's backward (the other `backward(loss)` is in another method)
        "                    # else:\n                    self.accelerator.backward(loss)\n",
        "                    # else:\n"
        "                    loss = loss + self.layersync.loss()\n"
        "                    self.accelerator.backward(loss)\n",
    ),
    (  # the metrics into the step's losses, which ai-toolkit shows (progress bar, its tensorboard log); every process
        "        loss_dict = OrderedDict(\n            {'loss': (total_loss / len(batch_list)).item()}\n        )\n",
        "        loss_dict = OrderedDict(\n            {'loss': (total_loss / len(batch_list)).item()}\n        )\n"
        "        loss_dict.update(self.layersync.metrics())\n",
    ),
]


def ai_toolkit_hand_edited(run: TrainerRun, folder: Path, config: dict) -> TrainerRun:
    """The same ai-toolkit run from a copy of its checkout in `folder` whose SDTrainer.py adds LayerSync (`config`,
    LayerSync's config keys) by hand; the checkout itself is never edited."""
    copy = folder / "ai-toolkit"
    shutil.copytree(run.source, copy, ignore=shutil.ignore_patterns(".git", "ui", "__pycache__", "node_modules"))
    trainer = copy / AI_TOOLKIT_TRAINER
    text = trainer.read_text()
    for anchor, edit in AI_TOOLKIT_EDITS:
        if text.count(anchor) != 1:
            raise ValueError(
                f"The hand edit's anchor {anchor!r} occurs {text.count(anchor)} times in ai-toolkit's "
                f"{AI_TOOLKIT_TRAINER} (once at 27a03a9): update AI_TOOLKIT_EDITS in runs.py to this checkout."
            )
        text = text.replace(anchor, edit.replace("CONFIG", repr(config)))
    trainer.write_text(text)
    return replace(run, source=copy, script=copy / "run.py")


TENSORBOARD_READER = """
import json, sys
from pathlib import Path
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
scalars = {}
for events in sorted(Path(sys.argv[1]).glob("**/events.out.tfevents.*")):
    accumulator = EventAccumulator(str(events))
    accumulator.Reload()
    for tag in accumulator.Tags()["scalars"]:
        scalars.setdefault(tag, []).extend([event.step, event.value] for event in accumulator.Scalars(tag))
print(json.dumps(scalars))
"""


def tensorboard_scalars(python: str, folder: Path) -> dict[str, list[tuple[int, float]]]:
    """Every scalar in the tensorboard event files under `folder`: {tag: [(step, value), ...]}, read by tensorboard
    itself in the trainer's environment (the trainers log to tensorboard; this environment need not have it)."""
    done = subprocess.run([python, "-c", TENSORBOARD_READER, str(folder)], capture_output=True, text=True,
                          timeout=120, check=True)  # fmt: skip
    return {tag: [(int(step), value) for step, value in rows] for tag, rows in json.loads(done.stdout).items()}


def metrics_lines(path: Path) -> list[dict]:
    """The runner's `layersync_metrics.jsonl`, one dict per report line."""
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


@dataclass
class Launched:
    returncode: int
    output: str
    output_dir: Path
    seconds: float

    @property
    def lora(self) -> Path:
        found = sorted(self.output_dir.glob(f"**/{LORA_FILE}")) or sorted(self.output_dir.glob("*/*.safetensors"))
        return found[0] if found else self.output_dir / LORA_FILE

    def tail(self, characters: int = 4000) -> str:
        return self.output[-characters:]


def write_tiny_files(python: str, importable: Path, trainer: str, folder: Path) -> dict[str, str]:
    """Run `tiny_files.py TRAINER FOLDER` in the trainer's environment, its package importable from `importable`;
    returns the paths it wrote."""
    run = TrainerRun(python, importable, HERE / "tiny_files.py", [])
    done = subprocess.run([python, str(HERE / "tiny_files.py"), trainer, str(folder)], env=run.environment(),
                          capture_output=True, text=True, timeout=300)  # fmt: skip
    if done.returncode != 0:
        raise RuntimeError(f"tiny_files.py {trainer} failed:\n{done.stdout[-2000:]}{done.stderr[-4000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


STEPS = ["--max_train_steps", "4", "--seed", "42", "--max_data_loader_n_workers", "0", "--output_name", "tiny"]


def musubi_wan(python: str, source: Path, folder: Path) -> TrainerRun:
    """musubi-tuner's `wan_train_network.py` (Wan 2.1 T2V 1.3B LoRA) on the tiny DiT and cache, as its docs launch
    it, less what a CPU cannot do (`--fp8_base`, bf16, 8-bit AdamW)."""
    files = write_tiny_files(python, source / "src", "musubi-wan", folder)
    args = ["--task", "t2v-1.3B", "--dit", files["dit"], "--dataset_config", files["dataset_config"], "--sdpa",
            "--mixed_precision", "no", "--optimizer_type", "adamw", "--learning_rate", "1e-3",
            "--network_module", "networks.lora_wan", "--network_dim", "4", "--timestep_sampling", "shift",
            "--discrete_flow_shift", "3.0", *STEPS]  # fmt: skip
    return TrainerRun(python, source / "src", source / "wan_train_network.py", args)


def musubi_hunyuan_video(python: str, source: Path, folder: Path) -> TrainerRun:
    """musubi-tuner's `hv_train_network.py` (HunyuanVideo T2V LoRA) on the tiny DiT and caches, in bf16 as musubi
    requires (its DiT runs in bf16), less `--fp8_base` and 8-bit AdamW."""
    files = write_tiny_files(python, source / "src", "musubi-hunyuan-video", folder)
    args = ["--dit", files["dit"], "--dataset_config", files["dataset_config"], "--sdpa", "--mixed_precision", "bf16",
            "--optimizer_type", "adamw", "--learning_rate", "1e-3", "--network_module", "networks.lora",
            "--network_dim", "4", "--timestep_sampling", "shift", "--discrete_flow_shift", "7.0", *STEPS]  # fmt: skip
    return TrainerRun(python, source / "src", source / "hv_train_network.py", args, mixed_precision="bf16")


def musubi_flux_kontext(python: str, source: Path, folder: Path) -> TrainerRun:
    """musubi-tuner's `flux_kontext_train_network.py` (FLUX.1 Kontext LoRA) on the tiny DiT and caches, as its docs
    launch it less bf16 and 8-bit AdamW (no `--vae`/`--text_encoder1/2`: only sampling loads them)."""
    files = write_tiny_files(python, source / "src", "musubi-flux-kontext", folder)
    args = ["--dit", files["dit"], "--dataset_config", files["dataset_config"], "--sdpa", "--mixed_precision", "no",
            "--timestep_sampling", "flux_shift", "--weighting_scheme", "none", "--optimizer_type", "adamw",
            "--learning_rate", "1e-3", "--network_module", "networks.lora_flux", "--network_dim", "4",
            *STEPS]  # fmt: skip
    return TrainerRun(python, source / "src", source / "flux_kontext_train_network.py", args)


def musubi_qwen_image(python: str, source: Path, folder: Path) -> TrainerRun:
    """musubi-tuner's `qwen_image_train_network.py` (Qwen-Image LoRA, 6 blocks by its own `--num_layers`), in bf16
    as musubi requires (it fixes the DiT's dtype to bf16), less 8-bit AdamW."""
    files = write_tiny_files(python, source / "src", "musubi-qwen-image", folder)
    args = ["--dit", files["dit"], "--model_version", "original", "--num_layers", "6", "--dataset_config",
            files["dataset_config"], "--sdpa", "--mixed_precision", "bf16", "--timestep_sampling", "shift",
            "--weighting_scheme", "none", "--discrete_flow_shift", "2.2", "--optimizer_type", "adamw",
            "--learning_rate", "1e-3", "--network_module", "networks.lora_qwen_image", "--network_dim", "4",
            *STEPS]  # fmt: skip
    return TrainerRun(python, source / "src", source / "qwen_image_train_network.py", args, mixed_precision="bf16")


def sd_scripts_flux(python: str, source: Path, folder: Path) -> TrainerRun:
    """sd-scripts' `flux_train_network.py` (FLUX.1 dev LoRA on the DiT and CLIP-L) on the tiny models and caches, as
    its docs launch it, less what a CPU cannot do (fp16, 8-bit AdamW, block swap)."""
    files = write_tiny_files(python, source, "sd-scripts-flux", folder)
    args = ["--pretrained_model_name_or_path", files["dit"], "--clip_l", files["clip_l"], "--t5xxl", files["t5xxl"],
            "--ae", files["ae"], "--dataset_config", files["dataset_config"],
            "--tokenizer_cache_dir", files["tokenizer_cache_dir"], "--t5xxl_max_token_length", "16",
            "--save_model_as", "safetensors", "--network_module", "networks.lora_flux", "--network_dim", "4",
            "--network_alpha", "1", "--learning_rate", "1e-3", "--optimizer_type", "AdamW", "--lr_scheduler",
            "constant", "--sdpa", "--mixed_precision", "no", "--guidance_scale", "1.0", "--timestep_sampling",
            "flux_shift", "--model_prediction_type", "raw", "--cache_text_encoder_outputs",
            "--cache_text_encoder_outputs_to_disk", "--cache_latents", "--cache_latents_to_disk", *STEPS]  # fmt: skip
    return TrainerRun(python, source, source / "flux_train_network.py", args)


def ai_toolkit_flux(python: str, source: Path, folder: Path) -> TrainerRun:
    """ai-toolkit's `run.py` with a FLUX.1 LoRA job (its config/examples/train_lora_flux_24gb.yaml, less what a CPU
    cannot do: cuda, bf16, quantization, 8-bit AdamW, EMA, sampling) on a tiny FLUX.1 pipeline folder."""
    files = write_tiny_files(python, source, "ai-toolkit-flux", folder)
    # run.py seeds python, numpy and torch from SEED (ai-toolkit's own switch): unseeded, two runs differ
    return AiToolkitRun(python, source, source / "run.py", [files["config"]], env={"SEED": "42"})


def sd_scripts_sd3(python: str, source: Path, folder: Path) -> TrainerRun:
    """sd-scripts' `sd3_train_network.py` (SD3 medium LoRA, `networks.lora_sd3`) on the tiny models and caches, less
    fp16, 8-bit AdamW and block swap; text-encoder outputs cached, so the DiT's LoRA only."""
    files = write_tiny_files(python, source, "sd-scripts-sd3", folder)
    args = ["--pretrained_model_name_or_path", files["dit"], "--clip_l", files["clip_l"], "--clip_g", files["clip_g"],
            "--t5xxl", files["t5xxl"], "--dataset_config", files["dataset_config"],
            "--tokenizer_cache_dir", files["tokenizer_cache_dir"], "--t5xxl_max_token_length", "16",
            "--save_model_as", "safetensors", "--network_module", "networks.lora_sd3", "--network_dim", "4",
            "--network_alpha", "1", "--learning_rate", "1e-3", "--optimizer_type", "AdamW", "--lr_scheduler",
            "constant", "--sdpa", "--mixed_precision", "no", "--weighting_scheme", "uniform",
            "--cache_text_encoder_outputs", "--cache_text_encoder_outputs_to_disk", "--cache_latents",
            "--cache_latents_to_disk", "--network_train_unet_only", *STEPS]  # fmt: skip
    return TrainerRun(python, source, source / "sd3_train_network.py", args)


def sd_scripts_lumina(python: str, source: Path, folder: Path) -> TrainerRun:
    """sd-scripts' `lumina_train_network.py` (Lumina Image 2.0 LoRA) on the tiny models and caches, as its docs launch
    it less bf16; the Gemma tokenizer read offline from a hub-layout cache (`HF_HUB_OFFLINE=1`)."""
    files = write_tiny_files(python, source, "sd-scripts-lumina", folder)
    args = ["--pretrained_model_name_or_path", files["dit"], "--gemma2", files["gemma2"], "--ae", files["ae"],
            "--dataset_config", files["dataset_config"], "--tokenizer_cache_dir", files["tokenizer_cache_dir"],
            "--gemma2_max_token_length", "16", "--save_model_as", "safetensors", "--network_module",
            "networks.lora_lumina", "--network_dim", "4", "--network_alpha", "4", "--learning_rate", "1e-3",
            "--optimizer_type", "AdamW", "--lr_scheduler", "constant", "--timestep_sampling", "nextdit_shift",
            "--discrete_flow_shift", "6.0", "--model_prediction_type", "raw", "--system_prompt",
            "You are an assistant designed to generate high-quality images based on user prompts.",
            "--mixed_precision", "no", "--cache_latents", "--cache_latents_to_disk", "--cache_text_encoder_outputs",
            "--cache_text_encoder_outputs_to_disk", *STEPS]  # fmt: skip
    return TrainerRun(python, source, source / "lumina_train_network.py", args, env={"HF_HUB_OFFLINE": "1"})
