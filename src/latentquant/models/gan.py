"""InfoWGAN-GP and QLInfoWGAN-GP: latent-reconstructing generative models.

An InfoGAN (Chen et al., 2016) trained as a Wasserstein GAN with gradient
penalty (Gulrajani et al., 2017), as in Hsu et al., "Disentanglement via Latent
Quantization", NeurIPS 2023, section 4 and appendix. One image network, the
*critic-encoder*, shares the encoder trunk between a value head D(x) (Linear ->
1) and a latent head enc(x) (Linear -> d). The *generator* G is the style
decoder followed by a sigmoid.

With z ~ p(z), x_fake = G(z) and x_hat = eps * x + (1 - eps) * x_fake,
eps ~ U[0, 1] drawn per sample, the two objectives are

    L_critic    = mean D(x_fake) - mean D(x)
                  + lambda_gp * mean_i (||grad_x D(x_hat_i)||_2 - 1)^2
                  + lambda_latent * mean (enc(x_fake) - z)^2
    L_generator = -mean D(x_fake) + lambda_latent * mean (enc(x_fake) - z)^2

with lambda_gp = 10 and lambda_latent = 200 (the mean runs over the batch and
the latents, as the authors' ``latent_loss``). QLInfoWGAN-GP quantizes the
latent head with :class:`latentquant.LatentQuantize` (its codebook values live
in the generator's optimizer, as the authors' ``latent`` module does), draws
the prior uniformly from each latent's values (``LatentQuantize.sample``) and
adds ``0.01 * quantization + 0.01 * commitment`` of the encodings of
generated images to both objectives. InfoWGAN-GP uses the prior U[0, 1]^d.

Training alternates: every step is one critic step on a fresh real batch, and
every ``n_critic``-th step (5) is followed by one generator step, as in the
authors' ``scripts/train_gan.py`` (``generator_step_period: 5``). Both
optimizers split parameters as QLAE does: AdamW with element-wise gradient
clipping on non-bias weights, plain Adam on biases and codebook values
(lr 2e-4, betas (0, 0.9)).

Reference hyperparameters: kylehkhsu/latent_quantization,
``configs/model_partial/{info_gan,quantized_info_gan}.yaml`` and
``configs/train_gan.yaml``.

Einstein letters: b batch, d latents, f trunk features.
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["CriticEncoder", "InfoWGAN", "gradient_penalty", "ClippedAdamW"]


# ----------------------------------------------------------------- helpers

def gradient_penalty(
    critic: Callable[[Tensor], Tensor],
    x_real: Tensor,
    x_fake: Tensor,
    eps: Tensor | None = None,
) -> Tensor:
    r"""WGAN-GP gradient penalty (Gulrajani et al., 2017, eq. 3).

    .. math::
        \hat x_i = \epsilon_i x_i + (1 - \epsilon_i) \tilde x_i,\qquad
        \mathrm{GP} = \frac1b \sum_i \big(\lVert \nabla_{x} D(\hat x_i) \rVert_2 - 1\big)^2

    Parameters
    ----------
    critic : callable mapping a batch ``(b, ...)`` to values ``(b,)``.
    x_real, x_fake : tensors of the same shape ``(b, ...)``.
    eps : optional ``(b,)`` interpolation weights; drawn from U[0, 1] when None.

    Returns a scalar whose graph reaches the critic's parameters
    (``create_graph=True``), so it can be minimised by backpropagation.
    """
    if x_real.shape != x_fake.shape:
        raise ValueError(f"x_real and x_fake must have the same shape, got {tuple(x_real.shape)} and {tuple(x_fake.shape)}")
    b = x_real.shape[0]
    if eps is None:
        eps = torch.rand(b, device=x_real.device, dtype=x_real.dtype)
    if eps.shape != (b,):
        raise ValueError(f"eps must have shape ({b},), got {tuple(eps.shape)}")
    eps = eps.view(b, *([1] * (x_real.dim() - 1)))
    x_hat = (eps * x_real.detach() + (1 - eps) * x_fake.detach()).requires_grad_(True)
    value = critic(x_hat)
    (grad,) = torch.autograd.grad(value.sum(), x_hat, create_graph=True)
    norm = torch.linalg.vector_norm(grad.flatten(1), dim=1)
    return ((norm - 1) ** 2).mean()


class ClippedAdamW(torch.optim.AdamW):
    """AdamW whose gradients are clipped element-wise to ``[-clip, clip]`` first.

    ``optax.chain(optax.clip(c), optax.adamw(...))`` of the authors' code; the
    clip applies only to groups whose ``clip`` entry is not None.
    """

    def __init__(self, params, clip: float | None = 1.0, **kwargs):
        super().__init__(params, **kwargs)
        for group in self.param_groups:
            group.setdefault("clip", clip)

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            c = group.get("clip")
            if c is None:
                continue
            for p in group["params"]:
                if p.grad is not None:
                    p.grad.clamp_(-c, c)
        return super().step(closure)


def _split_params(named: list[tuple[str, nn.Parameter]], no_decay_ids: set[int]):
    decay, plain = [], []
    for name, p in named:
        if not p.requires_grad:
            continue
        (plain if name.endswith("bias") or id(p) in no_decay_ids else decay).append(p)
    return decay, plain


# ------------------------------------------------------------------ models

class EncodeOutput(NamedTuple):
    z: Tensor                 # (b, d) the code fed back to the generator (straight-through when quantized)
    z_continuous: Tensor      # (b, d) the latent head's output
    indices: Tensor | None    # (b, d) per-latent value indices, None when continuous
    quantization: Tensor      # scalar, unweighted quantization loss (0 when continuous)
    commitment: Tensor        # scalar, unweighted commitment loss (0 when continuous)


class CriticEncoder(nn.Module):
    """Encoder trunk with two heads: a value head D (Linear -> 1) and a latent head.

    ``trunk`` maps images ``(b, c, h, w)`` to features ``(b, f)``.
    """

    def __init__(self, trunk: nn.Module, feature_dim: int, num_latents: int):
        super().__init__()
        self.trunk = trunk
        self.value_head = nn.Linear(feature_dim, 1)
        self.latent_head = nn.Linear(feature_dim, num_latents)

    def value(self, x: Tensor) -> Tensor:
        return self.value_head(self.trunk(x)).squeeze(-1)       # (b,)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        h = self.trunk(x)                                       # (b, f)
        return self.value_head(h).squeeze(-1), self.latent_head(h)  # (b,), (b, d)


class InfoWGAN(nn.Module):
    """InfoWGAN-GP, or QLInfoWGAN-GP when ``values_per_latent`` is given.

    Parameters
    ----------
    trunk : encoder trunk, images -> ``(b, feature_dim)`` features.
    decoder : latents ``(b, d)`` -> image logits; the generator is its sigmoid.
    feature_dim : width of the trunk's output.
    num_latents : d.
    values_per_latent : None for InfoWGAN-GP (prior U[0, 1]^d); an int >= 2 for
        QLInfoWGAN-GP (a LatentQuantize with that many values per latent).
    lambda_gp, lambda_latent : weights of the gradient penalty (10) and of the
        latent reconstruction loss (200).
    quantization_weight, commitment_weight : QL loss weights (0.01 each).
    n_critic : critic steps per generator step (5).
    """

    def __init__(
        self,
        trunk: nn.Module,
        decoder: nn.Module,
        feature_dim: int,
        num_latents: int,
        values_per_latent: int | None = None,
        *,
        lambda_gp: float = 10.0,
        lambda_latent: float = 200.0,
        quantization_weight: float = 0.01,
        commitment_weight: float = 0.01,
        n_critic: int = 5,
    ):
        super().__init__()
        for name, v in (("feature_dim", feature_dim), ("num_latents", num_latents), ("n_critic", n_critic)):
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} must be a positive int, got {v!r}")
        for name, v in (("lambda_gp", lambda_gp), ("lambda_latent", lambda_latent),
                        ("quantization_weight", quantization_weight), ("commitment_weight", commitment_weight)):
            if not isinstance(v, (int, float)) or isinstance(v, bool) or not v >= 0:
                raise ValueError(f"{name} must be a non-negative number, got {v!r}")
        self.critic = CriticEncoder(trunk, feature_dim, num_latents)
        self.decoder = decoder
        self.num_latents = num_latents
        self.lambda_gp, self.lambda_latent, self.n_critic = float(lambda_gp), float(lambda_latent), n_critic
        self.quantization_weight, self.commitment_weight = float(quantization_weight), float(commitment_weight)
        if values_per_latent is None:
            self.quantizer = None
        else:
            if isinstance(values_per_latent, bool) or not isinstance(values_per_latent, int) or values_per_latent < 2:
                raise ValueError(f"values_per_latent must be an int >= 2 or None, got {values_per_latent!r}")
            from latentquant.quantize import LatentQuantize

            self.quantizer = LatentQuantize(
                [values_per_latent] * num_latents,
                quantization_loss_weight=quantization_weight,
                commitment_loss_weight=commitment_weight,
                flat_indices=False,
            )

    @property
    def quantized(self) -> bool:
        return self.quantizer is not None

    def extra_repr(self) -> str:
        kind = "qlinfowgan" if self.quantized else "infowgan"
        return (f"{kind}, num_latents={self.num_latents}, n_critic={self.n_critic}, "
                f"lambda_gp={self.lambda_gp}, lambda_latent={self.lambda_latent}")

    # -- the three maps: prior, generator, encoder
    def sample_prior(self, batch_size: int) -> Tensor:
        """z ~ p(z), ``(batch_size, d)``: U[0, 1]^d, or uniform over each latent's values.

        The quantized prior is differentiable with respect to the codebook values.
        """
        if self.quantizer is None:
            device = self.critic.latent_head.weight.device
            return torch.rand(batch_size, self.num_latents, device=device)
        return self.quantizer.sample((batch_size,))

    def generate(self, z: Tensor) -> Tensor:
        """G(z) = sigmoid(decoder(z)), images in [0, 1]."""
        return torch.sigmoid(self.decoder(z))

    def encode(self, x: Tensor) -> EncodeOutput:
        _, z = self.critic(x)
        return self._latent(z)

    def _latent(self, z: Tensor) -> EncodeOutput:
        if self.quantizer is None:
            zero = z.new_zeros(())
            return EncodeOutput(z, z, None, zero, zero)
        (q, indices, _), parts = self.quantizer(z, return_loss_breakdown=True)
        return EncodeOutput(q, z, indices, parts.quantization, parts.commitment)

    def _ql_terms(self, enc: EncodeOutput) -> Tensor:
        return self.quantization_weight * enc.quantization + self.commitment_weight * enc.commitment

    # -- the two objectives
    def critic_loss(self, x: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        """L_critic on a real batch ``x``; the fakes are drawn here, without a graph to G."""
        b = x.shape[0]
        with torch.no_grad():
            z = self.sample_prior(b)                                  # (b, d)
            x_fake = self.generate(z)
        value, z_head = self.critic(torch.cat([x, x_fake]))           # (2b,), (2b, d)
        v_real, v_fake = value[:b], value[b:]
        enc = self._latent(z_head[b:])
        wasserstein = v_fake.mean() - v_real.mean()
        gp = gradient_penalty(self.critic.value, x, x_fake)
        latent = F.mse_loss(enc.z, z)
        loss = wasserstein + self.lambda_gp * gp + self.lambda_latent * latent + self._ql_terms(enc)
        parts = {"critic": loss.detach(), "wasserstein": wasserstein.detach(),
                 "gradient_penalty": gp.detach(), "latent": latent.detach()}
        if self.quantized:
            parts.update(quantization=enc.quantization.detach(), commitment=enc.commitment.detach())
        return loss, parts

    def generator_loss(self, batch_size: int) -> tuple[Tensor, dict[str, Tensor]]:
        """L_generator on a fresh prior batch; gradients reach G, the codebook values and the critic."""
        z = self.sample_prior(batch_size)
        v_fake, z_head = self.critic(self.generate(z))
        enc = self._latent(z_head)
        latent = F.mse_loss(enc.z, z)
        loss = -v_fake.mean() + self.lambda_latent * latent + self._ql_terms(enc)
        parts = {"generator": loss.detach(), "generator_latent": latent.detach()}
        return loss, parts

    # -- optimization
    def generator_parameters(self) -> list[nn.Parameter]:
        extra = list(self.quantizer.parameters()) if self.quantizer is not None else []
        return list(self.decoder.parameters()) + extra

    def configure_optimizers(
        self,
        lr: float = 2e-4,
        betas: tuple[float, float] = (0.0, 0.9),
        weight_decay: float = 1e-4,
        clip: float | None = 1.0,
    ) -> dict[str, torch.optim.Optimizer]:
        """Two optimizers, ``critic`` (trunk and both heads) and ``generator``
        (decoder and codebook values), each AdamW + element-wise clip on
        non-bias weights and plain Adam on biases and codebook values."""
        codebook = {id(p) for p in self.quantizer.parameters()} if self.quantizer is not None else set()

        def make(named):
            decay, plain = _split_params(named, codebook)
            groups = [{"params": decay, "weight_decay": weight_decay, "clip": clip},
                      {"params": plain, "weight_decay": 0.0, "clip": None}]
            return ClippedAdamW([g for g in groups if g["params"]], lr=lr, betas=betas)

        gen_named = [(f"decoder.{n}", p) for n, p in self.decoder.named_parameters()]
        if self.quantizer is not None:
            gen_named += [(f"quantizer.{n}", p) for n, p in self.quantizer.named_parameters()]
        return {"critic": make(list(self.critic.named_parameters())), "generator": make(gen_named)}

    def train_step(self, x: Tensor, optimizers: dict[str, torch.optim.Optimizer], step: int) -> dict[str, Tensor]:
        """One critic step on ``x``, then a generator step when ``(step + 1) % n_critic == 0``.

        Only the stepped network moves: the critic step updates the critic-encoder
        alone, the generator step the decoder and codebook values alone.
        """
        self.zero_grad(set_to_none=True)
        loss, parts = self.critic_loss(x)
        loss.backward()
        optimizers["critic"].step()
        if (step + 1) % self.n_critic == 0:
            self.zero_grad(set_to_none=True)
            critic_params = [p for p in self.critic.parameters() if p.requires_grad]
            for p in critic_params:  # the critic is only a path for gradients here
                p.requires_grad_(False)
            try:
                gen_loss, gen_parts = self.generator_loss(x.shape[0])
                gen_loss.backward()
            finally:
                for p in critic_params:
                    p.requires_grad_(True)
            optimizers["generator"].step()
            parts.update(gen_parts)
        self.zero_grad(set_to_none=True)
        return parts
