"""The stacked trainer (train/stacked.py): each member of a stack is its separate run.

The separate runs here go through the loop's own code (``resolve``,
``configure_optimizers``, ``LatentModel.training_step``, ``batches.batch_indices``,
or ``latentquant train`` itself); the stack must give every member the weights
its separate run gets, to 1e-9 in float64.
"""

import json
import math

import pytest
import torch

from latentquant.cli import main
from latentquant.data import get_dataset
from latentquant.models.qlae import QLAE
from latentquant.train import checkpoint as ckpt
from latentquant.train.batches import batch_indices
from latentquant.train.config import TrainConfig, resolve
from latentquant.train.stacked import StackedAdamW, StackedModel, check_stackable, stack_members, train_stack
from latentquant.validation import UserError

BATCH = 2  # float64 convolutions are slow on a CPU: the smallest batch that is a batch
STEPS = 50
_SEPARATE = {}  # (model, arch) -> each member's weights after its separate run, shared by the tests


@pytest.fixture(scope="module")
def sprites():
    return get_dataset("sprites")


@pytest.fixture
def float64():
    held = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(held)


def _configs(model, arch, **extra):
    # three members: other seeds, weight decays
    base = TrainConfig(model=model, arch=arch, dataset="sprites", batch_size=BATCH, num_latents=4, steps=50, **extra)
    wds = (0.1, 0.01, 0.0)
    out = []
    for k, (seed, wd) in enumerate(zip((0, 5, 9), wds)):
        # and their own loss weights: beta, the quantizer's commitment weight
        options = (
            {"beta": 1.0 + k} if model == "vae" else {"commitment_weight": 0.01 * (1 + k)} if model == "qlae" else {}
        )
        out.append(base.replace(seed=seed, weight_decay=wd, options=options, out=f"unused/{k}"))
    return out


def _batch(config, step, data):
    idx = batch_indices(config.seed, step, config.batch_size, len(data))
    return data.get_images(idx).to(torch.get_default_dtype())


def _separate(config, data, steps):
    """The loop's path for one run: resolve, the model's optimizers, its training_step."""
    key = (config.model, config.arch, config.seed, config.weight_decay, tuple(config.options.items()), steps)
    if key not in _SEPARATE:
        _SEPARATE[key] = _train_separate(config, data, steps)
    return _SEPARATE[key]


def _train_separate(config, data, steps):
    r = resolve(config, data)
    c = r.config
    optimizers = r.model.configure_optimizers(lr=c.lr, weight_decay=c.weight_decay, clip=c.clip)
    for step in range(steps):
        r.model.train()
        r.model.training_step(r.model, _batch(c, step, data), optimizers, step)
    return {k: v.detach().clone() for k, v in r.model.state_dict().items()}


def _stacked(configs, data, steps, strategy, resume_at=None, folder=None):
    members, states = [], []
    for c in configs:
        members.append(resolve(c, data))
        states.append(torch.get_rng_state())
    stack, opt = stack_members(members, strategy, states)
    for step in range(steps):
        if step == resume_at:  # save every member as a checkpoint would, rebuild the stack from them
            stack, opt = _reload(members, stack, opt, data, strategy, folder, step)
        x = torch.stack([_batch(r.config, step, data) for r in members])
        stack.train()
        stack.training_step(x, opt, step)
    return [{k: v.detach().clone() for k, v in r.model.state_dict().items()} for r in members], stack


def _reload(members, stack, opt, data, strategy, folder, step):
    """Every member saved by the checkpoint writer and restored into a new stack, as a resumed stack is."""
    paths = []
    for k, r in enumerate(members):
        own = r.model.configure_optimizers(lr=r.config.lr, weight_decay=r.config.weight_decay, clip=r.config.clip)
        opt.export(k, own["model"])
        (folder / str(k)).mkdir(parents=True, exist_ok=True)
        with stack.member_rng(k):
            paths.append(ckpt.save_checkpoint(folder / str(k), step, r.model, own))
    fresh = [resolve(r.config, data) for r in members]
    new_stack, new_opt = stack_members(fresh, strategy)
    for k, r in enumerate(fresh):
        own = r.model.configure_optimizers(lr=r.config.lr, weight_decay=r.config.weight_decay, clip=r.config.clip)
        tensors, doc = ckpt.read_checkpoint(paths[k])
        with new_stack.member_rng(k):
            ckpt.restore(tensors, doc, r.model, own)
        new_opt.step_count = new_opt.load(k, own["model"])
    members[:] = fresh
    return new_stack, new_opt


