"""Stacked training (``latentquant.train.stacked``) against the separate runs it replaces.

For each backbone and K, images/s of K separate runs trained one after another
(each its own model, AdamW and ``training_step``, the loop's code) against one
stack of the same K members (``StackedModel.training_step``), the same steps on
the same batches, in one process, interleaved round by round so that machine
load hits both alike; medians over rounds. Ratio = stack / separate (above 1:
the stack is faster). Batches are rendered once beforehand (the model alone).

CPU (the default): ``small`` and ``compact``, batch 64, K = 1, 3, 8, torch at 1
and 2 threads, the stack's two strategies (``loop``, ``vmap``)::

    .venv/bin/python benchmarks/stacked.py                        # about 10 min on 2 idle cores
    .venv/bin/python benchmarks/stacked.py --archs small --ks 1 3 --threads 1 --steps 2 --rounds 2

CUDA (``--device cuda``): ``small``, ``compact`` and ``paper``, bf16 autocast,
the ``vmap`` stack eager, under ``torch.compile`` and under
``torch.compile(mode="reduce-overhead")`` (CUDA graphs), against the separate
runs the same way (each model compiled as ``latentquant train --compile``
compiles it). It states the FLOPs of one training step per image (forward +
backward, counted by ``torch.utils.flop_counter`` on the separate model) and
the fraction of the GPU's bf16 peak (``--peak-tflops``, default 989: an H100/H200
SXM's dense bf16) that images/s x FLOPs/image reaches::

    python benchmarks/stacked.py --device cuda --ks 1 8 16 --steps 20 --rounds 3
"""

from __future__ import annotations

import argparse
import os
import time

import torch
from _common import interleaved_medians

from latentquant.data import get_dataset
from latentquant.train.batches import batch_indices
from latentquant.train.config import TrainConfig, resolve
from latentquant.train.distributed import make_autocast
from latentquant.train.stacked import stack_members


def members(model: str, arch: str, k: int, batch: int, data, device: torch.device):
    configs = [
        TrainConfig(model=model, arch=arch, batch_size=batch, seed=s, weight_decay=0.1 / (s + 1), out=f"bench/{s}")
        for s in range(k)
    ]
    out = []
    for c in configs:
        r = resolve(c, data)
        r.model.to(device)
        out.append((r, torch.get_rng_state()))
    return out


def batches(configs, steps: int, data, device: torch.device) -> list[torch.Tensor]:
    """(K, B, c, 64, 64) per step, each member's own batch of that step."""
    out = []
    for t in range(steps):
        x = [data.get_images(batch_indices(c.seed, t, c.batch_size, len(data))) for c in configs]
        out.append(torch.stack(x).to(device))
    return out


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class Separate:
    """K runs as ``latentquant train`` runs them, one after another."""

    def __init__(self, built, compile_mode, autocast):
        self.models = [r.model for r, _ in built]
        self.opts = [
            r.model.configure_optimizers(lr=r.config.lr, weight_decay=r.config.weight_decay, clip=r.config.clip)
            for r, _ in built
        ]
        self.nets = [m if compile_mode is None else torch.compile(m, mode=compile_mode or None) for m in self.models]
        self.autocast, self.step = autocast, 0

    def __call__(self, x: torch.Tensor) -> None:
        for k, (m, net, opt) in enumerate(zip(self.models, self.nets, self.opts)):
            m.train()
            m.training_step(net, x[k], opt, self.step, self.autocast)
        self.step += 1


class Stack:
    def __init__(self, built, strategy, compile_mode, autocast):
        self.stack, self.opt = stack_members([r for r, _ in built], strategy, [s for _, s in built])
        if compile_mode is not None:
            self.stack.forward = torch.compile(self.stack.forward, mode=compile_mode or None)
        self.autocast, self.step = autocast, 0

    def __call__(self, x: torch.Tensor) -> None:
        self.stack.train()
        self.stack.training_step(x, self.opt, self.step, self.autocast)
        self.step += 1


def flops_per_image(model_name: str, arch: str, data, device, autocast) -> float:
    from torch.utils.flop_counter import FlopCounterMode

    ((r, _),) = members(model_name, arch, 1, 8, data, device)
    x = data.get_images(batch_indices(0, 0, 8, len(data))).to(device)
    with FlopCounterMode(display=False) as counter:
        with autocast():
            out = r.model(x)
        out.loss.backward()
    return counter.get_total_flops() / 8


