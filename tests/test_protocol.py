"""The experimental protocol: decay timescale, the published per-dataset settings, float32 evaluation."""

import pytest
import torch
import yaml
from tiny_run import TINY

from latentquant.cli import main
from latentquant.data import get_dataset
from latentquant.models import DataInfo, build_model
from latentquant.results.sweep import parse_model
from latentquant.train.config import TrainConfig, resolve, timescale_weight_decay


def test_timescale_sets_weight_decay_from_the_run_length():
    c = resolve(TrainConfig(model="qlae", steps=10_000, weight_decay_timescale=0.05)).config
    assert c.weight_decay == pytest.approx(2.0)  # 1 / (0.05 * 1e-3 * 10,000)
    assert c.weight_decay_timescale == 0.05
    # the paper's QLAE (lr 1e-3, wd 0.1, 200,000 steps) has tau/T = 10,000 / 200,000 = 0.05
    assert timescale_weight_decay(0.05, 1e-3, 200_000) == pytest.approx(0.1)
    ae = resolve(TrainConfig(model="ae", steps=10_000, lr=2e-3, weight_decay_timescale=5)).config
    assert ae.weight_decay == pytest.approx(1 / (5 * 2e-3 * 10_000))
    # a resolved config (both set, consistent) resolves to itself
    assert resolve(c).config.weight_decay == c.weight_decay
    # both set and disagreeing: which one was meant is unknown
    with pytest.raises(ValueError, match="disagree.*give one of them"):
        resolve(c.replace(steps=20_000))
    for bad in (0, -1, float("inf"), float("nan"), "x", True):
        with pytest.raises(ValueError, match="weight_decay_timescale must be a finite number > 0"):
            TrainConfig(weight_decay_timescale=bad).validate()


def test_timescale_flag_is_recorded_and_exclusive_with_weight_decay(tmp_path, capsys):
    out = tmp_path / "r"
    assert (
        main(["train", *TINY, "--model", "qlae", "--steps", "4", "--weight-decay-timescale", "50", "--out", str(out)])
        == 0
    )
    cfg = yaml.safe_load((out / "config.yaml").read_text())
    assert cfg["weight_decay_timescale"] == 50 and cfg["weight_decay"] == pytest.approx(1 / (50 * 1e-3 * 4))
    capsys.readouterr()
    assert (
        main(
            [
                "train",
                *TINY,
                "--weight-decay",
                "0.1",
                "--weight-decay-timescale",
                "0.5",
                "--out",
                str(tmp_path / "both"),
            ]
        )
        == 2
    )
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1 and "--weight-decay or --weight-decay-timescale" in err[0]
    assert not (tmp_path / "both").exists()


def test_sweep_accepts_a_timescale_per_model():
    assert parse_model("qlae+weight-decay-timescale=0.05") == ("qlae", ("--weight-decay-timescale=0.05",))


def test_qlae_uses_the_authors_mpi3d_decay():
    assert resolve(TrainConfig(model="qlae", dataset="shapes")).config.weight_decay == 0.1
    # the published values depend on the dataset's name alone: built-in data stands in for mpi3d's files
    assert resolve(TrainConfig(model="qlae", dataset="mpi3d"), get_dataset("shapes")).config.weight_decay == 1e-3


def test_vqvae_shares_one_codebook_by_default():
    info = DataInfo("sprites", 1, 5, 737_280)
    shared = build_model("vqvae", "small", info)
    assert shared.codebook.shape == (1, 512, 64)
    per_slot = build_model("vqvae", "small", info, shared_codebook=False)
    assert per_slot.codebook.shape == (10, 512, 64)
    z_e = torch.randn(3, 10 * 64)
    q, idx = shared.quantize(z_e)  # every slot looks up the same table
    torch.testing.assert_close(q, shared.codebook[0][idx])


def test_evaluation_runs_in_float32_under_bf16_training(tmp_path, monkeypatch):
    from latentquant.models.baselines import AE

    seen = []
    encode = AE.encode

    def spy(self, x):
        enc = encode(self, x)
        if not self.training:  # evaluation
            seen.append((torch.is_autocast_enabled("cpu"), enc.code.dtype))
        return enc

    monkeypatch.setattr(AE, "encode", spy)
    assert (
        main(["train", *TINY, "--model", "ae", "--steps", "2", "--precision", "bf16", "--out", str(tmp_path / "a")])
        == 0
    )
    assert seen and all(not autocast and dtype == torch.float32 for autocast, dtype in seen)


def test_cuda_requested_without_cuda_is_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert main(["train", *TINY, "--steps", "1", "--device", "cuda", "--out", str(tmp_path / "r")]) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1 and "CUDA is not available" in err[0], err
