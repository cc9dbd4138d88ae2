"""InfoWGAN-GP and QLInfoWGAN-GP: gradient penalty, losses, prior, alternating steps."""

import pytest
import torch
from tiny_run import TINY

from latentquant.models import DataInfo, build_model
from latentquant.models.gan import InfoWGAN, QLInfoWGAN, gradient_penalty

INFO = DataInfo("sprites", 1, 2, 1000)  # 2 factors -> 4 latents
MODELS = ["infowgan", "qlinfowgan"]


def make(name, **options):
    torch.manual_seed(0)
    kw = {"values_per_latent": 5} if name == "qlinfowgan" else {}
    return build_model(name, "small", INFO, **{**kw, **options})


def images(b=4, seed=1):
    return torch.rand(b, 1, 64, 64, generator=torch.Generator().manual_seed(seed))


def snapshot(params):
    return [p.detach().clone() for p in params]


def moved(params, before):
    return [not torch.equal(p.detach(), b) for p, b in zip(params, before)]


# ------------------------------------------------------------ gradient penalty


def test_gradient_penalty_linear_critic_known_gradient():
    # D(x) = w . x: grad_x D = w everywhere, so GP = (||w|| - 1)^2 and
    # dGP/dw = 2 (||w|| - 1) w / ||w||, whatever the images and eps are.
    torch.manual_seed(1)
    w = torch.randn(12, dtype=torch.float64, requires_grad=True)
    critic = lambda x: x.flatten(1) @ w
    x, fake = torch.rand(5, 3, 2, 2, dtype=torch.float64), torch.rand(5, 3, 2, 2, dtype=torch.float64)
    gp = gradient_penalty(critic, x, fake)
    norm = w.detach().norm()
    torch.testing.assert_close(gp.detach(), (norm - 1) ** 2, rtol=1e-6, atol=1e-9)
    (g,) = torch.autograd.grad(gp, w)
    torch.testing.assert_close(g, 2 * (norm - 1) * w.detach() / norm, rtol=1e-6, atol=1e-9)


def test_gradient_penalty_quadratic_critic_known_gradient():
    # D(x) = a/2 ||x||^2: grad_x D(x_hat) = a x_hat, so with r_i = ||x_hat_i|| and a > 0
    # GP = mean (a r_i - 1)^2 and dGP/da = mean 2 (a r_i - 1) r_i.
    torch.manual_seed(2)
    a = torch.tensor(0.7, dtype=torch.float64, requires_grad=True)
    critic = lambda x: 0.5 * a * x.flatten(1).pow(2).sum(1)
    x, fake = torch.randn(6, 2, 3, dtype=torch.float64), torch.randn(6, 2, 3, dtype=torch.float64)
    eps = torch.rand(6, dtype=torch.float64)
    r = (eps[:, None, None] * x + (1 - eps[:, None, None]) * fake).flatten(1).norm(dim=1)
    gp = gradient_penalty(critic, x, fake, eps)
    torch.testing.assert_close(gp.detach(), ((a.detach() * r - 1) ** 2).mean(), rtol=1e-6, atol=1e-9)
    (g,) = torch.autograd.grad(gp, a)
    torch.testing.assert_close(g, (2 * (a.detach() * r - 1) * r).mean(), rtol=1e-6, atol=1e-9)
    # eps = 1 puts x_hat on the real batch
    gp_real = gradient_penalty(critic, x, fake, torch.ones(6, dtype=torch.float64))
    torch.testing.assert_close(gp_real.detach(), ((a.detach() * x.flatten(1).norm(dim=1) - 1) ** 2).mean())


def test_gradient_penalty_bad_shapes():
    critic = lambda x: x.flatten(1).sum(1)
    with pytest.raises(ValueError, match="same shape"):
        gradient_penalty(critic, torch.rand(4, 3), torch.rand(5, 3))
    with pytest.raises(ValueError, match=r"eps must have shape \(4,\)"):
        gradient_penalty(critic, torch.rand(4, 3), torch.rand(4, 3), torch.rand(4, 1))


