"""What one periodic evaluation costs, part by part, against a training interval.

For each model (QLAE: discrete codes; AE: continuous codes), ``small`` arch,
``shapes``, one thread (as the sweep runs):

1. train ``--train-steps`` steps of batch 64 (so that the codes are not those
   of an untrained net) and take the median step time after warm-up: the
   interval of ``--interval`` steps is estimated as interval x that median;
2. time the parts of ``latentquant.train.evaluate.evaluate`` at
   ``--samples`` samples: ``encode_all`` (encode + decode + PSNR; **new** =
   batches of 64, the CPU default, against **old** = batches of 256, whose
   PSNR summation the new path keeps), the NMI
   (plug-in for discrete codes; kNN for continuous ones, **new** = sorting,
   ``latentquant.metrics._knn``, against **old** = one
   ``sklearn.feature_selection.mutual_info_classif`` call per source, the
   definition it replaced, in the same process, and checked equal), InfoE's
   logistic fits, DCI (``model='fast'``, as evaluate runs it) and MIG;
3. print old and new totals and their share of the interval.

Parts not changed by the new path are timed once and count in both totals.
Machine load hits both alike only within one run: compare ratios, not
absolute times across runs, and note ``uptime`` with every figure.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/evaluation.py
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/evaluation.py --models ae --train-steps 100
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
import warnings

import numpy as np
import torch

from latentquant.data import get_dataset
from latentquant.metrics import _knn, _mi, dci, mig
from latentquant.metrics.infomec import _explicitness
from latentquant.models import DataInfo, build_model
from latentquant.train.evaluate import encode_all, eval_indices


def old_knn_mi(z, s_codes, s_values, *, n_neighbors, seed):
    """The replaced definition: one mutual_info_classif call per source."""
    from sklearn.feature_selection import mutual_info_classif

    mi = np.zeros((s_codes.shape[1], z.shape[1]))
    for i in np.flatnonzero(s_values > 1):
        mi[i] = mutual_info_classif(
            z, s_codes[:, i], discrete_features=False, n_neighbors=n_neighbors, random_state=seed
        )
    return mi


def timed(fn):
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def train(model, dataset, steps: int) -> float:
    """Median seconds per training step (batch 64) after the first 5."""
    opts = model.configure_optimizers(1e-3, 0.1 if model.discrete_latents else 1e-3)
    rng = np.random.default_rng(1)
    times = []
    for step in range(steps):
        x = dataset.get_images(dataset.sample_indices(64, rng))
        start = time.perf_counter()
        model.training_step(model, x, opts, step)
        times.append(time.perf_counter() - start)
    return statistics.median(times[5:])


def bench(name: str, args, dataset) -> None:
    torch.manual_seed(0)
    model = build_model(name, "small", DataInfo("shapes", 3, 6, 480_000))
    step_s = train(model, dataset, args.train_steps)
    interval_s = args.interval * step_s
    print(
        f"\n{name}: {args.train_steps} training steps, median {step_s * 1e3:.0f} ms/step, "
        f"so {args.interval} steps ~ {interval_s / 60:.1f} min  [{os.getloadavg()[0]:.1f} load]",
        flush=True,
    )

    idx = eval_indices(dataset, args.samples, 0)
    factors = dataset.get_factors(idx).numpy()
    dataset.get_images(idx)  # render the images once: evaluate's first call in a run pays this too
    parts = {}
    cpu = torch.device("cpu")
    for batch_size in (256, 64):  # warm-up: first calls of each shape set up oneDNN
        encode_all(model, dataset, idx[:256], cpu, batch_size=batch_size)
    t_old, old_out = timed(lambda: encode_all(model, dataset, idx, cpu, batch_size=256))  # the old batches
    t_new, (codes, psnr, _) = timed(lambda: encode_all(model, dataset, idx, cpu))
    assert torch.equal(codes, old_out[0]) and psnr == old_out[1], "encode_all differs from batches of 256"
    parts["encode_all"] = (t_old, t_new)
    latents = codes.numpy().astype(np.int64 if model.discrete_latents else np.float64)
    s_codes, s_values = _mi.label_encode(factors)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if model.discrete_latents:
            z_codes = _mi.label_encode(latents)
            parts["nmi (plug-in)"], _ = timed(lambda: _mi.mutual_info_matrix(s_codes, s_values, *z_codes))
        else:
            z_codes = None
            z = _mi.standardize(latents)
            t_old, mi_old = timed(lambda: old_knn_mi(z, s_codes, s_values, n_neighbors=10, seed=0))
            t_new, mi_new = timed(lambda: _knn.knn_mutual_info(z, s_codes, s_values, n_neighbors=10, seed=0))
            assert np.array_equal(mi_old, mi_new), "the new kNN MI differs from mutual_info_classif"
            parts["nmi (kNN)"] = (t_old, t_new)
        parts["infoe (logistic fits)"], _ = timed(lambda: _explicitness(s_codes, s_values, latents, z_codes))
        parts["dci (fast)"], _ = timed(lambda: dci(factors, latents, seed=0, model="fast"))
        parts["mig"], _ = timed(lambda: mig(factors, latents, discrete_latents=model.discrete_latents))
    old = new = 0.0
    print(f"{'part':24s} {'old (s)':>9s} {'new (s)':>9s}")
    for part, t in parts.items():
        t_old, t_new = t if isinstance(t, tuple) else (t, t)
        old, new = old + t_old, new + t_new
        print(f"{part:24s} {t_old:9.2f} {t_new:9.2f}")
    print(f"{'total':24s} {old:9.2f} {new:9.2f}")
    print(
        f"share of a {args.interval}-step interval: old {100 * old / interval_s:.1f}%, "
        f"new {100 * new / interval_s:.1f}%  [{os.getloadavg()[0]:.1f} load, PSNR {psnr:.2f}]",
        flush=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["qlae", "ae"])
    parser.add_argument("--samples", type=int, default=10_000)
    parser.add_argument("--train-steps", type=int, default=200)
    parser.add_argument("--interval", type=int, default=2_500)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(
        f"torch {torch.__version__}, {args.threads} thread(s), OMP_NUM_THREADS="
        f"{os.environ.get('OMP_NUM_THREADS')}, load average {os.getloadavg()}"
    )
    dataset = get_dataset("shapes")
    for name in args.models:
        bench(name, args, dataset)


if __name__ == "__main__":
    main()
