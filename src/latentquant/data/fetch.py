"""Download the public datasets into the data root, verified, in the layout the loaders read.

    latentquant data fetch NAME [--variant V] [--root DIR] [--archive FILE]
    latentquant data fetch --list [--verify] [--root DIR]

pooch does the work: ``REGISTRY`` maps each file to its published URL and
hash, and ``pooch.Pooch.fetch`` streams it (with a tqdm progress bar) to a
temporary file beside the destination, checks the hash and only then moves it
into place, so a loader never sees a partial or corrupt download. A file that
is already present with the right hash is not downloaded again; one with
another hash is the user's and is never overwritten. pooch has no
HTTP range requests: an interrupted download is discarded and restarts from
zero (``retries`` times at once, otherwise on the next ``fetch``).

Files without a published hash are downloaded under ``<root>/.incoming/``,
checked as far as the loader can check them (array shapes, label grid, image
count), and only then moved, or extracted with ``pooch.Unzip`` and moved, to
where the loader reads.

``$LATENTQUANT_DATA_URL`` replaces every published location by
``$LATENTQUANT_DATA_URL/<remote name>`` (a mirror, or the tests' local server).
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from latentquant._atomic import atomic_write_text
from latentquant._optional import require
from latentquant.data.base import data_root, default_root
from latentquant.data.files import DSPRITES_STEM, MPI3D_FILES, _read_npy_header
from latentquant.data.registry import get_dataset

BASE_URL_ENV = "LATENTQUANT_DATA_URL"
INCOMING = ".incoming"  # downloads without a published hash wait here until checked
STAMPS = ".latentquant-fetch.json"  # files whose hash a fetch verified: {file: {hash, size, mtime_ns}}


@dataclass(frozen=True)
class Remote:
    """One published file and where its loader reads it.

    ``target`` is the file (or, for an archive, the folder inside it) the
    loader reads under the data root; ``remote`` the name a mirror serves it
    under. ``known_hash`` is pooch's ``"alg:hex"`` or None where nothing is
    published; ``size`` the published size in bytes, or None.
    """

    dataset: str
    variant: str | None
    target: str
    remote: str
    url: str
    known_hash: str | None
    size: int | None
    source: str
    archive: bool = False
    note: str = ""
    approx_size: str = ""

    @property
    def label(self) -> str:
        return self.dataset if self.variant is None else f"{self.dataset} {self.variant}"

    def command(self, root: Path | None = None) -> str:
        cmd = f"latentquant data fetch {self.dataset}" + (f" --variant {self.variant}" if self.variant else "")
        return cmd + (f" --root {root}" if root is not None and root != default_root() else "")


_TFDS = "https://github.com/tensorflow/datasets/blob/master/tensorflow_datasets/datasets"
_DISENT = (
    "github.com/nmichlo/disent, disent/dataset/data/_groundtruth__mpi3d.py ('full' md5 of the whole file, "
    "computed on the earlier storage.googleapis.com/disentanglement_dataset copy)"
)
_MPI3D_HF = "https://huggingface.co/datasets/waleedgondal/mpi3d/resolve/main"
_RR = "https://github.com/rr-learning/disentanglement_dataset (README, Downloads)"
_NV = "https://github.com/NVlabs/High-res-disentanglement-datasets (README, Links to datasets)"
_DRIVE_NOTE = (
    "published on Google Drive, which may answer a large download with a confirmation page instead of the file"
)


def _drive(file_id: str) -> str:
    # The direct-download form of the published drive.google.com link (same file id).
    return f"https://drive.usercontent.google.com/download?id={file_id}&export=download&confirm=t"


# Sources of every URL, hash and size are cited per entry; None means none is published.
REGISTRY: tuple[Remote, ...] = (
    Remote(
        "dsprites",
        None,
        f"{DSPRITES_STEM}.hdf5",
        f"{DSPRITES_STEM}.hdf5",
        f"https://github.com/deepmind/dsprites-dataset/blob/master/{DSPRITES_STEM}.hdf5?raw=true",
        "sha256:729fa22e884c9c500e1f17415d580746b4c5894fbbb780a1319bbcfa39a745bb",
        28_024_106,
        f"{_TFDS}/dsprites/checksums.tsv",
    ),
    Remote(
        "shapes3d",
        None,
        "3dshapes.h5",
        "3dshapes.h5",
        "https://storage.googleapis.com/3d-shapes/3dshapes.h5",
        "sha256:0a0f6ed98baff276a50f3a081a7434d788da63cb135a98189b2a5b5769be1785",
        267_573_662,
        f"{_TFDS}/shapes3d/checksums.tsv",
    ),
    Remote(
        "mpi3d",
        "toy",
        MPI3D_FILES["toy"],
        MPI3D_FILES["toy"],
        f"{_MPI3D_HF}/{MPI3D_FILES['toy']}",
        "md5:55889cb7c7dfc655d6e0277beee88868",
        None,
        f"URL {_RR}; md5 {_DISENT}",
    ),
    Remote(
        "mpi3d",
        "realistic",
        MPI3D_FILES["realistic"],
        MPI3D_FILES["realistic"],
        f"{_MPI3D_HF}/{MPI3D_FILES['realistic']}",
        "md5:59a6225b88b635365f70c91b3e52f70f",
        None,
        f"URL {_RR}; md5 {_DISENT}",
    ),
    Remote(
        "mpi3d",
        "real",
        MPI3D_FILES["real"],
        MPI3D_FILES["real"],
        f"{_MPI3D_HF}/{MPI3D_FILES['real']}",
        "md5:0f33f609918fb5c97996692f91129802",
        None,
        f"URL {_RR}; md5 {_DISENT}",
    ),
    Remote(
        "mpi3d",
        "complex",
        MPI3D_FILES["complex"],
        MPI3D_FILES["complex"],
        _drive("1Tp8eTdHxgUMtsZv5uAoYAbJR1BOa_OQm"),
        None,
        None,
        f"URL {_RR}; no hash or size published",
        note=_DRIVE_NOTE,
    ),
    Remote(
        "falcor3d",
        None,
        "Falcor3D_down128",
        "Falcor3D_down128.zip",
        _drive("1XAQfFK1x6cpN1eiovbP0hVfLTm5SsSoJ"),
        None,
        None,
        f"URL {_NV} (Falcor3D_128x128); no hash or exact size published",
        archive=True,
        note=_DRIVE_NOTE,
        approx_size="about 3.7 GB",
    ),
    Remote(
        "isaac3d",
        None,
        "Isaac3D_down128",
        "Isaac3D_down128.zip",
        _drive("1OmQ1G2wnm6eTsSFGTKFZZAh5D3nQTW1B"),
        None,
        None,
        f"URL {_NV} (Isaac3D_128x128); no hash or exact size published",
        archive=True,
        note=_DRIVE_NOTE,
        approx_size="about 13 GB",
    ),
)

DATASETS = tuple(dict.fromkeys(r.dataset for r in REGISTRY))
# Image counts of the MPI3D releases (rr-learning/disentanglement_dataset README).
MPI3D_COUNTS = {"toy": 1_036_800, "realistic": 1_036_800, "real": 1_036_800, "complex": 460_800}


class FetchError(OSError):
    """A download that failed or could not be verified; the message is one line."""


def remotes(name: str, variant: str | None = None) -> list[Remote]:
    """The registry entries of dataset ``name`` (all its variants unless ``variant``)."""
    entries = [r for r in REGISTRY if r.dataset == name]
    if not entries:
        raise ValueError(f"no download for dataset {name!r}; fetchable: {', '.join(DATASETS)}")
    if variant is not None:
        variants = [r.variant for r in entries if r.variant]
        if not variants:
            raise ValueError(f"{name} has no variants (--variant is for mpi3d)")
        if variant not in variants:
            raise ValueError(f"{name}: unknown variant {variant!r}; expected one of {', '.join(variants)}")
        entries = [r for r in entries if r.variant == variant]
    return entries


def url_of(remote: Remote) -> str:
    """The published URL, or ``$LATENTQUANT_DATA_URL/<remote name>`` when that is set."""
    base = os.environ.get(BASE_URL_ENV)
    return f"{base.rstrip('/')}/{remote.remote}" if base else remote.url


def _pooch_module():
    """pooch, imported on demand (an optional package: the ``data`` extra), else MissingExtra naming it."""
    return require("pooch", "data", "latentquant data fetch")


# ------------------------------------------------------------------ checks
def _check_npz_images(path: Path, count: int) -> str:
    """Check the npz's ``images`` member is uint8 (count, 64, 64, 3), reading its header only."""
    try:
        with zipfile.ZipFile(path) as zf, zf.open("images.npy") as fp:
            shape, _, dtype = _read_npy_header(fp)
    except (zipfile.BadZipFile, KeyError, ValueError, OSError) as err:
        raise ValueError(f"{path} is not an npz holding 'images' ({err})") from None
    if tuple(shape) != (count, 64, 64, 3) or np.dtype(dtype) != np.uint8:
        raise ValueError(f"{path}: 'images' is {np.dtype(dtype)} {tuple(shape)}, expected uint8 {(count, 64, 64, 3)}")
    return f"images uint8 {tuple(shape)}"


