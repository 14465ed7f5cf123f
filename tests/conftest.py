"""Shared test setup."""

import importlib.util

import pytest
import torch
from launch import reset_accelerate

from layersync_hooks import BlockCapture

# One intra-op thread: the tiny test models gain nothing from more, and on a shared 2-core machine two threads per
# process oversubscribe the cores (the 200-step memory test took 168 s at load 7 with two threads, 3 s with one).
torch.set_num_threads(1)

# tests/with_diffsynth need DiffSynth-Studio, which imports torchvision: .ci/run runs them in a venv of their own
# (`pytest tests/with_diffsynth`). Where diffsynth is not installed they are not collected (rather than skipped).
if importlib.util.find_spec("diffsynth") is None:
    collect_ignore = ["with_diffsynth"]


@pytest.fixture(autouse=True)
def no_capture_outlives_its_test(monkeypatch):
    """Every BlockCapture a test attaches (LayerSync's included) is removed when the test ends, so no hook is left
    on a model another test may share."""
    attached = []
    register = BlockCapture._register

    def recorded(capture):
        attached.append(capture)
        return register(capture)

    monkeypatch.setattr(BlockCapture, "_register", recorded)
    yield
    for capture in attached:
        capture.remove()


@pytest.fixture
def fresh_accelerate_state():
    """A test that uses it starts and ends with a fresh accelerate state, as a new process would."""
    reset_accelerate()
    yield
    reset_accelerate()


@pytest.fixture
def one_thread():
    """One thread, as the launched runs use (OMP_NUM_THREADS=1): two spinning threads cost more on 2 shared cores."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
