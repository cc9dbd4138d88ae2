"""LatentQuantize(shared_values=True): one set of L values shared by every latent.

The authors' "global codebook" ablation (issue 21 section 1;
``latents/global_quantized.py`` in kylehkhsu/latent_quantization). The layer
must behave exactly as a per-latent layer whose rows all hold the same values,
except that the values are one (L,) tensor whose gradient is the sum of the
rows' gradients. The property test (test_quantize_property.py) draws shared
layers against the plain reference as well.
"""

from __future__ import annotations

import copy
import json

import pytest
import torch
import yaml
from tiny_run import TINY

from latentquant import LatentQuantize
from latentquant import _quantize_kernel as kernel
from latentquant.cli import main
from latentquant.models import DataInfo, build_model
from latentquant.train import checkpoint as ckpt
from latentquant.train.config import TrainConfig

SPRITES = DataInfo("sprites", 1, 5, 737_280)


def twins(levels, dim=None, num_codebooks=1, seed=0, **kwargs):
    """A shared layer with moved, unsorted values, and a per-latent layer whose every row holds them."""
    torch.manual_seed(seed)
    shared = LatentQuantize(levels, dim=dim, num_codebooks=num_codebooks, shared_values=True, **kwargs)
    with torch.no_grad():
        shared.values.add_(0.2 * (torch.rand(shared.values.shape) - 0.5) / shared.values.numel())
        shared.values.copy_(shared.values[torch.randperm(shared.values.numel())])
    torch.manual_seed(seed)
    plain = LatentQuantize(levels, dim=dim, num_codebooks=num_codebooks, **kwargs)
    with torch.no_grad():
        plain.values.copy_(shared.values.expand_as(plain.values))
    return shared, plain


def test_values_are_one_linspace_row_seen_by_every_latent():
    lq = LatentQuantize([7, 7, 7], shared_values=True)
    assert lq.values.shape == (7,) and isinstance(lq.values, torch.nn.Parameter)
    assert torch.equal(lq.values, torch.linspace(-0.5, 0.5, 7))
    assert [len(v) for v in lq.values_per_latent] == [7, 7, 7]
    with torch.no_grad():  # every latent's view is the one row
        lq.values_per_latent[2][0] = -3.0
    assert float(lq.values[0].detach()) == -3.0 and float(lq.values_per_latent[0][0].detach()) == -3.0
    assert "shared_values=True" in repr(lq)
    frozen = LatentQuantize(4, codebook_dim=3, shared_values=True, optimize_values=False)
    assert frozen.values.shape == (4,) and "values" in dict(frozen.named_buffers())


@pytest.mark.parametrize("levels", [[3, 5], [10, 10, 4]])
def test_unequal_levels_are_refused(levels):
    with pytest.raises(ValueError, match=r"shared_values=True.*same number of values.*levels \["):
        LatentQuantize(levels, shared_values=True)


@pytest.mark.parametrize("bad", [1, "yes", None])
def test_shared_values_must_be_a_bool(bad):
    with pytest.raises(TypeError, match="shared_values must be True or False"):
        LatentQuantize([4, 4], shared_values=bad)


@pytest.mark.parametrize("large", [False, True])  # the argmin search, and the midpoint count
@pytest.mark.parametrize(
    "shape,dim,num_codebooks,flat",
    [((6, 4), None, 1, True), ((2, 5, 9), 9, 2, False), ((3, 8, 4, 5), 8, 1, True), ((64, 3), 3, 1, False)],
)
def test_forward_equals_a_per_latent_layer_with_equal_rows(shape, dim, num_codebooks, flat, large, monkeypatch):
    if large:
        monkeypatch.setattr(kernel, "SMALL_DISTANCES", 0)
    shared, plain = twins([5] * 4, dim=dim, num_codebooks=num_codebooks, flat_indices=flat)
    x = torch.randn(shape) * 0.7
    xs, xp = x.clone().requires_grad_(), x.clone().requires_grad_()
    (a, pa), (b, pb) = shared(xs, return_loss_breakdown=True), plain(xp, return_loss_breakdown=True)
    assert torch.equal(a.indices, b.indices)
    torch.testing.assert_close(a.quantized, b.quantized, rtol=0, atol=0)
    torch.testing.assert_close(a.loss, b.loss)
    torch.testing.assert_close(pa.quantization, pb.quantization)
    upstream = torch.randn(shape)
    ((a.quantized * upstream).sum() + 3 * a.loss + pa.commitment).backward()
    ((b.quantized * upstream).sum() + 3 * b.loss + pb.commitment).backward()
    torch.testing.assert_close(xs.grad, xp.grad)
    # one row shared by all latents: its gradient is the sum of the rows'
    assert shared.values.grad.shape == (5,)
    torch.testing.assert_close(shared.values.grad, plain.values.grad.sum(0), rtol=1e-6, atol=1e-7)
    assert bool(plain.values.grad.abs().sum() > 0)


