"""A stand-in for kohya sd-scripts' LoRA training loop (`train_network.py`, driven by `flux_train_network.py`,
`sd3_train_network.py`, `lumina_train_network.py`), as it drives accelerate; `--hand_edit` adds LayerSync the way
the README tells a user to.

What it reproduces (sd-scripts 48d368f, as read there):
- the DiT is frozen; the LoRA network replaces `forward` of its Linear layers; with `--gradient_checkpointing` the
  DiT is put in `train()` after `prepare`, otherwise in `eval()`;
- `prepare` of the DiT alone (`device_placement=[False]` under `--blocks_to_swap`, Flux's variant), of each trained
  text encoder alone (`--train_text_encoder`: a frozen stand-in text encoder), then
  `prepare(network, optimizer, train_dataloader, val_dataloader, lr_scheduler)`; with `--deepspeed` instead one
  `DeepSpeedWrapper` module holding the DiT and the network is prepared with the other four;
- each micro-step inside `accelerator.accumulate(training_model)`: `loss = process_batch(..., is_train=True)`,
  `accelerator.backward(loss)`, its own all-reduce of the network's gradients on a sync step, clipping, and
  `optimizer.step()` on every micro-step;
- validation every `--validate_every_n_steps`: the same `process_batch` with `is_train=False`, which runs the DiT
  under `torch.set_grad_enabled(False)`;
- logs through the trackers' own `log` (`accelerator.get_tracker(name).log(...)`), never `accelerator.log`, and only
  where trackers exist (the main process: `init_trackers` runs there);
- save/load-state pre-hooks that strip every model but the network and write/read `train_state.json` (the step to
  resume from); `--save_state` on the main process only; `--resume` resumes the step count from that file.
Files: `tiny.safetensors` (the LoRA), `steps.jsonl` (task loss per micro-step), `logs.jsonl` (the tracker's log).
"""

import argparse
import json
import os
from pathlib import Path

import torch
from accelerate import Accelerator
from stand_in import (
    JsonTracker,
    LoRANetwork,
    Steps,
    TinyDataset,
    collate,
    end_processes,
    flow_loss,
    noisy_inputs,
    save_network,
    tiny_dit,
)
from torch import nn

from layersync_hooks import LayerSync  # README edit


def parse_args():
    parser = argparse.ArgumentParser(description="sd-scripts-like LoRA training of a tiny Flux")
    parser.add_argument("--output_dir", required=True)
    parser.add_argument("--logging_dir", default=None, help="trackers exist only with it (tensorboard in sd-scripts)")
    parser.add_argument("--max_train_steps", type=int, default=4)
    parser.add_argument("--gradient_accumulation_steps", type=int, default=1)
    parser.add_argument("--gradient_checkpointing", action="store_true")
    parser.add_argument("--blocks_to_swap", type=int, default=0, help="only the prepare call: no swapping on a CPU")
    parser.add_argument("--train_text_encoder", action="store_true", help="prepare a (frozen) text encoder alone")
    parser.add_argument("--deepspeed", action="store_true", help="prepare one wrapper holding the DiT and network")
    parser.add_argument("--validate_every_n_steps", type=int, default=None)
    parser.add_argument("--save_every_n_steps", type=int, default=None)
    parser.add_argument("--save_state", action="store_true")
    parser.add_argument("--resume", default=None, help="a state folder written by --save_state")
    parser.add_argument("--hand_edit", action="store_true", help="LayerSync added to this script by hand")
    LayerSync.add_arguments(parser)  # README edit
    args = parser.parse_args()
    args.layersync_enabled = args.layersync_enabled or args.hand_edit
    return args


class DeepSpeedWrapper(nn.Module):
    """sd-scripts' `deepspeed_utils.prepare_deepspeed_model`: one module holding every trained model."""

    def __init__(self, unet: nn.Module, network: nn.Module):
        super().__init__()
        self.models = nn.ModuleDict({"unet": unet, "network": network})


def process_batch(dit, batch, seed, is_train):
    """sd-scripts' `process_batch`: the DiT's forward with gradients only when training."""
    inputs, target, _ = noisy_inputs(batch, seed)
    with torch.set_grad_enabled(is_train):
        return flow_loss(dit, inputs, target)