# ---------------------------------------------------------- networks, losses


@pytest.mark.parametrize("name", MODELS)
def test_heads_and_encoding(name):
    model = make(name)
    assert model.encoder.head.out_features == 1 + model.num_latents  # value + latents
    value, pre_z = model.critic_encode(images())
    assert value.shape == (4,) and pre_z.shape == (4, 4)
    enc = model.encode(images())
    if name == "qlinfowgan":
        assert model.discrete_latents and enc.code.dtype == torch.int64 and enc.code.shape == (4, 4)
        assert enc.code.min() >= 0 and enc.code.max() < 5
    else:
        assert not model.discrete_latents and torch.allclose(enc.code, pre_z)


@pytest.mark.parametrize("name", MODELS)
def test_losses_finite_and_match_definition(name):
    model = make(name)
    torch.manual_seed(3)
    out = model(images(), phase="critic")
    p = out.parts
    assert torch.isfinite(out.loss) and torch.equal(p["loss"], out.loss.detach())
    expected = p["wasserstein"] + 10 * p["gradient_penalty"] + 200 * p["latent"]
    if name == "qlinfowgan":
        assert p["quantization"] > 0 and p["commitment"] > 0
        expected = expected + 0.01 * p["quantization"] + 0.01 * p["commitment"]
    torch.testing.assert_close(out.loss.detach(), expected)
    gen = model(images(), phase="generator")
    assert torch.isfinite(gen.loss) and set(gen.parts) == {"generator", "generator_latent"}
    with pytest.raises(ValueError, match="phase must be one of"):
        model(images(), phase="encoder")


def test_infowgan_prior_is_unit_cube():
    z = make("infowgan").sample_prior(4000)
    assert z.shape == (4000, 4) and z.min() >= 0 and z.max() <= 1
    assert abs(z.mean().item() - 0.5) < 0.02  # ~ 7 standard errors of a U[0, 1] mean


def test_ql_prior_samples_lie_in_codebook_and_cover_it():
    model = make("qlinfowgan")
    (values,) = model.codebook_parameters()  # (d, 5): each latent's learned values
    with torch.no_grad():  # move the values off their initial grid
        values.add_(0.01 * torch.randn_like(values))
    z = model.sample_prior(2000)
    assert z.shape == (2000, 4)
    z.sum().backward()  # d(sum z)/d(value k of latent j) = how many samples drew it
    for j in range(4):
        dist = (z.detach()[:, j, None] - values.detach()[j][None]).abs()
        assert dist.min(dim=1).values.max() == 0  # every sample is exactly one of the values
        counts = torch.bincount(dist.argmin(dim=1), minlength=5)
        assert counts.min() > 300  # uniform over 5 values: 400 expected each
        torch.testing.assert_close(values.grad[j], counts.to(values.dtype))


def test_ql_generator_loss_reaches_codebook_values():
    model = make("qlinfowgan")
    model(images(), phase="generator").loss.backward()
    (values,) = model.codebook_parameters()
    assert values.grad is not None and (values.grad.abs().sum(dim=1) > 0).all()  # every latent


# -------------------------------------------------------------- optimization