def _check_png_folder(name: str, folder: Path) -> str:
    """Open ``folder`` with the loader (labels, factor grid) and check every image file is there."""
    try:
        ds = get_dataset(name, path=folder)
    except FileNotFoundError as err:  # a missing labels file or images/ folder: the content is wrong
        raise ValueError(str(err)) from None
    with os.scandir(folder / "images") as it:
        names = {e.name for e in it}
    missing = next((i for i in range(len(ds)) if f"{i:06d}.png" not in names), None)
    if missing is not None:
        raise ValueError(
            f"{name}: {folder / 'images'} holds {len(names):,} files; image {missing:06d}.png of {len(ds):,} is missing"
        )
    grid = int(np.prod(ds.factor_sizes))
    if len(ds) != grid:
        raise ValueError(f"{name}: {folder} labels {len(ds):,} images, expected the full grid of {grid:,}")
    return f"{len(ds):,} images and labels"


def check_layout(remote: Remote, path: Path) -> str:
    """What the loader can verify without a hash; ValueError when the file or folder is wrong."""
    if remote.archive:
        return _check_png_folder(remote.dataset, path)
    if remote.dataset == "mpi3d":
        return _check_npz_images(path, MPI3D_COUNTS[remote.variant])
    raise ValueError(f"no layout check for {remote.label}")  # hashed files need none


