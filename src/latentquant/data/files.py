"""Loaders for the public ground-truth-factor datasets (``latentquant data fetch NAME`` downloads them).

Each loader finds its file from ``path=`` or under ``root`` (default
``$LATENTQUANT_DATA``, else ``~/.cache/latentquant``):

    name       file under root                                       published at
    dsprites   dsprites_ndarray_co1sh3sc6or40x32y32_64x64.npz|.hdf5  github.com/deepmind/dsprites-dataset
    shapes3d   3dshapes.h5                                           deepmind/3d-shapes
    mpi3d      real3d_complicated_shapes_ordered.npz, mpi3d_real.npz,
               mpi3d_realistic.npz or mpi3d_toy.npz                  rr-learning/disentanglement_dataset
    falcor3d   Falcor3D_down128/ (images/NNNNNN.png, train-rec.labels) NVlabs/High-res-disentanglement-datasets
    isaac3d    Isaac3D_down128/  (images/NNNNNN.png, labels.npy)       NVlabs/High-res-disentanglement-datasets

File layouts (checked on load; a wrong one raises ValueError naming the file):

* dSprites npz: ``imgs`` (N, 64, 64) uint8 in {0, 1}, ``latents_classes``
  (N, 6) int with colour first (dropped). The hdf5 release stores the same
  arrays as ``imgs`` and ``latents/classes``. Images are held bit-packed in
  memory (N * 512 bytes: 377 MB for the full file), read in slabs.
* 3dshapes: ``images`` (N, 64, 64, 3) uint8 and ``labels`` (N, 6) float
  values (floor, wall, object hue on linspace(0, 0.9, 10), scale on
  linspace(0.75, 1.25, 8), shape 0..3, orientation on linspace(-30, 30, 15)),
  matched to the nearest grid value. Images are read lazily from the h5.
* MPI3D (Gondal et al. 2019): npz with ``images`` (N, 64, 64, 3) uint8 in
  factor order; N = 1,036,800 -> sizes (6, 6, 2, 3, 3, 40, 40) (toy,
  realistic, real), N = 460,800 -> (4, 4, 2, 3, 3, 40, 40) (complex shapes).
  An uncompressed (stored) npz member is memory-mapped in place; a
  compressed one is extracted once to ``<root>/extracted/<stem>.images.npy``
  (atomic write) and memory-mapped from there.
* Falcor3D / Isaac3D (Nie et al. 2020): ``images/{i:06d}.png`` (128 px) and
  a NumPy ``.npy`` label array (N, K) of factor values normalised to [0, 1],
  value = class / (size - 1); image i has label row i. Images are resized to
  64 px with a box filter (exact 2 x 2 averaging from 128 px); ``cache=True``
  decodes them once into a memory-mapped uint8 .npy under ``<root>/extracted``.

Files with per-image labels (dsprites, shapes3d, falcor3d, isaac3d) may hold
any subset of the factor grid.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import warnings
import zipfile
from pathlib import Path

import numpy as np

from latentquant._atomic import atomic_open, atomic_path
from latentquant._images import IMAGE_SIZE
from latentquant._optional import require
from latentquant.data.base import FactorDataset, data_root
from latentquant.data.registry import register

DSPRITES_STEM = "dsprites_ndarray_co1sh3sc6or40x32y32_64x64"
URLS = {
    "dsprites": "https://github.com/deepmind/dsprites-dataset",
    "shapes3d": "https://deepmind/3d-shapes (gs://3d-shapes/3dshapes.h5)",
    "mpi3d": "https://rr-learning/disentanglement_dataset",
    "falcor3d": "https://NVlabs/High-res-disentanglement-datasets (Falcor3D_128x128)",
    "isaac3d": "https://NVlabs/High-res-disentanglement-datasets (Isaac3D_128x128)",
}


def fetch_command(name: str, root=None, variant: str | None = None) -> str:
    """The ``latentquant data fetch`` command that puts dataset ``name`` under ``root``."""
    cmd = f"latentquant data fetch {name}"
    if name == "mpi3d":
        cmd += f" --variant {variant or 'toy'}"
    if root is not None:
        cmd += f" --root {Path(root).expanduser()}"
    return cmd


def _find(name: str, root, path, candidates: list[str], variant: str | None = None) -> Path:
    """The file or folder to read: ``path`` if given, else the first candidate under root."""
    if path is not None:
        p = Path(path).expanduser()
        if not p.exists():
            raise FileNotFoundError(f"{name}: {p} does not exist; the dataset is published at {URLS[name]}")
        return p
    base = data_root(root)
    for c in candidates:
        if (base / c).exists():
            return base / c
    looked = ", ".join(str(base / c) for c in candidates)
    others = " (or another variant)" if name == "mpi3d" and variant is None else ""
    raise FileNotFoundError(
        f"{name}: not found, looked for {looked}; run `{fetch_command(name, root, variant)}`"
        f"{others}, or download it from {URLS[name]} and place it there "
        f"(or pass path=, or set LATENTQUANT_DATA)"
    )


def _h5py():
    """h5py, imported on demand (an optional package: the ``data`` extra), else MissingExtra naming it."""
    return require("h5py", "data", "reading the public dataset files")


def _nhwc_to_nchw(x: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(x.transpose(0, 3, 1, 2))


# ------------------------------------------------------------------- dSprites
def _read_npy_header(fp):
    """(shape, fortran_order, dtype) of the .npy stream ``fp``, left at the data."""
    version = np.lib.format.read_magic(fp)
    if version == (1, 0):
        return np.lib.format.read_array_header_1_0(fp)
    if version == (2, 0):
        return np.lib.format.read_array_header_2_0(fp)
    raise ValueError(f"unsupported .npy format version {version}")


def _check_binary_images(imgs_shape, dtype, source) -> int:
    if len(imgs_shape) != 3 or tuple(imgs_shape[1:]) != (64, 64):
        raise ValueError(f"{source}: 'imgs' must have shape (N, 64, 64), got {tuple(imgs_shape)}")
    if np.dtype(dtype) != np.uint8:
        raise ValueError(f"{source}: 'imgs' must be uint8, got {dtype}")
    return int(imgs_shape[0])


def _pack_slab(slab: np.ndarray, source) -> np.ndarray:
    if slab.size and slab.max() > 1:
        raise ValueError(f"{source}: 'imgs' must hold 0/1 pixels, found value {int(slab.max())}")
    return np.packbits(slab.astype(bool), axis=-1)  # (n, 64, 8)


@register("dsprites")
class DSprites(FactorDataset):
    """The public dSprites file (npz or hdf5), bit-packed in memory.

    Matthey, Higgins, Hassabis & Lerchner (2017), "dSprites: Disentanglement
    testing Sprites dataset", https://github.com/deepmind/dsprites-dataset.
    """

    name = "dsprites"
    factor_names = ("shape", "scale", "orientation", "posX", "posY")
    factor_sizes = (3, 6, 40, 32, 32)
    num_channels = 1
    factor_values = {
        "shape": ("square", "ellipse", "heart"),
        "scale": np.linspace(0.5, 1, 6),
        "orientation": np.linspace(0, 2 * np.pi, 40),
        "posX": np.linspace(0, 1, 32),
        "posY": np.linspace(0, 1, 32),
    }
    SLAB = 16384

    def __init__(self, root=None, path=None):
        self.path = _find(self.name, root, path, [f"{DSPRITES_STEM}.npz", f"{DSPRITES_STEM}.hdf5"])
        h5py = _h5py()
        if self.path.is_file() and h5py.is_hdf5(self.path):
            packed, classes = self._read_hdf5(self.path)
        elif zipfile.is_zipfile(self.path):
            packed, classes = self._read_npz(self.path)
        else:
            raise ValueError(f"dsprites: {self.path} is neither an npz (zip) nor an hdf5 file")
        if classes.ndim != 2 or classes.shape[1] != 6:
            raise ValueError(
                f"dsprites: {self.path}: latent classes must have shape (N, 6) (colour first), got {classes.shape}"
            )
        if len(classes) != len(packed):
            raise ValueError(f"dsprites: {self.path}: {len(packed)} images but {len(classes)} label rows")
        self._packed = packed
        self._set_labels(classes[:, 1:], source=f"dsprites: {self.path}")

    def _read_npz(self, path):
        with zipfile.ZipFile(path) as zf:
            names = set(zf.namelist())
            for key in ("imgs", "latents_classes"):
                if f"{key}.npy" not in names:
                    raise ValueError(
                        f"dsprites: {path} has no key {key!r} (keys: "
                        f"{', '.join(sorted(n.removesuffix('.npy') for n in names))})"
                    )
            with zf.open("imgs.npy") as fp:  # streamed: never the 3 GB array at once
                shape, fortran, dtype = _read_npy_header(fp)
                n = _check_binary_images(shape, dtype, f"dsprites: {path}")
                if fortran:
                    raise ValueError(f"dsprites: {path}: 'imgs' is stored in Fortran order")
                packed = np.empty((n, 64, 8), np.uint8)
                for start in range(0, n, self.SLAB):
                    count = min(self.SLAB, n - start)
                    buf = fp.read(count * 4096)
                    if len(buf) != count * 4096:
                        raise ValueError(f"dsprites: {path}: 'imgs' is truncated")
                    slab = np.frombuffer(buf, np.uint8).reshape(count, 64, 64)
                    packed[start : start + count] = _pack_slab(slab, f"dsprites: {path}")
            with zf.open("latents_classes.npy") as fp:
                classes = np.lib.format.read_array(fp, allow_pickle=False)
        return packed, np.asarray(classes)

    def _read_hdf5(self, path):
        h5py = _h5py()
        with h5py.File(path, "r") as f:
            if "imgs" not in f or "latents/classes" not in f:
                raise ValueError(
                    f"dsprites: {path} must hold datasets 'imgs' and 'latents/classes' "
                    f"(found {', '.join(sorted(f.keys()))})"
                )
            imgs = f["imgs"]
            n = _check_binary_images(imgs.shape, imgs.dtype, f"dsprites: {path}")
            packed = np.empty((n, 64, 8), np.uint8)
            for start in range(0, n, self.SLAB):
                packed[start : start + self.SLAB] = _pack_slab(imgs[start : start + self.SLAB], f"dsprites: {path}")
            classes = np.asarray(f["latents/classes"])
        return packed, classes

    def _images(self, idx):
        bits = np.unpackbits(self._packed[idx], axis=-1).view(bool)  # (n, 64, 64)
        return bits[:, None]


# ------------------------------------------------------------------- Shapes3D
SHAPES3D_GRIDS = (
    np.linspace(0, 0.9, 10),
    np.linspace(0, 0.9, 10),
    np.linspace(0, 0.9, 10),
    np.linspace(0.75, 1.25, 8),
    np.arange(4.0),
    np.linspace(-30, 30, 15),
)


def values_to_classes(values: np.ndarray, grids, names, source, rtol: float = 0.05) -> np.ndarray:
    """Map float factor values ``(N, K)`` to the index of the nearest grid value.

    A value farther than ``rtol`` times the grid spacing from every grid
    value raises ValueError naming the factor, the row and the value.
    """
    out = np.empty(values.shape, np.int64)
    for k, grid in enumerate(grids):
        col = values[:, k]
        j = np.clip(np.searchsorted(grid, col), 1, len(grid) - 1)
        nearer_left = np.abs(col - grid[j - 1]) <= np.abs(col - grid[j])
        cls = np.where(nearer_left, j - 1, j)
        err = np.abs(col - grid[cls])
        tol = rtol * np.min(np.diff(grid))
        if not np.all(err <= tol):  # also catches NaN
            row = int(np.argmax(~(err <= tol)))
            raise ValueError(
                f"{source}: {names[k]} value {float(col[row])!r} in row {row} is not on the "
                f"grid {np.round(grid, 4).tolist()}"
            )
        out[:, k] = cls
    return out


@register("shapes3d")
class Shapes3D(FactorDataset):
    """The public 3dshapes file, read lazily from the h5.

    Burgess & Kim (2018), "3D Shapes Dataset", https://deepmind/3d-shapes.
    """

    name = "shapes3d"
    factor_names = ("floor_hue", "wall_hue", "object_hue", "scale", "shape", "orientation")
    factor_sizes = (10, 10, 10, 8, 4, 15)
    num_channels = 3
    factor_values = dict(zip(factor_names, SHAPES3D_GRIDS))

    def __init__(self, root=None, path=None):
        h5py = _h5py()
        self.path = _find(self.name, root, path, ["3dshapes.h5"])
        if not (self.path.is_file() and h5py.is_hdf5(self.path)):
            raise ValueError(f"shapes3d: {self.path} is not an hdf5 file")
        with h5py.File(self.path, "r") as f:
            if "images" not in f or "labels" not in f:
                raise ValueError(
                    f"shapes3d: {self.path} must hold datasets 'images' and 'labels' "
                    f"(found {', '.join(sorted(f.keys()))})"
                )
            images, labels = f["images"], np.asarray(f["labels"], dtype=np.float64)
            if images.ndim != 4 or images.shape[1:] != (64, 64, 3) or images.dtype != np.uint8:
                raise ValueError(
                    f"shapes3d: {self.path}: 'images' must be uint8 (N, 64, 64, 3), got {images.dtype} {images.shape}"
                )
            if labels.ndim != 2 or labels.shape != (images.shape[0], 6):
                raise ValueError(
                    f"shapes3d: {self.path}: 'labels' must have shape ({images.shape[0]}, 6), got {labels.shape}"
                )
        classes = values_to_classes(labels, SHAPES3D_GRIDS, self.factor_names, f"shapes3d: {self.path}")
        self._set_labels(classes, source=f"shapes3d: {self.path}")
        self._h5 = None
        self._pid = None

    def _dataset(self):
        # One handle per process: h5py handles must not cross a fork.
        if self._h5 is None or self._pid != os.getpid():
            h5py = _h5py()
            self._h5, self._pid = h5py.File(self.path, "r"), os.getpid()
        return self._h5["images"]

    def __getstate__(self):
        state = self.__dict__.copy()
        state["_h5"] = state["_pid"] = None
        return state

    def _images(self, idx):
        uniq, inverse = np.unique(idx, return_inverse=True)  # h5py wants increasing indices
        block = self._dataset()[uniq] if len(uniq) > 1 else self._dataset()[int(uniq[0])][None]
        return _nhwc_to_nchw(block[inverse])


# ---------------------------------------------------------------------- MPI3D
MPI3D_FILES = {
    "complex": "real3d_complicated_shapes_ordered.npz",
    "real": "mpi3d_real.npz",
    "realistic": "mpi3d_realistic.npz",
    "toy": "mpi3d_toy.npz",
}
MPI3D_SIZES = {460_800: (4, 4, 2, 3, 3, 40, 40), 1_036_800: (6, 6, 2, 3, 3, 40, 40)}


def npz_member_memmap(path: Path, member: str, cache_dir: Path) -> np.ndarray:
    """Memory-map array ``member`` (e.g. ``"images"``) of the npz ``path`` read-only.

    A stored (uncompressed) zip member is mapped in place at its data offset.
    A deflated member cannot be mapped, so it is extracted once, streaming,
    to ``cache_dir/<stem>.<member>.npy`` (temp file + os.replace, so
    concurrent processes never see a partial file) and mapped from there.
    """
    with zipfile.ZipFile(path) as zf:
        try:
            info = zf.getinfo(f"{member}.npy")
        except KeyError:
            keys = ", ".join(sorted(n.removesuffix(".npy") for n in zf.namelist()))
            raise ValueError(f"{path} has no key {member!r} (keys: {keys})") from None
        if info.compress_type == zipfile.ZIP_STORED:
            with open(path, "rb") as fp:
                fp.seek(info.header_offset)
                local = fp.read(30)
                if local[:4] != b"PK\x03\x04":
                    raise ValueError(f"{path}: bad zip local header for {member}.npy")
                name_len = int.from_bytes(local[26:28], "little")
                extra_len = int.from_bytes(local[28:30], "little")
                fp.seek(info.header_offset + 30 + name_len + extra_len)
                shape, fortran, dtype = _read_npy_header(fp)
                offset = fp.tell()
            return np.memmap(path, dtype=dtype, mode="r", offset=offset, shape=shape, order="F" if fortran else "C")
        target = cache_dir / f"{path.stem}.{member}.npy"
        if not (target.exists() and target.stat().st_size == info.file_size):
            warnings.warn(
                f"{path}: '{member}' is compressed and cannot be memory-mapped; extracting it "
                f"once to {target} ({info.file_size / 1e9:.1f} GB)",
                stacklevel=3,
            )
            with atomic_open(target, "wb") as out, zf.open(info) as src:
                shutil.copyfileobj(src, out, 16 << 20)
    return np.load(target, mmap_mode="r")


@register("mpi3d")
class MPI3D(FactorDataset):
    """An MPI3D npz (``images`` only, in factor order), memory-mapped.

    Gondal et al. (2019), "On the Transfer of Inductive Bias from Simulation
    to the Real World: a New Disentanglement Dataset", NeurIPS;
    https://rr-learning/disentanglement_dataset.

    ``variant`` picks the file under root (complex, real, realistic, toy);
    by default the first present, in that order. ``path`` may also name an
    extracted ``images`` ``.npy``. ``factor_sizes`` (7 sizes, or "a,b,...")
    overrides the sizes inferred from the image count.
    """

    name = "mpi3d"
    factor_names = (
        "object_color",
        "object_shape",
        "object_size",
        "camera_height",
        "background_color",
        "horizontal_axis",
        "vertical_axis",
    )
    factor_sizes = (6, 6, 2, 3, 3, 40, 40)
    num_channels = 3

    def __init__(self, root=None, path=None, variant: str | None = None, factor_sizes=None):
        if variant is not None and variant not in MPI3D_FILES:
            raise ValueError(f"mpi3d: unknown variant {variant!r}; expected one of {', '.join(MPI3D_FILES)}")
        candidates = [MPI3D_FILES[variant]] if variant else list(MPI3D_FILES.values())
        self.path = _find(self.name, root, path, candidates, variant)
        self._cache_dir = data_root(root) / "extracted"
        images = self._open()
        if images.ndim != 4 or images.shape[1:] != (64, 64, 3) or images.dtype != np.uint8:
            raise ValueError(
                f"mpi3d: {self.path}: 'images' must be uint8 (N, 64, 64, 3), got {images.dtype} {images.shape}"
            )
        n = images.shape[0]
        if factor_sizes is not None:  # e.g. a cropped copy of a release, still in factor order
            sizes = tuple(int(x) for x in (factor_sizes.split(",") if isinstance(factor_sizes, str) else factor_sizes))
            if len(sizes) != 7 or min(sizes) < 1 or int(np.prod(sizes)) != n:
                raise ValueError(
                    f"mpi3d: factor_sizes must be 7 positive sizes whose product is the image count {n:,}, got {sizes}"
                )
            self.factor_sizes = sizes
        elif n in MPI3D_SIZES:
            self.factor_sizes = MPI3D_SIZES[n]
        else:
            raise ValueError(
                f"mpi3d: {self.path} holds {n:,} images; expected "
                f"{' or '.join(f'{c:,}' for c in MPI3D_SIZES)} (the full factor grid)"
            )

    def _open(self) -> np.ndarray:
        if getattr(self, "_mm", None) is None:
            if self.path.suffix == ".npy":
                self._mm = np.load(self.path, mmap_mode="r")
            elif zipfile.is_zipfile(self.path):
                try:
                    self._mm = npz_member_memmap(self.path, "images", self._cache_dir)
                except ValueError as err:
                    raise ValueError(f"mpi3d: {err}") from None
            else:
                raise ValueError(f"mpi3d: {self.path} is neither an npz nor an npy file")
        return self._mm

    def __getstate__(self):
        state = self.__dict__.copy()
        state["_mm"] = None  # never pickle the mapped array's contents
        return state

    def _images(self, idx):
        return _nhwc_to_nchw(self._open()[idx])


# --------------------------------------------------------- Falcor3D, Isaac3D
class _PngFolder(FactorDataset):
    """A folder ``images/{i:06d}.png`` plus a label array of values in [0, 1].

    Decoding a 128 px PNG costs about a millisecond. With ``cache=True`` all
    images are decoded and resized once into ``<root>/extracted/<name>_64_<tag>.npy``
    (uint8 (N, 64, 64, 3): 2.9 GB for Falcor3D, 9.1 GB for Isaac3D; written
    to a temp file, then os.replace) and memory-mapped from there.
    """

    folder: str = ""
    labels_file: str = ""
    num_channels = 3
    CACHE_CHUNK = 1024

    def __init__(self, root=None, path=None, cache: bool = False):
        self.path = _find(self.name, root, path, [self.folder])
        tag = hashlib.sha1(str(self.path.resolve()).encode()).hexdigest()[:8]  # one cache per source folder
        self._cache_file = data_root(root) / "extracted" / f"{self.name}_{IMAGE_SIZE}_{tag}.npy"
        if not self.path.is_dir():
            raise ValueError(f"{self.name}: {self.path} must be a folder holding images/ and {self.labels_file}")
        labels_path = self.path / self.labels_file
        if not labels_path.exists():
            raise FileNotFoundError(
                f"{self.name}: {labels_path} not found; run `{fetch_command(self.name, root)}` "
                f"(the dataset is published at {URLS[self.name]})"
            )
        if not (self.path / "images").is_dir():
            raise FileNotFoundError(
                f"{self.name}: {self.path / 'images'} not found; run "
                f"`{fetch_command(self.name, root)}` (the dataset is published at "
                f"{URLS[self.name]})"
            )
        try:
            values = np.load(labels_path, allow_pickle=False)
        except (ValueError, OSError, EOFError) as err:
            raise ValueError(f"{self.name}: {labels_path} is not a readable .npy array ({err})") from None
        if values.ndim != 2 or values.shape[1] != self.num_factors:
            raise ValueError(f"{self.name}: {labels_path} must have shape (N, {self.num_factors}), got {values.shape}")
        # values are class / (size - 1) (NVlabs/High-res-disentanglement-datasets README)
        grids = [np.linspace(0.0, 1.0, s) for s in self.factor_sizes]
        classes = values_to_classes(values.astype(np.float64), grids, self.factor_names, f"{self.name}: {labels_path}")
        self._set_labels(classes, source=f"{self.name}: {labels_path}")
        self._mm = None
        if cache:
            self._mm = self._build_cache()

    def _build_cache(self) -> np.ndarray:
        shape = (len(self), IMAGE_SIZE, IMAGE_SIZE, 3)
        target = self._cache_file
        if target.exists():
            try:
                mm = np.load(target, mmap_mode="r")
                if mm.shape == shape and mm.dtype == np.uint8:
                    return mm
            except (ValueError, OSError):
                pass
        warnings.warn(f"{self.name}: decoding {len(self):,} images once into {target}", stacklevel=3)
        with atomic_path(target) as tmp:
            out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=shape)
            for start in range(0, len(self), self.CACHE_CHUNK):
                stop = min(start + self.CACHE_CHUNK, len(self))
                out[start:stop] = np.stack([self._load_png(i) for i in range(start, stop)])
            out.flush()
            del out
        return np.load(target, mmap_mode="r")

    def __getstate__(self):
        state = self.__dict__.copy()
        state["_mm"] = None if self._mm is None else "reopen"
        return state

    def image_path(self, i: int) -> Path:
        return self.path / "images" / f"{i:06d}.png"

    def _load_png(self, i: int) -> np.ndarray:
        Image = require("PIL.Image", "data", f"reading {self.name}'s images")
        file = self.image_path(i)
        try:
            with Image.open(file) as im:
                im = im.convert("RGB")
                if im.width != im.height:
                    raise ValueError(f"{self.name}: {file} is {im.width}x{im.height}, expected a square image")
                if im.size != (IMAGE_SIZE, IMAGE_SIZE):
                    # box filter: the mean of the source pixels under each target pixel
                    im = im.resize((IMAGE_SIZE, IMAGE_SIZE), Image.Resampling.BOX)
                return np.asarray(im, dtype=np.uint8)
        except FileNotFoundError:
            raise FileNotFoundError(f"{self.name}: image {file} not found") from None
        except (Image.UnidentifiedImageError, OSError, SyntaxError) as err:
            raise ValueError(f"{self.name}: {file} is not a readable image ({err})") from None

    def _images(self, idx):
        if isinstance(self._mm, str):  # unpickled in a worker: map the cache again
            self._mm = np.load(self._cache_file, mmap_mode="r")
        if self._mm is not None:
            return _nhwc_to_nchw(self._mm[idx])
        return _nhwc_to_nchw(np.stack([self._load_png(int(i)) for i in idx]))


@register("falcor3d")
class Falcor3D(_PngFolder):
    """Falcor3D at 128 px resized to 64 (Nie et al. 2020, "Semi-Supervised
    StyleGAN for Disentanglement Learning", ICML;
    https://NVlabs/High-res-disentanglement-datasets)."""

    name = "falcor3d"
    folder = "Falcor3D_down128"
    labels_file = "train-rec.labels"
    factor_names = (
        "lighting_intensity",
        "lighting_x_dir",
        "lighting_y_dir",
        "lighting_z_dir",
        "camera_x_pos",
        "camera_y_pos",
        "camera_z_pos",
    )
    factor_sizes = (5, 6, 6, 6, 6, 6, 6)


@register("isaac3d")
class Isaac3D(_PngFolder):
    """Isaac3D at 128 px resized to 64 (Nie et al. 2020; factor order of the
    image index in https://NVlabs/High-res-disentanglement-datasets)."""

    name = "isaac3d"
    folder = "Isaac3D_down128"
    labels_file = "labels.npy"
    factor_names = (
        "object_shape",
        "robot_x_move",
        "robot_y_move",
        "camera_height",
        "object_scale",
        "lighting_intensity",
        "lighting_y_dir",
        "object_color",
        "wall_color",
    )
    factor_sizes = (3, 8, 5, 4, 4, 4, 6, 4, 4)