def measure(args, arch: str, k: int, device: torch.device, data, variants) -> dict[str, float]:
    """images/s per variant name, medians over interleaved rounds."""
    autocast = make_autocast("bf16" if device.type == "cuda" else "fp32", device)
    xs = batches([r.config for r, _ in members(args.model, arch, k, args.batch, data, "cpu")], args.steps, data, device)
    runners = {}
    for name, make in variants.items():
        try:  # a variant that fails (a compiler's limits) is reported and left out, the rest still measured
            runners[name] = make(members(args.model, arch, k, args.batch, data, device), autocast)
            for x in xs[: args.warmup]:  # warm-up (and compilation)
                runners[name](x)
            sync(device)
        except Exception as err:  # noqa: BLE001 (any failure of one variant)
            print(f"  {name}: failed ({type(err).__name__}: {str(err).splitlines()[0][:200]})", flush=True)
            runners.pop(name, None)
    seconds = interleaved_medians(
        {name: lambda run=runner: [run(x) for x in xs] for name, runner in runners.items()},
        args.rounds,
        sync=lambda: sync(device),
    )
    nan = float("nan")
    out = {name: nan for name in variants}
    out.update({name: k * args.batch * args.steps / t for name, t in seconds.items()})
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    parser.add_argument("--model", default="qlae")
    parser.add_argument("--archs", nargs="+", default=None, help="default: small compact (CPU); + paper (CUDA)")
    parser.add_argument("--ks", nargs="+", type=int, default=[1, 3, 8])
    parser.add_argument("--threads", nargs="+", type=int, default=[1, 2], help="CPU torch threads (default 1 2)")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--steps", type=int, default=3, help="steps per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=1, help="steps before timing (compilation on CUDA)")
    parser.add_argument("--peak-tflops", type=float, default=989.0, help="the GPU's dense bf16 peak")
    parser.add_argument("--no-compile", action="store_true", help="CUDA: eager only")
    args = parser.parse_args()
    device = torch.device(args.device)
    data = get_dataset("sprites")
    cuda = device.type == "cuda"
    archs = args.archs or (["small", "compact", "paper"] if cuda else ["small", "compact"])
    print(f"# {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, torch {torch.__version__}, device {device}", end="")
    print(f", {torch.cuda.get_device_name(device)}" if cuda else f", {os.cpu_count()} CPUs", end="")
    print(f", load average {os.getloadavg()[0]:.2f}" if hasattr(os, "getloadavg") else "")
    print(f"# model {args.model}, batch {args.batch}, {args.steps} steps x {args.rounds} rounds, medians")

    if cuda:
        modes = {"eager": None} if args.no_compile else {"eager": None, "compile": "", "graphs": "reduce-overhead"}
        for arch in archs:
            autocast = make_autocast("bf16", device)
            fpi = flops_per_image(args.model, arch, data, device, autocast)
            print(f"\n{arch}: {fpi / 1e9:.3f} GFLOP per image per training step (forward + backward)")
            for k in args.ks:
                variants = {}
                for mode, cm in modes.items():
                    variants[f"separate {mode}"] = lambda b, a, cm=cm: Separate(b, cm, a)
                    variants[f"stack {mode}"] = lambda b, a, cm=cm: Stack(b, "vmap", cm, a)
                img_s = measure(args, arch, k, device, data, variants)
                for mode in modes:
                    sep, st = img_s[f"separate {mode}"], img_s[f"stack {mode}"]
                    frac = st * fpi / (args.peak_tflops * 1e12)
                    print(
                        f"  K={k:2d} {mode:8s} separate {sep:9.0f} img/s  stack {st:9.0f} img/s  "
                        f"ratio {st / sep:5.2f}  stack at {100 * frac:.2f}% of bf16 peak"
                    )
        return

    for threads in args.threads:
        torch.set_num_threads(threads)
        for arch in archs:
            for k in args.ks:
                variants = {
                    "separate": lambda b, a: Separate(b, None, a),
                    "stack loop": lambda b, a: Stack(b, "loop", None, a),
                    "stack vmap": lambda b, a: Stack(b, "vmap", None, a),
                }
                img_s = measure(args, arch, k, device, data, variants)
                sep = img_s["separate"]
                print(
                    f"threads {threads} {arch:8s} K={k}: separate {sep:6.1f} img/s, "
                    f"stack loop {img_s['stack loop']:6.1f} ({img_s['stack loop'] / sep:.2f}x), "
                    f"stack vmap {img_s['stack vmap']:6.1f} ({img_s['stack vmap'] / sep:.2f}x)",
                    flush=True,
                )


if __name__ == "__main__":
    main()
