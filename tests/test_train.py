"""The training command: outputs, resume, checkpoints, NaN stop, interrupts, bad input, evaluate, DDP."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from tiny_run import TINY

from latentquant.cli import main
from latentquant.train import checkpoint as ckpt
from latentquant.train.config import TrainConfig, resolve

ENV = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")


def _train(*args):
    return main(["train", *TINY, *map(str, args)])


def _losses(run: Path) -> dict[int, dict]:
    return {r["step"]: r for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines())}


def _stderr_lines(capsys) -> list[str]:
    return [line for line in capsys.readouterr().err.splitlines() if line.strip()]


# ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def qlae_run(tmp_path_factory):
    """One short QLAE run shared by the tests that only read it."""
    import contextlib
    import io

    threads = torch.get_num_threads()
    run = tmp_path_factory.mktemp("qlae") / "run"
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        assert _train("--model", "qlae", "--steps", "6", "--checkpoint-every", "3", "--out", run) == 0
    torch.set_num_threads(threads)
    (run.parent / "stderr.txt").write_text(err.getvalue())
    return run


def test_run_directory_is_complete(qlae_run):
    run = qlae_run
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    assert cfg["weight_decay"] == 0.1 and cfg["lr"] == 1e-3 and cfg["num_latents"] == 10
    assert cfg["values_per_latent"] == 10
    assert cfg["options"] == {"quantization_weight": 0.01, "commitment_weight": 0.01, "global_codebook": False}
    lines = _losses(run)
    assert sorted(lines) == [1, 2, 3, 4, 5, 6]
    assert {"loss", "bce", "quantization", "commitment"} <= set(lines[6])
    scores = json.loads((run / "eval.json").read_text())
    assert {"infom", "infoe", "infoc", "dci_d", "dci_c", "dci_i", "mig", "psnr", "step"} <= set(scores)
    assert scores["step"] == 6 and scores["dci_model"] == "fast" and 0 < scores["psnr"] < 60
    assert [p.name for p in ckpt.list_checkpoints(run / "checkpoints")] == [
        "step_00000003.safetensors",
        "step_00000006.safetensors",
    ]
    for name in ("reconstructions", "traversals", "nmi", "usage"):
        assert (run / "figures" / f"{name}.png").stat().st_size > 1000
    report = (run / "report.md").read_text()
    assert "figures/traversals.png" in report and "figures/usage.png" in report and "eval.json" in report
    # the progress bar: steps, elapsed<remaining, rate, loss and a measured images/s
    import re

    bar = [line for line in re.split(r"[\r\n]", (run.parent / "stderr.txt").read_text()) if "6/6" in line][-1]
    assert re.search(r"\[\d\d:\d\d<\d\d:\d\d, +[\d.]+(s/step|step/s), img_s=(\d+), loss=0\.\d{4}\]", bar), bar
    assert int(re.search(r"img_s=(\d+)", bar).group(1)) > 0, bar


def test_config_file_then_flags_override(tmp_path):
    from latentquant.cli import build_parser
    from latentquant.train.cli_train import build_config

    (tmp_path / "c.yaml").write_text(
        yaml.safe_dump({"model": "vae", "dataset": "shapes", "steps": 2, "options": {"beta": 7}, "lr": 0.002})
    )
    args = build_parser("train").parse_args(["train", "--config", str(tmp_path / "c.yaml"), "--lr", "0.003"])
    cfg = resolve(build_config(args)).config
    assert (cfg.model, cfg.lr, cfg.options["beta"], cfg.num_latents, cfg.steps) == ("vae", 0.003, 7.0, 12, 2)
    assert cfg.weight_decay == 0.0 and cfg.batch_size == 128
    path = tmp_path / "resolved.yaml"
    from latentquant.train.config import load_config, save_config

    save_config(cfg, path)
    assert load_config(path) == cfg
    published = resolve(TrainConfig(model="vae", dataset="shapes")).config
    assert published.options["beta"] == 3.0  # configs/params/vae/vae_shapes3d.yaml
    assert resolve(TrainConfig(model="tcvae", dataset="sprites")).config.options["beta"] == 1.0


@pytest.mark.parametrize("model", ["qlae", "vae"])
def test_resume_reproduces_the_uninterrupted_run(tmp_path, model):
    full, part = tmp_path / "full", tmp_path / "part"
    common = ["--model", model, "--checkpoint-every", "20", "--seed", "3"]
    assert _train(*common, "--steps", "60", "--out", full) == 0
    assert _train(*common, "--steps", "40", "--out", part) == 0
    assert main(["train", "--resume", str(part), "--steps", "60"]) == 0
    a, b = _losses(full), _losses(part)
    assert sorted(a) == sorted(b) == list(range(1, 61))
    for step in range(1, 61):
        for key in a[step]:
            if key not in ("seconds",):
                assert b[step][key] == pytest.approx(a[step][key], abs=1e-6, rel=0), (step, key)
    wa, _ = ckpt.load_model_state(ckpt.latest_checkpoint(full / "checkpoints"))
    wb, _ = ckpt.load_model_state(ckpt.latest_checkpoint(part / "checkpoints"))
    for name in wa:
        torch.testing.assert_close(wb[name], wa[name], rtol=0, atol=1e-6)
    assert json.loads((part / "eval.json").read_text())["step"] == 60


def test_fresh_run_refuses_a_directory_with_checkpoints(tmp_path, capsys):
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "checkpoints" / "step_00000002.safetensors").write_bytes(b"x")
    assert _train("--steps", "2", "--out", run) == 2
    (line,) = _stderr_lines(capsys)
    assert "not a latentquant run directory" in line  # no marker, no config: not ours
    assert sorted(p.name for p in run.rglob("*")) == ["checkpoints", "step_00000002.safetensors"]


def test_a_second_run_into_a_run_directory_is_refused_unless_resumed_or_overwritten(qlae_run, tmp_path, capsys):
    import shutil

    run = tmp_path / "copy"
    shutil.copytree(qlae_run, run)
    (run / "notes.txt").write_text("mine")
    capsys.readouterr()
    assert _train("--steps", "2", "--out", run) == 2
    (line,) = _stderr_lines(capsys)
    assert "already holds a run" in line and "--resume" in line and "--overwrite" in line
    assert _train("--steps", "2", "--out", run, "--overwrite") == 0
    assert json.loads((run / "eval.json").read_text())["step"] == 2
    assert [p.name for p in ckpt.list_checkpoints(run / "checkpoints")] == ["step_00000002.safetensors"]
    assert (run / "notes.txt").read_text() == "mine"  # overwrite deletes only the files a run writes


# ---------------------------------------------------------------------------
# checkpoints


def _tiny_model():
    from latentquant.models import DataInfo, build_model

    torch.manual_seed(0)
    model = build_model("qlae", "small", DataInfo("sprites", 1, 5, 100))
    return model, model.configure_optimizers(lr=1e-3, weight_decay=0.1)


def test_checkpoint_round_trip_and_atomic_write_survives_a_crash(tmp_path, monkeypatch, capsys):
    model, opts = _tiny_model()
    x = torch.rand(4, 1, 64, 64)
    model.training_step(model, x, opts, 0)
    folder = tmp_path / "checkpoints"
    good = ckpt.save_checkpoint(folder, 10, model, opts, {"note": "good"})
    saved = {k: v.clone() for k, v in model.state_dict().items()}
    model.training_step(model, x, opts, 1)

    # a crash in the middle of writing the next checkpoint: half the bytes, then the process dies
    real_open = open

    class Dying:
        def __init__(self, f):
            self.f = f

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.f.close()

        def write(self, data):
            self.f.write(data[: len(data) // 2])
            raise KeyboardInterrupt("simulated crash")

        def __getattr__(self, name):
            return getattr(self.f, name)

    monkeypatch.setattr(
        "builtins.open",
        lambda p, mode="r", *a, **k: (
            Dying(real_open(p, mode, *a, **k)) if "step_00000020" in str(p) else real_open(p, mode, *a, **k)
        ),
    )
    with pytest.raises(KeyboardInterrupt):
        ckpt.save_checkpoint(folder, 20, model, opts)
    monkeypatch.undo()
    assert sorted(p.name for p in folder.iterdir()) == [good.name]  # the aborted write left no temp file
    # temp files of writers killed outright (latentquant._atomic names them .<name>.<random>.tmp):
    # one untouched for long is removed at the next save, a recent one (a write in progress) kept
    stale = folder / ".step_00000030.safetensors.0123456789ab.tmp"
    recent = folder / ".step_00000031.safetensors.ba9876543210.tmp"
    for tmp in (stale, recent):
        tmp.write_bytes(b"\0" * 100)
    os.utime(stale, (time.time() - 2 * ckpt.STALE_TEMP_SECONDS,) * 2)
    # and a truncated file under a final name
    assert ckpt.list_checkpoints(folder) == [good]

    (folder / "step_00000040.safetensors").write_bytes(good.read_bytes()[:500])
    path, tensors, doc = ckpt.load_latest(folder)
    assert "skipping unreadable checkpoint" in capsys.readouterr().err
    assert path == good and doc["note"] == "good" and doc["step"] == 10
    fresh, fresh_opts = _tiny_model()
    assert ckpt.restore(tensors, doc, fresh, fresh_opts) == 10
    for k, v in fresh.state_dict().items():
        assert torch.equal(v, saved[k])
    state = fresh_opts["model"].state_dict()["state"]
    assert len(state) == sum(len(g["params"]) for g in fresh_opts["model"].param_groups)

    # keep=2 prunes the oldest only after the new file is in place
    (folder / "step_00000040.safetensors").unlink()
    for step in (11, 12):
        ckpt.save_checkpoint(folder, step, model, opts, keep=2)
    assert [p.name for p in ckpt.list_checkpoints(folder)] == ["step_00000011.safetensors", "step_00000012.safetensors"]
    assert not stale.exists() and recent.exists()


def _poison_qlae_forward(monkeypatch, poison):
    """Patch QLAE.forward so that ``poison(model, out, call)`` replaces the output of
    its ``call``-th call (1-based); ``poison`` returns ``out`` to leave a call alone."""
    from latentquant.models.qlae import QLAE

    calls = {"n": 0}
    forward = QLAE.forward

    def poisoned(self, x):
        calls["n"] += 1
        return poison(self, forward(self, x), calls["n"])

    monkeypatch.setattr(QLAE, "forward", poisoned)


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path, monkeypatch, capsys):
    def nan_from_step_7(model, out, call):  # the 7th step's loss (and its gradients) are NaN
        if call >= 7:
            return type(out)(out.loss * float("nan"), {k: v * float("nan") for k, v in out.parts.items()})
        return out

    _poison_qlae_forward(monkeypatch, nan_from_step_7)
    run = tmp_path / "run"
    assert _train("--steps", "20", "--checkpoint-every", "5", "--out", run) == 1
    lines = _stderr_lines(capsys)
    assert any("non-finite loss at step 7" in line and "step_00000005" in line for line in lines)
    assert [p.name for p in ckpt.list_checkpoints(run / "checkpoints")] == ["step_00000005.safetensors"]
    weights, _ = ckpt.load_model_state(run / "checkpoints" / "step_00000005.safetensors")
    assert all(torch.isfinite(v).all() for v in weights.values())
    assert not (run / "eval.json").exists()
    # metrics.jsonl keeps the record of the diverged step, in strict JSON (null, not NaN)
    last = (run / "metrics.jsonl").read_text().splitlines()[-1]
    record = json.loads(last, parse_constant=lambda name: pytest.fail(f"{name} in metrics.jsonl"))
    assert record["step"] == 7 and record["loss"] is None and "loss" in record["nonfinite"]


def test_nan_gradient_with_a_finite_loss_writes_no_checkpoint(tmp_path, monkeypatch, capsys):
    # step 4's loss is finite but its gradients are NaN (d sqrt(u)/du at u = 0 times 0): the
    # weights after it are NaN and must not be saved as the step-4 checkpoint
    def nan_gradient_at_step_4(model, out, call):
        if call == 4:
            return type(out)(out.loss + torch.sqrt(0 * model.decoder.mlp[0].weight.sum()), out.parts)
        return out

    _poison_qlae_forward(monkeypatch, nan_gradient_at_step_4)
    run = tmp_path / "run"
    assert _train("--steps", "20", "--checkpoint-every", "2", "--out", run) == 1
    lines = _stderr_lines(capsys)
    assert any("non-finite weights after step 4" in line and "step_00000002" in line for line in lines), lines
    assert [p.name for p in ckpt.list_checkpoints(run / "checkpoints")] == ["step_00000002.safetensors"]
    assert json.loads((run / "metrics.jsonl").read_text().splitlines()[-1]) == {"step": 4, "nonfinite": ["weights"]}


def test_sigint_writes_a_checkpoint_and_the_run_resumes(tmp_path):
    run = tmp_path / "run"
    proc = subprocess.Popen(
        [sys.executable, "-m", "latentquant", "train", *TINY, "--steps", "100000", "--out", str(run)],
        env=ENV,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.time() + 90
        while time.time() < deadline:
            metrics = run / "metrics.jsonl"
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
    (path,) = ckpt.list_checkpoints(run / "checkpoints")
    step = int(path.stem.split("_")[1])
    assert step >= 3
    assert main(["train", "--resume", str(run), "--steps", str(step + 2)]) == 0
    assert json.loads((run / "eval.json").read_text())["step"] == step + 2


# ---------------------------------------------------------------------------
# bad input: one line naming the valid choices, exit 2


@pytest.mark.parametrize(
    "flags, expected",
    [
        (["--model", "qlae3"], "valid choices: qlae, ae"),
        (["--dataset", "mnist"], "valid"),
        (["--arch", "large"], "valid choices: paper, small"),
        (["--precision", "fp8"], "valid choices: auto, fp32, bf16"),
        (["--steps", "0"], "steps must be an integer in 1..1,000,000,000, got 0"),
        (["--steps", "ten"], "invalid int value: 'ten'"),
        (["--lr", "-1"], "lr must be a finite number"),
        (["--device", "tpu"], "valid choices: auto, cpu"),
        (["--option", "gamma=2"], "valid options: quantization_weight, commitment_weight"),
        (["--model", "vae", "--option", "beta=big"], "expected a float"),
        (["--model", "ae", "--values-per-latent", "5"], "quantized-latent models only"),
        (["--resume", "/nonexistent/run"], "no config.yaml"),
    ],
)
def test_bad_flags_exit_2_with_one_line(tmp_path, capsys, flags, expected):
    try:
        code = main(["train", "--out", str(tmp_path / "r"), "--steps", "1", *flags])
    except SystemExit as exit_:
        code = exit_.code
    assert code == 2
    (line,) = _stderr_lines(capsys)
    assert expected in line and "Traceback" not in line
    assert not (tmp_path / "r" / "checkpoints").exists()


def test_resume_with_a_different_model_shape_is_one_line(qlae_run, tmp_path, capsys):
    import shutil

    run = tmp_path / "copy"
    shutil.copytree(qlae_run, run)
    capsys.readouterr()
    assert main(["train", "--resume", str(run), "--steps", "8", "--num-latents", "4"]) == 2
    (line,) = _stderr_lines(capsys)
    assert "num_latents 4 (the run has 10)" in line and "a resumed run keeps its settings" in line


def test_evaluate_with_a_checkpoint_of_another_model_is_one_line(qlae_run, tmp_path, capsys):
    import shutil

    run = tmp_path / "copy"
    shutil.copytree(qlae_run, run)
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    (run / "config.yaml").write_text(yaml.safe_dump({**cfg, "num_latents": 4}))
    capsys.readouterr()
    assert main(["evaluate", str(run)]) == 2
    (line,) = _stderr_lines(capsys)
    assert "was written by another run: num_latents 10 (the run has 4)" in line


# ---------------------------------------------------------------------------


def test_evaluate_reproduces_eval_json(qlae_run, tmp_path):
    import shutil

    run = tmp_path / "copy"
    shutil.copytree(qlae_run, run)
    before = json.loads((run / "eval.json").read_text())
    (run / "eval.json").unlink()
    for png in (run / "figures").iterdir():
        png.unlink()
    assert main(["evaluate", str(run)]) == 0
    _same_record(before, json.loads((run / "eval.json").read_text()))
    names = ["nmi.png", "reconstructions.png", "traversals.png", "usage.png"]
    assert sorted(p.name for p in (run / "figures").iterdir()) == names


def _evals(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "evals.jsonl").read_text().splitlines()]


def _same_record(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for key, value in a.items():
        if isinstance(value, float):
            assert b[key] == pytest.approx(value, rel=1e-9, abs=1e-12), key
        else:
            assert b[key] == value, key


def test_step_0_is_evaluated_by_the_loop_and_refilled_by_evaluate_initial(tmp_path, capsys):
    """Each curve starts at the seeded initialization: the loop evaluates it before the first
    step; ``evaluate --initial`` rebuilds it from config.yaml alone (for a run without that
    record) and writes the same record, in step order, and nothing else. The two agree only if
    the loop scores the weights training starts from."""
    # a run trained before the loop evaluated step 0: its evals.jsonl lacks that record
    run = tmp_path / "run"
    assert _train("--model", "qlae", "--steps", "4", "--eval-every", "2", "--out", run) == 0
    records = _evals(run)
    assert [r["step"] for r in records] == [0, 2, 4]
    (run / "evals.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records[1:]))
    kept = {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in [run / "eval.json", run / "report.md"]}
    kept |= {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in (run / "figures").iterdir()}
    capsys.readouterr()
    for _ in range(2):  # a second time replaces the record it wrote
        assert main(["evaluate", str(run), "--initial"]) == 0
        again = _evals(run)
        assert [r["step"] for r in again] == [0, 2, 4]
        _same_record(records[0], again[0])
        assert again[1:] == records[1:]
    assert "step-0 record" in capsys.readouterr().out
    assert {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in kept} == kept
    # --initial has no checkpoint to take
    assert main(["evaluate", str(run), "--initial", "--checkpoint", str(run / "eval.json")]) == 2
    (line,) = _stderr_lines(capsys)
    assert "--initial" in line and "--checkpoint" in line


def test_logged_usage_is_the_step_batch_counted_again(qlae_run):
    """Issue 25: each line's per-latent perplexity and dead values are those of the values'
    assignments in that step's forward (log every step), here recomputed from the checkpoint
    of step 3 and the batch of step 4. (Six steps from QLAE's initialization assign most
    latents one value; read_usage on spread codes: tests/test_quantize_usage.py.)"""
    from latentquant.train.batches import batch_indices

    lines = _losses(qlae_run)
    for line in lines.values():
        assert len(line["perplexity"]) == len(line["dead"]) == 10
        assert {"norm_conv", "norm_linear", "norm_values"} <= set(line)
        # 8 assignments a latent: at least 2 of the 10 values unused, perplexity at most 8
        assert all(1.0 <= p <= 8.0 for p in line["perplexity"]) and all(2 <= d <= 10 for d in line["dead"])
    cfg = TrainConfig(**yaml.safe_load((qlae_run / "config.yaml").read_text()))
    resolved = resolve(cfg)
    model, dataset = resolved.model, resolved.dataset
    path = qlae_run / "checkpoints" / "step_00000003.safetensors"
    tensors, doc = ckpt.read_checkpoint(path)
    ckpt.restore(tensors, doc, model, model.configure_optimizers(lr=cfg.lr, weight_decay=cfg.weight_decay))
    # the weights' norms of step 3's line are those of step 3's checkpoint
    norms = {f"norm_{k}": v for k, v in model.weight_norms().items()}
    assert norms == pytest.approx({k: v for k, v in lines[3].items() if k.startswith("norm_")}, rel=1e-6)
    x = dataset.get_images(batch_indices(cfg.seed, 3, cfg.batch_size, len(dataset)))
    with torch.no_grad():
        slots = model.train().encode(x).code  # (8, 10): the step's assignments (same weights, same images)
    counts = torch.stack([torch.bincount(slots[:, i], minlength=10) for i in range(10)])
    p = counts.double() / counts.sum(-1, keepdim=True)
    perplexity = torch.exp(-(p * torch.where(p > 0, p.log(), 0.0)).sum(-1))
    assert lines[4]["dead"] == (counts == 0).sum(-1).tolist()
    assert lines[4]["perplexity"] == pytest.approx(perplexity.tolist(), abs=1e-4)


def test_bf16_autocast_on_cpu(tmp_path):
    run = tmp_path / "bf16"
    assert _train("--model", "vae", "--steps", "2", "--precision", "bf16", "--out", run) == 0
    scores = json.loads((run / "eval.json").read_text())
    assert scores["step"] == 2 and scores["psnr"] > 0


def test_ddp_two_processes_on_cpu(tmp_path):
    run = tmp_path / "ddp"
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node=2",
        "-m",
        "latentquant",
        "train",
        *TINY,
        "--model",
        "qlae",
        "--steps",
        "4",
        "--out",
        str(run),
    ]
    proc = subprocess.run(cmd, env=ENV, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = (run / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["step"] for line in lines] == [1, 2, 3, 4]  # rank 0 alone writes
    # the values' usage is logged (summed over ranks: tests/test_quantize_usage.py, with the loop's DDP)
    assert all(len(json.loads(line)["dead"]) == 10 for line in lines)
    assert json.loads((run / "eval.json").read_text())["step"] == 4
    assert [p.name for p in ckpt.list_checkpoints(run / "checkpoints")] == ["step_00000004.safetensors"]
    assert proc.stdout.count("step 4:") == 1


def test_prune_counts_keep_on_the_checkpoint_grid_and_keeps_one_timed_checkpoint(tmp_path):
    """With ``every``, timed (off-grid) checkpoints never push out regular ones: each survives only
    while it is the newest."""
    folder = tmp_path / "checkpoints"
    folder.mkdir()

    def names():
        return [ckpt.checkpoint_step(p) for p in ckpt.list_checkpoints(folder)]

    for step in (1000, 1500, 2000, 2500, 2700, 3000, 3100):
        ckpt.checkpoint_path(folder, step).write_bytes(b"x")
        ckpt.prune(folder, keep=2, every=1000)
    assert names() == [2000, 3000, 3100]
    ckpt.checkpoint_path(folder, 4000).write_bytes(b"x")
    ckpt.prune(folder, keep=2, every=1000)
    assert names() == [3000, 4000]
    ckpt.prune(folder, keep=1)  # without every: the newest keep, whatever their steps
    assert names() == [4000]
    with pytest.raises(ValueError, match="not a checkpoint file name"):
        ckpt.checkpoint_step(tmp_path / "step_x.safetensors")


def test_prune_keeps_an_earlier_grid_when_checkpoint_every_changes(tmp_path):
    """Each checkpoint records whether it is regular: after a resume that changes the grid from
    1,000 to 1,500 steps, the files at 1,000 and 2,000 are still regular ones (counted in keep,
    pushed out only by newer regular ones), while a timed file on the new grid's multiples is not."""
    folder = tmp_path / "checkpoints"
    model = torch.nn.Linear(2, 2)

    def steps():
        return [ckpt.checkpoint_step(p) for p in ckpt.list_checkpoints(folder)]

    for step in (1000, 2000):
        ckpt.save_checkpoint(folder, step, model, {}, keep=3, every=1000)
    ckpt.save_checkpoint(folder, 2300, model, {}, keep=3, every=1000)  # timed: off the grid
    ckpt.save_checkpoint(folder, 3000, model, {}, keep=3, every=1500, regular=False)  # timed, on the new grid
    assert steps() == [1000, 2000, 3000]  # the timed 2300 went once not newest; 1000, 2000 stay
    ckpt.save_checkpoint(folder, 4500, model, {}, keep=3, every=1500)
    assert steps() == [1000, 2000, 4500]  # the timed 3000 went; three regular ones kept
    ckpt.save_checkpoint(folder, 6000, model, {}, keep=3, every=1500)
    assert steps() == [2000, 4500, 6000]
    # a file without the record (older code, or unreadable) is judged by its step, as before
    for step in (7500, 7600):
        ckpt.checkpoint_path(folder, step).write_bytes(b"x")
    ckpt.save_checkpoint(folder, 9000, model, {}, keep=3, every=1500)
    assert steps() == [6000, 7500, 9000]


