"""Name -> model class. Adding a model is one decorator in its own module.

A module under ``latentquant.models`` registers its classes with
``@register_model("name")``; ``available_models`` imports the modules in
``MODEL_MODULES`` that exist, so a new module (``gan.py``) is found as soon as
it is listed there or imported.
"""

from __future__ import annotations

import importlib

MODEL_MODULES = (
    "latentquant.models.qlae",
    "latentquant.models.baselines",
    "latentquant.models.gan",
    "latentquant.models.noisy",
    "latentquant.models.tripod",
    "latentquant.models.factorqvae",
    "latentquant.models.catvae",
)

_MODELS: dict[str, type] = {}


def register_model(name: str):
    """Class decorator: make a ``LatentModel`` subclass available as ``--model name``.

    The decorator sets the class's ``name`` to ``name``; ``build_model`` and
    ``latentquant train --model`` find it from then on. A model module outside
    the package registers itself when it is imported.

    Parameters
    ----------
    name : str
        The model's name on the command line and in configs.

    Returns
    -------
    callable
        The decorator; it returns the class unchanged but for ``name``.

    Raises
    ------
    ValueError
        When the decorator is applied and ``name`` is registered to another class.

    Examples
    --------
    >>> from latentquant.models import available_models, get_model_class, register_model
    >>> @register_model("qlae-mine")
    ... class MyQLAE(get_model_class("qlae")):
    ...     pass
    >>> MyQLAE.name, "qlae-mine" in available_models()
    ('qlae-mine', True)
    >>> from latentquant.models import registry
    >>> del registry._MODELS["qlae-mine"]  # leave the registry as it was
    """

    def wrap(cls):
        if name in _MODELS and _MODELS[name] is not cls:
            raise ValueError(f"model name {name!r} is already registered to {_MODELS[name].__name__}")
        cls.name = name
        _MODELS[name] = cls
        return cls

    return wrap


def _load() -> None:
    for module in MODEL_MODULES:
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as err:
            if err.name != module:  # a missing dependency inside an existing module is a real error
                raise


def _listing_order(name: str) -> tuple[int, int]:
    """Models of ``MODEL_MODULES`` first, in that order, then others; ties by registration."""
    module = _MODELS[name].__module__
    rank = MODEL_MODULES.index(module) if module in MODEL_MODULES else len(MODEL_MODULES)
    return rank, list(_MODELS).index(name)


def available_models() -> tuple[str, ...]:
    """Names accepted by ``--model`` and ``build_model``.

    Returns
    -------
    tuple of str
        ``qlae``, the baselines, the GANs, the successors, then any other
        registered model. The order does not depend on which module was
        imported first.

    Examples
    --------
    >>> from latentquant.models import available_models
    >>> available_models()[:4]
    ('qlae', 'ae', 'bioae', 'vae')
    >>> "factorqvae" in available_models()
    True
    """
    _load()
    return tuple(sorted(_MODELS, key=_listing_order))


def get_model_class(name: str) -> type:
    """The class registered as ``name``.

    Parameters
    ----------
    name : str
        One of ``available_models()``.

    Returns
    -------
    type
        The ``LatentModel`` subclass; its ``defaults(dataset)`` and
        ``default_options(dataset)`` give the published settings.

    Raises
    ------
    ValueError
        For an unknown name (the message lists the valid choices).

    Examples
    --------
    >>> from latentquant.models import get_model_class
    >>> cls = get_model_class("qlae")
    >>> cls.__name__, cls.discrete_latents
    ('QLAE', True)
    >>> cls.defaults("sprites")["weight_decay"]
    0.1
    """
    _load()
    if name not in _MODELS:
        raise ValueError(f"unknown model {name!r}; valid choices: {', '.join(available_models())}")
    return _MODELS[name]