# vmap (the accelerator's path) on every model and backbone; loop (the CPU's) on two
CASES = [(m, a, "vmap") for m in ("qlae", "ae", "vae") for a in ("small", "compact")]
CASES += [("qlae", "small", "loop"), ("vae", "compact", "loop")]


@pytest.mark.parametrize("model, arch, strategy", CASES)
def test_each_member_gets_its_separate_runs_weights(sprites, float64, model, arch, strategy):
    steps = STEPS
    configs = _configs(model, arch)
    got, stack = _stacked(configs, sprites, steps, strategy)
    assert stack.strategy == strategy
    for k, config in enumerate(configs):
        want = _separate(config, sprites, steps)
        assert set(got[k]) == set(want)
        for name in want:
            torch.testing.assert_close(got[k][name], want[name], rtol=0, atol=1e-9, msg=f"member {k}: {name}")
    # and the members did train apart: their weights differ
    assert not torch.equal(got[0]["encoder.head.weight"], got[1]["encoder.head.weight"])


@pytest.mark.parametrize("model, strategy", [("qlae", "vmap"), ("vae", "loop")])
def test_a_resumed_stack_matches_its_separate_runs(sprites, float64, tmp_path, model, strategy):
    steps = STEPS
    configs = _configs(model, "small")
    got, _ = _stacked(configs, sprites, steps, strategy, resume_at=23, folder=tmp_path)
    for k, config in enumerate(configs):
        want = _separate(config, sprites, steps)
        for name in want:
            torch.testing.assert_close(got[k][name], want[name], rtol=0, atol=1e-9, msg=f"member {k}: {name}")


def test_stacked_adamw_is_torch_adamw_with_clipping(float64):
    torch.manual_seed(0)
    models = [torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Linear(4, 2)) for _ in range(3)]

    class Net(torch.nn.Sequential):  # split_parameters: decayed weights, plain biases
        def split_parameters(self):
            named = dict(self.named_parameters())
            return {n: p for n, p in named.items() if "weight" in n}, {n: p for n, p in named.items() if "bias" in n}

    models = [Net(*m) for m in models]
    refs = [Net(*[torch.nn.Linear(3, 4), torch.nn.Linear(4, 2)]) for _ in range(3)]
    for ref, m in zip(refs, models):
        ref.load_state_dict(m.state_dict())
    lrs, wds, clips = (1e-3, 3e-3, 1e-2), (0.1, 0.0, 1.0), (1.0, None, 0.05)
    stack = StackedModel.__new__(StackedModel)  # the optimizer needs params, models and a device only
    stack.models, stack.K, stack.device = models, 3, torch.device("cpu")
    stack.params = {
        n: torch.stack([m.get_parameter(n).detach() for m in models]) for n, _ in models[0].named_parameters()
    }
    opt = StackedAdamW(stack, lrs, wds, clips)
    from latentquant.models.base import adamw, clip_gradients

    torch_opts = []
    for ref, wd, c in zip(refs, wds, clips):
        decay, no_decay = ref.split_parameters()
        groups = [
            {"params": list(decay.values()), "weight_decay": wd, "clip_value": c},
            {"params": list(no_decay.values()), "weight_decay": 0.0, "clip_value": None},
        ]
        torch_opts.append(adamw(groups, lrs[len(torch_opts)], (0.9, 0.999)))
    for _ in range(30):
        grads = {n: torch.randn_like(p) * 3 for n, p in stack.params.items()}
        for n, p in stack.params.items():
            p.grad = grads[n].clone()
        opt.step()
        for k, (ref, o) in enumerate(zip(refs, torch_opts)):
            for n, p in ref.named_parameters():
                p.grad = grads[n][k].clone()
            clip_gradients(o)
            o.step()
    for k, ref in enumerate(refs):
        for n, p in ref.named_parameters():
            torch.testing.assert_close(stack.params[n][k], p.detach(), rtol=0, atol=1e-15)