@pytest.mark.parametrize("name", MODELS)
def test_steps_move_only_their_network(name):
    model = make(name, n_critic=3)
    opts = model.configure_optimizers(lr=2e-4, weight_decay=1e-3)
    # the value head's bias cancels in D(fake) - D(real) and gets no gradient
    crit = [p for n, p in model.encoder.named_parameters() if n != "head.bias"]
    gen = [p for n, p in model.named_parameters() if not n.startswith("encoder.")]
    x = images()

    c0, g0 = snapshot(crit), snapshot(gen)
    for step in (0, 1):  # (step + 1) % 3 != 0: critic only
        parts = model.training_step(model, x, opts, step=step)
        assert "generator" not in parts and torch.isfinite(parts["loss"])
        assert all(moved(crit, c0)), "every critic parameter moves in a critic step"
        assert not any(moved(gen, g0)), "a critic step must not touch the generator"
        c0 = snapshot(crit)
    assert len(opts["generator"].state) == 0

    parts = model.training_step(model, x, opts, step=2)  # 3rd critic step, then a generator step
    assert torch.isfinite(parts["generator"])
    assert all(moved(gen, g0)), "every generator parameter (codebook values included) moves"
    # the generator step took no critic optimizer step, and only the critic optimizer holds critic weights
    assert all(int(s["step"]) == 3 for s in opts["critic"].state.values())
    assert all(int(s["step"]) == 1 for s in opts["generator"].state.values())
    assert all(p.requires_grad for p in model.parameters()) and all(p.grad is None for p in model.parameters())


@pytest.mark.parametrize("name", MODELS)
def test_optimizer_split_and_defaults(name):
    model = make(name)
    opts = model.configure_optimizers(lr=2e-4, weight_decay=1e-3)
    names = {id(p): n for n, p in model.named_parameters()}
    for key, opt in opts.items():
        decay, plain = opt.param_groups
        assert decay["weight_decay"] == 1e-3 and decay["clip_value"] == 1.0 and plain["clip_value"] is None
        assert all(g["lr"] == 2e-4 and g["betas"] == (0.0, 0.9) for g in opt.param_groups)
        assert all(not names[id(p)].endswith("bias") and "quantizer" not in names[id(p)] for p in decay["params"])
        assert all(names[id(p)].endswith("bias") or "quantizer" in names[id(p)] for p in plain["params"])
        owner = (lambda n: n.startswith("encoder.")) if key == "critic" else (lambda n: not n.startswith("encoder."))
        assert all(owner(names[id(p)]) for g in opt.param_groups for p in g["params"])
    ids = [id(p) for o in opts.values() for g in o.param_groups for p in g["params"]]
    assert sorted(ids) == sorted(names)  # every parameter in exactly one optimizer
    if name == "qlinfowgan":
        gen_plain = {names[id(p)] for p in opts["generator"].param_groups[1]["params"]}
        assert sum("quantizer" in n for n in gen_plain) == len(list(model.quantizer.parameters())) > 0

    cls = type(model)
    d = cls.defaults("shapes3d")
    assert d["lr"] == 2e-4 and d["batch_size"] == 64
    assert cls.default_options("shapes3d")["n_critic"] == 5
    if name == "qlinfowgan":  # configs/params/quantized_info_gan/*.yaml
        assert (d["weight_decay"], cls.defaults("falcor3d")["weight_decay"]) == (1e-3, 1e-4)
        assert cls.defaults("shapes")["weight_decay"] == 1e-3  # built-in shapes imitates shapes3d
    else:  # configs/model_partial/info_gan.yaml
        assert d["weight_decay"] == 1e-4


# ------------------------------------------------------------------ figures


@pytest.mark.parametrize("name", MODELS)
def test_samples_and_traversals(name):
    model = make(name)
    figs = model.extra_figures(images())
    s = figs["samples"]
    assert s.shape == (8, 8, 1, 64, 64) and s.min() >= 0 and s.max() <= 1
    enc = model.encode(images(6))
    sweep = model.traversal(enc.z[:2], 1, enc.code, 7)
    others = [0, 2, 3]
    assert torch.equal(sweep[:, :, others], enc.z[:2].unsqueeze(0).expand(len(sweep), -1, -1)[:, :, others])
    if name == "qlinfowgan":  # the sweep is the latent's codebook
        torch.testing.assert_close(sweep[:, 0, 1], model.quantizer.values_per_latent[1].detach())
    else:  # continuous: the shared default, mean -2..2 sd of the encodings
        col = enc.code[:, 1]
        torch.testing.assert_close(sweep[:, 0, 1], col.mean() + torch.linspace(-2, 2, 7) * col.std())


