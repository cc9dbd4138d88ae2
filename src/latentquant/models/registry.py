"""Name -> model class. Adding a model is one decorator in its own module.

A module under ``latentquant.models`` registers its classes with
``@register_model("name")``; :func:`available_models` imports the modules in
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
    """Class decorator: make a :class:`~latentquant.models.base.LatentModel` available as ``--model name``."""

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
    """Names accepted by ``--model``: ``qlae``, the baselines, the GANs, then any other
    registered model. The order does not depend on which module was imported first."""
    _load()
    return tuple(sorted(_MODELS, key=_listing_order))


def get_model_class(name: str) -> type:
    """The class registered as ``name``; ValueError naming the valid choices otherwise."""
    _load()
    if name not in _MODELS:
        raise ValueError(f"unknown model {name!r}; valid choices: {', '.join(available_models())}")
    return _MODELS[name]
