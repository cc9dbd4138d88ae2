"""LatentQuantize's in_place_codebook_optimizer (issue 11, section 2).

In a training-mode forward with grad enabled, the values take one step of
their own optimizer on mean((sg(z) - q)^2); the input is then quantized again
with the new values, and nothing the caller backpropagates reaches the values.
"""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from latentquant import LatentQuantize


def adam(params):
    return torch.optim.Adam(params, lr=0.05)


class CountingSGD(torch.optim.SGD):
    def __init__(self, params):
        super().__init__(params, lr=0.1)
        self.steps = 0

    def step(self, closure=None):
        self.steps += 1
        return super().step(closure)


def nearest(z: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    """z (p, d), values (d, L) equal levels -> q (p, d), by argmin; differentiable in values."""
    slots = (z.detach()[:, :, None] - values.detach()).abs().argmin(-1)
    return values.gather(1, slots.t()).t()


def test_needs_optimize_values():
    with pytest.raises(ValueError, match="in_place_codebook_optimizer.*optimize_values=True"):
        LatentQuantize(levels=[4, 4], optimize_values=False, in_place_codebook_optimizer=adam)
    with pytest.raises(TypeError, match="in_place_codebook_optimizer"):
        LatentQuantize(levels=[4, 4], in_place_codebook_optimizer=torch.optim.Adam([nn.Parameter(torch.ones(1))]))
    lq = LatentQuantize(levels=[4, 4], in_place_codebook_optimizer=adam)
    assert lq.in_place_codebook_optimizer.param_groups[0]["params"] == [lq.values]
    assert "in_place_codebook_optimizer=Adam" in repr(lq)


@pytest.mark.parametrize("dim", [3, 7])
def test_one_training_forward_equals_a_hand_written_two_optimizer_loop(dim):
    torch.manual_seed(0)
    encoder = nn.Linear(5, dim)
    lq = LatentQuantize(
        levels=[6, 6, 6],
        dim=dim,
        quantization_loss_weight=0.3,
        commitment_loss_weight=0.7,
        in_place_codebook_optimizer=adam,
    )
    model = nn.Sequential(encoder, lq)
    twin = copy.deepcopy(model)  # the hand-written loop runs on this copy
    t_encoder, t_lq = twin[0], twin[1]
    inner = adam([t_lq.values])
    outer = torch.optim.AdamW(model.parameters(), lr=0.01, weight_decay=0.5)
    t_outer = torch.optim.AdamW(twin.parameters(), lr=0.01, weight_decay=0.5)

    for _ in range(3):
        x = torch.randn(32, 5)
        # the layer
        outer.zero_grad()
        out = model(x)
        (out.quantized.square().mean() + out.loss).backward()
        assert lq.values.grad is None
        outer.step()
        # by hand: the values' own optimizer first, then the layer with the new values, detached
        t_outer.zero_grad()
        z = t_lq.project_in(t_encoder(x))
        inner.zero_grad()
        ((z.detach() - nearest(z, t_lq.values)) ** 2).mean().backward()
        inner.step()
        inner.zero_grad(set_to_none=True)
        q = nearest(z, t_lq.values.detach())
        quantized = t_lq.project_out(z + (q - z).detach())
        loss = 0.3 * ((z.detach() - q) ** 2).mean() + 0.7 * ((z - q.detach()) ** 2).mean()
        (quantized.square().mean() + loss).backward()
        t_outer.step()

        torch.testing.assert_close(out.quantized, quantized, rtol=1e-6, atol=1e-6)
        torch.testing.assert_close(out.loss, loss, rtol=1e-6, atol=1e-6)
        for a, b in zip(model.parameters(), twin.parameters()):
            torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-6)
        digits = lq.indices_to_level_indices(out.indices)
        assert torch.equal(t_lq.values.gather(1, digits.t()).t(), q)