def test_bad_arguments():
    with pytest.raises(ValueError, match="values_per_latent"):
        make("qlinfowgan", values_per_latent=1)
    with pytest.raises(ValueError, match="n_critic"):
        make("infowgan", n_critic=0)
    with pytest.raises(ValueError, match="lambda_gp"):
        make("infowgan", lambda_gp=-1.0)
    assert isinstance(make("infowgan"), InfoWGAN) and isinstance(make("qlinfowgan"), QLInfoWGAN)


# --------------------------------------------- through the shared training loop

import json  # noqa: E402

from latentquant.cli import main  # noqa: E402
from latentquant.train import checkpoint as ckpt  # noqa: E402
from latentquant.train.config import TrainConfig, resolve  # noqa: E402

EVAL_KEYS = {"infom", "infoe", "infoc", "dci_d", "dci_c", "dci_i", "mig", "psnr", "step"}


def _records(run):
    return {r["step"]: r for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines())}


def test_published_defaults_resolve_through_the_config():
    c = resolve(TrainConfig(model="qlinfowgan", dataset="shapes")).config
    assert (c.lr, c.batch_size, c.weight_decay, c.values_per_latent, c.num_latents) == (2e-4, 64, 1e-3, 10, 12)
    assert c.options == {
        "lambda_gp": 10.0,
        "lambda_latent": 200.0,
        "n_critic": 5,
        "quantization_weight": 0.01,
        "commitment_weight": 0.01,
    }
    c = resolve(TrainConfig(model="infowgan", dataset="sprites")).config
    assert (c.lr, c.batch_size, c.weight_decay, c.values_per_latent) == (2e-4, 64, 1e-4, None)


@pytest.mark.parametrize("name", MODELS)
def test_train_command_and_evaluate(name, tmp_path):
    run = tmp_path / name
    assert main(["train", *TINY, "--model", name, "--steps", "5", "--out", str(run)]) == 0
    rec = _records(run)
    assert sorted(rec) == [1, 2, 3, 4, 5]
    assert all("generator" not in rec[s] for s in (1, 2, 3, 4)) and "generator" in rec[5]  # 5 critic : 1
    assert all(r["lr"] == 2e-4 for r in rec.values())
    scores = json.loads((run / "eval.json").read_text())
    assert set(scores) >= EVAL_KEYS and scores["step"] == 5 and scores["model"] == name
    figures = {p.name for p in (run / "figures").iterdir()}
    assert {"samples.png", "traversals.png", "reconstructions.png", "nmi.png"} <= figures
    assert "samples.png" in (run / "report.md").read_text()
    if name == "infowgan":
        return
    # the evaluate command rebuilds the model from the checkpoint and gets the same numbers
    samples = (run / "figures" / "samples.png").read_bytes()
    (run / "eval.json").unlink()
    assert main(["evaluate", str(run)]) == 0
    again = json.loads((run / "eval.json").read_text())
    for key, value in scores.items():
        assert again[key] == (pytest.approx(value, rel=1e-9, abs=1e-12) if isinstance(value, float) else value), key
    assert (run / "figures" / "samples.png").read_bytes() == samples  # drawn from the run's seed