def main():
    args = parse_args()
    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    accelerator = Accelerator(gradient_accumulation_steps=args.gradient_accumulation_steps,
                              log_with=[JsonTracker(out / "logs.jsonl")] if args.logging_dir else None,
                              project_dir=args.logging_dir)  # fmt: skip

    dit, inputs = tiny_dit("Flux")
    text_encoder = nn.Linear(32, 32).requires_grad_(False)  # stands for CLIP-L: prepared alone when trained
    network = LoRANetwork(dit)
    network.apply_to()
    if args.gradient_checkpointing:
        dit.enable_gradient_checkpointing()
    if args.hand_edit:
        layersync = LayerSync.from_config(dit, args)  # README edit: after the adapter, before prepare
    optimizer = torch.optim.AdamW(network.parameters(), lr=1e-3)
    train_dataloader = torch.utils.data.DataLoader(TinyDataset(inputs), batch_size=1, collate_fn=collate)
    val_dataloader = torch.utils.data.DataLoader(TinyDataset(inputs), batch_size=1, collate_fn=collate)
    lr_scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)

    if args.deepspeed:
        wrapper = DeepSpeedWrapper(dit, network)
        wrapper, optimizer, train_dataloader, val_dataloader, lr_scheduler = accelerator.prepare(
            wrapper, optimizer, train_dataloader, val_dataloader, lr_scheduler
        )
        training_model = wrapper
    else:
        if args.blocks_to_swap > 0:
            dit = accelerator.prepare(dit, device_placement=[False])
            accelerator.unwrap_model(dit).to(accelerator.device)  # sd-scripts: move_to_device_except_swap_blocks
        else:
            dit = accelerator.prepare(dit)
        if args.train_text_encoder:
            text_encoder = accelerator.prepare(text_encoder)
        network, optimizer, train_dataloader, val_dataloader, lr_scheduler = accelerator.prepare(
            network, optimizer, train_dataloader, val_dataloader, lr_scheduler
        )
        training_model = network
    dit.train() if args.gradient_checkpointing else dit.eval()
    accelerator.unwrap_model(network).requires_grad_(True)

    step_to_resume = {}

    def save_hook(models, weights, output_dir):  # keep the network's weights only, and the step
        if accelerator.is_main_process or args.deepspeed:
            for i in reversed(range(len(models))):
                if not isinstance(models[i], LoRANetwork) and i < len(weights):
                    weights.pop(i)
        with open(os.path.join(output_dir, "train_state.json"), "w") as f:
            json.dump({"current_step": global_step}, f)

    def load_hook(models, input_dir):
        for i in reversed(range(len(models))):
            if not isinstance(models[i], LoRANetwork):
                models.pop(i)
        path = os.path.join(input_dir, "train_state.json")
        if os.path.exists(path):
            with open(path) as f:
                step_to_resume.update(json.load(f))

    accelerator.register_save_state_pre_hook(save_hook)
    accelerator.register_load_state_pre_hook(load_hook)
    if args.hand_edit:
        layersync.register_with(accelerator)  # README edit
    global_step = 0
    if args.resume:
        accelerator.load_state(args.resume)
        global_step = step_to_resume.get("current_step", 0)
    if accelerator.is_main_process:
        accelerator.init_trackers("network_train")
    trackers = [accelerator.get_tracker(tracker.name) for tracker in accelerator.trackers]

    steps = Steps(out, accelerator.is_main_process)
    micro = 0
    while global_step < args.max_train_steps:
        for batch in train_dataloader:
            with accelerator.accumulate(training_model):
                seed = 1000 * (global_step * args.gradient_accumulation_steps + micro) + accelerator.process_index
                loss = process_batch(dit, batch, seed, is_train=True)
                steps.add(global_step + 1, micro, loss)
                if args.hand_edit:
                    loss = loss + layersync.loss()  # README edit
                accelerator.backward(loss)
                if accelerator.sync_gradients:
                    for parameter in network.parameters():  # all_reduce_network
                        if parameter.grad is not None:
                            parameter.grad = accelerator.reduce(parameter.grad, reduction="mean")
                    accelerator.clip_grad_norm_(network.parameters(), 1.0)
                optimizer.step()
                lr_scheduler.step()
                optimizer.zero_grad(set_to_none=True)
            micro = (micro + 1) % args.gradient_accumulation_steps
            if accelerator.sync_gradients:
                global_step += 1
                if args.save_every_n_steps and global_step % args.save_every_n_steps == 0:
                    accelerator.wait_for_everyone()
                    if accelerator.is_main_process:
                        save_network(accelerator.unwrap_model(network), out / f"tiny-step{global_step:08d}.safetensors")
                        if args.save_state:
                            accelerator.save_state(str(out / f"tiny-step{global_step:08d}-state"))
            logs = {"loss/current": loss.detach().item()}
            if args.hand_edit:
                logs.update(layersync.metrics())  # README edit: on every process (it averages over them)
            for tracker in trackers:
                tracker.log(logs, step=global_step)
            validate = args.validate_every_n_steps and global_step % args.validate_every_n_steps == 0
            if accelerator.sync_gradients and validate:
                accelerator.unwrap_model(network).eval()
                val_losses = [process_batch(dit, b, 7, is_train=False).item() for b in val_dataloader]
                accelerator.unwrap_model(network).train()
                for tracker in trackers:
                    tracker.log({"loss/validation": sum(val_losses) / len(val_losses)}, step=global_step)
            if global_step >= args.max_train_steps:
                break

    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        save_network(accelerator.unwrap_model(network), out / "tiny.safetensors")
    accelerator.end_training()


if __name__ == "__main__":
    main()
    end_processes()
