"""Shared test setup."""

import torch

# One intra-op thread: the tiny test models gain nothing from more, and on a shared 2-core machine two threads per
# process oversubscribe the cores (the 200-step memory test took 168 s at load 7 with two threads, 3 s with one).
torch.set_num_threads(1)