def test_resume_of_a_gan_run_reproduces_the_uninterrupted_run(tmp_path):
    # the uninterrupted run evaluates at step 3 (samples.png draws from the prior): evaluation
    # must leave the training's random stream alone, or the two runs part after step 3
    full, part = tmp_path / "full", tmp_path / "part"
    common = [
        "--model",
        "qlinfowgan",
        "--checkpoint-every",
        "3",
        "--seed",
        "3",
        "--values-per-latent",
        "4",
        "-o",
        "n_critic=2",
    ]
    assert main(["train", *TINY, *common, "--steps", "6", "--eval-every", "3", "--out", str(full)]) == 0
    assert main(["train", *TINY, *common, "--steps", "3", "--out", str(part)]) == 0
    # both optimizers' states are in the checkpoint: critic 3 steps, generator 1 (after step 2)
    tensors, doc = ckpt.read_checkpoint(ckpt.latest_checkpoint(part / "checkpoints"))
    for opt, taken in (("critic", 3), ("generator", 1)):
        steps = [v for k, v in tensors.items() if k.startswith(f"optim.{opt}.") and k.endswith(".step")]
        assert steps and all(int(v) == taken for v in steps), opt
        assert any(k.startswith(f"optim.{opt}.") and k.endswith(".exp_avg") for k in tensors)
    assert main(["train", "--resume", str(part), "--steps", "6"]) == 0
    a, b = _records(full), _records(part)
    assert sorted(a) == sorted(b) == list(range(1, 7))
    assert ["generator" in a[s] for s in a] == [False, True] * 3
    for step in a:
        for key in a[step]:
            if key != "seconds":
                assert b[step][key] == pytest.approx(a[step][key], abs=1e-6, rel=0), (step, key)
    wa, _ = ckpt.load_model_state(ckpt.latest_checkpoint(full / "checkpoints"))
    wb, _ = ckpt.load_model_state(ckpt.latest_checkpoint(part / "checkpoints"))
    for name in wa:
        torch.testing.assert_close(wb[name], wa[name], rtol=0, atol=1e-6)


DDP_SCRIPT = """
import torch, torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel
from latentquant.models import DataInfo, build_model
from latentquant.train.distributed import wait_released
dist.init_process_group("gloo")
rank = dist.get_rank()
torch.manual_seed(0)
model = build_model("qlinfowgan", "small", DataInfo("sprites", 1, 2, 100), values_per_latent=4, n_critic=2)
before = torch.cat([p.detach().flatten() for p in model.parameters()])
opts = model.configure_optimizers(lr=1e-3, weight_decay=1e-3)
net = DistributedDataParallel(model, find_unused_parameters=model.ddp_find_unused_parameters)
torch.manual_seed(100 + rank)  # different images and noise on each rank
for step in range(2):  # critic, then critic + generator
    model.training_step(net, torch.rand(2, 1, 64, 64), opts, step)
flat = torch.cat([p.detach().flatten() for p in model.parameters()])
both = [torch.zeros_like(flat) for _ in range(2)]
dist.all_gather(both, flat)
wait_released(flat, *both)  # as the training loop: gloo's worker thread must let go before exit
if rank == 0:
    print("DIFF", (both[0] - both[1]).abs().max().item(), "MOVED", (flat - before).abs().max().item())
dist.destroy_process_group()
"""


def test_ddp_keeps_ranks_in_sync_through_penalty_and_generator_steps(tmp_path):
    # gradient penalty (double backward), frozen critic in the generator step and
    # find_unused_parameters: with different data per rank, the ranks stay identical
    # only if every gradient is all-reduced
    import os
    import subprocess
    import sys

    script = tmp_path / "ddp_gan.py"
    script.write_text(DDP_SCRIPT)
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", str(script)],
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    words = proc.stdout.split()
    diff, moved = float(words[words.index("DIFF") + 1]), float(words[words.index("MOVED") + 1])
    assert diff == 0.0 and moved > 1e-4


@pytest.mark.parametrize(
    "option, expected",
    [
        ("n_critic=0", "n_critic must be an integer >= 1, got 0"),
        ("lambda_gp=-1", "lambda_gp must be a finite number >= 0"),
    ],
)
def test_bad_gan_options_exit_2_with_one_line(tmp_path, capsys, option, expected):
    assert (
        main(["train", *TINY, "--model", "qlinfowgan", "-o", option, "--steps", "1", "--out", str(tmp_path / "r")]) == 2
    )
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1 and expected in err[0]
    assert not (tmp_path / "r" / "checkpoints").exists()