# ------------------------------------------------------------------ stamps
def _read_stamps(root: Path) -> dict:
    try:
        data = json.loads((root / STAMPS).read_text())
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def _stamp(root: Path, remote: Remote) -> None:
    """Record that the file's hash was verified (advisory: only --list reads it)."""
    try:
        st = (root / remote.target).stat()
        stamps = _read_stamps(root)
        stamps[remote.target] = {"hash": remote.known_hash, "size": st.st_size, "mtime_ns": st.st_mtime_ns}
        atomic_write_text(root / STAMPS, json.dumps(stamps, indent=1, sort_keys=True) + "\n")
    except OSError:
        pass


def _stamped(root: Path, remote: Remote) -> bool:
    """True when a fetch verified this exact file (same hash, size and mtime) earlier."""
    entry = _read_stamps(root).get(remote.target)
    try:
        st = (root / remote.target).stat()
    except OSError:
        return False
    return (
        isinstance(entry, dict)
        and entry.get("hash") == remote.known_hash
        and entry.get("size") == st.st_size
        and entry.get("mtime_ns") == st.st_mtime_ns
    )


# ------------------------------------------------------------------ status
def status(remote: Remote, root=None, verify: bool = False) -> str:
    """One word or phrase: missing / verified / present, not verified / WRONG ... / checked ..."""
    pooch = _pooch_module()

    root = data_root(root)
    path = root / remote.target
    if not path.exists():
        return "missing"
    if remote.known_hash is None:
        try:
            return f"present, checked ({check_layout(remote, path)}; no published hash)"
        except (ValueError, OSError) as err:
            return f"present, BROKEN: {str(err).splitlines()[0]}"
    size = path.stat().st_size
    if remote.size is not None and size != remote.size:
        return f"present, WRONG SIZE ({size:,} bytes, published {remote.size:,})"
    alg = remote.known_hash.split(":")[0]
    if verify:
        if pooch.file_hash(str(path), alg=alg) != remote.known_hash.split(":")[1]:
            return f"present, WRONG {alg}"
        _stamp(root, remote)
        return f"verified ({alg})"
    if _stamped(root, remote):
        return f"verified ({alg}, at fetch)"
    return "present, not verified (fetch or --verify checks it)"


