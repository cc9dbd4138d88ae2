"""Models: backbone shapes, every model's loss, the optimizer split and clipping."""

import json
import math

import numpy as np
import pytest
import torch
import yaml
from sklearn.tree import DecisionTreeClassifier

from latentquant.cli import main
from latentquant.data import get_dataset
from latentquant.models import (
    ARCHS,
    DataInfo,
    LatentModel,
    available_models,
    build_backbone,
    build_model,
    clip_gradients,
    get_model_class,
    registry,
)
from latentquant.models.backbones import ConvNormEncoder, StyleDecoder
from latentquant.models.base import sweep_latent
from latentquant.train import evaluate as evaluation
from latentquant.validation import UserError

AE_MODELS = ("qlae", "ae", "vae", "tcvae", "bioae", "vqvae", "noisyae")
SPRITES = DataInfo("sprites", 1, 5, 737_280)
SHAPES = DataInfo("shapes", 3, 6, 480_000)


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _batch(n=8, c=1, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(n, c, 64, 64, generator=g) > 0.8).float()


def test_registry_lists_the_paper_models_and_rejects_unknown_names():
    assert set(AE_MODELS) <= set(available_models())
    with pytest.raises(ValueError, match="valid choices: .*qlae"):
        get_model_class("qlae2")
    with pytest.raises(ValueError, match="valid choices: paper, small, compact"):
        build_model("qlae", "large", SPRITES)


