"""InfoWGAN-GP and QLInfoWGAN-GP: latent-reconstructing generative models.

An InfoGAN (Chen et al., 2016) trained as a Wasserstein GAN with gradient
penalty (Gulrajani et al., 2017), as in Hsu et al., "Disentanglement via
Latent Quantization", NeurIPS 2023 (arXiv 2305.18378), section 4.

Networks (on the ``--arch`` backbones):

- critic-encoder: the encoder trunk with two linear heads, a value head
  D(x) (-> 1) and the latent head enc(x) (-> d). They are stored as one
  ``Linear(features -> 1 + d)``, the backbone's own head, which is the same
  function, the same initialization (PyTorch's depends only on fan-in) and the
  same decayed/undecayed split as two separate heads.
- generator: G(z) = sigmoid(decoder(z)), the style decoder followed by a sigmoid.

With z ~ p(z), x_fake = G(z) and x_hat = eps * x + (1 - eps) * x_fake,
eps ~ U[0, 1] per sample:

    L_critic    = mean D(x_fake) - mean D(x)
                  + lambda_gp * mean_i (||grad_x D(x_hat_i)||_2 - 1)^2
                  + lambda_latent * mean (enc(x_fake) - z)^2
    L_generator = -mean D(x_fake) + lambda_latent * mean (enc(x_fake) - z)^2

lambda_gp = 10, lambda_latent = 200; the latent mean runs over batch and
latents, as the authors' ``latent_loss``. InfoWGAN-GP's prior is U[0, 1]^d.
QLInfoWGAN-GP quantizes the latent head with :class:`latentquant.LatentQuantize`
(10 values per latent), draws each latent of the prior uniformly from its
values (``LatentQuantize.sample``) and adds ``0.01 * quantization +
0.01 * commitment`` of the encodings of the generated images to both losses;
the codebook values belong to the generator's optimizer, as the authors'
``latent`` module does.

Schedule: every training step is one critic step on a fresh batch of 64 real
images, and every ``n_critic``-th (5th) step is followed by one generator
step (the authors' ``generator_step_period: 5``). Each network has its own
optimizer, split as for QLAE (``LatentModel.split_parameters``): AdamW with
element-wise gradient clipping to [-1, 1] on non-bias weights, plain Adam on
biases and codebook values; lr 2e-4, betas (0, 0.9).

Published values (lr, batch size, weight decay, lambdas), with their sources
in kylehkhsu/latent_quantization, are in the table of ``latentquant.models.defaults``.

Shapes: b batch, d latents.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import nullcontext
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from latentquant.models.base import (
    DataInfo,
    Encoding,
    LatentModel,
    StepOutput,
    adamw,
    clip_gradients,
    codebook_traversal,
)
from latentquant.models.qlae import latent_quantizer
from latentquant.models.registry import register_model
from latentquant.validation import check_int, check_number

__all__ = ["InfoWGAN", "QLInfoWGAN", "gradient_penalty"]

PHASES = ("critic", "generator")


def gradient_penalty(
    critic: Callable[[Tensor], Tensor], x_real: Tensor, x_fake: Tensor, eps: Tensor | None = None
) -> Tensor:
    r"""WGAN-GP gradient penalty (Gulrajani et al., 2017, eq. 3).

    .. math::
        \hat x_i = \epsilon_i x_i + (1 - \epsilon_i) \tilde x_i, \qquad
        \mathrm{GP} = \frac1b \sum_i \big(\lVert \nabla_x D(\hat x_i) \rVert_2 - 1\big)^2

    Parameters
    ----------
    critic : maps a batch ``(b, ...)`` to values ``(b,)``.
    x_real, x_fake : tensors of one shape ``(b, ...)``; no gradient flows into them.
    eps : ``(b,)`` interpolation weights; drawn from U[0, 1] when None.

    Returns a scalar built with ``create_graph=True``: its gradient reaches the
    critic's parameters.
    """
    if x_real.shape != x_fake.shape:
        raise ValueError(
            f"x_real and x_fake must have the same shape, got {tuple(x_real.shape)} and {tuple(x_fake.shape)}"
        )
    b = x_real.shape[0]
    if eps is None:
        eps = torch.rand(b, device=x_real.device, dtype=x_real.dtype)
    if eps.shape != (b,):
        raise ValueError(f"eps must have shape ({b},), got {tuple(eps.shape)}")
    eps = eps.view(b, *([1] * (x_real.ndim - 1)))
    x_hat = (eps * x_real.detach() + (1 - eps) * x_fake.detach()).requires_grad_(True)
    (grad,) = torch.autograd.grad(critic(x_hat).sum(), x_hat, create_graph=True)
    grad = grad.to(torch.promote_types(grad.dtype, torch.float32))  # at least float32 under autocast
    norm = torch.linalg.vector_norm(grad.flatten(1), dim=1)
    return ((norm - 1) ** 2).mean()


# torch.compile (AOTAutograd) cannot differentiate its graphs twice; the
# penalty's critic pass therefore always runs eagerly, the rest may be compiled.
_eager_gradient_penalty = torch.compiler.disable(gradient_penalty)


@register_model("infowgan")
class InfoWGAN(LatentModel):
    """InfoWGAN-GP: continuous latents, prior U[0, 1]^d (see module docstring).

    Parameters (besides ``arch``, ``info``, ``num_latents``)
    ----------
    lambda_gp : weight of the gradient penalty (10).
    lambda_latent : weight of the latent reconstruction loss (200).
    n_critic : critic steps per generator step (5).
    """

    #: the critic step leaves the generator out of the graph, and vice versa
    ddp_find_unused_parameters = True

    def __init__(
        self,
        arch: str,
        info: DataInfo,
        num_latents: int,
        lambda_gp: float = 10.0,
        lambda_latent: float = 200.0,
        n_critic: int = 5,
    ):
        # the backbone's head gives 1 + d outputs: the value, then the latents
        super().__init__(arch, info, num_latents, encoder_features=1 + num_latents, decoder_features=num_latents)
        self.lambda_gp, self.lambda_latent = (
            check_number("lambda_gp", lambda_gp),
            check_number("lambda_latent", lambda_latent),
        )
        self.n_critic = check_int("n_critic", n_critic, 1)

    # -- the networks -------------------------------------------------------

    def critic_encode(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """``(D(x), pre_z)``, shapes ``(b,)`` and ``(b, d)``."""
        out = self.encoder(x)  # (b, 1 + d)
        return out[:, 0], out[:, 1:]

    def critic_value(self, x: Tensor) -> Tensor:
        return self.critic_encode(x)[0]

    def sample_prior(self, batch_size: int) -> Tensor:
        """z ~ U[0, 1]^d, ``(batch_size, d)``."""
        return torch.rand(batch_size, self.num_latents, device=self.decoder_device())

    def decoder_device(self) -> torch.device:
        return next(self.decoder.parameters()).device

    def generate(self, z: Tensor) -> Tensor:
        """G(z) = sigmoid(decoder(z)): images in [0, 1]."""
        return torch.sigmoid(self.decoder(z))

    def latent_layer(self, pre_z: Tensor) -> tuple[Tensor, Tensor, dict[str, Tensor]]:
        """``(z, code, extra loss parts)`` from the latent head's output; identity here."""
        return pre_z, pre_z, {}

    def latent_regularizer(self, parts: dict[str, Tensor]) -> Tensor | float:
        return 0.0

    # -- the interface ------------------------------------------------------

    def encode(self, x: Tensor) -> Encoding:
        z, code, _ = self.latent_layer(self.critic_encode(x)[1])
        return Encoding(z, code)

    def forward(self, x: Tensor, phase: str = "critic") -> StepOutput:
        """The critic (default) or the generator objective on a real batch ``x``
        (the generator uses only its size). Going through ``forward`` keeps
        DistributedDataParallel's gradient hooks in play for both phases."""
        if phase == "critic":
            return self._critic_loss(x)
        if phase == "generator":
            return self._generator_loss(x.shape[0])
        raise ValueError(f"phase must be one of {PHASES}, got {phase!r}")

    def _critic_loss(self, x: Tensor) -> StepOutput:
        b = x.shape[0]
        with torch.no_grad():
            z = self.sample_prior(b)  # (b, d)
            x_fake = self.generate(z).to(x.dtype)
        value, pre_z = self.critic_encode(torch.cat([x, x_fake]))  # (2b,), (2b, d)
        z_hat, _, lq = self.latent_layer(pre_z[b:])
        wasserstein = value[b:].mean() - value[:b].mean()
        gp = _eager_gradient_penalty(self.critic_value, x, x_fake)
        latent = F.mse_loss(z_hat.float(), z.float())
        loss = wasserstein + self.lambda_gp * gp + self.lambda_latent * latent + self.latent_regularizer(lq)
        parts = {"loss": loss, "wasserstein": wasserstein, "gradient_penalty": gp, "latent": latent, **lq}
        return StepOutput(loss, {k: v.detach() for k, v in parts.items()})

    def _generator_loss(self, batch_size: int) -> StepOutput:
        z = self.sample_prior(batch_size)
        value, pre_z = self.critic_encode(self.generate(z))
        z_hat, _, lq = self.latent_layer(pre_z)
        latent = F.mse_loss(z_hat.float(), z.float())
        loss = -value.mean() + self.lambda_latent * latent + self.latent_regularizer(lq)
        return StepOutput(loss, {"generator": loss.detach(), "generator_latent": latent.detach()})

    @torch.no_grad()
    def extra_figures(self, images: Tensor) -> dict[str, Tensor]:
        """``samples``: an 8 x 8 grid of generated images, G(z) for z ~ p(z)."""
        rows = cols = 8
        x = self.generate(self.sample_prior(rows * cols)).float().clamp(0, 1)
        return {"samples": x.view(rows, cols, *x.shape[1:])}

    # -- optimization -------------------------------------------------------

    def configure_optimizers(
        self, lr: float, weight_decay: float, clip: float | None = 1.0, betas: tuple[float, float] = (0.0, 0.9)
    ) -> dict[str, torch.optim.Optimizer]:
        """``critic`` (encoder trunk and heads) and ``generator`` (decoder and codebook
        values), each AdamW with decay and element-wise clipping on non-bias weights
        and plain Adam on biases and codebook values: the groups of ``LatentModel.param_groups``,
        split by network."""
        is_critic = lambda name: name.startswith("encoder.")
        return {
            "critic": adamw(self.param_groups(weight_decay, clip, is_critic), lr, betas),
            "generator": adamw(self.param_groups(weight_decay, clip, lambda name: not is_critic(name)), lr, betas),
        }

    def training_step(
        self,
        net: Callable[..., StepOutput],
        x: Tensor,
        optimizers: dict[str, torch.optim.Optimizer],
        step: int,
        autocast: Callable[[], Any] = nullcontext,
    ) -> dict[str, Tensor]:
        """One critic step on ``x``; then, when ``(step + 1) % n_critic == 0``, one
        generator step. Each step moves only its own network: the critic's
        parameters are frozen while the generator's gradient flows through them."""
        critic_opt, gen_opt = optimizers["critic"], optimizers["generator"]
        self.zero_grad(set_to_none=True)
        with autocast():
            out = net(x, phase="critic")
        out.loss.backward()
        clip_gradients(critic_opt)
        critic_opt.step()
        self.zero_grad(set_to_none=True)  # the codebook values got a (discarded) gradient too
        parts = dict(out.parts)
        if (step + 1) % self.n_critic == 0:
            frozen = [p for p in self.encoder.parameters() if p.requires_grad]
            for p in frozen:
                p.requires_grad_(False)
            try:
                with autocast():
                    gen = net(x, phase="generator")
                gen.loss.backward()
            finally:
                for p in frozen:
                    p.requires_grad_(True)
            clip_gradients(gen_opt)
            gen_opt.step()
            self.zero_grad(set_to_none=True)
            parts.update(gen.parts)
        return parts

    def extra_repr(self) -> str:
        return (
            super().extra_repr() + f", n_critic={self.n_critic}, lambda_gp={self.lambda_gp}, "
            f"lambda_latent={self.lambda_latent}"
        )