def _size_text(remote: Remote) -> str:
    n = remote.size
    if n is None:
        return f"{remote.approx_size} (README)" if remote.approx_size else "not published"
    return f"{n / 1e9:.2f} GB" if n >= 1e9 else f"{n / 1e6:.1f} MB"


def list_lines(root=None, verify: bool = False) -> list[str]:
    """The ``fetch --list`` table: dataset, size, destination, status."""
    root = data_root(root)
    rows = [("dataset", "size", "destination", "status")]
    for r in REGISTRY:
        rows.append((r.label, _size_text(r), str(root / r.target), status(r, root, verify)))
    widths = [max(len(row[k]) for row in rows) for k in range(3)]
    return [f"{a:<{widths[0]}}  {b:<{widths[1]}}  {c:<{widths[2]}}  {d}" for a, b, c, d in rows]


# ------------------------------------------------------------------- fetch
def _manual(remote: Remote, root: Path) -> str:
    """The manual route, for messages that already name the URL."""
    dest = root / remote.target
    if remote.archive:
        return (
            f"download it by hand (a browser), then run `{remote.command(root)} --archive FILE` "
            f"to extract it into {dest}"
        )
    return f"download it by hand, put it at {dest}, then run `{remote.command(root)}` to verify it"


def _pooch(root: Path, fname: str, url: str, known_hash: str | None, retries: int):
    pooch = _pooch_module()

    pooch.get_logger().setLevel("WARNING")  # we print our own one-line messages
    return pooch.create(
        path=root, base_url="", registry={fname: known_hash}, urls={fname: url}, retry_if_failed=retries
    )


def _download(remote: Remote, root: Path, fname: str, known_hash, retries: int, progress: bool) -> tuple[Path, str]:
    """pooch.fetch ``fname`` (absent, or an unhashed download) under root; (path, pooch's action) or FetchError."""
    pooch = _pooch_module()
    import requests  # deferred: pooch's own dependency, optional like pooch

    url = url_of(remote)
    actions = []

    def note_action(path, action, _pooch):
        actions.append(action)
        return path

    try:
        path = _pooch(root, fname, url, known_hash, retries).fetch(
            fname, processor=note_action, downloader=pooch.HTTPDownloader(progressbar=progress)
        )
    except requests.exceptions.RequestException as err:
        reason = type(err).__name__ + (
            f" {err.response.status_code}" if getattr(err, "response", None) is not None else ""
        )
        raise FetchError(f"{remote.label}: could not download {url} ({reason}); {_manual(remote, root)}") from None
    except ValueError as err:  # pooch: the hash of the download does not match; it deleted the download
        raise FetchError(
            f"{remote.label}: {url}: {str(err).splitlines()[0]} (published in {remote.source}); "
            f"nothing was written to {root / fname}"
        ) from None
    except OSError as err:
        raise FetchError(f"{remote.label}: cannot write under {root} ({err})") from None
    return Path(path), actions[0]


def fetch(
    name: str, variant: str | None = None, root=None, archive=None, retries: int = 1, progress: bool = True, out=print
) -> list[Path]:
    """Download (or verify) dataset ``name`` into ``root``; returns the paths the loader reads.

    A hashed file already present with the right hash is not downloaded. An
    unhashed file or folder that passes the loader's checks is left alone.
    ``archive`` extracts a zip the user downloaded by hand (falcor3d, isaac3d)
    instead of downloading it. Raises FetchError (one line) on failure, and
    MissingExtra before anything else when pooch is not installed.
    """
    _pooch_module()  # first: a MissingExtra is a ValueError, which the checks below read as bad content
    root = data_root(root)
    entries = remotes(name, variant)
    if archive is not None and not entries[0].archive:
        raise ValueError(
            f"--archive is for the zip archives of {', '.join(r.dataset for r in REGISTRY if r.archive)}; "
            f"for {name}, put the file at {root / entries[0].target}"
        )
    done = []
    for remote in entries:
        if remote.known_hash is None:
            done.append(_fetch_unhashed(remote, root, archive, retries, progress, out))
            continue
        path = root / remote.target
        alg = remote.known_hash.split(":")[0]
        if path.exists():  # never overwritten: it may be the user's own file
            if not _pooch_module().hashes.hash_matches(str(path), remote.known_hash):
                raise FetchError(
                    f"{remote.label}: {path} exists but its {alg} does not match the one published in "
                    f"{remote.source}; it was left as it was: move it away and run "
                    f"`{remote.command(root)}` again"
                )
            out(f"{remote.label}: {path} already present, {alg} verified")
        else:
            out(f"{remote.label}: downloading {url_of(remote)}")
            path, _ = _download(remote, root, remote.target, remote.known_hash, retries, progress)
            out(f"{remote.label}: {path} downloaded, {alg} verified")
        _stamp(root, remote)
        done.append(path)
    return done


