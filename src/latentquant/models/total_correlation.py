"""The FactorVAE total-correlation term: a discriminator between latents and their per-latent shuffle.

Kim & Mnih, "Disentangling by Factorising", ICML 2018 (arXiv 1802.05983), section 3. A
discriminator ``D`` tells samples of the aggregate posterior ``q(z)`` (class 0) from samples
of the product of its marginals (class 1), obtained by permuting each latent independently
across the batch. With ``D``'s two logits, the density-ratio trick estimates

    TC(z) = KL(q(z) || prod_k q(z_k)) ~ mean_i [ D(z_i)_0 - D(z_i)_1 ]

which the model adds, weighted by ``gamma``, to its loss; ``D`` itself is trained with

    L_D = (CE(D(z), 0) + CE(D(shuffle(z')), 1)) / 2

on latents ``z`` and ``z'`` detached from the model (``z' = z``, or another half batch).

:class:`TotalCorrelationModel` is the part FactorQVAE and the categorical VAE share: two
optimizers (``model``, ``discriminator``) and the alternating update, one model step and
then one discriminator step per training step, as both authors' code does
(ituvisionlab/FactorQVAE ``models/factor_qvae.py`` ``training_step``; david-friede/lddr
``run.py`` ``train_step``). A model with ``discriminator = None`` trains as any other.

Shapes: b batch, l latents, f features the discriminator reads.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from contextlib import nullcontext
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from latentquant.models.base import LatentModel, StepOutput, adamw, clip_gradients
from latentquant.validation import check_int, check_number

PHASES = ("model", "discriminator")


class FactorOutput(NamedTuple):
    """:class:`~latentquant.models.base.StepOutput`'s fields and the detached latent sample the
    discriminator reads next."""

    loss: Tensor
    parts: dict[str, Tensor]
    sample: Tensor  # (b, l, ...) detached


class TotalCorrelationModel(LatentModel):
    """Base class of a model with a FactorVAE discriminator (see module docstring).

    A subclass sets ``self.discriminator`` (a :class:`Discriminator`, or None for no TC term),
    ``self.gamma`` and implements ``model_loss(x) -> FactorOutput`` and
    ``shuffle_source(x, sample)``: the latents whose per-latent shuffle is the discriminator's
    class 1, from the half batch ``x`` or from the model step's ``sample``.
    """

    #: the discriminator step leaves the encoder and decoder out of the graph
    ddp_find_unused_parameters = True
    #: Adam's betas of the discriminator's optimizer
    discriminator_betas: tuple[float, float] = (0.9, 0.999)
    #: FactorQVAE trains the model on one half of the batch and shuffles the other half's latents
    split_batch: bool = False
    discriminator: nn.Module | None
    gamma: float

    def model_loss(self, x: Tensor) -> FactorOutput:
        raise NotImplementedError

    def shuffle_source(self, x: Tensor, sample: Tensor) -> Tensor:
        raise NotImplementedError

    def forward(self, x: Tensor, phase: str = "model", sample: Tensor | None = None) -> FactorOutput | StepOutput:
        """The model's objective on ``x`` (default), or the discriminator's on the model step's
        ``sample`` and the latents of ``x``. Both go through ``forward`` so that
        DistributedDataParallel all-reduces the gradients of either step."""
        if phase == "model":
            return self.model_loss(x)
        if phase == "discriminator":
            loss = discriminator_loss(self.discriminator, sample, self.shuffle_source(x, sample))
            return StepOutput(loss, {"discriminator": loss.detach()})
        raise ValueError(f"phase must be one of {PHASES}, got {phase!r}")

    def total_correlation(self, sample: Tensor) -> Tensor:
        """The density-ratio estimate of TC, ``mean D(z)_0 - D(z)_1``; 0 without a discriminator."""
        if self.discriminator is None:
            return sample.new_zeros(())
        logits = self.discriminator(sample.flatten(1))
        return (logits[:, 0] - logits[:, 1]).mean()

    def configure_optimizers(
        self, lr: float, weight_decay: float, clip: float | None = 1.0, betas: tuple[float, float] = (0.9, 0.999)
    ) -> dict[str, torch.optim.Optimizer]:
        """``model`` (encoder, decoder, values) and, with a discriminator, ``discriminator``; each split
        by :meth:`LatentModel.param_groups` (the GAN's rule), the discriminator's with its own betas."""
        is_disc = lambda name: name.startswith("discriminator.")
        out = {"model": adamw(self.param_groups(weight_decay, clip, lambda n: not is_disc(n)), lr, betas)}
        if self.discriminator is not None:
            out["discriminator"] = adamw(self.param_groups(weight_decay, clip, is_disc), lr, self.discriminator_betas)
        return out

    def before_step(self, step: int, optimizers: dict[str, torch.optim.Optimizer]) -> None:
        """Schedules that are a function of the step (a temperature, a learning rate); none by default."""

    def training_step(
        self,
        net: Callable[..., Any],
        x: Tensor,
        optimizers: dict[str, torch.optim.Optimizer],
        step: int,
        autocast: Callable[[], Any] = nullcontext,
    ) -> dict[str, Tensor]:
        """One model step on ``x`` (its first half when :attr:`split_batch`), then one discriminator
        step on that step's detached latents and, shuffled, the latents of the second half (or of the
        same sample)."""
        self.before_step(step, optimizers)
        first, second = halves(x) if self.split_batch else (x, x)
        self.zero_grad(set_to_none=True)
        with autocast():
            out = net(first)
        out.loss.backward()
        clip_gradients(optimizers["model"])
        optimizers["model"].step()
        self.zero_grad(set_to_none=True)  # the discriminator got a (discarded) gradient through the TC term
        parts = dict(out.parts)
        if self.discriminator is None:
            return parts
        with autocast():
            disc = net(second, phase="discriminator", sample=out.sample)
        disc.loss.backward()
        clip_gradients(optimizers["discriminator"])
        optimizers["discriminator"].step()
        self.zero_grad(set_to_none=True)
        parts.update(disc.parts)
        return parts


class Discriminator(nn.Module):
    """MLP ``(b, f) -> (b, 2)`` logits: ``depth`` hidden layers of ``hidden`` units with LeakyReLU(``slope``).

    ``weight_std``: weights ~ N(0, weight_std) (FactorQVAE's ``weights_init``, 0.02), or, when
    None, Haiku's ``Linear`` default, a normal truncated at 2 sd of sd ``1 / sqrt(fan_in)``
    (lddr); biases 0 in both.
    """

    def __init__(self, in_features: int, depth: int, hidden: int = 1000, slope: float = 0.2, weight_std=None):
        super().__init__()
        check_int("in_features", in_features, 1)
        check_int("depth", depth, 1)
        check_int("hidden", hidden, 1)
        self.slope = check_number("slope", slope)
        widths = [in_features] + [hidden] * depth + [2]
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(widths, widths[1:]))
        for layer in self.layers:
            if weight_std is None:
                std = 1 / math.sqrt(layer.in_features)
                nn.init.trunc_normal_(layer.weight, 0.0, std, -2 * std, 2 * std)
            else:
                nn.init.normal_(layer.weight, 0.0, weight_std)
            nn.init.zeros_(layer.bias)

    def forward(self, h: Tensor) -> Tensor:
        for layer in self.layers[:-1]:
            h = F.leaky_relu(layer(h), self.slope)
        return self.layers[-1](h)


def permute_latents(z: Tensor) -> Tensor:
    """``z`` ``(b, l, ...)`` with each latent ``z[:, k]`` permuted across the batch by its own random
    permutation: a sample of the product of the marginals (Kim & Mnih 2018, Algorithm 2)."""
    b, l = z.shape[:2]
    perms = torch.argsort(torch.rand(b, l, device=z.device), dim=0)  # (b, l): one permutation per latent
    index = perms.view(b, l, *([1] * (z.ndim - 2))).expand_as(z)
    return z.gather(0, index)


def discriminator_loss(discriminator: nn.Module, real: Tensor, shuffle_source: Tensor) -> Tensor:
    """``(CE(D(real), 0) + CE(D(permute_latents(shuffle_source)), 1)) / 2``; no gradient reaches the latents."""
    fake = permute_latents(shuffle_source.detach())
    logits_real = discriminator(real.detach().flatten(1))
    logits_fake = discriminator(fake.flatten(1))
    zeros = torch.zeros(len(logits_real), dtype=torch.long, device=real.device)
    ones = torch.ones(len(logits_fake), dtype=torch.long, device=real.device)
    return 0.5 * (F.cross_entropy(logits_real.float(), zeros) + F.cross_entropy(logits_fake.float(), ones))


def halves(x: Tensor) -> tuple[Tensor, Tensor]:
    """The first ``b // 2`` and the remaining images of a batch of at least 2."""
    if len(x) < 2:
        raise ValueError(f"a batch split in two halves needs at least 2 images, got {len(x)}")
    return x[: len(x) // 2], x[len(x) // 2 :]
