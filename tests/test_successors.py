"""The successors of QLAE (issue 23): Tripod, FactorQVAE and the categorical VAE.

Each loss term against a short plain implementation, the schedules, the hard assignment at
evaluation, the optimizer split, which latents the metrics see as discrete, a short run that
lowers the loss, and the command line: train, resume, evaluate, sweep and table.
"""

import functools
import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from tiny_run import TINY

from latentquant.cli import main
from latentquant.models import ARCHS, DataInfo, build_model, clip_gradients
from latentquant.models.catvae import cosine_anneal
from latentquant.models.factorqvae import cosine_lr
from latentquant.models.total_correlation import Discriminator, discriminator_loss, permute_latents
from latentquant.models.tripod import HESSIAN_LAYERS, fsq, hessian_penalty, kde_multi_information
from latentquant.train import checkpoint as ckpt
from latentquant.train.config import TrainConfig, resolve

MODELS = ("tripod", "factorqvae", "catvae")
INFO = DataInfo("sprites", 1, 2, 1000)  # 2 factors -> 4 latents


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def make(name, arch="small", info=INFO, **options):
    torch.manual_seed(0)
    return build_model(name, arch, info, **options)


def images(b=8, c=1, seed=0):
    return (torch.rand(b, c, 64, 64, generator=torch.Generator().manual_seed(seed)) > 0.8).float()


# ------------------------------------------------------------------ all three


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("name", MODELS)
def test_every_backbone_encodes_discrete_codes_and_decodes(name, arch):
    model = make(name, arch, DataInfo("shapes", 3, 3, 1000)).eval()
    x = torch.rand(3, 3, 64, 64)
    enc = model.encode(x)
    assert model.discrete_latents  # InfoMEC, MIG and DCI read the codes as labels
    assert enc.code.shape == (3, 6) and enc.code.dtype == torch.int64
    assert int(enc.code.min()) >= 0 and int(enc.code.max()) < model.values_per_latent
    assert model.decode(enc.z).shape == (3, 3, 64, 64)
    sweep = model.traversal(enc.z, 2, enc.code, 5)
    assert sweep.shape[1:] == enc.z.shape and 1 <= sweep.shape[0] <= max(5, model.values_per_latent)
    assert torch.equal(sweep[:, :, 1], enc.z[None, :, 1].expand(len(sweep), -1))


@pytest.mark.parametrize("name", MODELS)
def test_a_short_run_lowers_the_loss(name):
    model = make(name, **({"gamma": 1.0} if name == "catvae" else {}))
    opts = model.configure_optimizers(lr=1e-3, weight_decay=0.0)
    x = images(8)
    steps = 12 if name == "tripod" else 20
    parts = [model.training_step(model, x, opts, step) for step in range(steps)]
    recon = [float(p["mse" if name == "factorqvae" else "bce"]) for p in parts]
    losses = [float(p["loss"]) for p in parts]
    assert all(math.isfinite(v) for p in parts for v in map(float, p.values()))
    assert min(losses[-3:]) < losses[0] - 0.01, losses
    assert recon[-1] < recon[0] - 0.01, recon


def test_published_settings_resolve_through_the_config():
    c = resolve(TrainConfig(model="tripod", dataset="shapes")).config
    assert (c.lr, c.batch_size, c.weight_decay, c.values_per_latent, c.num_latents) == (2e-4, 64, 0.0, 12, 12)
    assert c.options == {"lambda_klm": 1e-4, "lambda_nhp": 1e-2, "num_probes": 2, "epsilon": 0.1}
    c = resolve(TrainConfig(model="factorqvae", dataset="shapes")).config
    assert (c.lr, c.batch_size, c.weight_decay, c.values_per_latent) == (1e-3, 512, 0.0, 64)
    assert c.options == {"kl_weight": 1e-3, "gamma": 1e-4, "temperature_decay": 2e-5, "lr_period": 50_000}
    c = resolve(TrainConfig(model="catvae", dataset="sprites")).config
    assert (c.lr, c.batch_size, c.weight_decay, c.values_per_latent) == (1e-4, 64, 0.0, 64)
    assert c.options == {
        "gamma": 0.0,
        "scale_init": 0.5,
        "scale_final": 2.0,
        "anneal_steps": 300_000,
        "learn_values": False,
    }
    model_cls = type(resolve(TrainConfig(model="tripod", dataset="shapes")).model)
    assert model_cls.default_options("mpi3d")["lambda_klm"] == 1e-8
    assert model_cls.default_options("isaac3d")["lambda_nhp"] == 1e-8
    fq = type(resolve(TrainConfig(model="factorqvae", dataset="shapes")).model)
    assert (fq.default_options("mpi3d")["gamma"], fq.default_options("isaac3d")["kl_weight"]) == (1e-6, 5e-5)