def test_indices_decode_and_encode_with_the_shared_values():
    shared, plain = twins([6] * 3, dim=5, num_codebooks=2)
    shared.eval()
    x = torch.randn(4, 7, 5)
    out = shared(x)
    assert torch.equal(shared.indices_to_codes(out.indices), out.quantized)
    latent = shared.indices_to_codes(out.indices, project_out=False)
    assert torch.equal(shared.codes_to_indices(latent), out.indices)
    assert torch.equal(plain.eval()(x).indices, out.indices)
    digits = shared.indices_to_level_indices(out.indices)
    assert torch.equal(shared.level_indices_to_indices(digits), out.indices)
    # every code drawn by sample is one of the shared values
    sample = shared.sample(50, project_out=False)
    assert bool(torch.isin(sample, shared.values.detach()).all())
    grad = torch.autograd.grad(shared.sample(8, project_out=False).sum(), shared.values)[0]
    assert grad.shape == (6,) and float(grad.sum()) == 8 * 6


def test_eighteen_latents_of_ten_shared_values_give_exact_int64_indices_and_no_codebook():
    lq = LatentQuantize(10, codebook_dim=18, shared_values=True)
    assert lq.codebook_size == 10**18
    assert sum(t.numel() for t in lq.state_dict().values()) == 10 + 18  # the values and num_values
    digits = torch.randint(0, 10, (5, 18))
    digits[0] = 9  # the largest code
    with torch.no_grad():
        codes = lq.values[digits]
    out = lq.eval()(codes)
    expected = sum(digits[:, i] * 10**i for i in range(18))
    assert out.indices.dtype == torch.int64 and torch.equal(out.indices, expected)
    assert int(out.indices[0]) == 10**18 - 1
    assert torch.equal(lq.indices_to_codes(out.indices), codes)


def test_state_dict_round_trip_and_refusal_of_the_other_kind():
    shared, plain = twins([4] * 3)
    state = shared.state_dict()
    assert state["values"].shape == (4,) and state["num_values"].tolist() == [4, 4, 4]
    again = LatentQuantize([4] * 3, shared_values=True)
    again.load_state_dict(state)
    assert torch.equal(again.values, shared.values)
    with pytest.raises(RuntimeError, match=r"values: the state_dict holds per-latent values.*shared_values=False"):
        LatentQuantize([4] * 3, shared_values=True).load_state_dict(plain.state_dict())
    with pytest.raises(RuntimeError, match=r"holds one set of shared values.*shared_values=True"):
        LatentQuantize([4] * 3).load_state_dict(state)
    with pytest.raises(RuntimeError, match="levels"):
        LatentQuantize([4] * 2, shared_values=True).load_state_dict(state)
    copied = copy.deepcopy(shared)
    assert copied.values.shape == (4,) and torch.equal(copied.values, shared.values)


def test_values_follow_dtype_and_train():
    lq = LatentQuantize([5] * 3, shared_values=True).double()
    x = torch.randn(16, 3, dtype=torch.float64)
    opt = torch.optim.SGD(lq.parameters(), lr=0.5)
    before = lq.values.detach().clone()
    for _ in range(3):
        opt.zero_grad()
        lq(x).loss.backward()
        opt.step()
    assert lq.values.dtype == torch.float64 and not torch.equal(lq.values, before)


