"""Shared test setup."""

import importlib.util

import torch

# One intra-op thread: the tiny test models gain nothing from more, and on a shared 2-core machine two threads per
# process oversubscribe the cores (the 200-step memory test took 168 s at load 7 with two threads, 3 s with one).
torch.set_num_threads(1)

# tests/with_diffsynth need DiffSynth-Studio, which imports torchvision: .ci/run runs them in a venv of their own
# (`pytest tests/with_diffsynth`). Where diffsynth is not installed they are not collected (rather than skipped).
if importlib.util.find_spec("diffsynth") is None:
    collect_ignore = ["with_diffsynth"]