def _fetch_unhashed(remote: Remote, root: Path, archive, retries: int, progress: bool, out) -> Path:
    """Download to .incoming/, check what the loader can check, then move (or extract) into place."""
    dest = root / remote.target
    if dest.exists():
        try:
            what = check_layout(remote, dest)
        except (ValueError, OSError) as err:
            raise FetchError(
                f"{remote.label}: {dest} exists but fails the loader's checks "
                f"({str(err).splitlines()[0]}); move it away and run `{remote.command(root)}` again"
            ) from None
        out(f"{remote.label}: {dest} already present, checked: {what} (no published hash)")
        return dest
    url = url_of(remote)
    ours = archive is None
    if ours:
        if not (root / INCOMING / remote.remote).exists():
            out(f"{remote.label}: downloading {url} ({remote.note or 'no published hash'})")
        src, _ = _download(remote, root, f"{INCOMING}/{remote.remote}", None, retries, progress)
    else:
        src = Path(archive).expanduser()
        if not src.is_file():
            raise FileNotFoundError(f"{remote.label}: --archive {src} does not exist")
    try:
        if remote.archive:
            what = _extract(remote, root, src)
        else:
            what = check_layout(remote, src)
            os.replace(src, dest)
    except (ValueError, zipfile.BadZipFile, zlib.error, EOFError) as err:  # the content is wrong
        why = str(err).splitlines()[0] if str(err).strip() else type(err).__name__
        if not ours:
            raise FetchError(f"{remote.label}: {src} is not the dataset ({why})") from None
        src.unlink(missing_ok=True)
        raise FetchError(
            f"{remote.label}: the download from {url} is not the dataset ({why}); it was deleted; "
            f"{_manual(remote, root)}"
        ) from None
    except OSError as err:  # e.g. a full disk while extracting: the download itself is kept for the next try
        raise FetchError(
            f"{remote.label}: could not write {dest} ({err}); "
            + (f"the download is kept at {src}; " if ours else "")
            + f"free the space and run `{remote.command(root)}` again"
        ) from None
    if ours and src.exists():
        src.unlink()  # the archive, now extracted
    out(f"{remote.label}: {dest} ready, checked: {what} (no published hash)")
    return dest


def _extract(remote: Remote, root: Path, src: Path) -> str:
    """pooch.Unzip the archive's ``remote.target`` folder into a staging folder, check it, move it in place."""
    pooch = _pooch_module()

    if not zipfile.is_zipfile(src):
        raise ValueError(f"{src} is not a zip archive")
    staging = root / INCOMING / f"{remote.target}.extracting-{secrets.token_hex(4)}"
    try:
        pooch.Unzip(members=[remote.target], extract_dir=str(staging))(str(src), "download", None)
        folder = staging / remote.target
        if not folder.is_dir():
            raise ValueError(f"{src} holds no folder {remote.target}/")
        what = check_layout(remote, folder)
        try:
            os.replace(folder, root / remote.target)
        except OSError:
            if not (root / remote.target).is_dir():
                raise
            what = check_layout(remote, root / remote.target)  # another fetch finished first
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return what


def print_list(root=None, verify: bool = False, out=print) -> None:
    for line in list_lines(root, verify):
        out(line)
    if os.environ.get(BASE_URL_ENV):
        out(f"(downloads come from ${BASE_URL_ENV}={os.environ[BASE_URL_ENV]})")
