"""``latentquant metrics FILE.npz``: score latents against sources.

The file holds ``sources`` (N, K) and ``latents`` (N, L), optionally
``discrete_latents`` (a bool scalar) and ``source_names`` / ``latent_names``
(string arrays, used to label the heatmap and the JSON). Whether latents are
discrete comes from, in order: ``--discrete-latents`` /
``--continuous-latents``, the file's ``discrete_latents``, else the dtype
(integer or bool latents are discrete, floating ones continuous).

Prints a table and writes, next to the file, ``<stem>.metrics.json`` and
``<stem>.nmi.png`` (stem: the file name without ``.npz``), both atomically.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import warnings
from contextlib import contextmanager
from functools import partial
from pathlib import Path

import numpy as np

from latentquant._atomic import atomic_write_text
from latentquant.validation import UserError, arg_type, check_fraction, check_int


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("file", help="an .npz file with arrays 'sources' (N, K) and 'latents' (N, L)")
    kind = parser.add_mutually_exclusive_group()
    kind.add_argument(
        "--discrete-latents",
        dest="discrete",
        action="store_true",
        default=None,
        help="treat latents as discrete labels (default: the file's 'discrete_latents', else integer/bool dtype)",
    )
    kind.add_argument(
        "--continuous-latents", dest="discrete", action="store_false", help="treat latents as continuous values"
    )
    parser.add_argument(
        "--estimator",
        choices=("knn", "histogram"),
        default="knn",
        help="MI estimator for continuous latents in InfoM/InfoC (default knn)",
    )
    parser.add_argument(
        "--num-bins",
        type=arg_type(int, partial(check_int, "--num-bins", low=2)),
        default=20,
        help="bins per continuous latent for MIG and --estimator histogram (default 20)",
    )
    parser.add_argument(
        "--no-explicitness", dest="explicitness", action="store_false", help="skip InfoE (K logistic-regression fits)"
    )
    parser.add_argument("--no-dci", dest="dci", action="store_false", help="skip DCI (the slowest metric)")
    parser.add_argument(
        "--dci-model",
        choices=("gbt", "fast"),
        default="gbt",
        help="DCI classifier: gbt = sklearn GradientBoostingClassifier defaults "
        "(as disentanglement_lib), fast = 20 stages, learning rate 0.5 (default gbt)",
    )
    parser.add_argument("--no-mig", dest="mig", action="store_false", help="skip MIG")
    parser.add_argument("--no-sap", dest="sap", action="store_false", help="skip SAP")
    parser.add_argument(
        "--test-fraction",
        type=arg_type(float, partial(check_fraction, "--test-fraction")),
        default=1 / 3,
        help="held-out fraction for DCI and SAP (default 1/3)",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of splits and estimators (default 0)")
    parser.add_argument("--no-plot", dest="plot", action="store_false", help="do not write the NMI heatmap")


def _names(data, key: str, count: int) -> list[str] | None:
    if key not in data.files:
        return None
    names = [str(v) for v in np.asarray(data[key]).reshape(-1)]
    if len(names) != count:
        raise UserError(f"'{key}' in the file has {len(names)} entries, expected {count}")
    return names


def load(path: str | os.PathLike) -> dict:
    """Read and check an .npz file of sources and latents."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no such file: {path}")
    try:
        data = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as err:  # EOFError: an empty file
        raise UserError(f"{path} is not a readable .npz file: {err or 'empty file'}") from None
    if not isinstance(data, np.lib.npyio.NpzFile):
        raise UserError(
            f"{path} holds one array ({type(data).__name__}), not an .npz archive of named "
            "arrays 'sources' and 'latents' (save it with numpy.savez)"
        )
    with data:
        try:
            return _read(path, data)
        except ValueError as err:  # numpy's: an object (pickled) array, a damaged member
            raise UserError(f"{path}: {err}") from None


def _read(path: Path, data) -> dict:
    missing = [k for k in ("sources", "latents") if k not in data.files]
    if missing:
        raise UserError(f"{path} lacks array(s) {missing}; it holds {sorted(data.files)}")
    out = {"sources": data["sources"], "latents": data["latents"], "discrete_latents": None}
    if "discrete_latents" in data.files:
        flag = np.asarray(data["discrete_latents"])
        if flag.size != 1 or not (flag.dtype == bool or np.issubdtype(flag.dtype, np.integer)):
            raise UserError(
                f"'discrete_latents' in {path} must be one bool, got dtype {flag.dtype} and shape {flag.shape}"
            )
        out["discrete_latents"] = bool(flag.reshape(-1)[0])
    for key in ("sources", "latents"):
        if out[key].ndim != 2:
            raise UserError(f"'{key}' in {path} must be 2-D (n_samples, n_columns), got shape {out[key].shape}")
    out["source_names"] = _names(data, "source_names", out["sources"].shape[1])
    out["latent_names"] = _names(data, "latent_names", out["latents"].shape[1])
    return out


