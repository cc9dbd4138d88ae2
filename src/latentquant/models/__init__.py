"""Models: QLAE, its baselines, its successors (Tripod, FactorQVAE, the categorical VAE), and the backbones they share.

>>> from latentquant.models import DataInfo, build_model
>>> model = build_model("qlae", arch="small", info=DataInfo("sprites", 1, 5, 737280))
>>> model.num_latents, model.discrete_latents
(10, True)
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

    The weights are initialised from torch's global random state: seed it
    first (``torch.manual_seed``) for a reproducible model. The model is
    built on the CPU; training settings (learning rate, weight decay) are
    not part of it but of ``latentquant.train.TrainConfig``.

    Parameters
    ----------
    name : str
        One of ``available_models()``, e.g. ``"qlae"``, ``"ae"``, ``"vae"``.
    arch : str
        The backbone, one of ``ARCHS``: ``"paper"`` (the authors'),
        ``"compact"`` or ``"small"`` (CPU-sized).
    info : DataInfo
        The dataset's name, channels, number of factors and size.
    num_latents : int, optional
        Latent dimensions; default ``default_num_latents(info)``, twice the
        number of factors (the paper's choice).
    **options
        The model's own keyword arguments (its ``default_options``), e.g.
        ``values_per_latent`` for QLAE.

    Returns
    -------
    LatentModel
        The model, in training mode.

    Raises
    ------
    ValueError
        For an unknown ``name`` or ``arch`` (the message lists the valid
        choices) or an option value the model rejects.
    TypeError
        For an option the model does not take.

    Examples
    --------
    >>> import torch
    >>> from latentquant.models import DataInfo, build_model
    >>> _ = torch.manual_seed(0)
    >>> model = build_model("qlae", arch="small", info=DataInfo("sprites", 1, 5, 737280))
    >>> images = torch.rand(4, 1, 64, 64)
    >>> out = model(images)  # the training objective: StepOutput(loss, parts)
    >>> sorted(out.parts)
    ['bce', 'commitment', 'loss', 'quantization']
    >>> model.encode(images).code.shape  # 10 latents, integer value indices
    torch.Size([4, 10])
    """
    cls = get_model_class(name)
    return cls(arch, info, default_num_latents(info) if num_latents is None else num_latents, **options)


def default_num_latents(info: DataInfo) -> int:
    """Twice as many latents as factors, the paper's choice.

    Parameters
    ----------
    info : DataInfo
        The dataset description; only ``num_factors`` is read.

    Returns
    -------
    int
        ``2 * info.num_factors``.

    Examples
    --------
    >>> from latentquant.models import DataInfo, default_num_latents
    >>> default_num_latents(DataInfo("shapes", 3, 6, 480000))
    12
    """
    return 2 * info.num_factors