def test_prune_never_deletes_the_checkpoint_just_written_nor_counts_later_ones(tmp_path):
    """A resume that skipped an unreadable newer checkpoint continues from an older one: what it writes
    next (a timed or interrupt checkpoint, off the grid) must survive, and the good checkpoints must not
    be pruned in favour of the unreadable later file."""
    folder = tmp_path / "checkpoints"
    folder.mkdir()
    for step in (1000, 2000, 2400, 3000):  # 3000: the unreadable file the resume skipped
        ckpt.checkpoint_path(folder, step).write_bytes(b"x")
    ckpt.prune(folder, keep=2, every=1000, newest=ckpt.checkpoint_path(folder, 2400))
    assert [ckpt.checkpoint_step(p) for p in ckpt.list_checkpoints(folder)] == [1000, 2000, 2400, 3000]
    ckpt.prune(folder, keep=1, newest=ckpt.checkpoint_path(folder, 2400))
    assert [ckpt.checkpoint_step(p) for p in ckpt.list_checkpoints(folder)] == [2400, 3000]
    # save_checkpoint names what it wrote as the newest
    model = torch.nn.Linear(2, 2)
    path = ckpt.save_checkpoint(folder, 2500, model, {}, keep=1, every=1000)
    assert [ckpt.checkpoint_step(p) for p in ckpt.list_checkpoints(folder)] == [2500, 3000]
    assert path.is_file()


