"""What a training forward is: gradients enabled and an output that depends on something that trains, in train or eval
mode (musubi-tuner and kohya sd-scripts keep the DiT in eval() without --gradient_checkpointing). Every training
forward since the last loss() counts, each target token once; one that ended unused is dropped."""

import copy

import pytest
import torch
import torch.nn.functional as F
from tiny_models import build, prediction
from torch import nn

from layersync_hooks import BlockLayout, LayerSync
from layersync_hooks.errors import MissingActivationsError


def terms_and_grads(model, inputs, *, eval_mode):
    """The term of one forward in train or eval mode, and the gradient it gives each parameter."""
    model.train(not eval_mode)
    model.zero_grad()
    layersync = LayerSync(model, student_block=1, teacher_block=3)
    prediction(model, inputs)
    term = layersync.loss()
    term.backward()
    layersync.remove()
    return term.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def test_an_eval_mode_forward_with_gradients_is_a_training_forward():
    """A model in eval() that trains (gradients on, parameters that train) gets the same term and gradient as in
    train(): the trainers that keep the DiT in eval() get LayerSync."""
    model, inputs = build("PixArt")  # no dropout: train and eval compute the same
    eval_term, eval_grads = terms_and_grads(model, inputs, eval_mode=True)
    train_term, train_grads = terms_and_grads(model, inputs, eval_mode=False)
    assert eval_term == train_term and eval_grads.keys() == train_grads.keys() and eval_grads
    for name, grad in eval_grads.items():
        torch.testing.assert_close(grad, train_grads[name], rtol=0, atol=0, msg=name)


class OutsideLoRA(nn.Module):
    """A LoRA network that lives outside the model, as musubi-tuner's and sd-scripts' do: it patches the forward of
    the model's Linear layers and holds the only trainable parameters."""

    def __init__(self, model, names):
        super().__init__()
        self.down = nn.ParameterList()
        for name in names:
            linear = model.get_submodule(name)
            down = nn.Parameter(torch.randn(linear.in_features, 2) * 0.1)
            up = nn.Parameter(torch.randn(2, linear.out_features) * 0.1)
            self.down.extend([down, up])
            original = linear.forward
            linear.forward = lambda x, original=original, down=down, up=up: original(x) + x @ down @ up


def test_a_frozen_model_trained_through_an_outside_network_is_a_training_forward():
    """No parameter of the model trains, but its output depends on the network's: a training forward; the term's
    gradient reaches the network's weights."""
    model, inputs = build("PixArt")
    model.requires_grad_(False)
    model.eval()
    network = OutsideLoRA(model, ["transformer_blocks.0.attn1.to_q", "transformer_blocks.2.attn1.to_q"])
    layersync = LayerSync(model, student_block=1, teacher_block=3)
    prediction(model, inputs)
    layersync.loss().backward()
    grads = [p.grad for p in network.parameters()]
    assert grads[0].abs().sum() > 0 and grads[1].abs().sum() > 0  # the student's block trains
    assert grads[2] is None or not grads[2].any()  # the teacher's does not (it is detached)


@pytest.mark.parametrize(
    "stray",
    ["no_grad", "frozen under enable_grad", "EMA copy", "paused"],
)
def test_forwards_that_train_nothing_are_not_recorded(stray):
    """Validation under no_grad, a frozen model's reference pass under enable_grad, an EMA copy and a paused
    forward record nothing: loss() says which, and the training forward before them is still the one used."""
    model, inputs = build("PixArt")
    layersync = LayerSync(model, student_block=1, teacher_block=3)
    ema = copy.deepcopy(model)
    reasons = {"no_grad": "gradients were disabled", "frozen under enable_grad": "nothing it ran needs a gradient",
               "EMA copy": "No training forward", "paused": "paused"}  # fmt: skip

    def run_stray():
        if stray == "no_grad":
            with torch.no_grad():
                prediction(model, inputs)
        elif stray == "frozen under enable_grad":
            model.requires_grad_(False)
            with torch.enable_grad():
                prediction(model, inputs)
            model.requires_grad_(True)
        elif stray == "EMA copy":
            prediction(ema, inputs)
        else:
            with layersync.paused():
                prediction(model, inputs)

    run_stray()
    with pytest.raises(MissingActivationsError, match=reasons[stray]):
        layersync.loss()
    pred = prediction(model, inputs)
    expected = layersync.loss().detach()
    kept = prediction(model, inputs)
    run_stray()
    assert layersync.loss().detach() == expected and kept.shape == pred.shape


def test_a_cfg_batch_is_one_forward_whose_samples_all_count():
    """A forward over [conditional; unconditional] samples (classifier-free guidance trained in one batch) is one
    training forward: both halves are aligned, as prior preservation's concatenated class images are."""
    model, inputs = build("PixArt")
    layersync = LayerSync(model, student_block=1, teacher_block=3)
    hidden = inputs["hidden_states"]
    cfg = dict(inputs, encoder_hidden_states=torch.cat([inputs["encoder_hidden_states"][:1], torch.zeros_like(
        inputs["encoder_hidden_states"][:1])]), hidden_states=torch.cat([hidden[:1], hidden[:1]]))  # fmt: skip
    outputs = []
    model.transformer_blocks[0].register_forward_hook(lambda m, a, out: outputs.append(out))
    prediction(model, cfg)
    layersync.loss().backward()
    (student,) = outputs
    assert student.grad_fn is not None


