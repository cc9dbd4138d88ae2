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
import zipfile
import zlib
from contextlib import contextmanager
from functools import partial
from pathlib import Path

import numpy as np

from latentquant._atomic import atomic_write_text
from latentquant.metrics import MetricWarning, dci, infomec, mig, sap
from latentquant.metrics.plots import plot_nmi
from latentquant.validation import UserError, arg_type, check_fraction, check_int

MAX_SEED = 2**32 - 1  # scikit-learn's random_state and numpy's legacy seeding take 32 bits
MAX_BINS = 10_000  # np.histogram allocates per bin; more bins than this leave most of them empty


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
        type=arg_type(int, partial(check_int, "--num-bins", low=2, high=MAX_BINS)),
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
    parser.add_argument(
        "--seed",
        type=arg_type(int, partial(check_int, "--seed", low=0, high=MAX_SEED)),
        default=0,
        help="seed of splits and estimators (default 0)",
    )
    parser.add_argument("--no-plot", dest="plot", action="store_false", help="do not write the NMI heatmap")


def _names(data, path: Path, key: str, count: int) -> list[str] | None:
    if key not in data.files:
        return None
    names = [str(v) for v in _member(data, path, key).reshape(-1)]
    if len(names) != count:
        raise UserError(f"'{key}' in {path} has {len(names)} entries, expected {count}")
    return names


EXPECTED = "an .npz archive (numpy.savez) of arrays 'sources' (N, K) of factor labels and 'latents' (N, L)"
_ZIP_MAGIC = (b"PK\x03\x04", b"PK\x05\x06")  # a zip archive's first member, or an empty archive
_NPY_MAGIC = b"\x93NUMPY"
# what a damaged archive raises while numpy reads it: zip structure, deflate stream, early end
_DAMAGED = (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error)


def load(path: str | os.PathLike) -> dict:
    """Read and check an .npz file of sources and latents.

    The file is read without unpickling (``allow_pickle=False``): an archive
    holding object arrays is refused, never loaded unsafely."""
    path = Path(path)
    if path.is_dir():
        raise UserError(f"{path} is a directory; expected {EXPECTED}")
    if not path.is_file():
        raise FileNotFoundError(f"no such file: {path}")
    with open(path, "rb") as f:
        head = f.read(len(_NPY_MAGIC))
    if head.startswith(_NPY_MAGIC):
        raise UserError(f"{path} holds one array (.npy), not {EXPECTED}; save it with numpy.savez")
    if not head.startswith(_ZIP_MAGIC):
        what = "is empty" if not head else "is not a zip archive"
        raise UserError(f"{path} {what}; expected {EXPECTED}")
    try:
        data = np.load(path, allow_pickle=False)
    except _DAMAGED:
        raise UserError(f"{path} is a damaged or truncated archive; expected {EXPECTED}") from None
    with data:
        return _read(path, data)


def _member(data, path: Path, key: str) -> np.ndarray:
    """Array ``key`` of the archive; UserError naming it when it cannot be read safely."""
    try:
        _check_declared_size(data, path, key)
        return data[key]
    except UserError:
        raise
    except ValueError as err:
        if "allow_pickle" in str(err) or "pickle" in str(err):  # an object array: never unpickled
            raise UserError(
                f"'{key}' in {path} is an array of Python objects, which is not read; expected an array "
                "of numbers or strings"
            ) from None
        raise UserError(f"'{key}' in {path} cannot be read: the archive is damaged ({err})") from None
    except _DAMAGED:
        raise UserError(f"'{key}' in {path} cannot be read: the archive is damaged or truncated") from None
    except MemoryError:
        raise UserError(f"'{key}' in {path} is too large to load into this machine's memory") from None


def _check_declared_size(data, path: Path, key: str) -> None:
    """UserError when the member's .npy header declares more bytes than the member holds.

    numpy allocates the declared shape before it reads the data: a damaged or
    hostile header (shape (10**12, 2) over 64 bytes) would otherwise ask for
    terabytes. The archive's own size of the member is the bound."""
    name = f"{key}.npy" if f"{key}.npy" in data.zip.namelist() else key
    with data.zip.open(name) as f:
        version = np.lib.format.read_magic(f)
        if version not in ((1, 0), (2, 0)):
            return  # numpy's own reader names what it does not know
        read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, _, dtype = read_header(f)
        held = data.zip.getinfo(name).file_size - f.tell()
    if dtype.hasobject:
        return  # refused as a pickled array when read, before any allocation
    declared = math.prod(shape) * dtype.itemsize
    if declared > held:
        raise UserError(
            f"'{key}' in {path} declares shape {shape} of {dtype} ({declared:,} bytes) but holds {held:,} bytes: "
            "the archive is damaged"
        )


def _read(path: Path, data) -> dict:
    missing = [k for k in ("sources", "latents") if k not in data.files]
    if missing:
        raise UserError(f"{path} lacks array(s) {missing}; it holds {sorted(data.files)}")
    out = {"sources": _member(data, path, "sources"), "latents": _member(data, path, "latents")}
    out["discrete_latents"] = None
    if "discrete_latents" in data.files:
        flag = np.asarray(_member(data, path, "discrete_latents"))
        if flag.size != 1 or not (flag.dtype == bool or np.issubdtype(flag.dtype, np.integer)):
            raise UserError(
                f"'discrete_latents' in {path} must be one bool, got dtype {flag.dtype} and shape {flag.shape}"
            )
        out["discrete_latents"] = bool(flag.reshape(-1)[0])
    for key in ("sources", "latents"):
        if out[key].ndim != 2:
            raise UserError(f"'{key}' in {path} must be 2-D (n_samples, n_columns), got shape {out[key].shape}")
    out["source_names"] = _names(data, path, "source_names", out["sources"].shape[1])
    out["latent_names"] = _names(data, path, "latent_names", out["latents"].shape[1])
    _check_factor_labels(path, out["sources"], out["source_names"])
    return out


def _check_factor_labels(path: Path, sources: np.ndarray, names: list[str] | None) -> None:
    """UserError when a source column looks continuous rather than a factor's labels.

    Every metric here treats a source as a discrete factor: its distinct values
    are classes. A column with more distinct values than half its samples
    (scikit-learn's rule for a target that "could represent a regression
    problem", applied from 21 samples on) gives each class a sample or two,
    and the scores degenerate to zeros with numerical warnings."""
    n = sources.shape[0]
    if n <= 20:
        return
    for j in range(sources.shape[1]):
        try:
            distinct = len(np.unique(sources[:, j]))
        except TypeError:  # unorderable labels: the metrics' own checks name them
            continue
        if distinct > round(0.5 * n):
            name = f" ({names[j]!r})" if names else ""
            raise UserError(
                f"source column {j}{name} in {path} has {distinct} distinct values in {n} samples: sources must be "
                "discrete factor labels, each shared by many samples, not continuous values (bin them first, "
                "e.g. with numpy.digitize)"
            )


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
    """The metrics check their arrays (NaN, too few samples...) with ValueError or TypeError; the
    options were checked when parsed, so what is left is the file's: its name leads the line."""
    try:
        yield
    except (ValueError, TypeError) as err:
        raise UserError(f"{file}: {err}") from None


def run(args: argparse.Namespace) -> int:
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
