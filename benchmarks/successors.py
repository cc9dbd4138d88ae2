"""Training step of the successors (Tripod, FactorQVAE, the categorical VAE) against QLAE's.

For each model at its published settings (``models/defaults.py``: batch, lr, options)
on one backbone: seconds per training step (forward, backward, optimizer steps: the
model's own ``training_step``, as the loop calls it) and images/s, medians over rounds
interleaved so that machine load hits all models alike. Ratio: the model's step time
over QLAE's at QLAE's batch (64), the cost of a run of equal steps relative to QLAE's.

``--baseline SRC`` times another version of the same models in the same rounds
(``git archive <commit> src | tar -x -C /tmp/base``, then ``--baseline /tmp/base/src``)
and prints ours over it in the ``ratio`` column (below 1: ours is faster). ``--compile`` also
times each model under ``torch.compile`` (``latentquant train --compile``), its ``ratio``
compiled over eager::

    .venv/bin/python benchmarks/successors.py                                  # all three, small
    .venv/bin/python benchmarks/successors.py --models tripod --threads 1 --baseline /tmp/base/src
    .venv/bin/python benchmarks/successors.py --models tripod factorqvae --threads 1 --compile

Batches are rendered once beforehand (the model alone, not the data path).
"""

from __future__ import annotations

import argparse
import os

import torch
from _common import import_beside, interleaved_medians

from latentquant.data import get_dataset
from latentquant.train.batches import batch_indices
from latentquant.train.config import TrainConfig, resolve

SUCCESSORS = ("tripod", "factorqvae", "catvae")


class Runner:
    """One model's training steps, as ``latentquant train`` takes them (fp32, eager or compiled)."""

    def __init__(self, resolve_fn, config_cls, model: str, arch: str, data, compile: bool = False):
        r = resolve_fn(config_cls(dataset=data.name, model=model, arch=arch, seed=0, out="bench"), data)
        self.model, self.batch = r.model, r.config.batch_size
        self.net = torch.compile(self.model) if compile else self.model
        self.opts = r.model.configure_optimizers(lr=r.config.lr, weight_decay=r.config.weight_decay, clip=r.config.clip)
        self.step = 0

    def __call__(self, x: torch.Tensor) -> None:
        self.model.train()
        self.model.training_step(self.net, x[: self.batch], self.opts, self.step)
        self.step += 1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=list(SUCCESSORS), choices=SUCCESSORS)
    parser.add_argument("--arch", default="small")
    parser.add_argument("--dataset", default="shapes")
    parser.add_argument("--steps", type=int, default=3, help="steps per model per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--compile", action="store_true", help="also time each model under torch.compile")
    parser.add_argument("--baseline", metavar="SRC", default=None, help="a folder holding another latentquant package")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    data = get_dataset(args.dataset)
    builders = {"ours": (resolve, TrainConfig, False)}
    if args.baseline:
        theirs = import_beside(args.baseline, "latentquant.train.config")
        builders["baseline"] = (theirs.resolve, theirs.TrainConfig, False)
    if args.compile:
        builders["compiled"] = (resolve, TrainConfig, True)
    runners = {}
    for model in ["qlae", *args.models]:
        for version, (resolve_fn, config_cls, compile) in builders.items():
            if model == "qlae" and version == "baseline":
                continue
            runners[(model, version)] = Runner(resolve_fn, config_cls, model, args.arch, data, compile)
    for version in builders:  # the reference: QLAE's step at the regime experiment's batch
        if ("qlae", version) in runners:
            runners[("qlae", version)].batch = 64
    batch = max(r.batch for r in runners.values())
    xs = [data.get_images(batch_indices(0, t, batch, len(data))) for t in range(args.steps)]
    for runner in runners.values():  # warm-up: a step each (two: compilation may recompile once)
        runner(xs[0])
        runner(xs[0])
    steps = {key: lambda r=runner: [r(x) for x in xs] for key, runner in runners.items()}
    times = interleaved_medians(steps, args.rounds)
    times = {key: t / args.steps for key, t in times.items()}  # seconds per step
    threads = torch.get_num_threads()
    print(f"torch {torch.__version__}, {threads} threads, {os.cpu_count()} cpus, {args.arch}, {args.dataset}")
    print(f"{'model':12} {'version':9} {'batch':>5} {'s/step':>8} {'img/s':>8} {'x QLAE':>7} {'ratio':>9}")
    qlae = times[("qlae", "ours")]
    for (model, version), s in times.items():
        b = runners[(model, version)].batch
        vs = ""
        if version == "ours" and (model, "baseline") in times:
            vs = f"{s / times[(model, 'baseline')]:9.2f}"
        if version == "compiled":
            vs = f"{s / times[(model, 'ours')]:9.2f}"
        print(f"{model:12} {version:9} {b:5d} {s:8.3f} {b / s:8.0f} {s / qlae:7.2f} {vs:>9}")


if __name__ == "__main__":
    main()