def test_model_listing_does_not_depend_on_import_order(monkeypatch, capsys):
    # importing gan.py first registers the baselines (which it imports) before qlae

    expected = ("qlae", "ae", "bioae", "vae", "tcvae", "vqvae", "infowgan", "qlinfowgan")
    assert available_models()[:8] == expected
    late = dict(registry._MODELS)
    late["qlae"] = late.pop("qlae")  # registered last, as after `import latentquant.models.gan`
    monkeypatch.setattr(registry, "_MODELS", late)
    assert available_models()[:8] == expected
    with pytest.raises(ValueError, match="valid choices: qlae, ae, bioae, vae, tcvae, vqvae, infowgan, qlinfowgan"):
        get_model_class("qlae3")
    # and the train command's help names every model

    with pytest.raises(SystemExit):
        main(["train", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert all(name in text for name in expected)


@pytest.mark.parametrize("arch", ARCHS)
def test_backbone_shapes(arch):
    x = torch.rand(2, 3, 64, 64)
    enc, dec = build_backbone(arch, 3, 12, 7)
    h = enc(x)
    assert h.shape == (2, 12)
    assert dec(torch.randn(2, 7)).shape == (2, 3, 64, 64)
    with pytest.raises(ValueError, match=r"\(b, 3, 64, 64\)"):
        enc(torch.rand(2, 1, 64, 64))


def test_paper_arch_is_the_published_one():
    enc, dec = ConvNormEncoder(1, 10), StyleDecoder(10, 1)
    convs = [m for m in enc.conv if isinstance(m, torch.nn.Conv2d)]
    assert [c.out_channels for c in convs] == [32] * 3 + [64] * 3 + [128] * 3 + [256] * 3
    assert [c.kernel_size[0] for c in convs] == [3, 3, 4] * 4
    assert [c.stride[0] for c in convs] == [1, 1, 2] * 4
    assert all(c.bias is None and c.padding == (1, 1) for c in convs)
    norms = [m for m in enc.conv if isinstance(m, torch.nn.InstanceNorm2d)]
    assert len(norms) == 12 and all(n.affine and n.eps == 1e-6 for n in norms)  # eqx GroupNorm(eps=1e-6)
    kinds = [type(m).__name__ for m in enc.conv]
    assert kinds == ["Conv2d", "InstanceNorm2d", "LeakyReLU"] * 12
    assert all(m.negative_slope == 0.2 for m in enc.conv if isinstance(m, torch.nn.LeakyReLU))
    assert [type(m).__name__ for m in enc.mlp] == ["Linear", "ReLU", "Linear", "ReLU"]
    assert [m.out_features for m in enc.mlp if isinstance(m, torch.nn.Linear)] == [256, 256]
    assert enc.head.out_features == 10 and enc.mlp[0].in_features == 256 * 4 * 4
    assert torch.equal(dec.constant, torch.full((256, 4, 4), 0.1))
    assert [b.conv.out_channels for b in dec.blocks] == [256] * 3 + [128] * 3 + [64] * 3 + [32] * 3
    assert all(b.conv.bias is None and not b.norm.affine for b in dec.blocks)
    assert [b.style.out_features for b in dec.blocks] == [2 * b.conv.out_channels for b in dec.blocks]
    assert dec.out.kernel_size == (3, 3) and dec.out.out_channels == 1 and dec.out.bias is None
    assert [type(m).__name__ for m in dec.mlp] == ["Linear", "ReLU", "Linear", "ReLU"]
    # a style block: ConvTranspose -> LeakyReLU(0.2) -> instance norm -> x * scale + bias,
    # [scale, bias] = ReLU(Linear(w))
    block, F = dec.blocks[2], torch.nn.functional
    x, w = torch.randn(2, 256, 4, 4), torch.randn(2, 256)
    h = F.leaky_relu(F.conv_transpose2d(x, block.conv.weight, stride=2, padding=1), 0.2)
    h = (h - h.mean((2, 3), keepdim=True)) / (h.var((2, 3), unbiased=False, keepdim=True) + 1e-6).sqrt()
    scale, bias = F.relu(w @ block.style.weight.T + block.style.bias).chunk(2, dim=1)
    torch.testing.assert_close(block(x, w), h * scale[..., None, None] + bias[..., None, None])
    assert block(x, w).shape == (2, 256, 8, 8)


@pytest.mark.parametrize("name", AE_MODELS)
def test_loss_is_finite_and_decreases_on_a_fixed_batch(name):
    torch.manual_seed(0)
    model = build_model(name, "small", SPRITES)
    assert model.num_latents == 10
    opts = model.configure_optimizers(lr=1e-3, weight_decay=0.0)
    x = _batch()
    parts = [model.training_step(model, x, opts, step) for step in range(16)]
    losses, bce = [float(p["loss"]) for p in parts], [float(p["bce"]) for p in parts]
    assert all(math.isfinite(v) for v in losses)
    assert min(losses[-4:]) < losses[0], losses  # VQ-VAE's codebook terms may spike on the way
    assert bce[-1] < bce[0] - 0.03, bce


@pytest.mark.parametrize("name", AE_MODELS)
def test_encode_decode_and_traversal_shapes(name):
    torch.manual_seed(0)
    model = build_model(name, "small", SHAPES).eval()
    x = torch.rand(4, 3, 64, 64)
    enc = model.encode(x)
    assert enc.code.shape == (4, 12)
    assert (enc.code.dtype == torch.int64) == model.discrete_latents
    assert model.decode(enc.z).shape == (4, 3, 64, 64)
    sweep = model.traversal(enc.z, 3, enc.code, 5)
    assert sweep.shape[1:] == enc.z.shape
    if name == "qlae":  # the sweep is the codebook of latent 3; the other latents keep their values
        assert sweep.shape[0] == 10
        torch.testing.assert_close(sweep[:, 0, 3], model.quantizer.values_per_latent[3].detach())
        assert torch.equal(sweep[:, :, 2], enc.z[None, :, 2].expand(10, -1))


def test_qlae_metrics_read_value_indices():
    torch.manual_seed(0)
    model = build_model("qlae", "small", SPRITES, values_per_latent=6).eval()
    enc = model.encode(torch.rand(5, 1, 64, 64))
    assert enc.code.dtype == torch.int64 and int(enc.code.min()) >= 0 and int(enc.code.max()) < 6
    values = torch.stack([model.quantizer.values_per_latent[i] for i in range(10)])  # (l, v)
    torch.testing.assert_close(enc.z, values.gather(1, enc.code.T).T)


def test_qlae_optimizer_split_by_rule():
    model = build_model("qlae", "paper", SPRITES)
    decay, no_decay = model.split_parameters()
    assert set(decay) | set(no_decay) == {n for n, _ in model.named_parameters()}
    assert not set(decay) & set(no_decay)
    assert {n for n in no_decay if n.startswith("quantizer.")} == {
        f"quantizer.{n}" for n, _ in model.quantizer.named_parameters()
    }
    assert all(n.endswith("bias") or n.startswith("quantizer.") for n in no_decay)
    assert any(n.startswith("encoder.conv") and n.endswith("weight") for n in decay)  # instance-norm scales
    assert "decoder.constant" in decay and "decoder.blocks.0.style.weight" in decay
    assert "decoder.blocks.0.style.bias" in no_decay
    (opt,) = model.configure_optimizers(lr=1e-3, weight_decay=0.1).values()
    groups = {g["group"]: g for g in opt.param_groups}
    assert groups["decay"]["weight_decay"] == 0.1 and groups["decay"]["clip_value"] == 1.0
    assert groups["no_decay"]["weight_decay"] == 0.0 and groups["no_decay"]["clip_value"] is None
    assert {id(p) for p in groups["no_decay"]["params"]} == {id(p) for p in no_decay.values()}


@pytest.mark.parametrize("name, arch", [("qlae", "paper"), ("vqvae", "small"), ("ae", "compact")])
def test_weight_norms_group_the_decayed_weights_by_layer_kind(name, arch):
    """The groups of weight_norms, against a plain sum over the parameters by name and module type."""
    model = build_model(name, arch, SPRITES)
    decay, _ = model.split_parameters()
    modules = dict(model.named_modules())
    expected = {"conv": 0.0, "linear": 0.0, "other": 0.0, "values": 0.0}
    for pname, p in model.named_parameters():
        owner = modules[pname.rpartition(".")[0]]
        if pname not in decay:
            group = "values" if not pname.endswith("bias") else None
        elif isinstance(owner, (torch.nn.Conv2d, torch.nn.ConvTranspose2d)):
            group = "conv"
        elif isinstance(owner, torch.nn.Linear):
            group = "linear"
        else:
            group = "other"
        if group:
            expected[group] += float(p.detach().double().square().sum())
    got = model.weight_norms()
    assert set(got) == {k for k, v in expected.items() if v > 0}
    for k, v in got.items():
        assert v == pytest.approx(math.sqrt(expected[k]), rel=1e-5), k


def test_clipping_is_elementwise_and_only_on_the_decayed_group():
    torch.manual_seed(0)
    model = build_model("qlae", "small", SPRITES)
    (opt,) = model.configure_optimizers(lr=1e-3, weight_decay=0.1).values()
    grads = {}
    for name, p in model.named_parameters():
        p.grad = torch.randn_like(p) * 3
        grads[name] = p.grad.clone()
    clip_gradients(opt)
    decay, no_decay = model.split_parameters()
    for name, p in decay.items():
        torch.testing.assert_close(p.grad, grads[name].clamp(-1, 1), rtol=0, atol=0)
    for name, p in no_decay.items():
        assert torch.equal(p.grad, grads[name])
    assert any((g.abs() > 1).any() for n, g in grads.items() if n in no_decay)


def test_weight_decay_moves_only_the_decayed_group():
    model = build_model("vqvae", "small", SPRITES, num_embeddings=8, embedding_dim=4)
    (opt,) = model.configure_optimizers(lr=0.1, weight_decay=0.5).values()
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    opt.step()  # zero gradients: Adam's update is 0, only decoupled decay acts
    decay, no_decay = model.split_parameters()
    assert "codebook" in no_decay
    for n, p in decay.items():
        torch.testing.assert_close(p.detach(), before[n] * (1 - 0.1 * 0.5))
    for n, p in no_decay.items():
        assert torch.equal(p.detach(), before[n])


def test_qlae_loss_matches_its_formula():
    torch.manual_seed(0)
    model = build_model("qlae", "small", SPRITES)
    x = _batch(4)
    out = model(x)
    pre_z = model.encoder(x)
    z = model.encode(x).z
    bce = torch.nn.functional.binary_cross_entropy_with_logits(model.decoder(z), x)  # mean over pixels
    gap = (pre_z - z).square().mean()  # quantization and commitment share this value, not their gradients
    torch.testing.assert_close(out.parts["quantization"], gap.detach())
    torch.testing.assert_close(out.parts["commitment"], gap.detach())
    torch.testing.assert_close(out.loss, bce + 0.01 * gap + 0.01 * gap)


def test_vae_loss_matches_its_formula():
    torch.manual_seed(0)
    model = build_model("vae", "small", SPRITES, beta=4.0)
    x = _batch(4)
    torch.manual_seed(1)
    out = model(x)
    mu, sigma = model.posterior(x)
    torch.manual_seed(1)
    z = mu + sigma * torch.randn_like(mu)
    bce = torch.nn.functional.binary_cross_entropy_with_logits(model.decoder(z), x)
    kl = (-torch.log(sigma) + 0.5 * (mu**2 + sigma**2 - 1)).mean()
    torch.testing.assert_close(out.loss, bce + (10 / 4096) * 4.0 * kl)


def test_tcvae_terms_sum_to_the_sampled_kl():
    torch.manual_seed(0)
    model = build_model("tcvae", "small", SPRITES, beta=5.0)
    x = _batch(6)
    torch.manual_seed(1)
    out = model(x)
    mu, sigma = model.posterior(x)
    torch.manual_seed(1)
    z = mu + sigma * torch.randn_like(mu)
    normal = torch.distributions.Normal
    # MI + TC + dwKL telescopes to log q(z|x) - log p(z), whatever the estimate of q(z)
    kl = (normal(mu, sigma).log_prob(z) - normal(0.0, 1.0).log_prob(z)).sum(-1).mean()
    p = out.parts
    torch.testing.assert_close(
        p["mutual_information"] + p["total_correlation"] + p["dimension_wise_kl"], kl, rtol=1e-4, atol=1e-4
    )
    bce = torch.nn.functional.binary_cross_entropy_with_logits(model.decoder(z), x)
    expected = bce + (p["mutual_information"] + 5.0 * p["total_correlation"] + p["dimension_wise_kl"]) / 4096
    torch.testing.assert_close(out.loss, expected, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="num_embeddings"):
        build_model("vqvae", "small", SPRITES, num_embeddings=1)


@pytest.mark.parametrize(
    "name, option, value",
    [
        ("vae", "beta", -1.0),
        ("tcvae", "gamma", float("nan")),
        ("bioae", "activity", float("inf")),
        ("vqvae", "commitment_weight", -0.25),
        ("tcvae", "alpha", "1"),
    ],
)
def test_negative_or_non_finite_loss_weights_are_rejected(name, option, value):
    with pytest.raises(ValueError, match=f"{option} must be a finite number >= 0, got"):
        build_model(name, "small", SPRITES, **{option: value})


def test_vqvae_quantizes_each_slot_to_its_own_codebook():
    torch.manual_seed(0)
    model = build_model("vqvae", "small", SPRITES, num_embeddings=16, embedding_dim=4, shared_codebook=False).eval()
    enc = model.encode(torch.rand(3, 1, 64, 64))
    assert enc.code.shape == (3, 10) and enc.z.shape == (3, 40)
    z = enc.z.view(3, 10, 4)
    for slot in range(10):
        torch.testing.assert_close(z[:, slot], model.codebook[slot, enc.code[:, slot]].detach())


def test_published_defaults():
    cls = get_model_class
    assert cls("qlae").defaults("sprites")["weight_decay"] == 0.1
    assert cls("qlae").default_options("shapes") == {
        "quantization_weight": 0.01,
        "commitment_weight": 0.01,
        "global_codebook": False,
    }
    assert cls("ae").defaults("shapes")["weight_decay"] == 1e-3
    assert cls("vqvae").defaults("shapes")["weight_decay"] == 0.01
    assert cls("vqvae").default_options("shapes")["commitment_weight"] == 0.25
    assert cls("vae").default_options("shapes")["beta"] == 3.0
    assert cls("vae").default_options("mpi3d")["beta"] == 0.1
    assert cls("tcvae").default_options("shapes3d")["beta"] == 3.0
    assert cls("bioae").default_options("shapes")["activity"] == 0.01
    assert cls("bioae").defaults("shapes")["weight_decay"] == 1e-4
    assert issubclass(cls("qlae"), LatentModel)


# ---------------------------------------------------------------- noisyae
def test_noisyae_clamps_its_latents_and_adds_noise_only_in_training():
    torch.manual_seed(0)
    model = build_model("noisyae", "small", SPRITES, clamp=0.02, noise=0.5)
    x = _batch(4)
    pre_z = model.encoder(x)
    assert (pre_z.abs() > 0.02).any() and (pre_z.abs() < 0.02).any()  # some latents are clamped, some not
    model.eval()
    enc = model.encode(x)
    assert torch.equal(enc.z, pre_z.clamp(-0.02, 0.02)) and torch.equal(enc.code, enc.z)
    assert enc.code.is_floating_point() and not model.discrete_latents
    bce = torch.nn.functional.binary_cross_entropy_with_logits(model.decoder(enc.z), x)
    assert torch.equal(model(x).loss, bce) and torch.equal(model(x).loss, model(x).loss)  # eval: no noise
    model.train()
    torch.manual_seed(1)
    out = model(x)
    torch.manual_seed(1)
    noisy = pre_z.clamp(-0.02, 0.02) + 0.5 * torch.randn_like(pre_z)
    torch.testing.assert_close(out.loss, torch.nn.functional.binary_cross_entropy_with_logits(model.decoder(noisy), x))
    assert not torch.equal(out.loss, bce) and torch.equal(model.encode(x).z, enc.z)  # encode: never noisy


def test_noisyae_passes_no_gradient_to_a_latent_outside_the_box():
    torch.manual_seed(0)
    model = build_model("noisyae", "small", SPRITES, clamp=0.02, noise=0.0)
    x = _batch(4)
    pre_z = model.encoder(x).detach().requires_grad_(True)
    model.decoder(pre_z.clamp(-model.clamp, model.clamp)).sum().backward()
    outside = pre_z.abs() > 0.02
    assert outside.any() and (pre_z.grad[outside] == 0).all() and (pre_z.grad[~outside] != 0).any()


@pytest.mark.parametrize("arch", ARCHS)
def test_noisyae_builds_on_every_backbone(arch):
    torch.manual_seed(0)
    model = build_model("noisyae", arch, SHAPES).eval()
    x = torch.rand(2, 3, 64, 64)
    enc = model.encode(x)
    assert enc.z.shape == enc.code.shape == (2, 12) and enc.z.abs().max() <= 0.5
    assert model.decode(enc.z).shape == (2, 3, 64, 64)
    sweep = model.traversal(enc.z, 4, enc.code, 7)  # the latent's whole box, the others kept
    torch.testing.assert_close(sweep[:, 1, 4], torch.linspace(-0.5, 0.5, 7))
    assert torch.equal(sweep[:, :, 5], enc.z[None, :, 5].expand(7, -1))
    assert "clamp=0.5, noise=0.05" in repr(model)


def test_noisyae_defaults_and_option_checks():
    cls = get_model_class("noisyae")
    assert "noisyae" in available_models()
    assert cls.defaults("shapes") == {"lr": 1e-3, "batch_size": 128, "weight_decay": 0.1}  # QLAE's decay
    assert cls.default_options("sprites") == {"clamp": 0.5, "noise": 0.05}
    with pytest.raises(ValueError, match=r"^clamp must be a finite number > 0, got 0"):
        build_model("noisyae", "small", SPRITES, clamp=0)
    with pytest.raises(ValueError, match=r"^noise must be a finite number >= 0, got -0.1"):
        build_model("noisyae", "small", SPRITES, noise=-0.1)


@pytest.mark.filterwarnings("ignore::UserWarning")  # 64 samples: sklearn finds the classes many
def test_noisyae_is_evaluated_as_continuous_and_without_noise(monkeypatch):

    seen = []
    real_infomec = evaluation.infomec

    def spy(sources, latents, **kwargs):
        seen.append((latents.dtype, kwargs["discrete_latents"]))
        return real_infomec(sources, latents, **kwargs)

    monkeypatch.setattr(evaluation, "infomec", spy)
    real_dci, tree = evaluation.dci, lambda seed: DecisionTreeClassifier(max_depth=3, random_state=seed)
    monkeypatch.setattr(evaluation, "dci", lambda f, z, seed, model: real_dci(f, z, seed=seed, model=tree))  # quick
    torch.manual_seed(0)
    model = build_model("noisyae", "small", SPRITES, noise=1.0)  # in training mode, as the loop leaves it
    run = lambda: evaluation.evaluate(
        model, get_dataset("sprites"), num_samples=64, seed=0, step=0, device=torch.device("cpu")
    )
    first, second = run(), run()
    assert seen == [(np.float64, False)] * 2
    assert torch.equal(first.codes, second.codes) and first.scores == second.scores
    assert model.training  # evaluation restores the mode


# ------------------------------------------------------- shared model pieces
def test_traversals_share_one_sweep():
    z = torch.arange(6.0).view(2, 3)
    out = sweep_latent(z, 1, torch.tensor([10.0, 20.0]))
    assert torch.equal(out, torch.tensor([[[0, 10, 2], [3, 10, 5]], [[0, 20, 2], [3, 20, 5]]]).float())
    torch.manual_seed(0)
    gan = build_model("qlinfowgan", "small", SPRITES)
    qlae = build_model("qlae", "small", SPRITES)
    assert type(gan).traversal is type(qlae).traversal  # one codebook traversal, in models/base.py
    z = torch.randn(3, 10)
    torch.testing.assert_close(gan.traversal(z, 2, None, 5)[:, 0, 2], gan.quantizer.values_per_latent[2].detach())


def test_model_layer_raises_library_errors_not_user_errors():
    cases = [
        (lambda: get_model_class("nope"), r"^unknown model 'nope'; valid choices: qlae, "),
        (lambda: build_backbone("large", 1, 2, 3), r"^unknown arch 'large'; valid choices: paper, small, compact$"),
        (lambda: build_backbone("small", 1, 0, 3), r"^encoder_features must be an integer >= 1, got 0$"),
        (lambda: build_backbone("small", True, 2, 3), r"^in_channels must be an integer >= 1, got True$"),
        (lambda: build_backbone("small", 1, 2, 3)[0](torch.rand(1, 3, 64, 64)), r"^expected images of shape"),
    ]
    for call, message in cases:
        with pytest.raises(ValueError, match=message) as info:
            call()
        assert not isinstance(info.value, UserError)
    enc, _ = build_backbone("small", np.int64(1), 2, 3)  # NumPy ints are sizes too
    assert enc.in_channels == 1 and type(enc.in_channels) is int


@pytest.mark.filterwarnings("ignore::UserWarning")  # 100 evaluation samples: sklearn finds the classes many
def test_noisyae_trains_from_the_command_line_with_its_options(tmp_path):
    run = tmp_path / "run"
    argv = ["train", "--dataset", "sprites", "--arch", "small", "--batch-size", "8", "--steps", "2", "--threads", "1"]
    argv += ["--eval-samples", "100", "--eval-every", "0", "--model", "noisyae", "-o", "noise=0.2", "--out", str(run)]
    assert main(argv) == 0
    config = yaml.safe_load((run / "config.yaml").read_text())
    assert config["weight_decay"] == 0.1 and config["options"] == {"clamp": 0.5, "noise": 0.2}
    scores = json.loads((run / "eval.json").read_text())
    assert scores["step"] == 2 and scores["num_latents"] == 10 and math.isfinite(scores["infom"])
    assert main([*argv[:-2], "--out", str(tmp_path / "bad"), "-o", "clamp=-1"]) == 2  # one line, exit 2


def test_gan_optimizers_are_the_shared_groups_split_by_network():
    model = build_model("qlinfowgan", "small", SPRITES)
    opts = model.configure_optimizers(lr=2e-4, weight_decay=1e-3)
    ids = lambda groups: [[id(p) for p in g["params"]] for g in groups]
    settings = lambda groups: [
        {k: v for k, v in g.items() if k in ("weight_decay", "clip_value", "group")} for g in groups
    ]
    critic = lambda name: name.startswith("encoder.")
    for name, keep in (("critic", critic), ("generator", lambda n: not critic(n))):
        expected = model.param_groups(1e-3, 1.0, keep)
        assert ids(opts[name].param_groups) == ids(expected) and all(ids(expected))
        assert settings(opts[name].param_groups) == settings(expected)
    (single,) = build_model("qlae", "small", SPRITES).configure_optimizers(lr=1e-3, weight_decay=0.1).values()
    assert settings(single.param_groups) == [
        {"weight_decay": 0.1, "clip_value": 1.0, "group": "decay"},
        {"weight_decay": 0.0, "clip_value": None, "group": "no_decay"},
    ]
