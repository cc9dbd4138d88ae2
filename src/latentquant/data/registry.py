"""Name -> dataset factory. Adding a dataset is one decorator in its own module.

The same pattern as ``latentquant.models.registry``: a module under
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
"""The registry: lower-case name -> dataset class or factory, filled by ``register``.

Read it through ``list_datasets`` and ``get_dataset``, which first import the
modules that register the built-in datasets.
"""


def register(name: str):
    """Decorator adding a dataset class or factory to the registry.

    The factory is called as ``factory(root=..., path=..., **options)`` by
    ``get_dataset``; the keyword arguments it accepts besides ``root`` and
    ``path`` are the dataset's options. Names are case-insensitive.

    Parameters
    ----------
    name : str
        The name ``get_dataset`` and ``--dataset`` will accept.

    Returns
    -------
    callable
        The decorator; it returns the factory unchanged.

    Raises
    ------
    ValueError
        When the decorator is applied and ``name`` is already registered.

    Examples
    --------
    >>> from latentquant.data import DATASETS, get_dataset, register
    >>> @register("sprites-small")
    ... def small_sprites(root=None, path=None):
    ...     return get_dataset("sprites")
    >>> get_dataset("Sprites-Small").name
    'sprites'
    >>> del DATASETS["sprites-small"]  # leave the registry as it was
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
    """Names accepted by ``get_dataset``.

    Returns
    -------
    list of str
        The registered names, lower case and sorted (aliases included).

    Examples
    --------
    >>> from latentquant.data import list_datasets
    >>> list_datasets()
    ['dsprites', 'falcor3d', 'isaac3d', 'mpi3d', 'shapes', 'shapes3d', 'sprites']
    """
    _load()
    return sorted(DATASETS)


def get_dataset(
    name: str, root: str | os.PathLike | None = None, path: str | os.PathLike | None = None, **options
) -> FactorDataset:
    """Build the dataset called ``name``.

    The built-in ``sprites`` and ``shapes`` are rendered on the fly and need
    no files; the public datasets read files that ``latentquant data fetch
    NAME`` downloads (or your own copy, through ``root`` or ``path``).

    Parameters
    ----------
    name : str
        One of ``list_datasets()`` (case-insensitive).
    root : str or os.PathLike, optional
        Folder holding public files; default ``$LATENTQUANT_DATA``, else
        ``~/.cache/latentquant``. Ignored by the built-in rendered datasets.
    path : str or os.PathLike, optional
        An explicit file or folder for a public dataset (overrides ``root``).
    **options
        Dataset-specific keyword arguments (e.g. ``variant`` for ``mpi3d``).

    Returns
    -------
    FactorDataset
        The dataset.

    Raises
    ------
    ValueError
        For an unknown name (the message lists the valid ones) or an option
        the dataset does not take.
    TypeError
        If ``name`` is not a string.
    OSError
        If a public dataset's file is missing or unreadable (the message says
        how to fetch it).

    Examples
    --------
    >>> from latentquant.data import get_dataset
    >>> ds = get_dataset("shapes")
    >>> ds.num_channels, ds.factor_names
    (3, ('floor_hue', 'wall_hue', 'object_hue', 'scale', 'shape', 'orientation'))
    >>> get_dataset("nope")
    Traceback (most recent call last):
        ...
    ValueError: unknown dataset 'nope'; valid names: dsprites, falcor3d, isaac3d, mpi3d, shapes, shapes3d, sprites
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