def _jsonable(x):
    if isinstance(x, dict):
        return {k: _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, np.ndarray):
        return _jsonable(x.tolist())
    if isinstance(x, (np.bool_, bool)):
        return bool(x)
    if isinstance(x, (np.integer,)):
        return int(x)
    if isinstance(x, (float, np.floating)):
        return None if not math.isfinite(float(x)) else float(x)
    return x


def _write_json(obj, path: Path) -> None:
    atomic_write_text(path, json.dumps(_jsonable(obj), indent=2, allow_nan=False) + "\n")


def output_paths(file: str | os.PathLike) -> tuple[Path, Path]:
    """(``<stem>.metrics.json``, ``<stem>.nmi.png``) next to ``file``."""
    file = Path(file)
    stem = file.name[: -len(".npz")] if file.name.endswith(".npz") else file.name
    return file.with_name(f"{stem}.metrics.json"), file.with_name(f"{stem}.nmi.png")


@contextmanager
def _arrays_of(file):
    """The metrics check their arrays (NaN, too few samples...) with ValueError: the file's fault."""
    try:
        yield
    except ValueError as err:
        raise UserError(f"{file}: {err}") from None


def run(args: argparse.Namespace) -> int:
    from . import MetricWarning, dci, infomec, mig, sap
    from .plots import plot_nmi

    data = load(args.file)
    sources, latents = data["sources"], data["latents"]
    if args.discrete is not None:
        discrete, origin = bool(args.discrete), "flag"
    elif data["discrete_latents"] is not None:
        discrete, origin = data["discrete_latents"], "file"
    else:
        discrete = latents.dtype == bool or np.issubdtype(latents.dtype, np.integer)
        origin = "dtype"

    results: dict = {
        "file": str(Path(args.file)),
        "n_samples": int(sources.shape[0]),
        "n_sources": int(sources.shape[1]),
        "n_latents": int(latents.shape[1]),
        "discrete_latents": bool(discrete),
        "discrete_latents_from": origin,
        "seed": args.seed,
        "source_names": data["source_names"],
        "latent_names": data["latent_names"],
    }
    rows: list[tuple[str, float]] = []
    with warnings.catch_warnings(record=True) as caught, _arrays_of(args.file):
        warnings.simplefilter("always")
        info = infomec(
            sources,
            latents,
            discrete_latents=discrete,
            explicitness=args.explicitness,
            seed=args.seed,
            estimator=args.estimator,
            num_bins=args.num_bins,
        )
        results["infomec"] = {
            "infom": info.infom,
            "infoe": info.infoe,
            "infoc": info.infoc,
            "estimator": "plug-in" if discrete else args.estimator,
            "nmi": info.nmi,
            "active": info.active,
        }
        rows += [("InfoM", info.infom), ("InfoE", info.infoe), ("InfoC", info.infoc)]
        if args.dci:
            d = dci(sources, latents, test_fraction=args.test_fraction, seed=args.seed, model=args.dci_model)
            results["dci"] = {
                "disentanglement": d.disentanglement,
                "completeness": d.completeness,
                "informativeness_train": d.informativeness_train,
                "informativeness_test": d.informativeness_test,
                "model": args.dci_model,
                "test_fraction": args.test_fraction,
                "importance": d.importance,
            }
            rows += [
                ("DCI disentanglement", d.disentanglement),
                ("DCI completeness", d.completeness),
                ("DCI informativeness (train)", d.informativeness_train),
                ("DCI informativeness (test)", d.informativeness_test),
            ]
        if args.mig:
            results["mig"] = mig(sources, latents, num_bins=args.num_bins, discrete_latents=discrete)
            rows.append(("MIG", results["mig"]))
        if args.sap:
            results["sap"] = sap(sources, latents, test_fraction=args.test_fraction, seed=args.seed)
            rows.append(("SAP", results["sap"]))
    results["warnings"] = sorted({str(w.message) for w in caught if issubclass(w.category, MetricWarning)})
    for message in sorted({str(w.message) for w in caught}):
        print(f"warning: {message}", file=sys.stderr)

    json_path, png_path = output_paths(args.file)
    _write_json(results, json_path)
    width = max(len(name) for name, _ in rows)
    print(f"{'metric':<{width}}  value")
    for name, value in rows:
        shown = "nan" if not math.isfinite(value) else f"{value:.4f}"
        if name == "InfoE" and not args.explicitness:
            shown = "skipped"
        print(f"{name:<{width}}  {shown}")
    print(
        f"latents: {'discrete' if discrete else 'continuous'} (from {origin}), "
        f"{int(info.active.sum())}/{latents.shape[1]} active"
    )
    print(f"wrote {json_path}")
    if args.plot:
        plot_nmi(
            info.nmi,
            png_path,
            source_names=data["source_names"],
            latent_names=data["latent_names"],
            active=info.active,
            title=f"NMI, {Path(args.file).name}",
        )
        print(f"wrote {png_path}")
    return 0
