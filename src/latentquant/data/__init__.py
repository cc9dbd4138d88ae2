"""Ground-truth-factor datasets: built-in rendered ``sprites`` and ``shapes``,
and loaders for the public dSprites, Shapes3D, MPI3D, Falcor3D and Isaac3D files.

>>> from latentquant.data import get_dataset
>>> ds = get_dataset("sprites")
>>> images, factors = ds.get_images([0, 1]), ds.get_factors([0, 1])
"""

from latentquant.data.base import FactorDataset, FactorIndexError, data_root, default_root
from latentquant.data.registry import DATASETS, get_dataset, list_datasets, register

__all__ = [
    "DATASETS",
    "FactorDataset",
    "FactorIndexError",
    "data_root",
    "default_root",
    "get_dataset",
    "list_datasets",
    "register",
]
