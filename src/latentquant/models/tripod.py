"""Tripod: finite scalar quantization, a kernel estimate of the latents' multi-information, and a
normalized Hessian penalty on the decoder.

Hsu, Ibn Hamid, Burns, Finn, Wu, "Tripod: Three Complementary Inductive Biases for Disentangled
Representation Learning", ICML 2024, arXiv 2404.10282; code kylehkhsu/tripod
(``disentangle/models/autoencoder.py``, ``disentangle/nn/quantizer.py``,
``configs/train_autoencoder.yaml``).

    z_c  = tanh(enc(x))                                  (b, l) in (-1, 1)
    z    = 2 round_st((z_c + 1) (v - 1) / 2) / (v - 1) - 1   on the grid of v values in [-1, 1]
    loss = mean BCE(dec(z), x) + lambda_klm KLM(z) + lambda_nhp NHP(dec, z)

``round_st`` rounds with a straight-through gradient. With ``s = std(z_c) + 1e-6`` over the batch
(a ``(l,)`` vector, gradient kept, as theirs), :func:`kde_multi_information` and
:func:`hessian_penalty` define the two regularizers; the penalty is summed over the decoder's
hidden layers the authors name (:data:`HESSIAN_LAYERS`) and averaged over the batch.

The encoder's MLP has a layer norm after each linear layer (``encoder_norm``, :func:`layer_normed`),
as the authors' dense block does.

Shapes: b batch, l latents, p probes, n rows of a decoder call.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from latentquant.models.base import DataInfo, Encoding, LatentModel, StepOutput, sweep_latent
from latentquant.models.registry import register_model
from latentquant.validation import check_flag, check_int, check_number

#: The decoder layers whose outputs the Hessian penalty reads, per backbone. The authors penalize
#: ``cond`` (the conditioning MLP's output) and ``block0..2`` (the first three of four upsampling
#: stages), not the logits (``hessian_regularization_on`` in configs/train_autoencoder.yaml); here
#: the same positions: the decoder's MLP and the last layer at 8, 16 and 32 pixels.
HESSIAN_LAYERS = {
    "paper": ("mlp", "blocks.2", "blocks.5", "blocks.8"),  # 12 style blocks, every third one upsamples
    "compact": ("mlp", "blocks.0", "blocks.1", "blocks.2"),  # 4 upsampling style blocks
    "small": ("mlp", "deconv.1", "deconv.3", "deconv.5"),  # the ReLUs after the first three deconvolutions
}


@register_model("tripod")
class Tripod(LatentModel):
    """Tripod (see module docstring).

    Parameters (besides ``arch``, ``info``, ``num_latents``)
    ----------
    values_per_latent : v, the grid's values per latent (12).
    lambda_klm : weight of the latent multi-information (1e-4 on Shapes3D).
    lambda_nhp : weight of the normalized Hessian penalty (1e-2 on Shapes3D).
    num_probes : probes of each kind per image for the Hessian penalty (2).
    epsilon : finite-difference step, in units of each latent's batch standard deviation (0.1).
    encoder_norm : a layer norm after each linear layer of the encoder's MLP, before its activation,
        as the authors' dense block has (True; see :func:`layer_normed`).
    """

    discrete_latents = True

    def __init__(
        self,
        arch: str,
        info: DataInfo,
        num_latents: int,
        values_per_latent: int = 12,
        lambda_klm: float = 1e-4,
        lambda_nhp: float = 1e-2,
        num_probes: int = 2,
        epsilon: float = 0.1,
        encoder_norm: bool = True,
    ):
        super().__init__(arch, info, num_latents, encoder_features=num_latents)
        self.encoder_norm = check_flag("encoder_norm", encoder_norm)
        if self.encoder_norm:
            self.encoder.mlp = layer_normed(self.encoder.mlp)
        self.values_per_latent = check_int("values_per_latent", values_per_latent, 2, 2**24)
        self.lambda_klm = check_number("lambda_klm", lambda_klm)
        self.lambda_nhp = check_number("lambda_nhp", lambda_nhp)
        self.num_probes = check_int("num_probes", num_probes, 2)
        self.epsilon = check_number("epsilon", epsilon, low_open=True)
        self.hessian_layers = HESSIAN_LAYERS[arch]

    def split_parameters(self):
        """Every parameter decayed and clipped: the authors label the whole encoder and decoder
        ``regularized`` (``regularized_attributes``), and clip both of their groups."""
        return dict(self.named_parameters()), {}

    def forward(self, x: Tensor) -> StepOutput:
        z_c, z = fsq(self.encoder(x), self.values_per_latent)
        z, std = z.float(), z_c.float().std(0, unbiased=False) + 1e-6
        klm = kde_multi_information(z, std).mean()
        if self.lambda_nhp > 0:
            rademacher = torch.randint(0, 2, (self.num_probes, *z.shape), device=z.device).to(z) * 2 - 1
            logits, hp = hessian_penalty(
                self.decoder_layers, z, std, self.epsilon, rademacher, torch.randn_like(rademacher)
            )
            nhp, plain = sum(h.normalized for h in hp.values()).mean(), sum(h.penalty for h in hp.values()).mean()
        else:  # the penalty costs 4 p more decoder passes (to its last layer): none when it has no weight
            logits, nhp, plain = self.decoder(z), klm.new_zeros(()), klm.new_zeros(())
        bce = F.binary_cross_entropy_with_logits(logits.float(), x.float())
        loss = bce + self.lambda_klm * klm + self.lambda_nhp * nhp
        parts = {"loss": loss, "bce": bce, "multi_information": klm, "hessian_normalized": nhp, "hessian": plain}
        return StepOutput(loss, {k: v.detach() for k, v in parts.items()})

    def decoder_layers(self, z: Tensor, with_logits: bool = True) -> tuple[Tensor | None, dict[str, Tensor]]:
        """``(logits, {layer: output})`` of one decoder call on ``z``, the layers of :data:`HESSIAN_LAYERS`
        (logits ``None`` and the layers after the last of them skipped without ``with_logits``)."""
        return decode_with_layers(self.decoder, self.hessian_layers, z, with_logits)

    def encode(self, x: Tensor) -> Encoding:
        """The grid values and their indices ``0..v-1``."""
        _, z = fsq(self.encoder(x), self.values_per_latent)
        code = torch.round((z.float() + 1) * (self.values_per_latent - 1) / 2).long()
        return Encoding(z, code)

    def traversal(self, z: Tensor, latent: int, codes: Tensor, steps: int) -> Tensor:
        """Every grid value, ``linspace(-1, 1, v)`` (``steps`` is ignored: the sweep is the grid)."""
        return sweep_latent(z, latent, torch.linspace(-1, 1, self.values_per_latent, device=z.device))

    def extra_repr(self) -> str:
        return (
            super().extra_repr() + f", values={self.values_per_latent}, lambda_klm={self.lambda_klm:g}, "
            f"lambda_nhp={self.lambda_nhp:g}, encoder_norm={self.encoder_norm}"
        )


def layer_normed(mlp: nn.Sequential) -> nn.Sequential:
    """``mlp`` with a ``LayerNorm`` after each ``Linear``, before its activation: the authors' dense block
    (``LinearLayerNormAct`` in kylehkhsu/tripod ``disentangle/nn/layers.py``: Linear, LayerNorm, GELU).

    It matters on ``small``, which has no normalization: at PyTorch's default initialization its
    layers pass so little of the images' variation that the head's outputs differ across images by a
    standard deviation of about 0.001, and every image rounds to the same point of the grid (spacing
    ``2 / (v - 1)``), where the decoder sees one constant code. With the norm they start spread over
    one to three grid values per latent, mostly two (docs/training.md, "Tripod on small").
    """
    layers = []
    for layer in mlp:
        layers.append(layer)
        if isinstance(layer, nn.Linear):
            layers.append(nn.LayerNorm(layer.out_features))
    return nn.Sequential(*layers)


def fsq(pre_z: Tensor, levels: int) -> tuple[Tensor, Tensor]:
    """Finite scalar quantization (the authors' ``Quantizer``): ``(z_c, z)`` with ``z_c = tanh(pre_z)``
    and ``z`` the nearest of ``levels`` evenly spaced values in [-1, 1], straight-through to ``z_c``'s
    rescaling (Mentzer et al. 2023, arXiv 2309.15505)."""
    z_c = torch.tanh(pre_z)
    u = (z_c + 1) * (levels - 1) / 2  # [0, v - 1]
    u = u + (torch.round(u) - u).detach()
    return z_c, 2 * u / (levels - 1) - 1


def kde_multi_information(z: Tensor, std: Tensor) -> Tensor:
    """Kernel-density estimate of the multi-information ``log q(z_i) - sum_k log q_k(z_ik)`` at every
    sample, ``(b,)``, from the batch ``z`` ``(b, l)`` itself (the authors' ``latent_multiinformation``):

        log q_k(z_ik) = logsumexp_j log N(z_ik; z_jk, h_k^2) - log b,      h_k = std_k
        log q(z_i)    = logsumexp_j sum_k log N(z_ik; z_jk, H_k) - log b,  H_k = std_k^2 S
        S = ((4 / (l + 2))^(1 / (l + 4)) b^(-1 / (l + 4)))^2               Silverman's rule, squared

    Gaussian kernels, the sample itself (``j = i``) included.
    """
    b, l = z.shape
    silverman = ((4 / (l + 2)) ** (1 / (l + 4)) * b ** (-1 / (l + 4))) ** 2
    diff = z[:, None, :] - z[None, :, :]  # (i, j, l)
    log_marginal = torch.logsumexp(_log_normal(diff, std), dim=1) - math.log(b)  # (i, l)
    log_joint = torch.logsumexp(_log_normal(diff, std * math.sqrt(silverman)).sum(-1), dim=1) - math.log(b)
    return log_joint - log_marginal.sum(-1)


def _log_normal(diff: Tensor, sd: Tensor) -> Tensor:
    return -0.5 * (diff / sd).square() - sd.log() - 0.5 * math.log(2 * math.pi)


class Penalty(NamedTuple):
    penalty: Tensor  # (b,) mean over outputs of the off-diagonal term, 2 sum_{i != j} H_ij^2
    normalized: Tensor  # (b,) that term over the total one, 2 sum_ij H_ij^2


def hessian_penalty(
    f: Callable[[Tensor, bool], tuple[Tensor | None, dict[str, Tensor]]],
    z: Tensor,
    std: Tensor,
    eps: float,
    rademacher: Tensor,
    gaussian: Tensor,
) -> tuple[Tensor, dict[str, Penalty]]:
    """The normalized Hessian penalty of the outputs of ``f`` at ``z`` ``(b, l)``, by central finite
    differences (Peebles et al. 2020, arXiv 2008.10599; the authors' ``hessian_regularization``).

    With ``u = r * std`` a probe in latent units, the second difference along it,

        D_u f(z) = (f(z + eps u) - 2 f(z) + f(z - eps u)) / eps^2  =  u^T H u  (+ O(eps^2)),

    is exact for a quadratic ``f``. Over Rademacher probes ``r`` (``rademacher``, ``(p, b, l)`` of
    +-1) its variance is ``2 sum_{i != j} (H_ij std_i std_j)^2``; over Gaussian ones (``gaussian``)
    ``2 sum_ij (...)^2``. Per image and output layer: ``penalty = mean_outputs var_r``,
    ``normalized = penalty / (mean_outputs var_g + 1e-10)`` (variances over the ``p`` probes, ``ddof=0``).

    ``f(rows, with_logits)`` maps ``(n, l)`` to ``(logits, {layer: (n, ...)})``; it is called on ``z``
    with logits and once on the ``4 p`` perturbations stacked (``n = 4 p b``) without (``None`` in
    their place: a decoder may stop after its last penalized layer), in ``z``'s dtype with autocast
    off (second differences cancel most digits). Returns the logits at ``z`` and a :class:`Penalty`
    per layer.
    """
    p, b = rademacher.shape[:2]
    probes = torch.cat([rademacher, gaussian]) * (eps * std)  # (2p, b, l)
    with torch.autocast(z.device.type, enabled=False):
        logits, at_z = f(z, True)
        _, moved = f(torch.cat([z + probes, z - probes]).flatten(0, 1), False)  # rows (4p b, l)
    out = {}
    for name, h in moved.items():  # whole-tensor passes: a slice's backward would zero-fill all rows
        h = h.to(z.dtype).unflatten(0, (2, 2, p, b)).flatten(4)  # (+-, kind, p, b, outputs)
        second = h.sum(0) - 2 * at_z[name].to(z.dtype).flatten(1)  # eps^2 D_u f: (kind, p, b, outputs)
        off, total = (_probe_variance(second) / eps**4).unbind(0)  # kinds: Rademacher, Gaussian
        out[name] = Penalty(off, off / (total + 1e-10))
    return logits, out


def _probe_variance(second: Tensor) -> Tensor:
    """``(kind, b)``: the variance over probes (dim 1, ``ddof=0``) averaged over outputs (dim 3) of
    ``(kind, p, b, outputs)``, in elementwise passes (``Tensor.var`` over a short dim is many times
    slower on a CPU)."""
    return (second - second.mean(1, keepdim=True)).square().mean((1, 3))


class _Captured(Exception):
    """Raised by the last forward hook of :func:`decode_with_layers` when no logits are wanted."""


def decode_with_layers(
    decoder: torch.nn.Module, names: tuple[str, ...], z: Tensor, with_logits: bool = True
) -> tuple[Tensor | None, dict[str, Tensor]]:
    """``(decoder(z), {name: output of submodule name})``, read by forward hooks removed on return.
    Without ``with_logits`` the forward stops once every named layer has run, and the logits are
    ``None``: the layers after them (the costliest, at full resolution) are skipped."""
    modules = dict(decoder.named_modules())
    missing = [n for n in names if n not in modules]
    if missing:
        raise ValueError(f"decoder has no layer(s) {', '.join(missing)}; its layers: {', '.join(modules)}")
    outputs: dict[str, Tensor] = {}

    def keep(name: str, output: Tensor) -> None:
        outputs[name] = output
        if not with_logits and len(outputs) == len(names):
            raise _Captured

    handles = [modules[n].register_forward_hook(lambda m, i, o, n=n: keep(n, o)) for n in names]
    logits = None
    try:
        logits = decoder(z)
    except _Captured:
        pass
    finally:
        for handle in handles:
            handle.remove()
    return logits, {n: outputs[n] for n in names}