def test_in_place_optimizer_steps_the_shared_row_on_the_summed_gradient():
    def sgd(params):
        return torch.optim.SGD(params, lr=0.7)

    shared, _ = twins([5] * 3, in_place_codebook_optimizer=sgd)
    reference = copy.deepcopy(shared.values.detach())
    x = torch.randn(20, 3)
    # by hand: the quantization term's gradient in the shared row, one SGD step
    values = reference.clone().requires_grad_()
    slots = (x[:, :, None] - values.detach()).abs().argmin(-1)
    ((x - values[slots]) ** 2).mean().backward()
    expected = reference - 0.7 * values.grad
    out = shared(x)
    torch.testing.assert_close(shared.values.detach(), expected)
    assert shared.values.grad is None and not out.loss.requires_grad


# ----------------------------------------------------------------------------
# the QLAE option: -o global_codebook=1 (a sweep entry qlae+option=global_codebook=1)


def test_qlae_global_codebook_builds_one_shared_row_and_trains():
    torch.manual_seed(0)
    model = build_model("qlae", "small", SPRITES, values_per_latent=6, global_codebook=True)
    assert model.quantizer.shared_values and model.quantizer.values.shape == (6,)
    plain = build_model("qlae", "small", SPRITES, values_per_latent=6)
    assert not plain.quantizer.shared_values and plain.quantizer.values.shape == (10, 6)
    # the values are trained by plain Adam, undecayed, like the per-latent ones
    decay, no_decay = model.split_parameters()
    assert "quantizer.values" in no_decay and "quantizer.values" not in decay
    (opt,) = model.configure_optimizers(lr=1e-2, weight_decay=0.1).values()
    x = (torch.rand(8, 1, 64, 64, generator=torch.Generator().manual_seed(1)) > 0.8).float()
    before = model.quantizer.values.detach().clone()
    for _ in range(3):
        opt.zero_grad()
        out = model(x)
        out.loss.backward()
        opt.step()
    assert torch.isfinite(out.loss) and out.parts["quantization"] > 0
    assert not torch.equal(model.quantizer.values.detach(), before)
    enc = model.eval().encode(x)
    torch.testing.assert_close(enc.z, model.quantizer.values.detach()[enc.code])  # every latent, one codebook


QLAE_RUN = [*TINY, "--model", "qlae", "--seed", "2"]


def test_qlae_global_codebook_run_checkpoints_and_resumes(tmp_path):
    full, part = tmp_path / "full", tmp_path / "part"
    option = ["-o", "global_codebook=1", "--checkpoint-every", "2"]
    assert main(["train", *QLAE_RUN, *option, "--steps", "4", "--out", str(full)]) == 0
    assert main(["train", *QLAE_RUN, *option, "--steps", "2", "--out", str(part)]) == 0
    assert yaml.safe_load((part / "config.yaml").read_text())["options"]["global_codebook"] is True
    assert main(["train", "--resume", str(part), "--steps", "4"]) == 0
    state, _ = ckpt.load_model_state(ckpt.latest_checkpoint(part / "checkpoints"))
    assert state["quantizer.values"].shape == (10,)
    expected, _ = ckpt.load_model_state(ckpt.latest_checkpoint(full / "checkpoints"))
    for name in expected:
        torch.testing.assert_close(state[name], expected[name], rtol=0, atol=1e-6)
    losses = [json.loads(line) for line in (part / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in losses if "loss" in r][-1] == 4


def test_a_config_written_before_the_option_existed_is_the_same_run():
    """Resume, sweep and table compare configs: a qlae config.yaml without
    global_codebook (every run before it existed) means the default, False."""
    old = TrainConfig(model="qlae", dataset="sprites", options={"quantization_weight": 0.01, "commitment_weight": 0.01})
    same = old.replace(options={**old.options, "global_codebook": False})
    other = old.replace(options={**old.options, "global_codebook": True})
    assert same.differences(old) == {} and old.differences(same) == {}
    assert set(other.differences(old)) == {"options"} and set(old.differences(other)) == {"options"}
