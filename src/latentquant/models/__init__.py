"""Models: QLAE, its baselines, its successors (Tripod, FactorQVAE, the categorical VAE), and the backbones they share.

from latentquant.models import build_model, available_models
model = build_model("qlae", arch="small", info=DataInfo("sprites", 1, 5, 737280))
"""

from __future__ import annotations

from typing import Any

from latentquant.models.backbones import ARCHS, build_backbone
from latentquant.models.base import DataInfo, Encoding, LatentModel, StepOutput, clip_gradients
from latentquant.models.registry import available_models, get_model_class, register_model

__all__ = [
    "ARCHS",
    "DataInfo",
    "Encoding",
    "LatentModel",
    "StepOutput",
    "available_models",
    "build_backbone",
    "build_model",
    "clip_gradients",
    "default_num_latents",
    "get_model_class",
    "register_model",
]


def build_model(name: str, arch: str, info: DataInfo, num_latents: int | None = None, **options: Any) -> LatentModel:
    """Model ``name`` on backbone ``arch`` for a dataset described by ``info``.

    ``num_latents`` defaults to twice the number of factors (the paper's choice);
    ``options`` are the model's keyword arguments (its ``default_options``).
    An unknown ``name`` or ``arch`` is a ValueError naming the valid choices.
    """
    cls = get_model_class(name)
    return cls(arch, info, default_num_latents(info) if num_latents is None else num_latents, **options)


def default_num_latents(info: DataInfo) -> int:
    """Twice as many latents as factors, the paper's choice."""
    return 2 * info.num_factors
