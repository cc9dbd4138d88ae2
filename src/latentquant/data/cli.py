"""``latentquant data``: list datasets, print their factors, save a sample grid, download.

latentquant data list
latentquant data info NAME [--root DIR] [--path FILE] [--option KEY=VALUE]
latentquant data show NAME [--out PNG] [--n 16] [--seed 0] [--root DIR] [--path FILE]
latentquant data fetch NAME [--variant V] [--root DIR] [--archive ZIP] [--retries N] [--no-progress]
latentquant data fetch --list [--verify] [--root DIR]
"""

from __future__ import annotations

import argparse
import math
import os
from functools import partial
from pathlib import Path

import numpy as np

from latentquant._atomic import atomic_open
from latentquant.data import fetch as fetch_module
from latentquant.data.registry import get_dataset, list_datasets
from latentquant.validation import UserError, arg_type, check_int

MAX_SHOW = 256
MAX_RETRIES = 10


def _key_value(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    return key, value


def _add_source(p: argparse.ArgumentParser) -> None:
    p.add_argument("name", help="dataset name (see `latentquant data list`)")
    p.add_argument(
        "--root",
        default=None,
        help="folder holding public files (default $LATENTQUANT_DATA, else ~/.cache/latentquant)",
    )
    p.add_argument("--path", default=None, help="explicit file or folder of a public dataset")
    p.add_argument(
        "--option",
        "-O",
        action="append",
        type=_key_value,
        default=[],
        metavar="KEY=VALUE",
        help="dataset option, e.g. -O variant=toy for mpi3d (repeatable)",
    )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="data_command", metavar="ACTION", required=True)
    sub.add_parser("list", help="list dataset names", description="List dataset names.")
    info = sub.add_parser(
        "info",
        help="print factor names and sizes, length, channels",
        description="Print a dataset's factors, length and channels.",
    )
    _add_source(info)
    show = sub.add_parser(
        "show",
        help="save a PNG grid of random samples with their factors",
        description="Save a PNG grid of random samples with their factor classes.",
    )
    _add_source(show)
    show.add_argument("--out", default=None, help="output PNG (default NAME_samples.png)")
    show.add_argument(
        "--n",
        type=arg_type(int, partial(check_int, "--n", low=1, high=MAX_SHOW)),
        default=16,
        help=f"number of samples, 1..{MAX_SHOW} (default 16)",
    )
    show.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    fetch = sub.add_parser(
        "fetch",
        help="download a public dataset into the data root, verified",
        description="Download a public dataset (dsprites, shapes3d, mpi3d, falcor3d, "
        "isaac3d) from its published location into the data root, verify it and leave "
        "the layout its loader reads. Set LATENTQUANT_DATA_URL to download from a mirror.",
    )
    fetch.add_argument("name", nargs="?", default=None, help="dataset to download (omit with --list)")
    fetch.add_argument(
        "--list",
        action="store_true",
        help="show each dataset's size, destination and whether it is present and verified",
    )
    fetch.add_argument("--verify", action="store_true", help="with --list: hash every present file now")
    fetch.add_argument(
        "--variant", default=None, help="mpi3d only: toy, realistic, real or complex (default: all four)"
    )
    fetch.add_argument("--root", default=None, help="data root (default $LATENTQUANT_DATA, else ~/.cache/latentquant)")
    fetch.add_argument(
        "--archive",
        default=None,
        metavar="ZIP",
        help="falcor3d/isaac3d: extract this zip, downloaded by hand, instead of downloading",
    )
    fetch.add_argument(
        "--retries",
        type=arg_type(int, partial(check_int, "--retries", low=0, high=MAX_RETRIES)),
        default=1,
        help=f"restart a failed download this many more times, 0..{MAX_RETRIES} (default 1)",
    )
    fetch.add_argument("--no-progress", action="store_true", help="no progress bar")


def _open(args):
    options = dict(args.option)
    for key in ("root", "path"):
        if key in options:
            raise UserError(f"-O {key}=... is not a dataset option; use --{key}")
    return get_dataset(args.name, root=args.root, path=args.path, **options)


def save_grid(dataset, out: str | os.PathLike, n: int = 16, seed: int = 0) -> Path:
    """Write a PNG grid of ``n`` random samples titled with their factor classes (atomic write)."""
    # deferred: matplotlib is optional (the data extra) and slow to import
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rng = np.random.default_rng(seed)
    idx = np.sort(dataset.sample_indices(n, rng))
    images = dataset.get_images(idx).numpy()
    factors = dataset.index_to_factors(idx)
    cols = math.ceil(math.sqrt(n))
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(1.9 * cols, 2.2 * rows), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for ax, i, img, f in zip(axes.ravel(), idx, images, factors):
        if img.shape[0] == 1:
            ax.imshow(img[0], cmap="gray", vmin=0, vmax=1, interpolation="nearest")
        else:
            ax.imshow(img.transpose(1, 2, 0), interpolation="nearest")
        text = "\n".join(f"{name}={v}" for name, v in zip(dataset.factor_names, f.tolist()))
        ax.set_title(f"#{i}\n{text}", fontsize=5.5, loc="left", family="monospace")
    fig.suptitle(f"{dataset.name}: {n} samples (seed {seed}), factor class indices", fontsize=9)
    fig.tight_layout()
    out = Path(out)
    try:
        with atomic_open(out, "wb") as fh:
            fig.savefig(fh, format="png", dpi=110)
    finally:
        plt.close(fig)
    return out


def _fetch(args) -> int:
    if args.list:
        if args.name or args.variant or args.archive:
            raise UserError("fetch --list takes no NAME, --variant or --archive")
        fetch_module.print_list(args.root, verify=args.verify)
        return 0
    if args.verify:
        raise UserError("--verify goes with --list (a fetch always verifies what it downloads)")
    if args.name is None:
        raise UserError(f"fetch needs a dataset NAME ({', '.join(fetch_module.DATASETS)}) or --list")
    name = args.name.lower()
    if name not in fetch_module.DATASETS and name in list_datasets():
        raise UserError(f"{name!r} is rendered by latentquant itself; there is nothing to download")
    fetch_module.fetch(
        name,
        variant=args.variant,
        root=args.root,
        archive=args.archive,
        retries=args.retries,
        progress=not args.no_progress,
    )
    return 0


def run(args) -> int:
    if args.data_command == "fetch":
        return _fetch(args)
    if args.data_command == "list":
        for name in list_datasets():
            print(name)
        return 0
    dataset = _open(args)
    if args.data_command == "info":
        print(dataset.describe())
        return 0
    out = save_grid(dataset, args.out or f"{dataset.name}_samples.png", n=args.n, seed=args.seed)
    print(f"wrote {out}")
    return 0
