"""NoisyAE: an autoencoder whose continuous latents are clamped to a box and, in training, blurred by noise.

    pre_z = enc(x)                                  (b, L)   L = 2 x number of factors
    z     = clamp(pre_z, -clamp, clamp)             (b, L)   what the decoder and the metrics read
    z~    = z + noise * eps,  eps ~ N(0, I)         (b, L)   training only
    loss  = mean BCE(dec(z~), x)

It is the continuous counterpart of QLAE's latent space, for ablations: a
bounded latent that the decoder can only read to within the noise carries a
limited number of distinguishable values, as a 10-value codebook does, but has
no discrete structure. The metrics score the clamped latents as continuous
(``discrete_latents`` is False); evaluation and figures run in ``eval()`` mode,
without noise.

The latent layer is ``NoisyClampedLatent`` of the authors' repository
(Hsu et al. 2023, kylehkhsu/latent_quantization ``disentangle/latents/noisy_clamped.py``):
``x = clamp(x, -clamp, clamp); x = x + normal(key, x.shape) * noise``. That
class takes ``clamp`` and ``noise`` as arguments, but no configuration of the
repository sets them (it is used by no ``configs/`` file), and it adds its
noise on every call. Two choices are therefore ours, see
``latentquant.models.defaults``: the values, ``clamp = 0.5`` (the range
``[-0.5, 0.5]`` in which QLAE's values start, ``linspace(-0.5, 0.5, V)``) and
``noise = 0.05`` (about half the spacing, 1/9, of QLAE's 10 initial values),
and noise in training only, so that encodings are deterministic.
``torch.clamp``, like ``jax.lax.clamp``, passes no gradient to a latent outside
the box.

Shapes: b batch, L latents.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from latentquant.models.base import DataInfo, Encoding, LatentModel, StepOutput, sweep_latent
from latentquant.models.registry import register_model
from latentquant.validation import check_number


@register_model("noisyae")
class NoisyAE(LatentModel):
    """Autoencoder with clamped latents and training noise (see module docstring).

    Parameters (besides ``arch``, ``info``, ``num_latents``)
    ----------
    clamp : half-width of the box every latent is clamped to, > 0 (0.5).
    noise : standard deviation of the Gaussian noise added to the latents in training, >= 0 (0.05).
    """

    def __init__(self, arch: str, info: DataInfo, num_latents: int, clamp: float = 0.5, noise: float = 0.05):
        super().__init__(arch, info, num_latents, encoder_features=num_latents)
        self.clamp = check_number("clamp", clamp, 0.0, low_open=True)
        self.noise = check_number("noise", noise)

    def latents(self, x: torch.Tensor) -> torch.Tensor:
        """The clamped latents ``(b, L)``, without noise."""
        return self.encoder(x).clamp(-self.clamp, self.clamp)

    def forward(self, x: torch.Tensor) -> StepOutput:
        z = self.latents(x)
        if self.training and self.noise > 0:
            z = z + self.noise * torch.randn_like(z)
        bce = F.binary_cross_entropy_with_logits(self.decoder(z), x)
        return StepOutput(bce, {"loss": bce.detach(), "bce": bce.detach()})

    def encode(self, x: torch.Tensor) -> Encoding:
        z = self.latents(x)
        return Encoding(z, z)

    def traversal(self, z: torch.Tensor, latent: int, codes: torch.Tensor, steps: int) -> torch.Tensor:
        """``(steps, b, L)``: latent ``latent`` swept across its whole box, ``linspace(-clamp, clamp, steps)``."""
        return sweep_latent(z, latent, torch.linspace(-self.clamp, self.clamp, steps, device=z.device))

    def extra_repr(self) -> str:
        return super().extra_repr() + f", clamp={self.clamp:g}, noise={self.noise:g}"