@pytest.mark.parametrize(
    "name, option, message",
    [
        ("tripod", {"epsilon": 0.0}, "epsilon must be a finite number > 0"),
        ("tripod", {"num_probes": 1}, "num_probes must be an integer >= 2"),
        ("factorqvae", {"gamma": -1.0}, "gamma must be a finite number >= 0"),
        ("factorqvae", {"values_per_latent": 1}, "values_per_latent must be an integer in 2..65,536, got 1"),
        ("catvae", {"anneal_steps": 0}, "anneal_steps must be an integer >= 1"),
    ],
)
def test_bad_options_are_value_errors_naming_them(name, option, message):
    with pytest.raises(ValueError, match=message):
        make(name, **option)


# ------------------------------------------------------------------ Tripod


def test_fsq_rounds_onto_the_grid_with_a_straight_through_gradient():
    pre = torch.linspace(-4, 4, 101, dtype=torch.float64).requires_grad_(True)
    z_c, z = fsq(pre, 12)
    grid = torch.linspace(-1, 1, 12, dtype=torch.float64)
    nearest = grid[(z_c[:, None] - grid).abs().argmin(1)]
    torch.testing.assert_close(z, nearest.detach(), rtol=0, atol=1e-12)
    torch.testing.assert_close(z_c, torch.tanh(pre))
    z.sum().backward()  # d z / d pre = d z_c / d pre = 1 - tanh^2 (the rounding passes the gradient through)
    torch.testing.assert_close(pre.grad, 1 - torch.tanh(pre.detach()) ** 2)


@functools.cache
def _shapes():
    from latentquant.data import get_dataset

    return get_dataset("shapes")


def _shapes_batch(n, seed):
    x, _ = _shapes().sample(n, np.random.default_rng(seed))
    return x.float()


def _codes_per_latent(model, x):
    with torch.no_grad():
        code = model.eval().encode(x).code
    model.train()
    return [len(torch.unique(c)) for c in code.T]


@pytest.mark.parametrize("arch", ARCHS)
def test_tripod_encoder_norm_spreads_the_codes_at_initialization(arch):
    # Without the layer norm, small's encoder at PyTorch's default init maps every image of a batch
    # to one grid point in every latent: the collapsed start that kept Tripod on `small` at the
    # mean image (docs/training.md). With it, the codes start spread on every backbone.
    x, info = _shapes_batch(64, 0), DataInfo("shapes", 3, 6, 1000)
    normed = make("tripod", arch, info)
    spread = _codes_per_latent(normed, x)
    assert sum(spread) / len(spread) >= 2, spread
    plain = make("tripod", arch, info, encoder_norm=False)
    assert "LayerNorm" not in str(plain.encoder) and "LayerNorm" in str(normed.encoder)
    if arch == "small":
        assert _codes_per_latent(plain, x) == [1] * 12


def test_tripod_on_small_leaves_the_collapsed_start_at_its_published_lr():
    # lambda_nhp = 0, as the 10,000-step comparison runs it: 100 steps of lr 2e-4, batch 64, on the
    # built-in shapes; the codes must spread and the reconstruction beat the batch's mean image.
    model = make("tripod", "small", DataInfo("shapes", 3, 6, 1000), lambda_nhp=0.0)
    opts = model.configure_optimizers(lr=2e-4, weight_decay=0.0)
    for step in range(100):
        model.training_step(model, _shapes_batch(64, 100 + step), opts, step)
    x = _shapes_batch(256, 1)
    spread = _codes_per_latent(model, x)
    with torch.no_grad():
        bce = F.binary_cross_entropy_with_logits(model.eval().decode(model.encode(x).z), x)
    mean_image = F.binary_cross_entropy(x.mean(0, keepdim=True).expand_as(x).clamp(1e-6, 1 - 1e-6), x)
    assert min(spread) >= 3, spread
    assert float(bce) < float(mean_image) - 0.01, (float(bce), float(mean_image))