def per_sample_steps(model, inputs, samples):
    """Kandinsky 5's training step in musubi-tuner: one forward per sample, then one loss and one backward."""
    outputs, predictions = [], []
    handle = model.transformer_blocks[0].register_forward_hook(lambda m, a, out: outputs.append(out))
    for b in samples:
        one = {k: v[b : b + 1] if isinstance(v, torch.Tensor) and v.shape[:1] == (2,) else v for k, v in inputs.items()}
        predictions.append(prediction(model, one))
    handle.remove()
    return outputs, torch.cat(predictions)


def test_several_forwards_before_one_backward_all_count():
    """One forward per sample, then loss(): the term covers every sample's tokens, each once (the mean over all of
    them, as one forward of the whole batch gives), and its gradient reaches every sample's student tokens."""
    model, inputs = build("PixArt")
    layersync = LayerSync(model, student_block=1, teacher_block=3, weight=1.0)
    outputs, _ = per_sample_steps(model, inputs, [0, 1])
    term = layersync.loss()
    grads = torch.autograd.grad(term, outputs)
    assert all(g.abs().sum() > 0 for g in grads), "every sample's forward gets the term's gradient"
    together = LayerSync(model, student_block=1, teacher_block=3, weight=1.0)
    prediction(model, inputs)
    torch.testing.assert_close(term, together.loss(), rtol=1e-5, atol=1e-6)


def test_a_forward_backpropagated_without_loss_is_dropped_at_the_next():
    """A training forward whose graph a backward went through without loss() is over: the next training forward drops
    it, so the next loss() covers only the forwards after it and never backpropagates a spent graph again."""
    model, inputs = build("PixArt")
    layersync = LayerSync(model, student_block=1, teacher_block=3)
    spent = prediction(model, inputs)
    spent.mean().backward()  # a step without LayerSync's term
    pred = prediction(model, dict(inputs, hidden_states=inputs["hidden_states"] * 0.5))
    assert layersync.has_activations
    (pred.mean() + layersync.loss()).backward()  # one forward's term; the spent graph is not touched
    assert spent.shape == pred.shape


class UnbatchedBlocks(nn.Module):
    """A DiT called on one sample at a time whose blocks take and return unbatched (N, D) tokens."""

    def __init__(self):
        super().__init__()
        self.blocks = nn.ModuleList(nn.Sequential(nn.Linear(8, 8), nn.GELU()) for _ in range(3))

    def forward(self, x):
        for block in self.blocks:
            x = x + block(x)
        return x


def test_unbatched_tokens_are_one_sample():
    """(N, D) block outputs are one sample of N tokens; two calls before loss() are two samples, each token
    counted once."""
    model = UnbatchedBlocks()
    layersync = LayerSync(model, student_block=1, teacher_block=3, layout=BlockLayout(stacks=("blocks",)))
    samples = [torch.randn(5, 8), torch.randn(7, 8)]
    students, teachers = [], []
    model.blocks[0].register_forward_hook(lambda m, a, out: students.append(out))
    model.blocks[2].register_forward_hook(lambda m, a, out: teachers.append(out))
    predictions = [model(x) for x in samples]  # kept, as a trainer keeps them for its loss
    term = layersync.loss()
    cosines = torch.cat([F.cosine_similarity(s, t.detach(), dim=-1) for s, t in zip(students, teachers)])
    torch.testing.assert_close(term, -0.2 * cosines.mean())
    assert len(predictions) == 2


class LossInside(nn.Module):
    """A training module that adds LayerSync's term inside its own forward, as DiffSynth-Studio's training modules add
    their losses; `run_blocks` runs the DiT's blocks itself instead of calling the DiT (DiffSynth's model functions)."""

    def __init__(self, model, run_blocks):
        super().__init__()
        self.model, self.run_blocks = model, run_blocks
        self.layersync = LayerSync(model, student_block=1, teacher_block=3, layout=BlockLayout(stacks=("blocks",)),
                                   training_module=self)  # fmt: skip

    def forward(self, x):
        if self.run_blocks:
            y = x
            for block in self.model.blocks:
                y = y + block(y)
        else:
            y = self.model(x)
        return y.pow(2).mean() + self.layersync.loss()


@pytest.mark.parametrize("run_blocks", [False, True], ids=["calls the model", "runs the blocks"])
def test_the_term_taken_inside_the_training_modules_forward(run_blocks):
    """loss() inside the training module's forward, after every block has run, takes that forward's term (the
    forward has not returned yet), step after step; taken before the teacher has run, it is a clear error."""
    torch.manual_seed(0)
    module = LossInside(UnbatchedBlocks(), run_blocks)
    x = torch.randn(2, 5, 8)
    students, teachers = [], []
    module.model.blocks[0].register_forward_hook(lambda m, a, out: students.append(out))
    module.model.blocks[2].register_forward_hook(lambda m, a, out: teachers.append(out))
    for _ in range(2):
        module(x).backward()
        expected = -0.2 * F.cosine_similarity(students[-1], teachers[-1].detach(), dim=-1).mean()
        torch.testing.assert_close(module.layersync.metrics()["layersync_loss"], expected.item())
    module.model.blocks[2].register_forward_pre_hook(lambda m, a: module.layersync.loss())
    with pytest.raises(MissingActivationsError, match="has not returned yet"):
        module(x)
