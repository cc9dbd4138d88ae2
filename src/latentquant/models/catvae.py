"""The categorical VAE: each latent a Gumbel-softmax mixture of K ordered scalar categories.

Friede, Reimers, Stuckenschmidt, Niepert, "Learning Disentangled Discrete Representations",
ECML PKDD 2023, arXiv 2307.14151; code david-friede/lddr ``run.py`` (and ``utils.py``).

The encoder gives ``l x k`` logits; category ``j`` of latent ``n`` stands for the scalar
``v_nj``, initialised (and, as in the authors' code, kept: ``stop_gradient(embed)``) at
``linspace(-1, 1, K)``, which orders the categories:

    y_n   = softmax(logits_n + s g),  g ~ Gumbel(0, 1)     (b, l, k) relaxed sample, temperature 1
    z_n   = sum_j y_nj v_nj                                (b, l) what the decoder reads
    KL    = sum_n sum_j q_nj log(K q_nj),  q = softmax(logits)   against the uniform prior
    loss  = BCE_mean(dec(z), x) + (KL + gamma TC(z)) / x_dim

i.e. the authors' per-image ELBO (BCE summed over pixels, plus KL, plus ``gamma`` times the
FactorVAE discriminator's TC estimate on ``z``) divided by ``x_dim = c 64 64``, the scale of
every loss here. The Gumbel noise scale ``s`` follows a cosine from ``scale_init`` (0.5) to
``scale_final`` (2) over ``anneal_steps`` (their ``cosine_anneal`` over the 300,000 training
steps), read from the step. ``gamma = 0`` (their default, ``--tc`` off) builds no
discriminator; with ``gamma > 0`` a 6 x 1000 LeakyReLU MLP reads ``z``, trained by Adam with
betas (0.5, 0.9) on the same batch's ``z`` and its per-latent shuffle.

At evaluation each latent is its most likely category: ``code_n = argmax_j logits_nj``, the
decoder reads ``v_n,code_n``, and the metrics read the category index, a discrete
representation. (The authors' ``_representation_fn`` scores the softmax-weighted mean instead,
a continuous one; ``docs/training.md`` says why this differs.)

Shapes: b batch, l latents, k categories.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

from latentquant._images import IMAGE_SIZE
from latentquant.models.base import DataInfo, Encoding, sweep_latent
from latentquant.models.factorqvae import gumbel_like, spread
from latentquant.models.registry import register_model
from latentquant.models.total_correlation import Discriminator, FactorOutput, TotalCorrelationModel
from latentquant.validation import check_flag, check_int, check_number

DISCRIMINATOR_DEPTH = 6  # run.py: discriminator num_layers 6 (of 1000 units), haiku MLP, jax.nn.leaky_relu (0.01)


@register_model("catvae")
class CategoricalVAE(TotalCorrelationModel):
    """The categorical VAE (see module docstring).

    Parameters (besides ``arch``, ``info``, ``num_latents``)
    ----------
    values_per_latent : K, the categories of each latent (64).
    gamma : weight of the FactorVAE total-correlation term; 0 (the default) builds no discriminator.
    scale_init, scale_final : the Gumbel noise scale at step 0 and from ``anneal_steps`` on (0.5, 2).
    anneal_steps : length of the cosine annealing of the scale (300,000).
    learn_values : train the category values (False: the authors keep them at their initial grid).
    """

    discrete_latents = True
    discriminator_betas = (0.5, 0.9)  # run.py: discriminator optimizer b1 .5, b2 .9

    def __init__(
        self,
        arch: str,
        info: DataInfo,
        num_latents: int,
        values_per_latent: int = 64,
        gamma: float = 0.0,
        scale_init: float = 0.5,
        scale_final: float = 2.0,
        anneal_steps: int = 300_000,
        learn_values: bool = False,
    ):
        check_int("num_latents", num_latents, 1)
        self.values_per_latent = check_int("values_per_latent", values_per_latent, 2, 2**16)
        super().__init__(arch, info, num_latents, encoder_features=num_latents * values_per_latent)
        self.gamma = check_number("gamma", gamma)
        self.scale_init, self.scale_final = (
            check_number("scale_init", scale_init),
            check_number("scale_final", scale_final),
        )
        self.anneal_steps = check_int("anneal_steps", anneal_steps, 1)
        self.learn_values = check_flag("learn_values", learn_values)
        grid = torch.linspace(-1.0, 1.0, values_per_latent).repeat(num_latents, 1)  # (l, k)
        self.values = nn.Parameter(grid, requires_grad=self.learn_values)
        self.x_dim = info.num_channels * IMAGE_SIZE * IMAGE_SIZE
        self.discriminator = Discriminator(num_latents, DISCRIMINATOR_DEPTH, slope=0.01) if self.gamma > 0 else None
        self.register_buffer("scale", torch.tensor(scale_init), persistent=False)  # set from the step, every step

    def codebook_parameters(self) -> list[nn.Parameter]:
        return [self.values]

    def logits(self, x: Tensor) -> Tensor:
        """``(b, l, k)`` category logits."""
        return rearrange(self.encoder(x).float(), "b (l k) -> b l k", l=self.num_latents)

    def model_loss(self, x: Tensor) -> FactorOutput:
        logits = self.logits(x)
        y = F.softmax(logits + self.scale * gumbel_like(logits), dim=-1)
        z = torch.einsum("b l k, l k -> b l", y, self.values.float())
        bce = F.binary_cross_entropy_with_logits(self.decoder(z.to(x.dtype)).float(), x.float())
        log_q = F.log_softmax(logits, dim=-1)
        kl = (log_q.exp() * (log_q + math.log(self.values_per_latent))).sum((1, 2)).mean()
        tc = self.total_correlation(z)
        loss = bce + (kl + self.gamma * tc) / self.x_dim
        parts = {"loss": loss, "bce": bce, "kl": kl, "scale": self.scale.clone()}
        if self.discriminator is not None:
            parts["tc"] = tc
        return FactorOutput(loss, {k: v.detach() for k, v in parts.items()}, z.detach())

    def shuffle_source(self, x: Tensor, sample: Tensor) -> Tensor:
        """The model step's own ``z`` (the authors' ``disc_loss_fn`` shuffles the sample it trains on)."""
        return sample

    def encode(self, x: Tensor) -> Encoding:
        """Each latent's most likely category (its index for the metrics, its value for the decoder)."""
        code = self.logits(x).argmax(-1)
        z = self.values.detach().gather(1, code.T).T  # (b, l)
        return Encoding(z.to(x.dtype), code)

    def traversal(self, z: Tensor, latent: int, codes: Tensor, steps: int) -> Tensor:
        """The category values latent ``latent`` takes on the evaluation set, in increasing order,
        at most ``steps`` of them evenly spread."""
        return sweep_latent(z, latent, spread(self.values.detach()[latent, codes[:, latent].unique()], steps))

    def before_step(self, step: int, optimizers: dict[str, torch.optim.Optimizer]) -> None:
        self.scale.fill_(cosine_anneal(step, self.scale_init, self.scale_final, self.anneal_steps))

    def extra_repr(self) -> str:
        return super().extra_repr() + f", categories={self.values_per_latent}, gamma={self.gamma:g}"


def cosine_anneal(step: int, start: float, final: float, steps: int) -> float:
    """``start`` at step 0 to ``final`` at ``steps`` (and after) along half a cosine (lddr ``utils.cosine_anneal``)."""
    if step >= steps:
        return final
    return 0.5 * (start - final) * math.cos(math.pi * step / steps) + 0.5 * (start + final)
