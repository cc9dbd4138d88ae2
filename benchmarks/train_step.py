"""Training throughput of QLAE: images/s of forward + backward + optimizer step.

For each backbone (``small``, ``compact``, ``paper``) two regimes, interleaved and repeated
so that machine load hits both alike, medians reported:

- ``excluded``: one batch held in memory (the model alone);
- ``included``: the loop's own data path, batches of the built-in dataset
  rendered by the background prefetch thread (``latentquant.train.batches.Prefetcher``)
  and indexed by the step's deterministic sampler.

The ratio included/excluded says how much of the model's speed survives the
data pipeline (1.0: loading fully overlapped).

Peer (``--peer``, on when vector-quantize-pytorch is installed): the same QLAE
step with vector-quantize-pytorch's ``LatentQuantize`` in place of ours, both
at ``--peer-values`` values per latent. The default is 4 because their layer
allocates its whole implicit codebook, prod(levels) x num_latents entries: with
`sprites`' 10 latents, 4 values is 2^20 codes (80 MiB), while the paper's 10
values would be 10^10 codes (800 GB). Ratio = their step time / ours, model
alone, interleaved. Run:

    .venv/bin/python benchmarks/train_step.py                      # both archs, batch 64
    .venv/bin/python benchmarks/train_step.py --archs small --steps 20 --threads 1
    .venv/bin/python benchmarks/train_step.py --archs small compact --threads 1 --no-peer   # issue 16's ratio

With both ``small`` and ``compact`` it also prints compact's step time over
small's, the two timed alternately (the budget for ``compact`` is 2x).
"""

from __future__ import annotations

import argparse
import importlib.util
import itertools
import time
from collections.abc import Iterator
from functools import partial

import torch
from _common import interleaved_medians


class _TheirQuantizer(torch.nn.Module):
    """vector-quantize-pytorch's LatentQuantize behind our layer's call signature."""

    def __init__(self, num_latents: int, values: int):
        super().__init__()
        from vector_quantize_pytorch import LatentQuantize as TheirLatentQuantize

        self.inner = TheirLatentQuantize(
            levels=[values] * num_latents, dim=num_latents, commitment_loss_weight=0.01, quantization_loss_weight=0.01
        )

    def forward(self, z: torch.Tensor, return_loss_breakdown: bool = False):
        from latentquant.quantize import LossBreakdown

        out, indices, loss = self.inner(z)
        if not return_loss_breakdown:
            return out, indices, loss
        zero = loss.detach() * 0  # their loss comes as one sum: log it as the total only
        return (out, indices, loss), LossBreakdown(zero, zero)


def build(arch: str, dataset, device, values: int | None = None, theirs: bool = False):
    from latentquant.models import DataInfo, build_model

    torch.manual_seed(0)
    info = DataInfo(dataset.name, dataset.num_channels, dataset.num_factors, len(dataset))
    options = {} if values is None else {"values_per_latent": values}
    model = build_model("qlae", arch, info, **options)
    if theirs:
        model.quantizer = _TheirQuantizer(model.num_latents, values)
    model = model.to(device)
    return model, model.configure_optimizers(lr=1e-3, weight_decay=0.1)


def peer_ratio(arch: str, dataset, x, values: int, steps: int, repeats: int, device) -> tuple[float, float]:
    """Images/s of the QLAE step with our layer and with theirs, interleaved medians."""
    built = {"ours": build(arch, dataset, device, values), "theirs": build(arch, dataset, device, values, theirs=True)}
    seconds = interleaved_medians(
        {name: partial(run_excluded, m, o, x, steps) for name, (m, o) in built.items()}, repeats, warmup=1
    )
    return steps * x.shape[0] / seconds["ours"], steps * x.shape[0] / seconds["theirs"]


def run_excluded(model, opts, x, steps: int) -> None:
    """``steps`` training steps on the one batch ``x`` (the model alone)."""
    for step in range(steps):
        parts = model.training_step(model, x, opts, step)
    float(parts["loss"])  # one sync at the end, as the loop's logging cadence


