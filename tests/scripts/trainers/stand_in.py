"""What the trainer stand-ins share: a tiny diffusers DiT, a LoRA network that hooks into it the way kohya's and
ostris' LoRA networks do, deterministic data, a JSON-lines tracker, and the files a test compares.

The stand-ins reproduce how each trainer drives accelerate (what it prepares, when, how it accumulates, logs and
saves), not its model code: the DiT here is a tiny diffusers class with a layout.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import torch
import torch.nn.functional as F
from accelerate.tracking import GeneralTracker
from safetensors.torch import save_file
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # tests/: tiny_models, launch
from launch import end_processes  # noqa: E402, F401  (the stand-ins' last call)
from tiny_models import build  # noqa: E402

ITEMS = 6  # dataset size: 3 batches per epoch and process on 2 processes


def tiny_dit(name: str) -> tuple[nn.Module, dict]:
    """A tiny diffusers DiT (`tests/tiny_models.py` entry `name`), frozen as the trainers freeze theirs, and the
    keyword inputs of one sample."""
    dit, inputs = build(name, batch=1, seed=0)
    dit.requires_grad_(False)
    return dit, inputs


class LoRAModule(nn.Module):
    """A low-rank update of one Linear: `apply_to` replaces the Linear's `forward` with this module's, which calls
    the original and adds `up(down(x)) * scale`. The Linear stays where it is in the DiT; this module lives in the
    network, not in the DiT (the mechanism of kohya's `LoRAModule.apply_to` and ai-toolkit's LoRA modules)."""

    def __init__(self, name: str, linear: nn.Linear, rank: int = 4, alpha: float = 1.0):
        super().__init__()
        self.name, self.linear = name, [linear]  # a list: not registered as a submodule
        self.down = nn.Linear(linear.in_features, rank, bias=False)
        self.up = nn.Linear(rank, linear.out_features, bias=False)
        nn.init.kaiming_uniform_(self.down.weight, a=math.sqrt(5))
        nn.init.zeros_(self.up.weight)
        self.scale, self.multiplier = alpha / rank, 1.0

    def apply_to(self) -> None:
        linear = self.linear.pop()
        self.original_forward = linear.forward
        linear.forward = self.forward

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.original_forward(x) + self.up(self.down(x)) * self.scale * self.multiplier


class LoRANetwork(nn.Module):
    """LoRA on every attention projection (`to_q`, `to_k`, `to_v`) of the DiT."""

    TARGETS = ("to_q", "to_k", "to_v")

    def __init__(self, dit: nn.Module, rank: int = 4):
        super().__init__()
        torch.manual_seed(1)
        found = [
            (n, m) for n, m in dit.named_modules() if isinstance(m, nn.Linear) and n.split(".")[-1] in self.TARGETS
        ]
        self.loras = nn.ModuleList(LoRAModule(n.replace(".", "_"), m, rank) for n, m in found)

    def apply_to(self) -> None:
        for lora in self.loras:
            lora.apply_to()

    def set_multiplier(self, multiplier: float) -> None:
        for lora in self.loras:
            lora.multiplier = multiplier

    def weights(self) -> dict[str, torch.Tensor]:
        return {f"{lora.name}.{part}": getattr(lora, part).weight.detach().cpu().contiguous()
                for lora in self.loras for part in ("down", "up")}  # fmt: skip


class TinyDataset(torch.utils.data.Dataset):
    """ITEMS samples of the DiT's inputs: item i is a pure function of i (its latents and its conditioning)."""

    def __init__(self, inputs: dict):
        self.inputs = inputs

    def __len__(self) -> int:
        return ITEMS

    def __getitem__(self, index: int) -> dict:
        g = torch.Generator().manual_seed(100 + index)
        item = {"index": index}
        for key, value in self.inputs.items():
            if key.endswith("_ids"):  # position ids: unbatched in diffusers' Flux
                item[key] = value
            elif key != "timestep":  # drawn with the noise at each step
                item[key] = value[0]
                if key in ("hidden_states", "encoder_hidden_states"):
                    item[key] = item[key] + 0.1 * torch.randn(item[key].shape, generator=g)
        return item


def collate(items: list[dict]) -> dict:
    """Batch the samples; the position ids (unbatched in diffusers' Flux) and the index stay as they are."""
    batch = {"index": torch.tensor([item["index"] for item in items])}
    for key in items[0]:
        if key == "index":
            continue
        values = [item[key] for item in items]
        batch[key] = values[0] if key.endswith("_ids") else torch.stack(values)
    return batch


def noisy_inputs(batch: dict, seed: int) -> tuple[dict, torch.Tensor, torch.Tensor]:
    """Flow matching: (the DiT's inputs at a random time, the target `noise - latents`, the times in [0, 1])."""
    g = torch.Generator().manual_seed(seed)
    latents = batch["hidden_states"]
    noise = torch.randn(latents.shape, generator=g)
    t = torch.rand(latents.shape[0], generator=g)
    shape = (-1,) + (1,) * (latents.dim() - 1)
    inputs = {k: v for k, v in batch.items() if k != "index"}
    inputs["hidden_states"] = (1 - t.view(shape)) * latents + t.view(shape) * noise
    inputs["timestep"] = t * 1000
    return inputs, noise - latents, t


def flow_loss(dit: nn.Module, inputs: dict, target: torch.Tensor) -> torch.Tensor:
    prediction = dit(**inputs, return_dict=False)[0]
    return F.mse_loss(prediction.float(), target.float())


class JsonTracker(GeneralTracker):
    """A tracker that appends every `log` call it receives to `path` (JSON lines): what tensorboard would show."""

    name, requires_logging_directory = "json", False

    def __init__(self, path: Path):
        super().__init__()
        self.path = Path(path)

    @property
    def tracker(self):
        return self

    def store_init_configuration(self, values):
        pass

    def log(self, values: dict, step=None, **kwargs):
        with open(self.path, "a") as f:
            f.write(json.dumps({"step": step, **{k: float(v) for k, v in values.items()}}) + "\n")


class Steps:
    """`steps.jsonl` in the output folder, main process only: the task loss of every micro-step (before any
    LayerSync term), for comparing a runner run with a hand-edited one."""

    def __init__(self, output_dir: Path, main: bool):
        self.path, self.main = Path(output_dir) / "steps.jsonl", main

    def add(self, step: int, micro: int, task_loss: torch.Tensor) -> None:
        if self.main:
            with open(self.path, "a") as f:
                f.write(json.dumps({"step": step, "micro": micro, "task_loss": task_loss.item()}) + "\n")


def save_network(network: nn.Module, path: Path) -> None:
    save_file(network.weights(), str(path))