def test_a_diverging_member_stops_alone(tmp_path, monkeypatch, capsys):
    """Member 1's loss turns NaN at its 5th step: it stops with the record a separate run
    writes (metrics line, last good checkpoint); members 0 and 2 finish."""
    real = QLAE.forward
    calls = {}

    def poisoned(self, x):
        out = real(self, x)
        if self.quantizer.commitment_loss_weight == 0.02:  # member 1 only
            calls[id(self)] = calls.get(id(self), 0) + 1
            if calls[id(self)] >= 5:
                return type(out)(out.loss * math.nan, {k: v * math.nan for k, v in out.parts.items()})
        return out

    monkeypatch.setattr(QLAE, "forward", poisoned)
    base = TrainConfig(
        model="qlae", arch="small", batch_size=4, steps=8, eval_every=0, eval_samples=100, log_every=1,
        checkpoint_every=2, threads=1, logger=["none"],
    )  # fmt: skip
    configs = [
        base.replace(seed=k, out=str(tmp_path / f"m{k}"), options={"commitment_weight": 0.01 * (1 + (k == 1))})
        for k in range(3)
    ]
    results = train_stack(configs, strategy="loop")
    assert isinstance(results[1], Exception) and "non-finite loss at step 5" in str(results[1])
    assert results[0]["step"] == results[2]["step"] == 8
    bad = tmp_path / "m1"
    assert [p.name for p in ckpt.list_checkpoints(bad / "checkpoints")] == [
        "step_00000002.safetensors",
        "step_00000004.safetensors",
    ]
    last = json.loads((bad / "metrics.jsonl").read_text().splitlines()[-1])
    assert last["step"] == 5 and last["loss"] is None and "loss" in last["nonfinite"]
    assert not (bad / "eval.json").exists()
    for k in (0, 2):
        assert json.loads((tmp_path / f"m{k}" / "eval.json").read_text())["step"] == 8


def test_settings_that_cannot_vary_and_gans_are_refused(sprites):
    a = resolve(TrainConfig(model="qlae", arch="small", batch_size=4, out="x/a"), sprites)
    b = resolve(TrainConfig(model="qlae", arch="small", batch_size=8, out="x/b"), sprites)
    with pytest.raises(ValueError, match="batch_size cannot vary inside a stack"):
        check_stackable([a, b])
    c = resolve(TrainConfig(model="qlae", arch="small", batch_size=4, values_per_latent=5, out="x/c"), sprites)
    with pytest.raises(ValueError, match="values_per_latent cannot vary"):
        check_stackable([a, c])
    d = resolve(TrainConfig(model="qlae", arch="small", batch_size=4, out="x/a"), sprites)
    with pytest.raises(ValueError, match="same run directory"):
        check_stackable([a, d])
    with torch.device("meta"):
        g = resolve(TrainConfig(model="infowgan", arch="small", out="x/g"), sprites)
    with pytest.raises(ValueError, match="model 'infowgan' cannot be stacked"):
        check_stackable([g])
    with pytest.raises(UserError, match="cannot be stacked"):
        train_stack([TrainConfig(model="qlinfowgan", arch="small", out="x/q")])


# ---------------------------------------------------------------------------
# run directories: a member's folder is its separate run's

TINY = ["--dataset", "sprites", "--arch", "small", "--batch-size", "4", "--eval-samples", "100"]
TINY += ["--eval-every", "2", "--log-every", "1", "--threads", "1", "--steps", "4", "--logger", "none"]
TIMING = {"seconds", "train_seconds", "eval_seconds", "img_s"}


def _files(run):
    return sorted(str(p.relative_to(run)) for p in run.rglob("*") if p.is_file())


def _close(a, b, where):
    if isinstance(a, dict):
        assert set(a) == set(b), where
        for key in a:
            if key not in TIMING:
                _close(a[key], b[key], f"{where}.{key}")
    elif isinstance(a, float) and isinstance(b, float):
        assert b == pytest.approx(a, rel=1e-5, abs=1e-6, nan_ok=True), where
    else:
        assert a == b, where


