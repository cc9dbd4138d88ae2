"""TensorBoard logging, which the loop turns on when tensorboard is installed
(it is in the test extra, so this always runs here)."""

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from latentquant.cli import main


def test_train_writes_tensorboard_scalars(tmp_path):
    out = tmp_path / "run"
    code = main(
        [
            "train",
            "--dataset",
            "sprites",
            "--model",
            "qlae",
            "--arch",
            "small",
            "--steps",
            "4",
            "--batch-size",
            "8",
            "--eval-every",
            "4",
            "--eval-samples",
            "300",
            "--log-every",
            "2",
            "--out",
            str(out),
            "--device",
            "cpu",
        ]
    )
    assert code == 0
    events = EventAccumulator(str(out / "tensorboard"))
    events.Reload()
    tags = events.Tags()["scalars"]
    # after 4 steps no latent is active yet, so InfoM is undefined (None in eval.json) and not logged
    assert {"train/loss", "train/quantization", "eval/psnr", "eval/dci_i"} <= set(tags)
    assert "eval/seed" not in tags
    assert [e.step for e in events.Scalars("train/loss")] == [2, 4]