def test_factorqvae_on_small_starts_on_one_code_and_stops_learning_once_saturated():
    # docs/training.md, "FactorQVAE on small": at PyTorch's default init, small's encoder gives every
    # sprite the same nearest codebook value in every latent; on `sprites` the encoder then drives its
    # outputs far past the codebook, where every relaxed assignment is one-hot whatever the Gumbel
    # noise (the KL to uniform reads log K) and no gradient reaches the encoder again.
    from latentquant.data import get_dataset

    model = make("factorqvae", "small", DataInfo("sprites", 1, 5, 1000), num_latents=10)
    x = get_dataset("sprites").sample(256, np.random.default_rng(0))[0].float()
    assert _codes_per_latent(model, x) == [1] * 10
    for value, saturated in ((400.0, True), (0.5, False)):
        pre_z = torch.full((4, 10), value, requires_grad=True)
        z, w, kl = model.train().assign(pre_z)
        (z.sum() + kl).backward()
        if saturated:
            assert torch.all(pre_z.grad == 0) and torch.all(w.argmax(-1) == model.codebook.argmax())
            assert float(kl) == pytest.approx(math.log(64), rel=1e-6)
        else:
            assert float(pre_z.grad.abs().max()) > 1e-2 and float(kl) < 1


def test_tripod_latents_are_on_the_fixed_grid_and_codes_index_it():
    model = make("tripod").eval()
    enc = model.encode(torch.rand(6, 1, 64, 64))
    grid = torch.linspace(-1, 1, 12)
    torch.testing.assert_close(enc.z, grid[enc.code], rtol=0, atol=1e-6)
    torch.testing.assert_close(model.traversal(enc.z, 0, enc.code, 3)[:, 0, 0], grid)  # the whole grid


def test_kde_multi_information_matches_a_double_loop():
    g = torch.Generator().manual_seed(0)
    z = torch.randn(7, 3, generator=g, dtype=torch.float64)
    std = torch.rand(3, generator=g, dtype=torch.float64) + 0.2
    b, l = z.shape

    def log_normal(x, mu, sd):
        return -0.5 * ((x - mu) / sd) ** 2 - math.log(sd) - 0.5 * math.log(2 * math.pi)

    silverman = ((4 / (l + 2)) ** (1 / (l + 4)) * b ** (-1 / (l + 4))) ** 2
    expected = []
    for i in range(b):
        joint = sum(
            math.exp(sum(log_normal(z[i, k], z[j, k], std[k] * math.sqrt(silverman)) for k in range(l)))
            for j in range(b)
        )
        marginals = [sum(math.exp(log_normal(z[i, k], z[j, k], std[k])) for j in range(b)) / b for k in range(l)]
        expected.append(math.log(joint / b) - sum(math.log(m) for m in marginals))
    torch.testing.assert_close(kde_multi_information(z, std), torch.tensor(expected, dtype=torch.float64))


def test_kde_multi_information_is_higher_for_dependent_latents():
    g = torch.Generator().manual_seed(1)
    a = torch.randn(256, 1, generator=g)
    independent = torch.cat([a, torch.randn(256, 1, generator=g)], 1)
    dependent = torch.cat([a, a + 0.05 * torch.randn(256, 1, generator=g)], 1)
    mi = lambda z: float(kde_multi_information(z, z.std(0, unbiased=False)).mean())
    assert mi(dependent) > mi(independent) + 0.5


def _quadratic_decoder(l, outputs=5, seed=0):
    """f(z)_o = z^T A_o z + c_o . z for every row of z (a Hessian 2 sym(A_o) everywhere)."""
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(outputs, l, l, generator=g, dtype=torch.float64)
    c = torch.randn(outputs, l, generator=g, dtype=torch.float64)

    def f(z, with_logits=True):
        out = torch.einsum("n i, o i j, n j -> n o", z, a, z) + z @ c.T
        return out, {"quadratic": out}

    return f, a + a.transpose(1, 2)


