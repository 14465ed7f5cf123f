"""A diffusers-style Flux training script with the README's LayerSync lines, for every engine `accelerate launch`
offers (DDP, FSDP1, FSDP2, DeepSpeed ZeRO-2 and ZeRO-3) and for one process, unchanged.

It trains a tiny `FluxTransformer2DModel` by flow matching on a prepared DataLoader (DeepSpeed reads its micro batch
size from it), clips gradients as diffusers' scripts do, calls `save_state` on every process (FSDP and DeepSpeed
save shards, a collective) and resumes with `skip_first_batches`. So that one process with `--batch_size 4` and two
with `--batch_size 2` train on the same global batches, the data is a fixed table and the logged `loss` is the task
loss averaged over micro-batches and processes. It writes `logs.jsonl` (every `accelerator.log`, which it calls on
the main process only, as some trainers do), `params.safetensors` (the full trained weights) and `rank<N>.json`
(what accelerate told each process, and what the engine made of the model). Under `layersync-hooks run` without
`--layersync_enabled`, its own LayerSync is off and the runner's adds the term.
"""

import argparse
import json
import sys
from pathlib import Path

import torch
import torch.nn.functional as F
from accelerate import Accelerator
from accelerate.utils import ProjectConfiguration
from safetensors.torch import save_file
from torch.utils.data import DataLoader, TensorDataset

sys.path[:0] = [str(Path(__file__).resolve().parent), str(Path(__file__).resolve().parents[1])]
from accelerate_train import JsonTracker  # noqa: E402
from launch import end_processes  # noqa: E402
from tiny_models import build, image_ids  # noqa: E402

from layersync_hooks import LayerSync  # noqa: E402  (README edit)


def parse_args():
    parser = argparse.ArgumentParser(description="Simple example of a training script.")
    parser.add_argument("--output_dir", required=True)
    parser.add_argument("--batch_size", type=int, default=2, help="per process")
    parser.add_argument("--max_train_steps", type=int, default=4)
    parser.add_argument("--gradient_accumulation_steps", type=int, default=1)
    parser.add_argument("--max_grad_norm", type=float, default=1.0)
    parser.add_argument("--checkpointing_steps", type=int, default=0)
    parser.add_argument("--resume_from_checkpoint", default=None, help="a checkpoint folder")
    parser.add_argument("--create_optimizer_state", action="store_true", help="before load_state (FSDP1's fix)")
    LayerSync.add_arguments(parser)  # README edit
    return parser.parse_args()


def dataset(size: int) -> TensorDataset:
    """Latents, text states, pooled text, noise and timesteps: fixed, so every run sees the same samples."""
    g = torch.Generator().manual_seed(0)
    return TensorDataset(
        torch.randn(size, 16, 4, generator=g),
        torch.randn(size, 8, 32, generator=g),
        torch.randn(size, 32, generator=g),
        torch.randn(size, 16, 4, generator=g),
        torch.rand(size, generator=g),
    )


def create_optimizer_state(optimizer: torch.optim.Optimizer) -> None:
    """FSDP1 with SHARDED_STATE_DICT: accelerate's `load_state` loads the saved optimizer state into the state the
    optimizer already has, which is none before its first step, so nothing is restored. One step with zero
    gradients at learning rate 0 creates that state and changes no weight (as torch's own checkpoint loader does).
    """
    lrs = [group["lr"] for group in optimizer.param_groups]
    for group in optimizer.param_groups:
        group["lr"] = 0.0
        for param in group["params"]:
            if param.requires_grad:
                param.grad = torch.zeros_like(param)
    optimizer.step()
    for group, lr in zip(optimizer.param_groups, lrs):
        group["lr"] = lr
    optimizer.zero_grad(set_to_none=True)