def run_included(model, opts, dataset, batch: int, steps: int, starts: Iterator[int], device) -> None:
    """``steps`` training steps on the loop's own data path (prefetched batches), from the next of ``starts``."""
    from latentquant.train.batches import Prefetcher
    from latentquant.train.distributed import Dist

    start = next(starts)
    stream = Prefetcher(
        dataset, seed=0, batch_size=batch, start=start, stop=start + steps, dist=Dist(device=device), depth=4
    )
    try:
        for step in range(start, start + steps):
            parts = model.training_step(model, next(stream), opts, step)
        float(parts["loss"])
    finally:
        stream.close()


def time_loading(dataset, batch: int, steps: int) -> float:
    from latentquant.train.batches import batch_indices

    t = time.perf_counter()
    for step in range(steps):
        dataset.get_images(batch_indices(0, step, batch, len(dataset)))
    return steps * batch / (time.perf_counter() - t)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--archs", nargs="+", default=["small", "compact", "paper"])
    parser.add_argument("--dataset", default="sprites")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument(
        "--steps", type=int, default=None, help="timed steps per repeat (default small/compact 10, paper 2)"
    )
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--device", default="cpu")
    parser.add_argument(
        "--peer",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="also time QLAE with vector-quantize-pytorch's LatentQuantize (default: when installed)",
    )
    parser.add_argument("--peer-values", type=int, default=4, help="values per latent of both layers in the peer run")
    args = parser.parse_args()
    if args.peer is None:
        args.peer = importlib.util.find_spec("vector_quantize_pytorch") is not None
    if args.threads:
        torch.set_num_threads(args.threads)

    from latentquant.data import get_dataset

    device = torch.device(args.device)
    dataset = get_dataset(args.dataset)
    print(
        f"torch {torch.__version__}, device {device}, threads {torch.get_num_threads()}, "
        f"dataset {args.dataset}, batch {args.batch_size}, QLAE forward+backward+AdamW step"
    )
    print(
        f"data loading alone (get_images of the step's indices): "
        f"{time_loading(dataset, args.batch_size, 20):,.0f} images/s"
    )
    x = dataset.get_images(list(range(0, len(dataset), len(dataset) // args.batch_size))[: args.batch_size]).to(device)
    for arch in args.archs:
        steps = args.steps or (2 if arch == "paper" else 10)
        model, opts = build(arch, dataset, device)
        starts = itertools.count(0, 1000)  # each included repeat reads other batches
        seconds = interleaved_medians(
            {
                "excluded": partial(run_excluded, model, opts, x, steps),
                "included": partial(run_included, model, opts, dataset, args.batch_size, steps, starts, device),
            },
            args.repeats,
            warmup=1,
        )
        ex, inc = (steps * args.batch_size / seconds[k] for k in ("excluded", "included"))
        print(
            f"{arch:>6}: data excluded {ex:8.1f} images/s ({1000 * args.batch_size / ex:7.1f} ms/step) | "
            f"data included {inc:8.1f} images/s | included/excluded {inc / ex:.2f}  "
            f"(median of {args.repeats} x {steps} steps)"
        )
        if args.peer:
            ours, theirs = peer_ratio(arch, dataset, x, args.peer_values, steps, args.repeats, device)
            print(
                f"{arch:>6}: {args.peer_values} values/latent, data excluded: ours {ours:8.1f} images/s | "
                f"vqp LatentQuantize {theirs:8.1f} images/s | ratio (their time / ours) {ours / theirs:.2f}x"
            )
    if {"small", "compact"} <= set(args.archs):
        ratio = arch_ratio("compact", "small", dataset, x, args.steps or 10, args.repeats + 2, device)
        print(f"compact / small step time, interleaved (data excluded): {ratio:.2f} (issue 16's budget: at most 2)")


def arch_ratio(arch: str, base: str, dataset, x, steps: int, repeats: int, device) -> float:
    """Median step time of ``arch`` over that of ``base``, the two timed alternately."""
    models = {a: build(a, dataset, device) for a in (arch, base)}
    seconds = interleaved_medians(
        {a: partial(run_excluded, m, o, x, steps) for a, (m, o) in models.items()}, repeats, warmup=1
    )
    return seconds[arch] / seconds[base]


if __name__ == "__main__":
    main()