def _jsonl(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.mark.parametrize("model", ["vae", "qlae"])  # qlae: its values' usage logged as in a separate run
def test_member_directories_are_separate_runs_directories(model, tmp_path, capsys):
    from latentquant.train.cli_stack import main as stack_main

    members = [["--model", model, "--seed", str(s), "--weight-decay", str(wd)] for s, wd in ((1, 0.01), (2, 0.0))]
    argv = []
    for k, flags in enumerate(members):
        argv += ["--member", *TINY, *flags, "--out", str(tmp_path / "stack" / str(k))]
    assert stack_main(["--strategy", "loop", *argv]) == 0
    for k, flags in enumerate(members):
        assert main(["train", *TINY, *flags, "--out", str(tmp_path / "alone" / str(k))]) == 0
    for k in range(len(members)):
        s, a = tmp_path / "stack" / str(k), tmp_path / "alone" / str(k)
        assert _files(s) == _files(a)
        assert (s / "config.yaml").read_text().replace(str(s), "OUT") == (a / "config.yaml").read_text().replace(
            str(a), "OUT"
        )
        for name in ("metrics.jsonl", "evals.jsonl"):
            rs, ra = _jsonl(s / name), _jsonl(a / name)
            assert len(rs) == len(ra) > 0
            for i, (x, y) in enumerate(zip(rs, ra)):
                _close(x, y, f"{name}:{i}")
        _close(json.loads((s / "eval.json").read_text()), json.loads((a / "eval.json").read_text()), "eval.json")
        for path in ckpt.list_checkpoints(a / "checkpoints"):
            ts, ds = ckpt.read_checkpoint(s / "checkpoints" / path.name)
            ta, da = ckpt.read_checkpoint(path)
            assert set(ts) == set(ta) and ds["optimizers"] == da["optimizers"] and ds["step"] == da["step"]
            for key in ta:
                torch.testing.assert_close(ts[key], ta[key], rtol=1e-5, atol=1e-6, msg=key)
    # a member resumes alone, as a separate run does
    assert main(["train", "--resume", str(tmp_path / "stack" / "0"), "--steps", "6"]) == 0
    assert json.loads((tmp_path / "stack" / "0" / "eval.json").read_text())["step"] == 6


def test_sweep_stack_trains_members_together_and_then_counts_them_done(tmp_path, capsys):
    from latentquant.results.stacks import plan_stacks, stack_key

    out = tmp_path / "grid"
    argv = ["sweep", "--datasets", "sprites", "--models", "ae", "qlinfowgan", "--seeds", "0", "1", "--steps", "2"]
    argv += ["--arch", "small", "--out", str(out), "--stack", "4", "--jobs", "1", "--"]
    argv += ["--batch-size", "4", "--eval-samples", "100", "--eval-every", "0", "--logger", "none"]
    from latentquant.results.grid import plan

    specs = plan(["sprites"], ["ae", "qlinfowgan"], [0, 1], out, ["--arch", "small"])
    states = {spec: "new" for spec in specs}
    groups = plan_stacks(specs, states, 4)
    assert sorted(len(g) for g in groups) == [1, 1, 2]  # the two AEs together, each GAN alone
    assert all((stack_key(spec, "new") is None) == (spec.model == "qlinfowgan") for spec in specs)
    # train only the AEs (the GANs are tested elsewhere), then sweep again: both done
    argv[4:6] = ["ae"]
    assert main(argv) == 0
    for seed in (0, 1):
        run = out / "sprites" / "ae" / f"seed{seed}"
        assert json.loads((run / "eval.json").read_text())["step"] == 2
        assert "stack of 2" in (run / "train.log").read_text()
    capsys.readouterr()
    assert main(argv) == 0
    assert "2 runs: 2 done" in capsys.readouterr().out


def test_gpu_grid_script_on_cpu_checkpoints_by_time_and_commits_only_finished_runs(tmp_path):
    import shutil
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).resolve().parents[1] / "scripts" / "gpu_grid.sh"
    repo = tmp_path / "repo"
    repo.mkdir()
    git = ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run([*git, "init", "-q"], check=True)
    subprocess.run([*git, "commit", "-q", "--allow-empty", "-m", "start"], check=True)
    env = dict(__import__("os").environ, PYTHON=sys.executable, OMP_NUM_THREADS="1")
    cmd = ["bash", str(script), "grid", "--stack", "2", "--device", "cpu", "--checkpoint-seconds", "0.001"]
    cmd += ["--commit", "--datasets", "sprites", "--models", "ae", "--seeds", "0", "1", "--steps", "3"]
    cmd += ["--arch", "small", "--threads", "1", "--", "--batch-size", "4", "--eval-samples", "100"]
    cmd += ["--eval-every", "0", "--logger", "none"]
    done = subprocess.run(cmd, cwd=repo, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    for seed in (0, 1):
        run = repo / "grid" / "sprites" / "ae" / f"seed{seed}"
        # timed checkpoints (every step here) survive only while newest: the regular one at step 3
        # replaced them (that the loop writes them is tested in test_train, through the same loop)
        assert [p.name for p in ckpt.list_checkpoints(run / "checkpoints")] == ["step_00000003.safetensors"]
        assert "stack of 2" in (run / "train.log").read_text()
    committed = subprocess.run([*git, "show", "--name-only", "--format=", "HEAD"], capture_output=True, text=True)
    names = committed.stdout.split()
    assert "grid/sprites/ae/seed0/eval.json" in names and "grid/sprites/ae/seed1/config.yaml" in names
    assert not any("checkpoints" in n or n.endswith("train.log") for n in names)
    # a run in progress (its config, no final evaluation) is never committed
    half = repo / "grid" / "sprites" / "vae" / "seed0"
    half.mkdir(parents=True)
    shutil.copy(repo / "grid" / "sprites" / "ae" / "seed0" / "config.yaml", half / "config.yaml")
    again = subprocess.run(cmd, cwd=repo, env=env, capture_output=True, text=True)
    assert again.returncode == 0 and "2 done" in again.stdout, again.stdout + again.stderr
    status = subprocess.run([*git, "status", "--porcelain"], capture_output=True, text=True).stdout
    assert "grid/sprites/vae/" in status  # untracked, left alone
    tracked = subprocess.run([*git, "ls-files"], capture_output=True, text=True).stdout
    assert "vae" not in tracked


def test_sigint_checkpoints_every_member_and_the_stack_resumes(tmp_path):
    import os
    import signal
    import subprocess
    import sys
    import time

    from latentquant.train.cli_stack import main as stack_main

    outs = [tmp_path / "m0", tmp_path / "m1"]
    argv = [sys.executable, "-m", "latentquant.train.cli_stack"]
    for k, out in enumerate(outs):
        argv += ["--member", *TINY[:8], "--eval-every", "0", "--log-every", "1", "--threads", "1", "--logger", "none"]
        argv += ["--steps", "100000", "--model", "ae", "--seed", str(k), "--out", str(out)]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.Popen(argv, env=env, stderr=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 90
        while time.time() < deadline:
            metrics = outs[1] / "metrics.jsonl"
            if metrics.exists() and len(metrics.read_text().splitlines()) >= 3:
                break
            time.sleep(0.2)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err[-2000:]
    assert "Traceback" not in err and "--resume" in err
    steps = set()
    for out in outs:
        (path,) = ckpt.list_checkpoints(out / "checkpoints")
        steps.add(int(path.stem.split("_")[1]))
    (step,) = steps  # one step for both members
    assert step >= 3
    resumed = [["--member", "--resume", str(out), "--steps", str(step + 2)] for out in outs]
    assert stack_main([token for member in resumed for token in member]) == 0
    for out in outs:
        assert json.loads((out / "eval.json").read_text())["step"] == step + 2
        assert [r["step"] for r in _jsonl(out / "metrics.jsonl")] == list(range(1, step + 3))


def test_stack_checkpoint_seconds_sets_every_members_timed_checkpoints(tmp_path, monkeypatch):
    """``cli_stack --checkpoint-seconds S`` is the members' own ``checkpoint_seconds`` (one mechanism
    with ``train --checkpoint-seconds``): here every step is due, each member checkpoints each step,
    and the setting lands in each member's config.yaml."""
    import latentquant.train.loop as loop
    from latentquant.train.cli_stack import main as stack_main

    seen = []
    save = loop.save_checkpoint

    def spy(folder, step, *args, **kwargs):
        seen.append(step)
        return save(folder, step, *args, **kwargs)

    monkeypatch.setattr(loop, "save_checkpoint", spy)
    argv = ["--strategy", "loop", "--checkpoint-seconds", "1e-9"]
    for k in range(2):
        argv += ["--member", *TINY, "--model", "ae", "--seed", str(k), "--steps", "3", "--out", str(tmp_path / str(k))]
    assert stack_main(argv) == 0
    assert sorted(seen) == [1, 1, 2, 2, 3, 3]
    for k in range(2):
        assert "checkpoint_seconds: 1.0e-09" in (tmp_path / str(k) / "config.yaml").read_text()
