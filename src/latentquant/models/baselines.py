"""The paper's baselines on the same backbones: AE, beta-VAE, beta-TCVAE, BioAE and VQ-VAE.

All reconstruct with the mean binary cross-entropy over pixels (per-pixel
Bernoulli likelihood divided by ``x_dim = c * 64 * 64``); their regularizers are
scaled to match, as in the authors' code. Their published
values, with sources, are the table in ``latentquant.models.defaults``.

Shapes: b batch, l latent slots, k codebook entries, e embedding size.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from einops import rearrange

from latentquant._images import IMAGE_SIZE
from latentquant.models.base import DataInfo, Encoding, LatentModel, StepOutput
from latentquant.models.registry import register_model
from latentquant.validation import check_int, check_number


def _bce(logits: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    return F.binary_cross_entropy_with_logits(logits, x)


# ---------------------------------------------------------------------------


@register_model("ae")
class AE(LatentModel):
    """Plain autoencoder with continuous latents: ``loss = mean BCE``; weight decay 1e-3
    (``configs/params/ae/ae_mpi3d.yaml``)."""

    def __init__(self, arch: str, info: DataInfo, num_latents: int):
        super().__init__(arch, info, num_latents, encoder_features=num_latents)

    def forward(self, x: torch.Tensor) -> StepOutput:
        bce = _bce(self.decoder(self.encoder(x)), x)
        return StepOutput(bce, {"loss": bce.detach(), "bce": bce.detach()})

    def encode(self, x: torch.Tensor) -> Encoding:
        z = self.encoder(x)
        return Encoding(z, z)


@register_model("bioae")
class BioAE(AE):
    """Biologically inspired AE (Whittington et al., ICLR 2023, arXiv 2210.01768):

        loss = BCE + nonnegative * mean(relu(-z)) + activity * mean(z ** 2)

    Defaults (``configs/model_partial/bio_ae.yaml``): nonnegative 1, activity 0.1,
    weight decay 1e-4; activity 1e-2 on shapes3d, mpi3d and falcor3d
    (``configs/params/bio_ae/*.yaml``).
    """

    def __init__(self, arch: str, info: DataInfo, num_latents: int, nonnegative: float = 1.0, activity: float = 0.1):
        super().__init__(arch, info, num_latents)
        self.nonnegative, self.activity = check_number("nonnegative", nonnegative), check_number("activity", activity)

    def forward(self, x: torch.Tensor) -> StepOutput:
        z = self.encoder(x)
        bce = _bce(self.decoder(z), x)
        nonneg, act = F.relu(-z).mean(), z.square().mean()
        loss = bce + self.nonnegative * nonneg + self.activity * act
        return StepOutput(
            loss, {"loss": loss.detach(), "bce": bce.detach(), "nonnegative": nonneg.detach(), "activity": act.detach()}
        )


# ---------------------------------------------------------------------------


class _GaussianEncoderModel(LatentModel):
    """Shared by beta-VAE and beta-TCVAE: the head gives ``mu`` and ``sigma = softplus(s)``."""

    def __init__(self, arch: str, info: DataInfo, num_latents: int):
        super().__init__(arch, info, num_latents, encoder_features=2 * num_latents)
        self.x_dim = info.num_channels * IMAGE_SIZE * IMAGE_SIZE

    def posterior(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mu, s = rearrange(self.encoder(x), "b (two l) -> two b l", two=2)
        return mu, F.softplus(s).clamp_min(1e-8)

    def encode(self, x: torch.Tensor) -> Encoding:
        mu, _ = self.posterior(x)
        return Encoding(mu, mu)


@register_model("vae")
class VAE(_GaussianEncoderModel):
    """beta-VAE (Higgins et al., ICLR 2017):

        loss = BCE_mean + (z_dim / x_dim) * beta * KL_mean,
        KL_mean = mean_k [ -log sigma_k + (mu_k^2 + sigma_k^2 - 1) / 2 ]

    i.e. the ELBO with the KL weighted by beta, divided by x_dim. beta
    (``configs/params/vae/*.yaml``): shapes3d 3, mpi3d 0.1, falcor3d 10,
    isaac3d 0.3; 1 otherwise (``configs/model_partial/vae.yaml``).
    """

    def __init__(self, arch: str, info: DataInfo, num_latents: int, beta: float = 1.0):
        super().__init__(arch, info, num_latents)
        self.beta = check_number("beta", beta)

    def forward(self, x: torch.Tensor) -> StepOutput:
        mu, sigma = self.posterior(x)
        z = mu + sigma * torch.randn_like(mu)
        bce = _bce(self.decoder(z), x)
        kl = (-sigma.log() + 0.5 * (mu.square() + sigma.square() - 1)).mean()
        loss = bce + (self.num_latents / self.x_dim) * self.beta * kl
        return StepOutput(loss, {"loss": loss.detach(), "bce": bce.detach(), "kl": kl.detach()})


def _log_normal(z: torch.Tensor, mu: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    return -0.5 * (((z - mu) / sigma).square() + math.log(2 * math.pi)) - sigma.log()


@register_model("tcvae")
class TCVAE(_GaussianEncoderModel):
    """beta-TCVAE (Chen et al., NeurIPS 2018, arXiv 1802.04942) with minibatch-weighted sampling.

    With ``q(z_i | x_j)`` the posterior of sample ``j`` at the sample ``z_i``, batch ``B``, dataset size ``N``:

        log q(z_i)        ~ logsumexp_j sum_k log q(z_ik | x_j) - log(B N)
        log prod_k q(z_ik) ~ sum_k [ logsumexp_j log q(z_ik | x_j) - log(B N) ]
        MI = log q(z_i | x_i) - log q(z_i),  TC = log q(z_i) - log prod_k q(z_ik),
        dwKL = log prod_k q(z_ik) - log p(z_i)
        loss = BCE_mean + mean_i (alpha MI + beta TC + gamma dwKL) / x_dim

    Defaults: alpha = gamma = 1; beta (``configs/params/tcvae/*.yaml``) shapes3d 3,
    mpi3d 0.3, falcor3d 3, isaac3d 1; 1 otherwise.
    """

    def __init__(
        self, arch: str, info: DataInfo, num_latents: int, beta: float = 1.0, alpha: float = 1.0, gamma: float = 1.0
    ):
        super().__init__(arch, info, num_latents)
        self.alpha, self.beta, self.gamma = (
            check_number("alpha", alpha),
            check_number("beta", beta),
            check_number("gamma", gamma),
        )
        self.dataset_size = int(info.size)

    def forward(self, x: torch.Tensor) -> StepOutput:
        mu, sigma = self.posterior(x)
        z = mu + sigma * torch.randn_like(mu)
        bce = _bce(self.decoder(z), x)
        b = z.shape[0]
        log_norm = math.log(b * self.dataset_size)
        # (i, j, k): density of posterior j at sample i, per latent k
        log_qij = _log_normal(z[:, None, :], mu[None, :, :], sigma[None, :, :])
        log_q_z_given_x = _log_normal(z, mu, sigma).sum(-1)
        log_q_z = torch.logsumexp(log_qij.sum(-1), dim=1) - log_norm
        log_prod_q = (torch.logsumexp(log_qij, dim=1) - log_norm).sum(-1)
        log_p_z = _log_normal(z, torch.zeros_like(z), torch.ones_like(z)).sum(-1)
        mi, tc, dwkl = (log_q_z_given_x - log_q_z).mean(), (log_q_z - log_prod_q).mean(), (log_prod_q - log_p_z).mean()
        loss = bce + (self.alpha * mi + self.beta * tc + self.gamma * dwkl) / self.x_dim
        return StepOutput(
            loss,
            {
                "loss": loss.detach(),
                "bce": bce.detach(),
                "mutual_information": mi.detach(),
                "total_correlation": tc.detach(),
                "dimension_wise_kl": dwkl.detach(),
            },
        )


# ---------------------------------------------------------------------------


@register_model("vqvae")
class VQVAE(LatentModel):
    """VQ-VAE (van den Oord et al., NeurIPS 2017) over ``l`` latent slots.

    The encoder emits ``l`` slots of size ``e``; each slot is replaced by its nearest
    entry of the codebook (``k`` entries), straight-through to the decoder:

        loss = BCE_mean + quantization * mean(||sg(z_e) - q||^2) + commitment * mean(||z_e - sg(q)||^2)

    Defaults (``configs/model_partial/vqvae.yaml``, ``configs/params/vqvae/*.yaml``):
    512 entries of size 64, quantization 1, commitment 0.25, weight decay 0.01.
    As in the authors' code (``disentangle/latents/vector_quantized.py``) one codebook
    is shared by all slots (``shared_codebook=True``, the default);
    ``-o shared_codebook=false`` gives each slot its own. The metrics read the per-slot
    entry indices.
    """

    discrete_latents = True

    def __init__(
        self,
        arch: str,
        info: DataInfo,
        num_latents: int,
        num_embeddings: int = 512,
        embedding_dim: int = 64,
        quantization_weight: float = 1.0,
        commitment_weight: float = 0.25,
        shared_codebook: bool = True,
    ):
        check_int("num_embeddings", num_embeddings, 2)
        check_int("embedding_dim", embedding_dim, 1)
        super().__init__(
            arch,
            info,
            num_latents,
            encoder_features=num_latents * embedding_dim,
            decoder_features=num_latents * embedding_dim,
        )
        self.embedding_dim, self.num_embeddings = embedding_dim, num_embeddings
        self.quantization_weight = check_number("quantization_weight", quantization_weight)
        self.commitment_weight = check_number("commitment_weight", commitment_weight)
        limit = math.sqrt(3.0 / embedding_dim)
        slots = 1 if shared_codebook else num_latents
        self.codebook = torch.nn.Parameter(torch.empty(slots, num_embeddings, embedding_dim).uniform_(-limit, limit))

    def codebook_parameters(self):
        return [self.codebook]

    def _codebook(self) -> torch.Tensor:  # (l, k, e)
        return self.codebook.expand(self.num_latents, -1, -1)

    def quantize(self, z_e: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(b, l*e)`` encodings -> nearest entries ``(b, l, e)`` and their indices ``(b, l)``."""
        z_e = rearrange(z_e, "b (l e) -> b l e", l=self.num_latents).float()
        book = self._codebook().float()
        dist = (
            z_e.square().sum(-1, keepdim=True)
            - 2 * torch.einsum("b l e, l k e -> b l k", z_e, book)
            + book.square().sum(-1)[None]
        )
        idx = dist.argmin(-1)
        q = book[torch.arange(self.num_latents, device=idx.device)[None, :], idx]
        return q, idx

    def forward(self, x: torch.Tensor) -> StepOutput:
        z_e = self.encoder(x)
        q, _ = self.quantize(z_e)
        z_e3 = rearrange(z_e, "b (l e) -> b l e", l=self.num_latents).float()
        quant, commit = (z_e3.detach() - q).square().mean(), (z_e3 - q.detach()).square().mean()
        z = z_e3 + (q - z_e3).detach()
        bce = _bce(self.decoder(rearrange(z, "b l e -> b (l e)").to(z_e.dtype)), x)
        loss = bce + self.quantization_weight * quant + self.commitment_weight * commit
        return StepOutput(
            loss,
            {"loss": loss.detach(), "bce": bce.detach(), "quantization": quant.detach(), "commitment": commit.detach()},
        )

    def encode(self, x: torch.Tensor) -> Encoding:
        q, idx = self.quantize(self.encoder(x))
        return Encoding(rearrange(q, "b l e -> b (l e)"), idx)

    def traversal(self, z: torch.Tensor, latent: int, codes: torch.Tensor, steps: int) -> torch.Tensor:
        """Slot ``latent`` through its ``steps`` most used entries on the evaluation set, in index order."""
        counts = torch.bincount(codes[:, latent].long().cpu(), minlength=self.num_embeddings)
        top = counts.topk(min(steps, int((counts > 0).sum()) or 1)).indices.sort().values
        entries = self._codebook()[latent, top.to(z.device)].detach().to(z.dtype)  # (s, e)
        out = rearrange(z, "b (l e) -> b l e", l=self.num_latents).unsqueeze(0).repeat(len(top), 1, 1, 1)
        out[:, :, latent] = entries[:, None]
        return rearrange(out, "s b l e -> s b (l e)")