def test_ddp_ranks_agree_on_a_timed_checkpoint(tmp_path):
    """Each rank has its own clock, so a timed checkpoint is agreed at a log step through the
    loss reduction. Here rank 0 always finds one due and rank 1 never does (only rank 0 is given
    --checkpoint-seconds): before, rank 0 entered the log's collectives alone and both hung."""
    run = tmp_path / "ddp"
    script = tmp_path / "ranks.py"
    script.write_text(
        "import os, sys\n"
        "import latentquant.train.loop as loop\n"
        "from latentquant.cli import main\n"
        "save = loop.save_checkpoint\n"
        "def spy(folder, step, *a, **k):\n"
        "    print(f'saved step {step}', flush=True)\n"
        "    return save(folder, step, *a, **k)\n"
        "loop.save_checkpoint = spy\n"
        "argv = sys.argv[1:]\n"
        "if os.environ['RANK'] != '0':\n"
        "    i = argv.index('--checkpoint-seconds'); del argv[i:i + 2]\n"
        "sys.exit(main(argv))\n"
    )
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", str(script)]
    cmd += ["train", *TINY, "--model", "ae", "--steps", "4", "--log-every", "2", "--checkpoint-every", "4"]
    cmd += ["--keep-checkpoints", "1", "--checkpoint-seconds", "1e-9", "--out", str(run)]
    proc = subprocess.run(cmd, env=ENV, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("saved step 2") == 1 and proc.stdout.count("saved step 4") == 1  # rank 0 writes
    assert [p.name for p in ckpt.list_checkpoints(run / "checkpoints")] == ["step_00000004.safetensors"]
    assert json.loads((run / "eval.json").read_text())["step"] == 4


def test_checkpoint_seconds_checkpoints_on_time_and_the_run_resumes(tmp_path):
    """``--checkpoint-seconds``: a checkpoint whenever that much time has passed (here: every step),
    only the newest timed one kept beside the regular ones; the setting is how a run runs, not
    what it is, so a resume may change it."""
    run = tmp_path / "run"
    seen = []
    save = ckpt.save_checkpoint

    def spy(folder, step, *args, **kwargs):
        seen.append(step)
        return save(folder, step, *args, **kwargs)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(ckpt, "save_checkpoint", spy)
        mp.setattr("latentquant.train.loop.save_checkpoint", spy)
        argv = ["train", *TINY, "--model", "ae", "--steps", "5", "--checkpoint-every", "4"]
        assert main([*argv, "--keep-checkpoints", "1", "--checkpoint-seconds", "1e-9", "--out", str(run)]) == 0
    assert seen == [1, 2, 3, 4, 5]
    # 4 and the last step are regular, keep 1: step 5; the timed 1-3 went as each stopped being newest
    assert [ckpt.checkpoint_step(p) for p in ckpt.list_checkpoints(run / "checkpoints")] == [5]
    assert yaml.safe_load((run / "config.yaml").read_text())["checkpoint_seconds"] == 1e-9
    assert main(["train", "--resume", str(run), "--steps", "6", "--checkpoint-seconds", "3600"]) == 0
    assert json.loads((run / "eval.json").read_text())["step"] == 6
