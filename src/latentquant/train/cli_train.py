"""``latentquant train``: train a model on a dataset (see docs/training.md).

    latentquant train --dataset sprites --model qlae --arch small --steps 3000 --out runs/q
    latentquant train --resume runs/q --steps 6000          # continue, here to a later step
    latentquant train --config my.yaml --seed 3             # a YAML config, flags override it
    torchrun --nproc_per_node=2 -m latentquant train ...    # DistributedDataParallel

Exit codes: 0 done, 1 stopped on a non-finite loss, 2 bad input (one line on
stderr), 130 interrupted (a checkpoint was written first).
"""

from __future__ import annotations

import argparse
import sys

# flag -> (config key, type, help); every flag defaults to "not given" so that
# YAML values and published defaults are only overridden by what the user typed
FLAGS = {
    "--dataset": ("dataset", str, "dataset name (latentquant data info lists them); default sprites"),
    "--model": ("model", str, "qlae; baselines ae, bioae, vae, tcvae, vqvae; GANs infowgan, qlinfowgan "
                              "(+ any registered model); default qlae"),
    "--arch": ("arch", str, "backbone: paper (the authors') or small (CPU); default paper"),
    "--steps": ("steps", int, "training steps (default 200000, as the authors)"),
    "--batch-size": ("batch_size", int, "global batch size, split across processes (default: model's, 128)"),
    "--lr": ("lr", float, "learning rate (default: model's, 1e-3)"),
    "--weight-decay": ("weight_decay", float, "decoupled weight decay of the non-bias weights "
                                              "(default: model's, e.g. qlae 0.1, ae 1e-3)"),
    "--weight-decay-timescale": ("weight_decay_timescale", float,
                                 "set the weight decay so that its time constant 1/(lr x wd) is this fraction "
                                 "of the run: wd = 1/(F x lr x steps); instead of --weight-decay"),
    "--clip": ("clip", float, "element-wise gradient clip of the decayed weights, 0 = off (default 1)"),
    "--num-latents": ("num_latents", int, "latents (default 2 x number of factors)"),
    "--values-per-latent": ("values_per_latent", int, "values per latent of quantized models (default 10)"),
    "--eval-every": ("eval_every", int, "evaluate every N steps, 0 = only at the end (default 5000)"),
    "--eval-samples": ("eval_samples", int, "held-out images per evaluation (default 10000)"),
    "--dci-model": ("dci_model", str, "DCI classifier: fast (default) or gbt (disentanglement_lib's)"),
    "--log-every": ("log_every", int, "log losses every N steps (default 50)"),
    "--checkpoint-every": ("checkpoint_every", int, "checkpoint every N steps (default: --eval-every)"),
    "--keep-checkpoints": ("keep_checkpoints", int, "checkpoints kept (default 2)"),
    "--seed": ("seed", int, "random seed: weights, data order, evaluation set (default 0)"),
    "--out": ("out", str, "run directory (default runs/<dataset>-<model>-<arch>-seed<seed>)"),
    "--device": ("device", str, "auto, cpu, cuda, cuda:N or mps (default auto)"),
    "--precision": ("precision", str, "auto (bf16 autocast on CUDA), fp32 or bf16 (default auto)"),
    "--data-root": ("data_root", str, "folder of the public dataset files"),
    "--data-path": ("data_path", str, "explicit file or folder of a public dataset"),
    "--threads": ("threads", int, "torch CPU threads (default: torch's)"),
    "--prefetch": ("prefetch", int, "batches loaded ahead by the background thread (default 4)"),
}


def _one_line_error(prog: str):
    def error(message: str):
        print(f"latentquant {prog}: error: {message}", file=sys.stderr)
        sys.exit(2)

    return error