def prepared(model: torch.nn.Module) -> dict:
    """What the engine made of the model: its class, its first block's class, whether ZeRO-3 partitioned it."""
    block = next(module for name, module in model.named_modules() if name.endswith("transformer_blocks.0"))
    return {"model": type(model).__name__, "block": type(block).__name__,
            "zero3": any(hasattr(param, "ds_id") for param in model.parameters())}  # fmt: skip


def main():
    args = parse_args()
    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    accelerator = Accelerator(
        gradient_accumulation_steps=args.gradient_accumulation_steps,
        log_with=[JsonTracker(out / "logs.jsonl")],
        project_config=ProjectConfiguration(project_dir=str(out)),
    )
    transformer, _ = build("Flux", seed=0)  # the same weights on every process
    layersync = LayerSync.from_config(transformer, args)  # README edit: before prepare
    optimizer = torch.optim.AdamW(transformer.parameters(), lr=1e-3)
    global_batch = args.batch_size * accelerator.num_processes
    samples = dataset(global_batch * args.gradient_accumulation_steps * args.max_train_steps)
    loader = DataLoader(samples, batch_size=args.batch_size, shuffle=False)
    transformer, optimizer, loader = accelerator.prepare(transformer, optimizer, loader)
    layersync.register_with(accelerator)  # README edit: save_state / load_state keep its step
    told = {"num_processes": accelerator.num_processes, "is_main_process": accelerator.is_main_process,
            "distributed_type": str(accelerator.distributed_type), **prepared(transformer)}  # fmt: skip
    (out / f"rank{accelerator.process_index}.json").write_text(json.dumps(told))
    accelerator.init_trackers("train")
    img_ids, txt_ids = image_ids(4, 4), torch.zeros(8, 3)

    step = 0
    batches = loader
    if args.resume_from_checkpoint:
        if args.create_optimizer_state:
            create_optimizer_state(optimizer.optimizer)
        accelerator.load_state(args.resume_from_checkpoint)
        step = int(Path(args.resume_from_checkpoint).name.split("-")[1])
        batches = accelerator.skip_first_batches(loader, step * args.gradient_accumulation_steps)
    transformer.train()
    task_sum, micro = 0.0, 0
    for latents, text, pooled, noise, t in batches:
        with accelerator.accumulate(transformer):
            noisy = (1 - t.view(-1, 1, 1)) * latents + t.view(-1, 1, 1) * noise  # flow matching
            model_pred = transformer(
                hidden_states=noisy,
                encoder_hidden_states=text,
                pooled_projections=pooled,
                timestep=t,
                img_ids=img_ids,
                txt_ids=txt_ids,
                return_dict=False,
            )[0]
            loss = F.mse_loss(model_pred.float(), (noise - latents).float())
            task_sum, micro = task_sum + loss.detach(), micro + 1
            loss = loss + layersync.loss()  # README edit: once per training forward, before backward
            accelerator.backward(loss)
            if accelerator.sync_gradients:
                accelerator.clip_grad_norm_(transformer.parameters(), args.max_grad_norm)
            optimizer.step()
            optimizer.zero_grad()
        if not accelerator.sync_gradients:
            continue
        step += 1
        logs = {"loss": accelerator.reduce(task_sum / micro, reduction="mean").item()}
        task_sum, micro = 0.0, 0
        logs.update(layersync.metrics())  # README edit (every process: it averages over them)
        if accelerator.is_main_process:
            accelerator.log(logs, step=step)
        if args.checkpointing_steps and step % args.checkpointing_steps == 0:
            accelerator.save_state(str(out / f"checkpoint-{step}"))  # every process: a sharded save
        if step >= args.max_train_steps:
            break

    weights = accelerator.get_state_dict(transformer)  # every process: FSDP and ZeRO-3 gather the shards
    if accelerator.is_main_process:
        save_file({name: tensor.float().contiguous() for name, tensor in weights.items()}, out / "params.safetensors")
    accelerator.end_training()


if __name__ == "__main__":
    main()
    end_processes()
