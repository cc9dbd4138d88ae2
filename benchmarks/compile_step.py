"""``torch.compile`` on the CPU: a QLAE training step, eager against compiled.

Times the compile warm-up (the first compiled step) and then eager and
compiled steps alternately (medians), 1 thread, batch 64, ``shapes``, the
``small`` backbone unless ``--arch`` says otherwise. The break-even run length
is warm-up / (eager step - compiled step)::

    .venv/bin/python benchmarks/compile_step.py
    .venv/bin/python benchmarks/compile_step.py --arch compact --rounds 7
"""

from __future__ import annotations

import argparse
import time
from functools import partial

import torch
from _common import interleaved_medians


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--arch", default="small")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=5, help="steps per timed round")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    from latentquant.models import DataInfo, build_model

    torch.set_num_threads(args.threads)
    info = DataInfo("shapes", 3, 6, 480_000)
    x = torch.rand(64, 3, 64, 64)

    def make():
        torch.manual_seed(0)
        model = build_model("qlae", args.arch, info)
        return model, model.configure_optimizers(lr=1e-3, weight_decay=0.1)

    (eager, eager_opts), (model, opts) = make(), make()
    net = torch.compile(model)
    t = time.perf_counter()
    model.training_step(net, x, opts, 0)
    warmup = time.perf_counter() - t

    def steps(m, n, o):
        for i in range(args.steps):
            m.training_step(n, x, o, i)

    seconds = interleaved_medians(
        {"eager": partial(steps, eager, eager, eager_opts), "compiled": partial(steps, model, net, opts)},
        args.rounds,
        warmup=1,
    )
    e, c = seconds["eager"] / args.steps, seconds["compiled"] / args.steps
    print(f"torch {torch.__version__}, {args.arch}, batch 64, {torch.get_num_threads()} thread(s)")
    print(
        f"compile warm-up (first step) {warmup:.1f} s; eager {e * 1e3:.0f} ms/step, compiled {c * 1e3:.0f} ms/step, "
        f"speed-up {e / c:.2f}x"
    )
    if e > c:
        breakeven = warmup / (e - c)
        print(
            f"break-even after {breakeven:,.0f} steps; a 10,000-step run: eager {10_000 * e / 60:.1f} min, "
            f"compiled {(warmup + 10_000 * c) / 60:.1f} min (warm-up included)"
        )


if __name__ == "__main__":
    main()
