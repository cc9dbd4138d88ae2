"""--logger: TensorBoard (on when tensorboard is installed; it is in the test extra), and Weights &
Biases in its offline mode (no network, no account), read back from the run's ``.wandb`` file; the
one-line error without the package; wandb never imported unless asked for."""

import json
import os
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from latentquant.cli import main
from latentquant.train import loggers

TINY = [
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
    "--device",
    "cpu",
]


def test_train_writes_tensorboard_scalars(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out = tmp_path / "run"
    assert main(TINY + ["--out", str(out)]) == 0
    events = EventAccumulator(str(out / "tensorboard"))
    events.Reload()
    tags = events.Tags()["scalars"]
    # after 4 steps no latent is active yet, so InfoM is undefined (None in eval.json) and not logged
    assert {"train/loss", "train/quantization", "eval/psnr", "eval/dci_i"} <= set(tags)
    assert "eval/seed" not in tags
    assert [e.step for e in events.Scalars("train/loss")] == [2, 4]
    # the weights' norms and the values' usage per latent, as in metrics.jsonl
    last = json.loads((out / "metrics.jsonl").read_text().splitlines()[-1])
    assert [e.value for e in events.Scalars("weights/norm_conv")][-1] == pytest.approx(last["norm_conv"])
    assert {f"usage/perplexity/z{i}" for i in range(10)} | {f"usage/dead/z{i}" for i in range(10)} <= set(tags)
    assert [e.value for e in events.Scalars("usage/dead/z3")][-1] == last["dead"][3]


def wandb_records(path: Path):
    """The protobuf records of a ``.wandb`` file: a 7-byte header (":W&B", magic, version), then
    LevelDB log framing (32 KiB blocks of chunks: crc32c, length, type; FULL=1, FIRST=2, MIDDLE=3, LAST=4)."""
    from wandb.proto import wandb_internal_pb2

    data, pos, block, payload = path.read_bytes(), 7, 32768, b""
    assert data[:4] == b":W&B"
    while pos + 7 <= len(data):
        if block - pos % block < 7:  # a block's tail too short for a chunk header is padding
            pos += block - pos % block
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        if kind == 0:  # zero padding to the end of the block
            pos += block - pos % block
            continue
        payload += data[pos + 7 : pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(payload)
            payload = b""
            yield record


def read_offline_run(wandb_dir: Path) -> tuple[dict, dict[int, dict]]:
    """(config, {step: logged values}) of the one offline run under ``wandb_dir``."""
    (run_file,) = wandb_dir.glob("wandb/offline-run-*/run-*.wandb")
    config, history = {}, {}
    for record in wandb_records(run_file):
        kind = record.WhichOneof("record_type")
        updates = {"run": lambda r: r.run.config.update, "config": lambda r: r.config.update}.get(kind)
        if updates is not None:
            config.update({item.key: json.loads(item.value_json) for item in updates(record)})
        elif kind == "history":
            row = {item.key or "/".join(item.nested_key): json.loads(item.value_json) for item in record.history.item}
            history.setdefault(int(row["_step"]), {}).update(row)
    return config, history


def test_wandb_offline_run_holds_config_scalars_and_figures(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    monkeypatch.setenv("WANDB_SILENT", "true")
    out = tmp_path / "run"
    assert main(TINY + ["--out", str(out), "--logger", "wandb", "tensorboard"]) == 0
    import wandb

    wandb.teardown()  # the run was finished; this waits for wandb's writer process (as at exit) before reading
    config, history = read_offline_run(tmp_path)
    assert config["model"] == "qlae" and config["steps"] == 4 and config["logger"] == ["wandb", "tensorboard"]
    assert config["num_latents"] == 10  # resolved, not the None of the defaults
    assert sorted(step for step, row in history.items() if "train/loss" in row) == [2, 4]
    metrics = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert history[2]["train/loss"] == pytest.approx(metrics[0]["loss"])
    scores = json.loads((out / "eval.json").read_text())
    assert history[4]["eval/psnr"] == pytest.approx(scores["psnr"])
    assert "eval/seed" not in history[4]
    for name in ("reconstructions", "traversals", "nmi"):
        assert history[4][f"figures/{name}/_type"] == "image-file"
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(out / "tensorboard"), size_guidance={"images": 0})  # both sinks, same content
    events.Reload()
    assert {"figures/reconstructions", "figures/traversals", "figures/nmi"} <= set(events.Tags()["images"])
    assert [e.step for e in events.Scalars("train/loss")] == [2, 4]
    run_id = (out / "wandb" / "run_id").read_text().strip()  # kept so that a resumed run continues this one
    assert len(list(tmp_path.glob(f"wandb/offline-run-*/run-{run_id}.wandb"))) == 1


def test_logger_none_writes_no_tensorboard(tmp_path):
    out = tmp_path / "run"
    assert main(TINY + ["--steps", "2", "--eval-every", "0", "--out", str(out), "--logger", "none"]) == 0
    assert (out / "eval.json").is_file() and not (out / "tensorboard").exists()


@pytest.mark.parametrize(
    "names, message",
    [
        (["tensorboard", "mlflow"], "unknown logger 'mlflow'; valid choices: tensorboard, wandb, none"),
        (["none", "wandb"], "'none' cannot be combined"),
        ("wandb", "must be a list"),
    ],
)
def test_logger_names_are_checked(names, message):
    with pytest.raises(ValueError, match=message):
        loggers.check(names)


def test_missing_wandb_is_one_line_naming_the_extra(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "wandb", None)  # import wandb now fails, find_spec finds nothing
    assert main(TINY + ["--out", str(tmp_path / "run"), "--logger", "wandb"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "latentquant: error: --logger wandb needs the wandb package: pip install 'latentquant[wandb]'"
    assert not (tmp_path / "run").exists()  # refused before anything was written


def test_wandb_is_not_imported_unless_asked_for(tmp_path):
    code = (
        "import sys; from latentquant.train import TrainConfig; from latentquant.train.loggers import open_loggers;"
        f"open_loggers(TrainConfig(out={str(tmp_path)!r})).close(); print('wandb' in sys.modules)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"
    assert (tmp_path / "tensorboard").is_dir()


def test_wandb_without_an_account_is_one_line(tmp_path):
    """Online mode with no API key (a fresh HOME, no netrc): wandb's UsageError becomes one line, exit 2."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_")}
    env.update(HOME=str(tmp_path), WANDB_DIR=str(tmp_path), WANDB_CONFIG_DIR=str(tmp_path / "config"))
    result = subprocess.run(
        [sys.executable, "-m", "latentquant", *TINY, "--out", str(tmp_path / "run"), "--logger", "wandb"],
        env=env,
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        timeout=300,
    )
    assert result.returncode == 2
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("latentquant: error: --logger wandb: ") and "WANDB_MODE=offline" in last
    assert "Traceback" not in result.stderr