def add_arguments(parser: argparse.ArgumentParser) -> None:
    for flag, (dest, typ, text) in FLAGS.items():
        parser.add_argument(flag, dest=dest, type=typ, default=argparse.SUPPRESS, help=text)
    parser.add_argument("--compile", dest="compile", action=argparse.BooleanOptionalAction,
                        default=argparse.SUPPRESS, help="torch.compile the model (for GPUs)")
    # [issue 14 hook] several sinks allowed: --logger tensorboard wandb
    parser.add_argument("--logger", dest="logger", nargs="+", default=argparse.SUPPRESS, metavar="NAME",
                        help="where scalars and figures go: tensorboard, wandb and/or none (default tensorboard)")
    parser.add_argument("--option", "-o", dest="option", action="append", default=[], metavar="KEY=VALUE",
                        help="a model-specific hyperparameter, e.g. -o beta=4 (repeatable)")
    parser.add_argument("--config", dest="config_file", default=None, metavar="FILE.yaml",
                        help="load a config file (e.g. a run's config.yaml); flags override it")
    parser.add_argument("--resume", dest="resume", default=None, metavar="DIR",
                        help="continue the run in DIR from its last checkpoint (flags override its config)")
    parser.error = _one_line_error("train")  # bad flag values: one line, exit 2


def build_config(args: argparse.Namespace):
    """The :class:`TrainConfig` of the parsed flags: defaults <- file (or resumed run) <- flags."""
    from pathlib import Path

    from latentquant.train.config import TrainConfig, load_config, parse_option

    overrides = {dest: getattr(args, dest) for dest, *_ in FLAGS.values() if hasattr(args, dest)}
    for dest in ("compile", "logger"):  # [issue 14 hook: "logger"]
        if hasattr(args, dest):
            overrides[dest] = getattr(args, dest)
    if "weight_decay" in overrides and "weight_decay_timescale" in overrides:
        raise ValueError("use either --weight-decay or --weight-decay-timescale, not both")
    if args.resume and args.config_file:
        raise ValueError("use either --resume DIR (its config.yaml) or --config FILE, not both")
    if args.resume:
        run_dir = Path(args.resume)
        if not (run_dir / "config.yaml").is_file():
            raise FileNotFoundError(f"cannot resume: no config.yaml in {run_dir}")
        base = load_config(run_dir / "config.yaml")
        if "out" in overrides and Path(overrides["out"]).resolve() != run_dir.resolve():
            raise ValueError(f"--out {overrides['out']} differs from the resumed run {run_dir}")
        overrides["out"] = str(run_dir)
    elif args.config_file:
        base = load_config(args.config_file)
    else:
        base = TrainConfig()
    options = dict(base.options)
    options.update(parse_option(text) for text in args.option)
    if "model" in overrides and overrides["model"] != base.model and not args.option:
        options = {}  # options of another model do not carry over
    if "weight_decay" in overrides:  # the flag given replaces the file's way of setting the decay
        base = base.replace(weight_decay_timescale=None)
    elif "weight_decay_timescale" in overrides:
        base = base.replace(weight_decay=None)
    return base.replace(**overrides, options=options)


def run(args: argparse.Namespace) -> int:
    from latentquant.train.loop import TrainingDiverged, TrainingInterrupted, train

    config = build_config(args)
    try:
        scores = train(config, resume=bool(args.resume))
    except TrainingDiverged as err:
        print(f"latentquant train: {err}", file=sys.stderr)
        return 1
    except TrainingInterrupted as err:
        print(f"latentquant train: {err}", file=sys.stderr)
        return 130
    except KeyboardInterrupt:  # a second Ctrl-C, or one during the final evaluation
        print("latentquant train: interrupted; checkpoints written so far are kept "
              f"(latentquant train --resume {config.out or 'DIR'})", file=sys.stderr)
        return 130
    if scores is not None:
        shown = ", ".join(f"{k} {scores[k]:.3f}" for k in ("infom", "infoe", "infoc", "dci_d", "mig", "psnr")
                          if isinstance(scores.get(k), float))
        print(f"step {scores['step']}: {shown}")
    return 0
