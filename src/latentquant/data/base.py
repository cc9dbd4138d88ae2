"""The ``FactorDataset`` interface and where public files live (the registry is in ``data/registry.py``).

A factor dataset holds images generated from a grid of discrete ground-truth
factors. Factor ``k`` takes ``factor_sizes[k]`` values, written as class
indices ``0 .. factor_sizes[k] - 1``. A *full* dataset holds one image per
combination, stored row-major (the last factor varies fastest), so image
``i`` has factors ``unravel_index(i, factor_sizes)``. A *labelled* dataset
(a public file holding any subset of the grid, possibly reordered) carries a
class-index label per image instead; its positions are looked up through
those labels.

Shapes: ``n`` images, ``C`` channels, ``K`` factors, 64 x 64 pixels.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import torch

from latentquant._images import IMAGE_SIZE
from latentquant.validation import check_instance, check_int


class FactorIndexError(IndexError, ValueError):
    """An index outside ``[0, len(dataset))``.

    Both an ``IndexError`` (so ``for x in dataset`` and ``Dataset`` protocols
    stop cleanly) and a ``ValueError`` (the project's bad-input convention).

    Examples
    --------
    >>> from latentquant.data import FactorIndexError, get_dataset
    >>> ds = get_dataset("sprites")
    >>> try:
    ...     ds[len(ds)]
    ... except FactorIndexError as err:
    ...     print(err)
    index 737280 is out of range for a dataset of length 737280
    >>> issubclass(FactorIndexError, IndexError) and issubclass(FactorIndexError, ValueError)
    True
    """


class FactorDataset(torch.utils.data.Dataset):
    """Images with known discrete ground-truth factors.

    Subclasses set ``name``, ``factor_names``, ``factor_sizes`` and
    ``num_channels`` and implement ``_images(idx)``, which returns the images
    at sorted-or-not int64 positions ``idx`` as an array ``(n, C, 64, 64)``:
    ``bool`` (binary), ``uint8`` (0..255, divided by 255) or ``float32`` in
    [0, 1]. A labelled subclass also calls ``_set_labels(classes)``.

    ``dataset[i]`` returns ``(image, factors)``: a float32 tensor
    ``(C, 64, 64)`` in [0, 1] and an int64 tensor ``(K,)`` of class indices.
    ``get_images`` / ``get_factors`` are the vectorized batch versions.

    Attributes
    ----------
    name : str
        The registry name, e.g. ``"sprites"``.
    factor_names : tuple of str
        One name per factor of variation (K of them).
    factor_sizes : tuple of int
        Number of classes of each factor.
    num_channels : int
        Image channels: 1 (binary) or 3 (colour).
    image_size : int
        Height and width of every image (64).

    Raises
    ------
    FactorIndexError
        ``dataset[i]``, ``get_images`` and ``get_factors`` with an index
        outside ``[0, len(dataset))``.
    TypeError
        ``dataset[i]`` with an index that is not an integer.

    Examples
    --------
    >>> from latentquant.data import get_dataset
    >>> ds = get_dataset("sprites")
    >>> len(ds), ds.factor_names, ds.factor_sizes
    (737280, ('shape', 'scale', 'orientation', 'posX', 'posY'), (3, 6, 40, 32, 32))
    >>> image, factors = ds[5]
    >>> image.shape, image.dtype, factors.tolist()
    (torch.Size([1, 64, 64]), torch.float32, [0, 0, 0, 0, 5])
    >>> ds.get_images([0, 5]).shape
    torch.Size([2, 1, 64, 64])
    >>> ds.factors_to_index([0, 0, 0, 0, 5]).tolist()
    [5]
    """

    name: str = ""
    factor_names: tuple[str, ...] = ()
    factor_sizes: tuple[int, ...] = ()
    num_channels: int = 1
    image_size: int = IMAGE_SIZE

    _labels: np.ndarray | None = None  # (N, K) int64 classes, None for a full grid
    _codes_sorted: np.ndarray | None = None  # grid codes of the labels, sorted
    _codes_order: np.ndarray | None = None  # positions of the sorted codes

    # ----------------------------------------------------------- factor grid
    @property
    def num_factors(self) -> int:
        return len(self.factor_sizes)

    @property
    def grid_size(self) -> int:
        """Number of factor combinations, ``prod(factor_sizes)``."""
        return math.prod(self.factor_sizes)

    def __len__(self) -> int:
        return self.grid_size if self._labels is None else len(self._labels)

    def _set_labels(self, classes: np.ndarray, source: object = "labels") -> None:
        """Install per-image class labels ``(N, K)``; validates their range.

        When the labels are exactly the full grid in row-major order the
        dataset behaves as a full grid (no lookup table is kept).
        """
        classes = np.asarray(classes)
        if classes.ndim != 2 or classes.shape[1] != self.num_factors:
            raise ValueError(f"{source}: expected labels of shape (N, {self.num_factors}), got {classes.shape}")
        if not np.issubdtype(classes.dtype, np.integer):
            raise ValueError(f"{source}: labels must be integer class indices, got {classes.dtype}")
        classes = classes.astype(np.int64)
        sizes = np.asarray(self.factor_sizes)
        bad = (classes < 0) | (classes >= sizes)
        if bad.any():
            row, col = np.argwhere(bad)[0]
            raise ValueError(
                f"{source}: row {row} has {self.factor_names[col]} class "
                f"{classes[row, col]}, expected 0..{sizes[col] - 1}"
            )
        codes = np.ravel_multi_index(tuple(classes.T), self.factor_sizes)
        if len(codes) == self.grid_size and np.array_equal(codes, np.arange(len(codes))):
            self._labels = self._codes_sorted = self._codes_order = None
            return
        order = np.argsort(codes, kind="stable")  # stable: duplicates map to the first
        self._labels = classes
        self._codes_sorted = codes[order]
        self._codes_order = order

    def index_to_factors(self, idx) -> np.ndarray:
        """Class indices ``(n, K)`` int64 of the images at positions ``idx``."""
        idx = _as_index_array(idx, len(self))
        if self._labels is not None:
            return self._labels[idx]
        return np.stack(np.unravel_index(idx, self.factor_sizes), axis=-1).astype(np.int64)

    def factors_to_index(self, factors) -> np.ndarray:
        """Positions ``(n,)`` int64 of the images with the given class indices.

        ``factors`` is ``(n, K)`` or ``(K,)`` integer class indices. Raises
        ValueError for a value outside its factor's range, or (labelled
        datasets) for a combination the dataset does not hold.
        """
        f = np.asarray(factors.cpu() if isinstance(factors, torch.Tensor) else factors)
        if f.ndim == 1:
            f = f[None]
        if f.ndim != 2 or f.shape[1] != self.num_factors:
            raise ValueError(
                f"factors must have shape (n, {self.num_factors}) for {self.name}, got {np.shape(factors)}"
            )
        if f.size and (f.dtype == bool or not np.issubdtype(f.dtype, np.integer)):
            if np.issubdtype(f.dtype, np.floating) and np.all(f == np.round(f)):
                f = f.astype(np.int64)
            else:
                raise TypeError(f"factors must be integer class indices, got dtype {f.dtype}")
        f = f.astype(np.int64, copy=False)
        for k, size in enumerate(self.factor_sizes):
            col = f[:, k]
            if col.size and (col.min() < 0 or col.max() >= size):
                bad = col.min() if col.min() < 0 else col.max()
                raise ValueError(
                    f"factor {self.factor_names[k]!r} has value {bad}, expected a class index in 0..{size - 1}"
                )
        codes = np.ravel_multi_index(tuple(f.T), self.factor_sizes).astype(np.int64)
        if self._labels is None:
            return codes
        at = np.searchsorted(self._codes_sorted, codes)
        at_clipped = np.minimum(at, len(self._codes_sorted) - 1)
        found = (at < len(self._codes_sorted)) & (self._codes_sorted[at_clipped] == codes)
        if not found.all():
            missing = f[np.argmin(found)].tolist()
            raise ValueError(
                f"{self.name}: no image has factors {missing} "
                f"(the file holds {len(self)} of {self.grid_size} combinations)"
            )
        return self._codes_order[at_clipped].astype(np.int64)

    def sample_factors(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """``n`` random factor combinations ``(n, K)`` int64 held by the dataset.

        Full grid: each factor uniform and independent. Labelled: the labels
        of ``n`` uniformly drawn images (the file's own joint distribution).
        """
        n = check_int("n", n, 0)
        check_instance("rng", rng, np.random.Generator, "a numpy.random.Generator")
        if self._labels is not None:
            return self._labels[rng.integers(0, len(self), size=n)]
        return np.stack([rng.integers(0, s, size=n) for s in self.factor_sizes], axis=-1).astype(np.int64)

    def sample_indices(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """``n`` positions drawn uniformly (with replacement), int64 ``(n,)``."""
        n = check_int("n", n, 0)
        check_instance("rng", rng, np.random.Generator, "a numpy.random.Generator")
        return rng.integers(0, len(self), size=n).astype(np.int64)

    # ---------------------------------------------------------------- images
    def _images(self, idx: np.ndarray) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError

    def get_images(self, indices) -> torch.Tensor:
        """Images at positions ``indices``: float32 tensor ``(n, C, 64, 64)`` in [0, 1]."""
        idx = _as_index_array(indices, len(self))
        if len(idx) == 0:
            return torch.zeros((0, self.num_channels, self.image_size, self.image_size))
        arr = self._images(idx)
        expected = (len(idx), self.num_channels, self.image_size, self.image_size)
        if arr.shape != expected:  # a loader bug, never a user error
            raise RuntimeError(f"{self.name}: loader returned {arr.shape}, expected {expected}")
        out = torch.from_numpy(np.ascontiguousarray(arr))
        if out.dtype == torch.uint8:
            return out.float().div_(255.0)
        return out.float()

    def get_factors(self, indices) -> torch.Tensor:
        """Factor classes at positions ``indices``: int64 tensor ``(n, K)``."""
        return torch.from_numpy(self.index_to_factors(indices))

    def sample(self, n: int, rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """``n`` uniformly drawn ``(images, factors)``, e.g. for evaluation."""
        idx = self.sample_indices(n, rng)
        return self.get_images(idx), self.get_factors(idx)

    def __getitem__(self, i):
        if isinstance(i, (bool, np.bool_)) or not isinstance(i, (int, np.integer)):
            if isinstance(i, torch.Tensor) and i.ndim == 0 and not i.is_floating_point():
                i = int(i)
            else:
                raise TypeError(f"dataset index must be an integer, got {type(i).__name__}")
        i = int(i)
        if i < 0:
            i += len(self)
        if not 0 <= i < len(self):
            raise FactorIndexError(f"index {i} is out of range for a dataset of length {len(self)}")
        return self.get_images([i])[0], self.get_factors([i])[0]

    def describe(self) -> str:
        """A few lines: name, length, channels, factors and their sizes."""
        lines = [
            f"{self.name}: {len(self):,} images, {self.num_channels} channel(s), "
            f"{self.image_size}x{self.image_size}, {self.num_factors} factors"
            + ("" if self._labels is None else f" (subset of a {self.grid_size:,} grid)")
        ]
        width = max(len(n) for n in self.factor_names)
        lines += [f"  {k}  {n:<{width}}  {s}" for k, (n, s) in enumerate(zip(self.factor_names, self.factor_sizes))]
        return "\n".join(lines)

    def __repr__(self) -> str:
        sizes = ", ".join(f"{n}={s}" for n, s in zip(self.factor_names, self.factor_sizes))
        return f"{type(self).__name__}(name={self.name!r}, len={len(self)}, channels={self.num_channels}, {sizes})"


def _as_index_array(indices, length: int) -> np.ndarray:
    """Validate positions: integers in ``[0, length)``; returns int64 (n,)."""
    arr = np.asarray(indices.cpu() if isinstance(indices, torch.Tensor) else indices)
    if arr.ndim == 0:
        arr = arr.reshape(1)
    if arr.ndim != 1:
        raise ValueError(f"indices must be a 1-d sequence of integers, got shape {arr.shape}")
    if arr.size == 0:
        return arr.astype(np.int64)
    if arr.dtype == bool or not np.issubdtype(arr.dtype, np.integer):
        raise TypeError(f"indices must be integers, got dtype {arr.dtype}")
    arr = arr.astype(np.int64, copy=False)
    lo, hi = int(arr.min()), int(arr.max())
    if lo < 0 or hi >= length:
        bad = lo if lo < 0 else hi
        raise FactorIndexError(f"index {bad} is out of range for a dataset of length {length}")
    return arr


def default_root() -> Path:
    """The folder where public dataset files go when no folder is named.

    Returns
    -------
    pathlib.Path
        ``$LATENTQUANT_DATA`` (``~`` expanded) if that variable is set, else
        ``~/.cache/latentquant``. Nothing is created.

    Examples
    --------
    >>> import os
    >>> from latentquant.data import default_root
    >>> saved = os.environ.pop("LATENTQUANT_DATA", None)
    >>> default_root().parts[-2:]
    ('.cache', 'latentquant')
    >>> os.environ["LATENTQUANT_DATA"] = "/data/factors"
    >>> default_root().as_posix()
    '/data/factors'
    >>> del os.environ["LATENTQUANT_DATA"]
    >>> if saved is not None:
    ...     os.environ["LATENTQUANT_DATA"] = saved
    """
    env = os.environ.get("LATENTQUANT_DATA")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "latentquant"


def data_root(root: str | os.PathLike | None = None) -> Path:
    """The folder holding the public dataset files.

    Parameters
    ----------
    root : str or os.PathLike, optional
        A folder chosen by the caller; ``~`` is expanded.

    Returns
    -------
    pathlib.Path
        ``root`` if given, else ``default_root()``. Nothing is created.

    Examples
    --------
    >>> from latentquant.data import data_root
    >>> data_root("/data/factors").as_posix()
    '/data/factors'
    >>> data_root() == data_root(None)
    True
    """
    return Path(root).expanduser() if root is not None else default_root()
