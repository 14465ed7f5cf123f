"""A training script in the shape of diffusers' examples, with the README's LayerSync lines added by hand.

Run as `python accelerate_train.py --layersync_enabled --layersync_student_block 1 ...` it is the hand-edited
script; run under `layersync-hooks run ... -- accelerate_train.py ...` without those flags, its own LayerSync is
off (as the README says: nothing attached, `loss()` is 0) and the runner's adds the term. The tests compare the two.
It writes the trained parameters (`params.safetensors`) and every `accelerator.log` call (`logs.jsonl`).
"""

import argparse
import json
import sys
from pathlib import Path

import torch
import torch.nn.functional as F
from accelerate import Accelerator
from accelerate.tracking import GeneralTracker
from accelerate.utils import ProjectConfiguration
from safetensors.torch import save_file
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from launch import end_processes  # noqa: E402
from tiny_models import build, prediction  # noqa: E402

from layersync_hooks import LayerSync  # noqa: E402  (README edit)


def parse_args():
    parser = argparse.ArgumentParser(description="Simple example of a training script.")
    parser.add_argument("--output_dir", required=True)
    parser.add_argument("--model", default="PixArt", help="a tests/tiny_models.py entry")
    parser.add_argument("--max_train_steps", type=int, default=4)
    parser.add_argument("--gradient_accumulation_steps", type=int, default=1)
    parser.add_argument("--mixed_precision", default="no", choices=["no", "bf16", "fp16"])
    parser.add_argument("--cpu_grad_scaler", action="store_true", help="fp16 on CPU: a GradScaler accelerate lacks")
    parser.add_argument("--wrap", action="store_true", help="prepare a training module that holds the transformer")
    parser.add_argument("--checkpointing_steps", type=int, default=0)
    parser.add_argument("--resume_from_checkpoint", default=None, help='a checkpoint folder, or "latest"')
    parser.add_argument("--log_main_only", action="store_true", help="call accelerator.log on the main process only")
    parser.add_argument("--prepare", default="model", choices=["model", "two_models", "no_model", "nothing"])
    parser.add_argument("--fail_at_step", type=int, default=None)
    LayerSync.add_arguments(parser)  # README edit
    return parser.parse_args()


class JsonTracker(GeneralTracker):
    """Records every accelerator.log call."""

    name, requires_logging_directory = "json", False

    def __init__(self, path):
        super().__init__()
        self.path = path

    @property
    def tracker(self):
        return self

    def store_init_configuration(self, values):
        pass

    def log(self, values, step=None, **kwargs):
        with open(self.path, "a") as f:
            f.write(json.dumps({"step": step, **values}) + "\n")


class TrainingModule(nn.Module):
    """A module that holds the transformer and computes the loss, as DiffSynth-Studio's training module does."""

    def __init__(self, transformer):
        super().__init__()
        self.transformer = transformer

    def forward(self, inputs, target):
        return F.mse_loss(prediction(self.transformer, inputs).float(), target)


def batch(inputs, step, micro, rank):
    """This process's micro-batch of an optimizer step: a pure function of (step, micro-step, rank)."""
    g = torch.Generator().manual_seed(1000 * step + 10 * micro + rank)
    noisy = {k: v + 0.1 * torch.randn(v.shape, generator=g) if k == "hidden_states" else v for k, v in inputs.items()}
    return noisy, g


def main():
    args = parse_args()
    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    if args.prepare == "nothing":
        print("this script trains nothing with accelerate")
        return
    accelerator = Accelerator(
        gradient_accumulation_steps=args.gradient_accumulation_steps,
        mixed_precision=args.mixed_precision,
        log_with=[JsonTracker(out / "logs.jsonl")],
        project_config=ProjectConfiguration(project_dir=str(out)),
    )
    if args.cpu_grad_scaler:  # before prepare, so that the prepared optimizer unscales and skips like on a GPU
        accelerator.scaler = torch.amp.GradScaler("cpu", init_scale=2.0**10)
    transformer, inputs = build(args.model, seed=0)
    layersync = LayerSync.from_config(transformer, args)  # README edit: after the adapter, before prepare
    optimizer = torch.optim.SGD(transformer.parameters(), lr=1e-2)
    module = TrainingModule(transformer) if args.wrap else transformer
    if args.prepare == "two_models":
        module, other, optimizer = accelerator.prepare(module, build("Flux", seed=1)[0], optimizer)
    elif args.prepare == "no_model":
        other, optimizer = accelerator.prepare(nn.Linear(4, 4), optimizer)  # a module without a layout
    else:
        module, optimizer = accelerator.prepare(module, optimizer)
    layersync.register_with(accelerator)  # README edit: save_state / load_state keep its step count
    accelerator.init_trackers("train")
    step = 0
    if args.resume_from_checkpoint:
        path = args.resume_from_checkpoint
        if path == "latest":
            path = str(max(out.glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[1])))
        accelerator.load_state(path)
        step = int(Path(path).name.split("-")[1])
    target = torch.zeros_like(prediction(transformer, inputs)).float()
    while step < args.max_train_steps:
        if step == args.fail_at_step:
            raise ValueError(f"the script failed at step {step}")
        for micro in range(args.gradient_accumulation_steps):
            with accelerator.accumulate(module):
                micro_inputs, g = batch(inputs, step, micro, accelerator.process_index)
                micro_target = target + 0.1 * torch.randn(target.shape, generator=g)
                with torch.autocast("cpu", dtype=torch.float16, enabled=args.cpu_grad_scaler):
                    if args.wrap:
                        loss = module(micro_inputs, micro_target)
                    else:
                        loss = F.mse_loss(prediction(module, micro_inputs).float(), micro_target)
                loss = loss + layersync.loss()  # README edit: once per training forward, before backward
                accelerator.backward(loss)
                optimizer.step()
                optimizer.zero_grad()
        step += 1
        logs = {"loss": loss.detach().item()}
        logs.update(layersync.metrics())  # README edit (every process: it averages over them)
        if accelerator.is_main_process or not args.log_main_only:
            accelerator.log(logs, step=step)
        if args.checkpointing_steps and step % args.checkpointing_steps == 0 and accelerator.is_main_process:
            accelerator.save_state(str(out / f"checkpoint-{step}"))
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        save_file({n: p.detach().contiguous() for n, p in transformer.named_parameters()}, out / "params.safetensors")
    accelerator.end_training()


if __name__ == "__main__":
    main()
    end_processes()
