"""Name -> dataset factory. Adding a dataset is one decorator in its own module.

The same pattern as :mod:`latentquant.models.registry`: a module under
``latentquant.data`` registers its classes with ``@register("name")``, and the
lookups import the modules listed in ``DATASET_MODULES`` first, so a dataset
module imports this one and never the other way round.
"""

from __future__ import annotations

import importlib
import inspect
import os
from collections.abc import Callable

from latentquant.data.base import FactorDataset
from latentquant.validation import check_instance

DATASET_MODULES = ("latentquant.data.sprites", "latentquant.data.shapes", "latentquant.data.files")

DATASETS: dict[str, Callable[..., FactorDataset]] = {}


def register(name: str):
    """Decorator adding a dataset class or factory to the registry.

    The factory is called as ``factory(root=..., path=..., **options)``.
    """

    def wrap(factory):
        key = name.lower()
        if key in DATASETS:
            raise ValueError(f"dataset {name!r} is already registered")
        DATASETS[key] = factory
        return factory

    return wrap


def _load() -> None:
    for module in DATASET_MODULES:
        importlib.import_module(module)


def list_datasets() -> list[str]:
    """Names accepted by ``get_dataset``, sorted."""
    _load()
    return sorted(DATASETS)


def get_dataset(
    name: str, root: str | os.PathLike | None = None, path: str | os.PathLike | None = None, **options
) -> FactorDataset:
    """Build the dataset called ``name``.

    Parameters
    ----------
    name : one of ``list_datasets()`` (case-insensitive).
    root : folder holding public files; default ``$LATENTQUANT_DATA``, else
        ``~/.cache/latentquant``. Ignored by the built-in rendered datasets.
    path : an explicit file or folder for a public dataset (overrides root).
    **options : dataset-specific keyword arguments (e.g. ``variant`` for mpi3d).
    """
    _load()
    check_instance("dataset name", name, str, "a string")
    key = name.lower()
    if key not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; valid names: {', '.join(sorted(DATASETS))}")
    factory = DATASETS[key]
    _check_options(key, factory, options)
    return factory(root=root, path=path, **options)


def dataset_options(factory) -> list[str] | None:
    """The option names ``factory`` accepts besides root and path (None: any)."""
    params = inspect.signature(factory).parameters.values()
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
        return None
    return [
        p.name
        for p in params
        if p.name not in ("self", "root", "path")
        and p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    ]


def _check_options(name: str, factory, options: dict) -> None:
    accepted = dataset_options(factory)
    if accepted is None:
        return
    unknown = [k for k in options if k not in accepted]
    if unknown:
        valid = f"its options are {', '.join(accepted)}" if accepted else "it takes no options"
        raise ValueError(f"dataset {name!r} has no option {unknown[0]!r}; {valid}")
