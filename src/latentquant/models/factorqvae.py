"""FactorQVAE: latents relaxed onto one global scalar codebook, with a total-correlation discriminator.

Baykal, Kandemir, Unal, "Disentanglement with Factor Quantized Variational Autoencoders",
Neurocomputing 2024, arXiv 2409.14851; code ituvisionlab/FactorQVAE (``models/factor_qvae.py``,
``quantizers/relaxed_vq_quantizer.py``, ``train.py``, ``configs/*/factorqvae.yaml``).

With ``c`` the ``K`` scalar values of the one codebook all latents share, ``pre_z = enc(x)``:

    d_lk  = (pre_z_l - c_k)^2                               (b, l, k) squared distances
    w     = softmax((-d + g) / tau),  g ~ Gumbel(0, 1)      relaxed one-hot (training)
    w     = one_hot(argmin_k d)                             hard, nearest value (evaluation)
    z_l   = sum_k w_lk c_k                                  (b, l) what the decoder reads
    KL    = mean_l sum_k p_lk log(K p_lk),  p = softmax(-d)  the assignment against uniform
    loss  = MSE(sigmoid(dec(z)), x) + kl_weight KL + gamma TC(w)

``TC(w)`` is the FactorVAE discriminator's estimate on the flattened relaxed assignments
``(b, l k)`` (:mod:`latentquant.models.total_correlation`); the discriminator is trained on the
model half's assignments against the shuffled assignments of the other half of the batch, as
the authors' ``training_step`` does. ``tau = exp(-temperature_decay * step)`` (their
``DecayTemperature`` callback). Both optimizers follow a cosine from ``lr`` to 1.25e-6 over
``lr_period`` steps (their ``CosineAnnealingLR``, periodic beyond it as torch's is), set from
the step at every step, so a resumed run has the same rates. A step here is a batch; the
authors' ``global_step`` (pytorch-lightning 2.0.0) counts both optimizers' steps, two a batch
(Lightning-AI/pytorch-lightning#17958), so their 100,000 ``max_steps`` are 50,000 batches and
their ``exp(-1e-5 global_step)`` is ``exp(-2e-5 batch)``, while their schedulers, stepped by hand
once a batch, make one half-cosine over the run. The metrics read the index of the nearest
value, a discrete representation.

Shapes: b batch, l latents, k codebook values.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from latentquant.models.base import DataInfo, Encoding, sweep_latent
from latentquant.models.registry import register_model
from latentquant.models.total_correlation import Discriminator, FactorOutput, TotalCorrelationModel
from latentquant.validation import check_int, check_number

LR_MIN = 1.25e-6  # eta_min of both CosineAnnealingLR in models/factor_qvae.py configure_optimizers
DISCRIMINATOR_DEPTH = 5  # blocks/discriminator.py: Linear(f, 1000) and layers=4 more of 1000, LeakyReLU(0.2)


@register_model("factorqvae")
class FactorQVAE(TotalCorrelationModel):
    """FactorQVAE (see module docstring).

    Parameters (besides ``arch``, ``info``, ``num_latents``)
    ----------
    values_per_latent : K, the size of the global codebook every latent draws from (64).
    kl_weight : weight of the assignment's KL to uniform (1e-3 on Shapes3D).
    gamma : weight of the total-correlation term (1e-4 on Shapes3D).
    temperature_decay : the Gumbel-softmax temperature is ``exp(-temperature_decay * step)`` (2e-5: their
        ``exp(-1e-5 global_step)``, whose Lightning ``global_step`` counts two optimizer steps a batch).
    lr_period : steps of the cosine learning-rate schedule (50,000); 0 keeps ``lr`` constant.
    """

    discrete_latents = True
    split_batch = True

    def __init__(
        self,
        arch: str,
        info: DataInfo,
        num_latents: int,
        values_per_latent: int = 64,
        kl_weight: float = 1e-3,
        gamma: float = 1e-4,
        temperature_decay: float = 2e-5,
        lr_period: int = 50_000,
    ):
        check_int("num_latents", num_latents, 1)
        self.values_per_latent = check_int("values_per_latent", values_per_latent, 2, 2**16)
        super().__init__(arch, info, num_latents, encoder_features=num_latents)
        self.kl_weight = check_number("kl_weight", kl_weight)
        self.gamma = check_number("gamma", gamma)
        self.temperature_decay = check_number("temperature_decay", temperature_decay)
        self.lr_period = check_int("lr_period", lr_period, 0)
        self.codebook = nn.Parameter(torch.randn(values_per_latent))  # nn.Embedding's N(0, 1), init_type "normal"
        self.discriminator = Discriminator(num_latents * values_per_latent, DISCRIMINATOR_DEPTH, weight_std=0.02)
        self.register_buffer("temperature", torch.ones(()), persistent=False)  # set from the step, every step

    def codebook_parameters(self) -> list[nn.Parameter]:
        return [self.codebook]

    # -- the latent layer ---------------------------------------------------

    def distances(self, pre_z: Tensor) -> Tensor:
        """``(b, l, k)`` squared distances of every latent to every codebook value."""
        return (pre_z.float()[..., None] - self.codebook.float()).square()

    def assign(self, pre_z: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """``(z, w, kl)``: latents ``(b, l)``, assignments ``(b, l, k)`` (relaxed in training, one-hot
        otherwise) and the KL of ``softmax(-d)`` to uniform, averaged over batch and latents."""
        d = self.distances(pre_z)
        if self.training:
            w = F.softmax((-d + gumbel_like(d)) / self.temperature, dim=-1)
        else:
            w = F.one_hot(d.argmin(-1), self.values_per_latent).to(d.dtype)
        p = F.softmax(-d, dim=-1)
        kl = (p * torch.log(p * self.values_per_latent + 1e-10)).sum(-1).mean()
        return w @ self.codebook.float(), w, kl

    # -- the interface ------------------------------------------------------

    def model_loss(self, x: Tensor) -> FactorOutput:
        z, w, kl = self.assign(self.encoder(x))
        mse = F.mse_loss(torch.sigmoid(self.decoder(z.to(x.dtype)).float()), x.float())
        tc = self.total_correlation(w)
        loss = mse + self.kl_weight * kl + self.gamma * tc
        parts = {"loss": loss, "mse": mse, "kl": kl, "tc": tc, "temperature": self.temperature.clone()}
        return FactorOutput(loss, {k: v.detach() for k, v in parts.items()}, w.detach())

    def shuffle_source(self, x: Tensor, sample: Tensor) -> Tensor:
        """The relaxed assignments of the other half batch ``x``, by the updated encoder (no gradient)."""
        with torch.no_grad():
            return self.assign(self.encoder(x))[1]

    def encode(self, x: Tensor) -> Encoding:
        """The nearest codebook value of each latent and its index (hard, whatever the mode)."""
        code = self.distances(self.encoder(x)).argmin(-1)
        return Encoding(self.codebook[code].detach().to(x.dtype), code)

    def traversal(self, z: Tensor, latent: int, codes: Tensor, steps: int) -> Tensor:
        """The codebook values latent ``latent`` takes on the evaluation set, in increasing order,
        at most ``steps`` of them evenly spread."""
        return sweep_latent(z, latent, spread(self.codebook.detach()[codes[:, latent].unique()], steps))

    # -- schedules ----------------------------------------------------------

    def before_step(self, step: int, optimizers: dict[str, torch.optim.Optimizer]) -> None:
        """The temperature and both optimizers' learning rates at ``step``."""
        self.temperature.fill_(math.exp(-self.temperature_decay * step))
        for opt in optimizers.values():
            for group in opt.param_groups:
                group.setdefault("initial_lr", group["lr"])
                group["lr"] = cosine_lr(step, group["initial_lr"], self.lr_period)

    def extra_repr(self) -> str:
        return (
            super().extra_repr() + f", values={self.values_per_latent}, kl_weight={self.kl_weight:g}, "
            f"gamma={self.gamma:g}"
        )


def cosine_lr(step: int, lr: float, period: int, lr_min: float = LR_MIN) -> float:
    """torch's ``CosineAnnealingLR(T_max=period, eta_min=lr_min)`` at ``step``, in closed form:
    ``lr_min + (lr - lr_min) (1 + cos(pi step / period)) / 2``; ``lr`` when ``period`` is 0."""
    if period == 0:
        return lr
    return lr_min + (lr - lr_min) * (1 + math.cos(math.pi * step / period)) / 2


def gumbel_like(t: Tensor) -> Tensor:
    """Standard Gumbel noise of ``t``'s shape: ``-log E``, ``E ~ Exp(1)`` (as ``F.gumbel_softmax``)."""
    return -torch.empty_like(t).exponential_().log()


def spread(values: Tensor, steps: int) -> Tensor:
    """``values`` sorted, thinned to at most ``steps`` evenly spaced ones (the first and last kept)."""
    values = values.sort().values
    if len(values) <= steps:
        return values
    return values[torch.linspace(0, len(values) - 1, steps, device=values.device).round().long()]
