"""benchmarks/flux_step.py at its tiny CPU size: the report is complete, and the variants compute one quantity."""

import contextlib
import json
import math

import pytest
import torch
from helpers import script


@pytest.fixture(scope="module")
def flux_step():
    return script("flux_step")


@pytest.mark.slow
def test_tiny_run_reports_every_variant_and_mode(flux_step, tmp_path, capsys):
    """Both modes and all five variants get positive step times, finite ratios and a peak; no GPU targets on CPU."""
    torch._dynamo.reset()  # compiled code is cached per class in the process: compile this model's blocks afresh
    out = tmp_path / "flux_step.json"
    assert flux_step.main(["--tiny", "--rounds", "2", "--warmup", "1", "--backend", "eager", "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert set(result["modes"]) == set(flux_step.MODES)
    for mode, record in result["modes"].items():
        assert record["complete"] and record["rounds_done"] == 2, mode
        assert set(record["variants"]) == set(flux_step.VARIANTS), mode
        for variant, entry in record["variants"].items():
            where = f"{mode}/{variant}"
            assert len(entry["step_s"]) == 2 and min(entry["step_s"]) > 0, where
            assert entry["median_s"] > 0 and math.isfinite(entry["ratio"]) and entry["ratio"] > 0, where
            assert entry["ratio_iqr"][0] <= entry["ratio"] <= entry["ratio_iqr"][1], where
            assert entry["peak_bytes"] > 0 and math.isfinite(entry["extra_peak_activations"]), where
            assert math.isfinite(entry["loss"]), where
            assert (entry["term"] is None) == (variant in ("baseline", "paused")), where
        assert "targets_met" not in record, mode  # the targets are set for a GPU
    assert result["modes"]["compiled"]["dynamo"]["unique_graphs"] > 0  # the compiled mode really compiled
    assert result["config"]["student_activation_bytes"] == 64 * 32 * 4  # 8x8 image tokens, width 32, float32
    assert {"cpu", "cores", "torch", "loadavg"} <= set(result["machine"])
    printed = capsys.readouterr().out
    assert all(variant in printed for variant in flux_step.VARIANTS)


def test_every_variant_computes_the_layersync_term(flux_step):
    """On one forward, LayerSync, the plain formula on kept outputs and the SimpleTuner-style term agree, and so do
    their gradients (teacher detached in each); the kept outputs are gone after backward (checkpointing on)."""
    args = flux_step.parse(["--tiny"])
    model, _ = flux_step.build(args.config, torch.device("cpu"), torch.float32, seed=0)
    inputs, _ = flux_step.make_batch(args.config, torch.device("cpu"), torch.float32, seed=0)
    names = ("layersync", "capture_all", "simpletuner_style")
    with contextlib.ExitStack() as stack:
        terms = {name: stack.enter_context(flux_step.attached(name, model, args.config["pair"])) for name in names}
        prediction = model(**inputs, return_dict=False)[0]
        values = {name: term() for name, term in terms.items()}
        trainable = [p for p in model.parameters() if p.requires_grad]
        grads = {
            name: torch.autograd.grad(value, trainable, retain_graph=True, allow_unused=True)
            for name, value in values.items()
        }
        # LayerSync's term scales its gradient buffer in place on its one backward: it went through autograd.grad
        others = sum(value for name, value in values.items() if name != "layersync")
        (prediction.float().square().mean() + others).backward()
        kept = [hook.__self__ for hook in terms.values() if hasattr(hook.__self__, "kept")]
        assert len(kept) == 2 and all(not hooks.kept for hooks in kept)
    assert -1 < values["layersync"].item() / flux_step.WEIGHT < 1
    for name in names[1:]:
        torch.testing.assert_close(values[name], values["layersync"], rtol=1e-5, atol=1e-6, msg=name)
        for mine, theirs in zip(grads[name], grads["layersync"]):
            if theirs is None:
                assert mine is None or not mine.any(), name
            else:
                torch.testing.assert_close(mine, theirs, rtol=1e-4, atol=1e-7, msg=name)
    assert any(g is not None and g.any() for g in grads["layersync"])  # the comparison is not between zeros
