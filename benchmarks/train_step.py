"""Training throughput of QLAE: images/s of forward + backward + optimizer step.

For each backbone (``small``, ``paper``) two regimes, interleaved and repeated
so that machine load hits both alike, medians reported:

- ``excluded``: one batch held in memory (the model alone);
- ``included``: the loop's own data path, batches of the built-in dataset
  rendered by the background prefetch thread (``latentquant.train.loop.Prefetcher``)
  and indexed by the step's deterministic sampler.

The ratio included/excluded says how much of the model's speed survives the
data pipeline (1.0: loading fully overlapped). Run:

    .venv/bin/python benchmarks/train_step.py                      # both archs, batch 64
    .venv/bin/python benchmarks/train_step.py --archs small --steps 20 --threads 1
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch


def build(arch: str, dataset, device):
    from latentquant.models import DataInfo, build_model

    torch.manual_seed(0)
    info = DataInfo(dataset.name, dataset.num_channels, dataset.num_factors, len(dataset))
    model = build_model("qlae", arch, info).to(device)
    return model, model.configure_optimizers(lr=1e-3, weight_decay=0.1)


def time_excluded(model, opts, x, steps: int) -> float:
    t = time.perf_counter()
    for step in range(steps):
        parts = model.training_step(model, x, opts, step)
    float(parts["loss"])  # one sync at the end, as the loop's logging cadence
    return steps * x.shape[0] / (time.perf_counter() - t)


def time_included(model, opts, dataset, batch: int, steps: int, start: int, device) -> float:
    from latentquant.train.loop import Dist, Prefetcher

    stream = Prefetcher(dataset, seed=0, batch_size=batch, start=start, stop=start + steps,
                        dist=Dist(device=device), depth=4)
    try:
        t = time.perf_counter()
        for step in range(start, start + steps):
            parts = model.training_step(model, next(stream), opts, step)
        float(parts["loss"])
        return steps * batch / (time.perf_counter() - t)
    finally:
        stream.close()


def time_loading(dataset, batch: int, steps: int) -> float:
    from latentquant.train.loop import batch_indices

    t = time.perf_counter()
    for step in range(steps):
        dataset.get_images(batch_indices(0, step, batch, len(dataset)))
    return steps * batch / (time.perf_counter() - t)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--archs", nargs="+", default=["small", "paper"])
    parser.add_argument("--dataset", default="sprites")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=None, help="timed steps per repeat (default small 10, paper 2)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    from latentquant.data import get_dataset

    device = torch.device(args.device)
    dataset = get_dataset(args.dataset)
    print(f"torch {torch.__version__}, device {device}, threads {torch.get_num_threads()}, "
          f"dataset {args.dataset}, batch {args.batch_size}, QLAE forward+backward+AdamW step")
    print(f"data loading alone (get_images of the step's indices): "
          f"{time_loading(dataset, args.batch_size, 20):,.0f} images/s")
    x = dataset.get_images(list(range(0, len(dataset), len(dataset) // args.batch_size))[: args.batch_size]).to(device)
    for arch in args.archs:
        steps = args.steps or (10 if arch == "small" else 2)
        model, opts = build(arch, dataset, device)
        time_excluded(model, opts, x, 1)  # warm-up
        excluded, included = [], []
        for r in range(args.repeats):
            excluded.append(time_excluded(model, opts, x, steps))
            included.append(time_included(model, opts, dataset, args.batch_size, steps, 1000 * r, device))
        ex, inc = statistics.median(excluded), statistics.median(included)
        print(f"{arch:>6}: data excluded {ex:8.1f} images/s ({1000 * args.batch_size / ex:7.1f} ms/step) | "
              f"data included {inc:8.1f} images/s | included/excluded {inc / ex:.2f}  "
              f"(median of {args.repeats} x {steps} steps)")


if __name__ == "__main__":
    main()