def test_hessian_penalty_is_exact_on_a_quadratic_decoder():
    b, l, p, eps = 3, 4, 3, 0.1
    g = torch.Generator().manual_seed(0)
    z = torch.randn(b, l, generator=g, dtype=torch.float64)
    std = torch.rand(l, generator=g, dtype=torch.float64) + 0.5
    rademacher = torch.randint(0, 2, (p, b, l), generator=g).double() * 2 - 1
    gaussian = torch.randn(p, b, l, generator=g, dtype=torch.float64)
    f, _ = _quadratic_decoder(l)
    logits, hp = hessian_penalty(f, z, std, eps, rademacher, gaussian)
    torch.testing.assert_close(logits, f(z)[0])
    # the reference: autograd's Hessian of every output at every sample, and u^T H u along the probes
    second = {}
    for kind, probes in (("off", rademacher), ("total", gaussian)):
        values = torch.empty(p, b, 5, dtype=torch.float64)
        for i in range(b):
            for o in range(5):
                hess = torch.autograd.functional.hessian(lambda v, o=o: f(v[None])[0][0, o], z[i])
                for k in range(p):
                    u = probes[k, i] * std
                    values[k, i, o] = u @ hess @ u
        second[kind] = values.var(0, unbiased=False).mean(-1)  # (b,)
    torch.testing.assert_close(hp["quadratic"].penalty, second["off"], rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(hp["quadratic"].normalized, second["off"] / (second["total"] + 1e-10), rtol=1e-9, atol=0)


def test_hessian_penalty_probes_measure_off_diagonal_over_total_curvature():
    # many probes: var over Rademacher probes -> 2 sum_{i != j} (H_ij s_i s_j)^2, Gaussian -> 2 sum_ij (...)^2
    l, p = 3, 20_000
    g = torch.Generator().manual_seed(2)
    z = torch.zeros(1, l, dtype=torch.float64)
    std = torch.tensor([0.5, 1.0, 2.0], dtype=torch.float64)
    f, hessians = _quadratic_decoder(l, outputs=1, seed=3)
    rademacher = torch.randint(0, 2, (p, 1, l), generator=g).double() * 2 - 1
    gaussian = torch.randn(p, 1, l, generator=g, dtype=torch.float64)
    _, hp = hessian_penalty(f, z, std, 0.1, rademacher, gaussian)
    scaled = hessians[0] * std[:, None] * std[None, :]
    off = 2 * (scaled.square().sum() - scaled.diagonal().square().sum())
    total = 2 * scaled.square().sum()
    assert float(hp["quadratic"].penalty) == pytest.approx(float(off), rel=0.05)
    assert float(hp["quadratic"].normalized) == pytest.approx(float(off / total), rel=0.05)


@pytest.mark.parametrize("arch", ARCHS)
def test_hessian_layers_are_the_mlp_and_the_8_16_32_pixel_stages(arch):
    model = make("tripod", arch)
    logits, layers = model.decoder_layers(torch.zeros(2, 4))
    assert logits.shape == (2, 1, 64, 64) and list(layers) == list(HESSIAN_LAYERS[arch])
    conv = [v for k, v in layers.items() if k != "mlp"]
    assert [h.shape[-1] for h in conv] == [8, 16, 32]
    assert not model.decoder._forward_hooks and all(not m._forward_hooks for m in model.decoder.modules())


@pytest.mark.parametrize("arch", ARCHS)
def test_hessian_layers_without_logits_skip_the_layers_after_them(arch):
    # the perturbed rows need the penalized layers only: the same outputs, and nothing after the last is run
    model = make("tripod", arch)
    z = torch.randn(3, 4)
    modules = dict(model.decoder.named_modules())
    after = [name for name in modules if name and modules[name] is not model.decoder][-1]  # the logits layer
    calls = []
    handle = modules[after].register_forward_hook(lambda m, i, o: calls.append(1))
    try:
        logits, full = model.decoder_layers(z)
        assert logits is not None and len(calls) == 1
        none, layers = model.decoder_layers(z, with_logits=False)
        assert none is None and len(calls) == 1
    finally:
        handle.remove()
    assert list(layers) == list(full)
    for name in full:
        torch.testing.assert_close(layers[name], full[name])
    assert all(not m._forward_hooks for m in model.decoder.modules())


def test_tripod_loss_is_its_terms_and_every_parameter_is_clipped():
    model = make("tripod")
    x = images(6)
    torch.manual_seed(5)
    out = model(x)
    p = out.parts
    expected = p["bce"] + 1e-4 * p["multi_information"] + 1e-2 * p["hessian_normalized"]
    torch.testing.assert_close(out.loss.detach(), expected)
    z_c, z = fsq(model.encoder(x), 12)
    klm = kde_multi_information(z, z_c.std(0, unbiased=False) + 1e-6).mean()
    torch.testing.assert_close(p["multi_information"], klm.detach())
    (opt,) = model.configure_optimizers(lr=2e-4, weight_decay=0.0).values()
    groups = {g["group"]: g for g in opt.param_groups}
    assert len(groups["decay"]["params"]) == len(list(model.parameters())) and not groups["no_decay"]["params"]
    for q in model.parameters():
        q.grad = torch.full_like(q, 3.0)
    clip_gradients(opt)
    assert all(torch.equal(q.grad, torch.ones_like(q)) for q in model.parameters())  # biases too, as theirs


# ------------------------------------------------------------------ FactorQVAE


def test_factorqvae_relaxed_assignment_kl_and_loss_match_their_definition():
    model = make("factorqvae", values_per_latent=8)
    x = images(4)
    model.temperature.fill_(0.7)
    torch.manual_seed(3)
    out = model.model_loss(x)
    torch.manual_seed(3)
    pre = model.encoder(x)
    d = (pre[..., None] - model.codebook).square()  # (b, l, k)
    g = -torch.empty_like(d).exponential_().log()
    w = torch.softmax((-d + g) / 0.7, -1)
    z = (w * model.codebook).sum(-1)
    post = torch.softmax(-d, -1)
    kl = (post * torch.log(post * 8 + 1e-10)).sum(-1).mean()
    mse = F.mse_loss(torch.sigmoid(model.decoder(z)), x)
    logits = model.discriminator(w.flatten(1))
    tc = (logits[:, 0] - logits[:, 1]).mean()
    torch.testing.assert_close(out.sample, w.detach())
    torch.testing.assert_close(out.loss, mse + 1e-3 * kl + 1e-4 * tc)
    torch.testing.assert_close(out.parts["kl"], kl.detach())


def test_factorqvae_gumbel_relaxation_samples_the_softmax_of_negative_distances():
    model = make("factorqvae", values_per_latent=4)
    with torch.no_grad():
        model.codebook.copy_(torch.tensor([-1.0, 0.0, 0.5, 2.0]))
    model.temperature.fill_(1e-3)  # nearly hard: the argmax of w is a Gumbel-max sample of softmax(-d)
    pre = torch.full((20_000, 1), 0.2)
    with torch.no_grad():
        _, w, _ = model.assign(pre)
    freq = torch.bincount(w.argmax(-1).flatten(), minlength=4).double() / w.shape[0]
    expected = torch.softmax(-(0.2 - model.codebook.detach().double()).square(), 0)
    torch.testing.assert_close(freq, expected, rtol=0, atol=0.015)
    torch.testing.assert_close(w.sum(-1), torch.ones(20_000, 1))


def test_factorqvae_is_hard_and_nearest_at_evaluation():
    model = make("factorqvae", values_per_latent=16).eval()
    x = torch.rand(5, 1, 64, 64)
    pre = model.encoder(x)
    nearest = (pre[..., None] - model.codebook).abs().argmin(-1)
    enc = model.encode(x)
    assert torch.equal(enc.code, nearest)
    torch.testing.assert_close(enc.z, model.codebook.detach()[nearest])
    z, w, _ = model.assign(pre)  # the forward pass in eval mode is the hard assignment too
    assert torch.equal(w.argmax(-1), nearest) and torch.equal(w.sum(-1), torch.ones_like(z))
    torch.testing.assert_close(z, enc.z)


def test_factorqvae_temperature_and_learning_rate_follow_the_step():
    model = make("factorqvae")
    opts = model.configure_optimizers(lr=1e-3, weight_decay=0.0)
    parts = model.training_step(model, images(4), opts, 70_000)
    # train.py DecayTemperature: exp(-1e-5 global_step), Lightning's global_step two a batch
    assert float(parts["temperature"]) == pytest.approx(math.exp(-1e-5 * 2 * 70_000))
    # torch's CosineAnnealingLR stepped once per step (the authors' interval "step"), past its period too
    ref_opt = torch.optim.Adam([torch.zeros(1, requires_grad=True)], lr=1e-3)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(ref_opt, T_max=50, eta_min=1.25e-6)
    for step in range(130):
        assert cosine_lr(step, 1e-3, 50) == pytest.approx(ref_opt.param_groups[0]["lr"], rel=1e-9, abs=1e-15), step
        ref_opt.step()
        sched.step()
    for opt in opts.values():
        assert all(g["lr"] == pytest.approx(cosine_lr(70_000, 1e-3, 50_000)) for g in opt.param_groups)
    assert cosine_lr(10, 1e-3, 0) == 1e-3


def test_factorqvae_optimizers_and_alternating_steps():
    model = make("factorqvae")
    opts = model.configure_optimizers(lr=1e-3, weight_decay=0.1)
    assert list(opts) == ["model", "discriminator"]
    disc = {id(p) for p in model.discriminator.parameters()}
    model_params = {id(p) for g in opts["model"].param_groups for p in g["params"]}
    disc_params = {id(p) for g in opts["discriminator"].param_groups for p in g["params"]}
    assert disc_params == disc and not model_params & disc
    assert model_params | disc_params == {id(p) for p in model.parameters()}
    no_decay = {id(p) for g in opts["model"].param_groups if g["group"] == "no_decay" for p in g["params"]}
    assert id(model.codebook) in no_decay  # the codebook is neither decayed nor clipped
    # the model step moves the encoder; the discriminator step moves only the discriminator
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    calls = []
    net = lambda x, **kw: calls.append((len(x), kw.get("phase", "model"))) or model(x, **kw)
    parts = model.training_step(net, images(6), opts, 0)
    assert calls == [(3, "model"), (3, "discriminator")]  # each on its half of the batch
    assert {"loss", "mse", "kl", "tc", "discriminator"} <= set(parts)
    moved = {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}
    assert any(n.startswith("encoder.") for n in moved) and any(n.startswith("discriminator.") for n in moved)


def test_discriminator_loss_and_per_latent_shuffle():
    torch.manual_seed(0)
    z = torch.arange(40.0).view(10, 4)
    shuffled = permute_latents(z)
    for k in range(4):  # every latent keeps its values, each under its own permutation
        assert torch.equal(shuffled[:, k].sort().values, z[:, k])
    assert len({tuple(((shuffled[:, k] - k) / 4).long().tolist()) for k in range(4)}) > 1
    disc = Discriminator(4, depth=2, hidden=8)
    torch.manual_seed(1)
    loss = discriminator_loss(disc, z, z)
    torch.manual_seed(1)
    fake = permute_latents(z)
    ce = lambda logits, label: -F.log_softmax(logits, -1)[:, label].mean()
    torch.testing.assert_close(loss, 0.5 * (ce(disc(z), 0) + ce(disc(fake), 1)))
    assert len(disc.layers) == 3 and disc.layers[1].in_features == 8  # 2 hidden layers, then the logits


# ------------------------------------------------------------------ the categorical VAE


def test_catvae_scale_anneals_along_half_a_cosine():
    # lddr utils.cosine_anneal(step, .5, 2., 0, 300000), written out
    for step in (0, 1, 75_000, 150_000, 299_999, 300_000, 400_000):
        progress = min(step / 300_000, 1.0)
        expected = 0.5 * (0.5 - 2.0) * math.cos(math.pi * progress) + 0.5 * (0.5 + 2.0)
        assert cosine_anneal(step, 0.5, 2.0, 300_000) == pytest.approx(expected, abs=1e-12)
    model = make("catvae", anneal_steps=100)
    opts = model.configure_optimizers(lr=1e-4, weight_decay=0.0)
    assert float(model.training_step(model, images(4), opts, 50)["scale"]) == pytest.approx(1.25)
    assert float(model.training_step(model, images(4), opts, 500)["scale"]) == pytest.approx(2.0)


def test_catvae_loss_matches_the_per_image_elbo_divided_by_pixels():
    model = make("catvae", values_per_latent=5, gamma=2.0)
    model.scale.fill_(0.8)
    x = images(4)
    torch.manual_seed(7)
    out = model.model_loss(x)
    torch.manual_seed(7)
    logits = model.encoder(x).view(4, 4, 5)
    y = torch.softmax(logits - 0.8 * torch.empty_like(logits).exponential_().log(), -1)
    values = torch.linspace(-1, 1, 5)
    z = (y * values).sum(-1)
    recon = F.binary_cross_entropy_with_logits(model.decoder(z), x, reduction="none").sum((1, 2, 3))
    q = torch.softmax(logits, -1)
    kl = (q * torch.log(q * 5)).sum((1, 2))
    d = model.discriminator(z)
    tc = d[:, 0] - d[:, 1]
    per_image = recon + kl + 2.0 * tc  # lddr run.py loss_fn
    torch.testing.assert_close(out.loss, per_image.mean() / 4096, rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(out.sample, z.detach())


def test_catvae_is_the_argmax_category_at_evaluation_and_its_values_stay_on_the_grid():
    model = make("catvae", values_per_latent=7).eval()
    x = torch.rand(5, 1, 64, 64)
    enc = model.encode(x)
    assert torch.equal(enc.code, model.encoder(x).view(5, 4, 7).argmax(-1))
    torch.testing.assert_close(enc.z, torch.linspace(-1, 1, 7)[enc.code])
    # the authors stop the values' gradient: no optimizer holds them, training leaves them on the grid
    model.train()
    opts = model.configure_optimizers(lr=1e-2, weight_decay=0.0)
    assert list(opts) == ["model"]  # gamma 0: no discriminator
    held = {id(p) for g in opts["model"].param_groups for p in g["params"]}
    assert id(model.values) not in held
    model.training_step(model, images(4), opts, 0)
    assert torch.equal(model.values.detach(), torch.linspace(-1, 1, 7).repeat(4, 1))
    learned = make("catvae", values_per_latent=7, learn_values=True, gamma=1.0)
    opts = learned.configure_optimizers(lr=1e-2, weight_decay=0.0)
    no_decay = {id(p) for g in opts["model"].param_groups if g["group"] == "no_decay" for p in g["params"]}
    assert id(learned.values) in no_decay
    assert opts["discriminator"].param_groups[0]["betas"] == (0.5, 0.9)
    assert len(learned.discriminator.layers) == 7 and learned.discriminator.slope == 0.01


# ------------------------------------------------------------------ the command line

QUIET = [*TINY, "--logger", "none"]


def _records(run):
    return {r["step"]: r for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines())}


@pytest.mark.parametrize("name", MODELS)
def test_resume_reproduces_the_uninterrupted_run(name, tmp_path):
    full, part = tmp_path / "full", tmp_path / "part"
    common = ["--model", name, "--seed", "3", "--checkpoint-every", "2", "--eval-every", "0"]
    if name == "catvae":
        common += ["-o", "gamma=5", "-o", "anneal_steps=4"]  # with a discriminator and a moving scale
    if name == "factorqvae":
        common += ["-o", "lr_period=3"]
    assert main(["train", *QUIET, *common, "--steps", "4", "--out", str(full)]) == 0
    assert main(["train", *QUIET, *common, "--steps", "2", "--out", str(part)]) == 0
    assert main(["train", "--resume", str(part), "--steps", "4"]) == 0
    a, b = _records(full), _records(part)
    assert sorted(a) == sorted(b) == [1, 2, 3, 4]
    for step in a:
        for key in a[step]:
            if key != "seconds":
                assert b[step][key] == pytest.approx(a[step][key], abs=1e-6, rel=0), (step, key)
    wa, _ = ckpt.load_model_state(ckpt.latest_checkpoint(full / "checkpoints"))
    wb, _ = ckpt.load_model_state(ckpt.latest_checkpoint(part / "checkpoints"))
    assert set(wa) == set(wb)
    for key in wa:
        torch.testing.assert_close(wb[key], wa[key], rtol=0, atol=1e-6)
    if name == "factorqvae":
        assert a[3]["lr"] == pytest.approx(cosine_lr(2, 1e-3, 3))  # the rate of the third step (index 2)
    scores = json.loads((full / "eval.json").read_text())
    assert scores["model"] == name and np.isfinite(scores["psnr"]) and "infom" in scores


def test_evaluate_rebuilds_the_run_and_sweep_and_table_take_the_models(tmp_path, capsys):
    out = tmp_path / "grid"
    extra = ["--", "--batch-size", "8", "--eval-samples", "100", "--eval-every", "0"]
    sweep = ["sweep", "--datasets", "sprites", "--models", *MODELS, "--seeds", "0", "--steps", "2"]
    assert main([*sweep, "--arch", "small", "--jobs", "1", "--out", str(out), *extra]) == 0
    runs = {name: out / "sprites" / name / "seed0" for name in MODELS}
    assert all((run / "eval.json").is_file() for run in runs.values())
    capsys.readouterr()
    assert main(["table", str(out)]) == 0
    table = capsys.readouterr().out
    assert all(name in table for name in MODELS)
    run = runs["tripod"]
    scores = json.loads((run / "eval.json").read_text())
    (run / "eval.json").unlink()
    assert main(["evaluate", str(run)]) == 0
    again = json.loads((run / "eval.json").read_text())
    for key, value in scores.items():
        if key not in ("seconds", "eval_seconds"):
            assert again[key] == (pytest.approx(value, rel=1e-9, abs=1e-12) if isinstance(value, float) else value), key


DDP_SCRIPT = """
import torch, torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel
from latentquant.models import DataInfo, build_model
from latentquant.train.distributed import wait_released
dist.init_process_group("gloo")
rank = dist.get_rank()
for name, options in (("factorqvae", {"values_per_latent": 8}), ("catvae", {"gamma": 1.0}), ("tripod", {})):
    torch.manual_seed(0)
    model = build_model(name, "small", DataInfo("sprites", 1, 2, 100), **options)
    before = torch.cat([p.detach().flatten() for p in model.parameters()])
    opts = model.configure_optimizers(lr=1e-3, weight_decay=1e-3)
    net = DistributedDataParallel(model, find_unused_parameters=model.ddp_find_unused_parameters)
    torch.manual_seed(100 + rank)  # different images and noise on each rank
    for step in range(2):
        model.training_step(net, (torch.rand(4, 1, 64, 64) > 0.8).float(), opts, step)
    flat = torch.cat([p.detach().flatten() for p in model.parameters()])
    both = [torch.zeros_like(flat) for _ in range(2)]
    dist.all_gather(both, flat)
    wait_released(flat, *both)
    if rank == 0:
        print(name, "DIFF", (both[0] - both[1]).abs().max().item(), "MOVED", (flat - before).abs().max().item())
dist.destroy_process_group()
"""


def test_ddp_keeps_ranks_in_sync_through_both_steps(tmp_path):
    # the model step, the discriminator step (through find_unused_parameters) and Tripod's hooked decoder
    # passes: with different data per rank, the ranks stay identical only if every gradient is all-reduced
    script = tmp_path / "ddp_successors.py"
    script.write_text(DDP_SCRIPT)
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", str(script)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = {line.split()[0]: line.split() for line in proc.stdout.splitlines() if "DIFF" in line}
    assert set(lines) == set(MODELS)
    for words in lines.values():
        assert float(words[2]) == 0.0 and float(words[4]) > 1e-4, words


def test_factorqvae_schedules_run_their_course_as_published_and_in_the_experiment():
    """The authors' run is 50,000 batches (Lightning's global_step counts two optimizer steps a
    batch): the temperature ends at exp(-1) and the learning rate makes one half-cosine to its
    minimum. The published options give that at step 50,000, and the successors' experiment
    script's scaled options give it at its last step, not a second half-cycle back to the peak."""
    import re
    from pathlib import Path

    from latentquant.models.factorqvae import LR_MIN
    from latentquant.results.grid import parse_model

    def course(options: dict, steps: int) -> tuple[float, float, float]:
        lr = 1e-3
        lrs = [cosine_lr(s, lr, int(options["lr_period"])) for s in range(0, steps + 1, max(steps // 100, 1))]
        return math.exp(-float(options["temperature_decay"]) * steps), lrs[-1], max(lrs[len(lrs) // 2 :])

    published = resolve(TrainConfig(model="factorqvae", dataset="shapes")).config.options
    temperature, last, late_max = course(published, 50_000)
    assert temperature == pytest.approx(math.exp(-1)) and last == pytest.approx(LR_MIN)
    assert late_max < 0.6e-3  # decreasing through the second half: no restart

    script = (Path(__file__).resolve().parents[1] / "scripts" / "successors_experiment.sh").read_text()
    steps = int(re.search(r"STEPS=\$\{STEPS:-(\d+)\}", script)[1])
    entry = re.search(r"\(\"(factorqvae\+[^\"]+)\"\)", script)[1]
    base, flags = parse_model(entry)
    options = dict(f.removeprefix("--option=").split("=") for f in flags)
    assert base == "factorqvae" and set(options) == {"temperature_decay", "lr_period"}
    temperature, last, late_max = course(options, steps)
    assert temperature == pytest.approx(math.exp(-1)) and last == pytest.approx(LR_MIN)
    assert late_max < 0.6e-3


def test_clip_probe_sees_every_clipped_step_and_the_clip_it_would_apply(tmp_path, monkeypatch):
    """scripts/clip_probe.py: one record per optimizer step (FactorQVAE: model and discriminator),
    and a clip of 1e-12 is reported as binding on every step."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "scripts" / "clip_probe.py"
    spec = importlib.util.spec_from_file_location("clip_probe", path)
    probe = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(probe)
    import latentquant.models as models_module
    import latentquant.models.base as base_module

    flags = [*TINY, "--batch-size", "16", "-o", "lr_period=3"]
    result = probe.run(["factorqvae", "3", str(tmp_path / "a"), *flags])
    assert result["rc"] == 0 and result["optimizer_steps"] == 6 and result["max_abs_grad"] > 0
    assert result["steps_clipped"] == result["elements_clipped"] == 0
    result = probe.run(["ae", "2", str(tmp_path / "b"), *flags[:-2], "--clip", "1e-12"])
    assert result["rc"] == 0 and result["optimizer_steps"] == 2 and result["steps_clipped"] == 2
    assert all(m.clip_gradients is probe.ORIGINAL for m in (base_module, models_module))  # undone


def test_schedule_lengths_are_step_counts_not_sizes():
    """A schedule's length counts steps (a 10,000-step run scales lr_period 50,000 to 10,000):
    bounded as --steps is, where a size option (a codebook's entries) stays at most 4,096."""
    from latentquant.train.config import MAX_INT_OPTION, MAX_STEPS, get_model_class, resolve_options
    from latentquant.validation import UserError

    for name, key in (("factorqvae", "lr_period"), ("catvae", "anneal_steps")):
        cls = get_model_class(name)
        assert resolve_options(cls, "shapes", {key: "5000"})[key] == 5000
        assert resolve_options(cls, "shapes", {key: str(MAX_STEPS)})[key] == MAX_STEPS
        with pytest.raises(UserError, match=f"option {key} must be an integer of at most 1,000,000,000"):
            resolve_options(cls, "shapes", {key: str(MAX_STEPS + 1)})
    with pytest.raises(UserError, match="option num_embeddings must be an integer of at most 4,096"):
        resolve_options(get_model_class("vqvae"), "shapes", {"num_embeddings": str(MAX_INT_OPTION + 1)})
