"""A stand-in for musubi-tuner's network training loop (`training/trainer_base.py`, e.g. `wan_train_network.py`), as
it drives accelerate; `--hand_edit` adds LayerSync the way the README tells a user to.

What it reproduces (musubi-tuner 30c658c, as read there):
- the DiT is loaded, frozen and put in `eval()`; the LoRA network replaces `forward` of its Linear layers;
  `--gradient_checkpointing` enables checkpointing (and, after `prepare`, `train()` mode; `eval()` otherwise);
- `prepare` of the DiT alone (with `device_placement=[False]` under `--blocks_to_swap`), then
  `prepare(network, optimizer, dataloader, lr_scheduler)`;
- `--compile`: after `prepare`, each `blocks[i]` is replaced by `torch.compile(blocks[i])`;
- save/load-state pre-hooks that strip every model but the network; `--save_state` writes a state folder every
  `--save_every_n_steps` on the main process only; `--resume` loads one;
- each micro-step inside `accelerator.accumulate(network)`: `accelerator.backward(loss)`, then on a sync step its own
  all-reduce of the network's gradients, clipping, and `optimizer.step()` on every micro-step (accelerate skips the
  non-sync ones);
- `accelerator.log` on every micro-step (with the optimizer step), only when trackers exist, which is on the main
  process only (`init_trackers` runs there).
Files: `tiny.safetensors` (the LoRA), `steps.jsonl` (task loss per micro-step), `logs.jsonl` (the tracker's log).
"""

import argparse
from pathlib import Path

import accelerate
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

from layersync_hooks import LayerSync  # README edit


def parse_args():
    parser = argparse.ArgumentParser(description="musubi-tuner-like LoRA training of a tiny Wan")
    parser.add_argument("--output_dir", required=True)
    parser.add_argument("--logging_dir", default=None, help="trackers exist only with it (tensorboard in musubi)")
    parser.add_argument("--max_train_steps", type=int, default=4)
    parser.add_argument("--gradient_accumulation_steps", type=int, default=1)
    parser.add_argument("--gradient_checkpointing", action="store_true")
    parser.add_argument("--blocks_to_swap", type=int, default=0, help="only the prepare call: no swapping on a CPU")
    parser.add_argument("--compile", action="store_true")
    parser.add_argument("--compile_backend", default="inductor")
    parser.add_argument("--save_every_n_steps", type=int, default=None)
    parser.add_argument("--save_state", action="store_true")
    parser.add_argument("--resume", default=None, help="a state folder written by --save_state")
    parser.add_argument("--hand_edit", action="store_true", help="LayerSync added to this script by hand")
    LayerSync.add_arguments(parser)  # README edit
    args = parser.parse_args()
    args.layersync_enabled = args.layersync_enabled or args.hand_edit
    return args


def main():
    args = parse_args()
    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    accelerator = Accelerator(gradient_accumulation_steps=args.gradient_accumulation_steps,
                              log_with=[JsonTracker(out / "logs.jsonl")] if args.logging_dir else None,
                              project_dir=args.logging_dir)  # fmt: skip

    dit, inputs = tiny_dit("Wan")
    dit.eval()
    network = LoRANetwork(dit)
    network.apply_to()
    if args.gradient_checkpointing:
        dit.enable_gradient_checkpointing()
    if args.hand_edit:
        layersync = LayerSync.from_config(dit, args)  # README edit: after the adapter, before prepare
    optimizer = torch.optim.AdamW(network.parameters(), lr=1e-3)
    dataloader = torch.utils.data.DataLoader(TinyDataset(inputs), batch_size=1, shuffle=False, collate_fn=collate)
    lr_scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)

    if args.blocks_to_swap > 0:
        dit = accelerator.prepare(dit, device_placement=[False])
        accelerator.unwrap_model(dit).to(accelerator.device)  # musubi: move_to_device_except_swap_blocks
    else:
        dit = accelerator.prepare(dit)
    if args.compile:
        blocks = accelerator.unwrap_model(dit).blocks
        for i, block in enumerate(blocks):
            blocks[i] = torch.compile(block, backend=args.compile_backend)
    network, optimizer, dataloader, lr_scheduler = accelerator.prepare(network, optimizer, dataloader, lr_scheduler)
    dit.train() if args.gradient_checkpointing else dit.eval()
    network.requires_grad_(True)

    def save_hook(models, weights, output_dir):  # keep the network's weights only
        if accelerator.is_main_process:
            for i in reversed(range(len(models))):
                if not isinstance(models[i], LoRANetwork) and i < len(weights):
                    weights.pop(i)

    def load_hook(models, input_dir):
        for i in reversed(range(len(models))):
            if not isinstance(models[i], LoRANetwork):
                models.pop(i)

    accelerator.register_save_state_pre_hook(save_hook)
    accelerator.register_load_state_pre_hook(load_hook)
    if args.hand_edit:
        layersync.register_with(accelerator)  # README edit
    if args.resume:
        accelerator.load_state(args.resume)  # network, optimizer, scheduler, RNG; musubi counts its steps from 0 again
    global_step = 0
    if accelerator.is_main_process:
        accelerator.init_trackers("network_train")

    steps = Steps(out, accelerator.is_main_process)
    micro = 0
    while global_step < args.max_train_steps:
        for batch in dataloader:
            with accelerator.accumulate(network):
                model_inputs, target, _ = noisy_inputs(batch, seed=1000 * micro + accelerator.process_index)
                loss = flow_loss(dit, model_inputs, target)
                steps.add(global_step + 1, micro, loss)
                if args.hand_edit:
                    loss = loss + layersync.loss()  # README edit
                accelerator.backward(loss)
                if accelerator.sync_gradients:
                    if accelerate.PartialState().distributed_type != accelerate.DistributedType.NO:
                        for parameter in network.parameters():
                            if parameter.grad is not None:
                                parameter.grad = accelerator.reduce(parameter.grad, reduction="mean")
                    accelerator.clip_grad_norm_(network.parameters(), 1.0)
                optimizer.step()
                lr_scheduler.step()
                optimizer.zero_grad(set_to_none=True)
            micro += 1
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
            if len(accelerator.trackers) > 0:
                accelerator.log(logs, step=global_step)
            if global_step >= args.max_train_steps:
                break

    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        save_network(accelerator.unwrap_model(network), out / "tiny.safetensors")
    accelerator.end_training()


if __name__ == "__main__":
    main()
    end_processes()