@register_model("qlinfowgan")
class QLInfoWGAN(InfoWGAN):
    """QLInfoWGAN-GP: InfoWGAN-GP with a quantized latent head and a codebook prior.

    Parameters (besides those of :class:`InfoWGAN`)
    ----------
    values_per_latent : values in each latent's learned scalar codebook (10).
    quantization_weight, commitment_weight : weights of LatentQuantize's two losses (0.01).
    """

    discrete_latents = True

    def __init__(
        self,
        arch: str,
        info: DataInfo,
        num_latents: int,
        values_per_latent: int = 10,
        quantization_weight: float = 0.01,
        commitment_weight: float = 0.01,
        lambda_gp: float = 10.0,
        lambda_latent: float = 200.0,
        n_critic: int = 5,
    ):
        super().__init__(arch, info, num_latents, lambda_gp=lambda_gp, lambda_latent=lambda_latent, n_critic=n_critic)
        self.values_per_latent = values_per_latent
        self.quantization_weight, self.commitment_weight = float(quantization_weight), float(commitment_weight)
        self.quantizer = latent_quantizer(num_latents, values_per_latent, quantization_weight, commitment_weight)

    def codebook_parameters(self) -> list[nn.Parameter]:
        return list(self.quantizer.parameters())

    def sample_prior(self, batch_size: int) -> Tensor:
        """Each latent uniformly from its codebook values, ``(batch_size, d)``;
        differentiable with respect to the values."""
        return self.quantizer.sample((batch_size,))

    def latent_layer(self, pre_z: Tensor) -> tuple[Tensor, Tensor, dict[str, Tensor]]:
        (z, indices, _), lb = self.quantizer(pre_z, return_loss_breakdown=True)
        return z, indices, {"quantization": lb.quantization, "commitment": lb.commitment}

    def latent_regularizer(self, parts: dict[str, Tensor]) -> Tensor:
        return self.quantization_weight * parts["quantization"] + self.commitment_weight * parts["commitment"]

    traversal = codebook_traversal  # every learned value of the latent, as QLAE's