def test_values_step_once_per_training_forward_and_never_in_eval_or_no_grad():
    torch.manual_seed(0)
    lq = LatentQuantize(levels=[5, 3, 4], in_place_codebook_optimizer=CountingSGD)
    opt = lq.in_place_codebook_optimizer
    x = torch.randn(64, 3)
    before = lq.values.detach().clone()
    lq.eval()(x)
    with torch.no_grad():
        lq.train()(x)
    assert opt.steps == 0 and torch.equal(lq.values, before)
    out = lq.train()(x)
    assert opt.steps == 1 and not torch.equal(lq.values, before)
    # the returned codes come from the new values
    assert torch.equal(out.quantized, lq.indices_to_codes(out.indices))
    lq(x)
    assert opt.steps == 2


def test_caller_gradients_never_reach_the_values():
    torch.manual_seed(0)
    lq = LatentQuantize(levels=[5, 5], dim=4, in_place_codebook_optimizer=adam)
    x = torch.randn(16, 4, requires_grad=True)
    out, parts = lq(x, return_loss_breakdown=True)
    (out.loss + parts.quantization + parts.commitment + out.quantized.sum()).backward()
    assert lq.values.grad is None and x.grad is not None and lq.project_in.weight.grad is not None
    # a gradient the caller accumulated before is kept, not replaced by the inner one
    held = torch.full_like(lq.values, 3.0)
    lq.values.grad = held.clone()
    lq(x).loss.backward()
    assert torch.equal(lq.values.grad, held)


def test_two_forwards_then_one_backward():
    """Gradient accumulation: the second forward steps the values in place
    before the first forward's backward runs."""
    torch.manual_seed(0)
    for levels in ([5, 5], [5, 3]):
        lq = LatentQuantize(levels=levels, dim=4, in_place_codebook_optimizer=adam)
        x = torch.randn(2, 16, 4, requires_grad=True)
        losses = [lq(x[i]).loss for i in range(2)]
        sum(losses).backward()
        (gx,) = torch.autograd.grad(lq(x[0]).loss, x, create_graph=True)
        assert x.grad is not None and gx.grad_fn is not None and lq.values.grad is None


def test_optimizer_state_saves_and_restores_through_its_state_dict():
    torch.manual_seed(0)
    a = LatentQuantize(levels=[6, 6], in_place_codebook_optimizer=adam)
    for _ in range(3):
        a(torch.randn(40, 2))
    # deep copies, as torch.save and torch.load would give (loading shares tensors otherwise)
    saved_layer, saved_opt = copy.deepcopy((a.state_dict(), a.in_place_codebook_optimizer.state_dict()))
    b = LatentQuantize(levels=[6, 6], in_place_codebook_optimizer=adam)
    b.load_state_dict(saved_layer)
    b.in_place_codebook_optimizer.load_state_dict(saved_opt)
    x = torch.randn(40, 2)
    torch.testing.assert_close(a(x).quantized, b(x).quantized, rtol=0, atol=0)
    assert torch.equal(a.values, b.values)


class AutoEncoder(nn.Module):
    def __init__(self):
        super().__init__()
        self.encoder = nn.Linear(8, 4)
        self.quantizer = LatentQuantize(levels=[5] * 4, in_place_codebook_optimizer=adam)
        self.decoder = nn.Linear(4, 8)

    def forward(self, x):
        z, _, loss = self.quantizer(self.encoder(x))
        return ((self.decoder(z) - x) ** 2).mean() + loss


def test_torch_compile_runs_and_matches_eager():
    """Graph breaks at the inner step are expected (torch.autograd.grad and the
    optimizer step); the test reports their number and checks the result."""
    torch.manual_seed(0)
    model = AutoEncoder()
    twin = copy.deepcopy(model)
    x = torch.randn(16, 8)

    explained = torch._dynamo.explain(copy.deepcopy(model))(x)
    reasons = "; ".join(sorted({str(b.reason).splitlines()[0] for b in explained.break_reasons}))
    print(f"graph breaks with in_place_codebook_optimizer: {explained.graph_break_count} ({reasons})")
    assert explained.graph_count >= 1

    compiled = torch.compile(model, backend="aot_eager")
    for _ in range(2):
        model.zero_grad(), twin.zero_grad()
        for m in (compiled, twin):
            m(x).backward()
        for a, b in zip(model.parameters(), twin.parameters()):
            torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-6)
        torch.testing.assert_close(model.encoder.weight.grad, twin.encoder.weight.grad, rtol=1e-6, atol=1e-6)
        assert model.quantizer.values.grad is None
