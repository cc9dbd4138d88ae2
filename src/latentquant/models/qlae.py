"""QLAE: the quantized-latent autoencoder of Hsu et al. (2023).

    pre_z = enc(x)                         (b, L)   L = 2 x number of factors
    z     = LatentQuantize(pre_z)          (b, L)   each latent snapped to one of its V learned values
    loss  = mean BCE(dec(z), x) + 0.01 * quantization + 0.01 * commitment

with AdamW (lr 1e-3, decoupled weight decay 0.1; 0.001 on MPI3D) and element-wise gradient
clipping on the encoder/decoder weights, plain Adam on biases and values
(``LatentModel.configure_optimizers``). The metrics read the per-latent value
indices, a discrete representation.

``-o global_codebook=1`` (in a sweep: ``qlae+global-codebook=1``) is the paper's
global-codebook ablation: one set of V values shared by all L latents
(``latents/global_quantized.py``, ``configs/model_partial/global_quantized_ae.yaml``
in the authors' repository), ``LatentQuantize(..., shared_values=True)``.

Reference: Hsu, Dorrell, Whittington, Wu, Finn, "Disentanglement via Latent
Quantization", NeurIPS 2023, arXiv 2305.18378; defaults from
kylehkhsu/latent_quantization ``configs/model_partial/quantized_ae.yaml`` and
``configs/train_ae.yaml``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from latentquant._quantize_checks import MAX_LATENTS, MAX_VALUES
from latentquant.models.base import DataInfo, Encoding, LatentModel, StepOutput, codebook_traversal
from latentquant.models.registry import register_model
from latentquant.quantize import LatentQuantize
from latentquant.validation import check_int


def latent_quantizer(
    num_latents: int,
    values_per_latent: int,
    quantization_weight: float,
    commitment_weight: float,
    global_codebook: bool = False,
):
    """The quantizer of the paper's QL models: ``values_per_latent`` learnable
    values for each of ``num_latents`` latents, per-latent indices (the
    discrete representation the metrics read). ``global_codebook``: one set of
    ``values_per_latent`` values shared by all latents (the paper's ablation)."""
    # the layer's bounds, named for the model, before anything is allocated
    check_int("num_latents", num_latents, 1, MAX_LATENTS)
    check_int("values_per_latent", values_per_latent, 2, MAX_VALUES // num_latents)
    return LatentQuantize(
        levels=values_per_latent,
        codebook_dim=num_latents,
        quantization_loss_weight=quantization_weight,
        commitment_loss_weight=commitment_weight,
        flat_indices=False,
        shared_values=bool(global_codebook),
        track_usage=True,  # the training loop logs the values' usage (one index_add a forward)
    )


@register_model("qlae")
class QLAE(LatentModel):
    discrete_latents = True

    def __init__(
        self,
        arch: str,
        info: DataInfo,
        num_latents: int,
        values_per_latent: int = 10,
        quantization_weight: float = 0.01,
        commitment_weight: float = 0.01,
        global_codebook: bool = False,
    ):
        # the quantizer first: its checks bound num_latents before the backbone allocates for it
        quantizer = latent_quantizer(
            num_latents, values_per_latent, quantization_weight, commitment_weight, global_codebook
        )
        super().__init__(arch, info, num_latents, encoder_features=num_latents)
        self.values_per_latent = values_per_latent
        self.quantizer = quantizer

    def codebook_parameters(self):
        return list(self.quantizer.parameters())

    def forward(self, x: torch.Tensor) -> StepOutput:
        (z, _, lq_loss), parts = self.quantizer(self.encoder(x), return_loss_breakdown=True)
        bce = F.binary_cross_entropy_with_logits(self.decoder(z), x)
        loss = bce + lq_loss
        return StepOutput(
            loss,
            {
                "loss": loss.detach(),
                "bce": bce.detach(),
                "quantization": parts.quantization.detach(),
                "commitment": parts.commitment.detach(),
            },
        )

    def encode(self, x: torch.Tensor) -> Encoding:
        z, indices, _ = self.quantizer(self.encoder(x))
        return Encoding(z, indices)

    traversal = codebook_traversal  # every learned value of the latent (steps is ignored: the sweep is the codebook)
