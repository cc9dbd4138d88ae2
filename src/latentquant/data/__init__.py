"""Ground-truth-factor datasets: built-in rendered ``sprites`` and ``shapes``,
and loaders for the public dSprites, Shapes3D, MPI3D, Falcor3D and Isaac3D files.

>>> from latentquant.data import get_dataset
>>> ds = get_dataset("sprites")
>>> images, factors = ds.get_images([0, 1]), ds.get_factors([0, 1])
"""

from latentquant.data import files, shapes, sprites  # noqa: F401,E402  (fill the registry)
from latentquant.data.base import (
    DATASETS,
    FactorDataset,
    FactorIndexError,
    default_root,
    get_dataset,
    list_datasets,
    register,
)

__all__ = ["DATASETS", "FactorDataset", "FactorIndexError", "default_root", "get_dataset", "list_datasets", "register"]
