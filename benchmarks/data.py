"""Throughput and peak memory of the built-in rendered datasets.

    .venv/bin/python benchmarks/data.py [--repeats 5] [--items 2000] [--batches 20]

Each dataset is measured in a fresh subprocess (so peak RSS is its own):

* first use: building the render tables (sprites masks; all 480 shapes map sets),
* random single items ``dataset[i]`` (the path of a per-item DataLoader),
* random batches of 256 through the vectorized ``get_images``,
* a DataLoader (batch 256, per-item fetch + default collate, no workers),
* peak resident memory (ru_maxrss) and the resident size right after import.

The peer, measured in the same subprocess, is indexing an in-memory uint8
array of 20,000 ready-made images of the same shape (gather + conversion to
float32 tensors): the cost of data that is already materialized. Ratios are
``ours / peer`` in images per second. Figures are medians over repeats; the
machine is shared, so expect noise.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time

BATCH = 256


def _median_rate(fn, count: int, repeats: int) -> float:
    rates = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        rates.append(count / (time.perf_counter() - t))
    return statistics.median(rates)


def measure(name: str, items: int, batches: int, repeats: int) -> dict:
    import numpy as np
    import torch

    from latentquant.data import get_dataset

    rss_import = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    ds = get_dataset(name)
    t = time.perf_counter()
    if name == "shapes":
        ds.prepare()
    else:
        ds.get_images([0])
    first_use = time.perf_counter() - t
    rng = np.random.default_rng(0)

    single_idx = rng.integers(0, len(ds), items).tolist()
    batch_idx = [rng.integers(0, len(ds), BATCH) for _ in range(batches)]

    def singles():
        for i in single_idx:
            ds[i]

    def batched():
        for idx in batch_idx:
            ds.get_images(idx)

    loader = torch.utils.data.DataLoader(ds, batch_size=BATCH, sampler=single_idx[: BATCH * 4])

    def via_loader():
        for _ in loader:
            pass

    ours = {
        "single_items_per_s": _median_rate(singles, items, repeats),
        "batch256_images_per_s": _median_rate(batched, BATCH * batches, repeats),
        "dataloader_images_per_s": _median_rate(via_loader, BATCH * 4, max(1, repeats // 2)),
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,  # before the peer's array
    }

    # peer: an in-memory uint8 array of ready images, same per-item and batch paths
    store = np.random.default_rng(1).integers(0, 256, (20_000, ds.num_channels, 64, 64), dtype=np.uint8)
    peer_single = rng.integers(0, len(store), items).tolist()
    peer_batch = [rng.integers(0, len(store), BATCH) for _ in range(batches)]

    def peer_singles():
        for i in peer_single:
            torch.from_numpy(store[i]).float().div_(255)

    def peer_batched():
        for idx in peer_batch:
            torch.from_numpy(store[idx]).float().div_(255)

    out = {
        "dataset": name,
        "first_use_s": first_use,
        **ours,
        "peer_single_items_per_s": _median_rate(peer_singles, items, repeats),
        "peer_batch256_images_per_s": _median_rate(peer_batched, BATCH * batches, repeats),
        "rss_after_import_mb": rss_import,
    }
    out["batch256_ms"] = 1000 * BATCH / out["batch256_images_per_s"]
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--items", type=int, default=2000, help="single items per repeat")
    parser.add_argument("--batches", type=int, default=20, help="batches of 256 per repeat")
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        print(json.dumps(measure(args.worker, args.items, args.batches, args.repeats)))
        return 0
    results = []
    for name in ("sprites", "shapes"):
        cmd = [
            sys.executable,
            __file__,
            "--worker",
            name,
            "--repeats",
            str(args.repeats),
            "--items",
            str(args.items),
            "--batches",
            str(args.batches),
        ]
        results.append(json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout))
    print(
        f"{'dataset':8} {'first use':>9} {'item/s':>8} {'x peer':>7} {'batch256':>9} {'img/s':>8} "
        f"{'x peer':>7} {'loader/s':>9} {'peak MB':>8} {'import MB':>9}"
    )
    for r in results:
        print(
            f"{r['dataset']:8} {r['first_use_s']:8.2f}s {r['single_items_per_s']:8.0f} "
            f"{r['single_items_per_s'] / r['peer_single_items_per_s']:7.2f} {r['batch256_ms']:7.1f}ms "
            f"{r['batch256_images_per_s']:8.0f} {r['batch256_images_per_s'] / r['peer_batch256_images_per_s']:7.2f} "
            f"{r['dataloader_images_per_s']:9.0f} {r['peak_rss_mb']:8.0f} {r['rss_after_import_mb']:9.0f}"
        )
    sprites = results[0]
    verdict = "meets" if sprites["single_items_per_s"] >= 2000 else "MISSES"
    print(
        f"sprites single-item random access {sprites['single_items_per_s']:.0f}/s {verdict} the 2,000/s target; "
        f"peak memory {max(r['peak_rss_mb'] for r in results):.0f} MB (target well under 2,048 MB)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
