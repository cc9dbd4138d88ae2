"""The interface every model of ``latentquant train`` implements.

A model is an ``nn.Module`` that owns its losses and its optimizers, so the
training loop (``latentquant.train.loop``) never needs to know which model it
runs:

- ``forward(x) -> StepOutput(loss, parts)``: the training objective on a batch
  of images in [0, 1]; ``parts`` maps names (``"loss"``, ``"bce"``, ...) to
  detached scalars that the loop logs. Going through ``forward`` keeps
  DistributedDataParallel's gradient hooks and ``torch.compile`` in play.
- ``encode(x) -> Encoding(z, code)``: ``z`` is what the decoder reads at
  evaluation time; ``code`` the representation scored by the metrics (integer
  value indices when ``discrete_latents``, else floats).
- ``decode(z) -> logits`` of shape (b, c, 64, 64).
- ``traversal(z, latent, codes, steps) -> (s, b, ...)`` latents for the
  traversal figure (sweep of one latent from the base latents ``z``, through
  ``sweep_latent``); a model with a ``LatentQuantize`` ``quantizer`` sets
  ``traversal = codebook_traversal`` (every learned value of the latent).
- ``configure_optimizers(lr, weight_decay, clip) -> {name: Optimizer}``, built
  from ``param_groups`` (the decay / no-decay split, filtered by name), and
  ``training_step(net, x, optimizers, step, autocast) -> parts``: the default
  is one optimizer and one update per step; a model with several optimizers
  and its own schedule (a GAN's 5 critic steps per generator step) overrides
  these two and nothing else.
- ``defaults(dataset)`` / ``default_options(dataset)`` (class methods): the
  published hyperparameters the config resolves to when the user sets none;
  built-in models read them from the table in ``latentquant.models.defaults``.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import nullcontext
from typing import Any, ClassVar, NamedTuple

import torch
from torch import nn

from latentquant.models.backbones import build_backbone
from latentquant.models.defaults import published
from latentquant.validation import check_int


class StepOutput(NamedTuple):
    """What a model's ``forward`` returns: the training objective on a batch.

    Attributes
    ----------
    loss : torch.Tensor
        The scalar loss, with its graph.
    parts : dict of str to torch.Tensor
        Detached scalars the training loop logs (``"loss"`` among them).

    Examples
    --------
    >>> import torch
    >>> from latentquant.models import StepOutput
    >>> loss = torch.tensor(0.5, requires_grad=True)
    >>> out = StepOutput(loss, {"loss": loss.detach()})
    >>> float(out.parts["loss"])
    0.5
    """

    loss: torch.Tensor  # scalar, with graph
    parts: dict[str, torch.Tensor]  # detached scalars, "loss" included


class Encoding(NamedTuple):
    """What a model's ``encode`` returns.

    Attributes
    ----------
    z : torch.Tensor
        ``(b, ...)`` what the decoder reads at evaluation time.
    code : torch.Tensor
        ``(b, L)`` the representation the metrics score: integer value
        indices when the model's ``discrete_latents`` is True, else floats.

    Examples
    --------
    >>> import torch
    >>> from latentquant.models import DataInfo, build_model
    >>> model = build_model("ae", arch="small", info=DataInfo("sprites", 1, 5, 737280)).eval()
    >>> z, code = model.encode(torch.rand(3, 1, 64, 64))
    >>> code.shape, code.dtype
    (torch.Size([3, 10]), torch.float32)
    """

    z: torch.Tensor  # (b, ...) decoder input at evaluation
    code: torch.Tensor  # (b, L) representation for the metrics


class DataInfo(NamedTuple):
    """What a model needs to know about its dataset.

    Attributes
    ----------
    name : str
        The dataset's registry name (the published defaults depend on it).
    num_channels : int
        Image channels, 1 or 3.
    num_factors : int
        Ground-truth factors of variation; the default number of latents is twice this.
    size : int
        Number of images (beta-TCVAE's minibatch-weighted sampling reads it).

    Examples
    --------
    >>> from latentquant.data import get_dataset
    >>> from latentquant.models import DataInfo
    >>> ds = get_dataset("sprites")
    >>> DataInfo(ds.name, ds.num_channels, ds.num_factors, len(ds))
    DataInfo(name='sprites', num_channels=1, num_factors=5, size=737280)
    """

    name: str
    num_channels: int
    num_factors: int
    size: int  # number of images (TC-VAE's minibatch-weighted sampling needs it)


class LatentModel(nn.Module):
    """Base class of every model: an encoder/decoder pair around a latent layer.

    A subclass implements ``forward(x) -> StepOutput`` (the training objective
    on images in [0, 1]), ``encode(x) -> Encoding`` and, where it differs,
    ``decode`` and ``traversal``; it inherits the optimizer set-up
    (``param_groups``, ``configure_optimizers``: AdamW, weight decay on the
    weights only) and ``training_step``. The module ``latentquant.models.base``
    describes the whole interface; ``docs/training.md`` how to add a model.

    Parameters
    ----------
    arch : str
        The backbone, one of ``ARCHS``.
    info : DataInfo
        The dataset's description.
    num_latents : int
        Latent dimensions, >= 1.
    encoder_features : int
        Width of the encoder's output (e.g. ``2 * num_latents`` for a
        Gaussian posterior's means and log-variances).
    decoder_features : int, optional
        Width of the decoder's input; default ``num_latents``.

    Attributes
    ----------
    name : str
        The registered name (set by ``register_model``).
    discrete_latents : bool
        Whether ``encode(x).code`` holds integer value indices.
    encoder, decoder : torch.nn.Module
        The backbone's two networks.

    Raises
    ------
    ValueError
        For an unknown ``arch`` or a ``num_latents`` below 1.

    Examples
    --------
    >>> import torch
    >>> from latentquant.models import DataInfo, build_model
    >>> _ = torch.manual_seed(0)
    >>> model = build_model("qlae", arch="small", info=DataInfo("sprites", 1, 5, 737280))
    >>> optimizers = model.configure_optimizers(lr=1e-3, weight_decay=0.1, clip=1.0)
    >>> [group["group"] for group in optimizers["model"].param_groups]
    ['decay', 'no_decay']
    >>> model.decode(model.encode(torch.rand(2, 1, 64, 64)).z).shape
    torch.Size([2, 1, 64, 64])
    """

    name: ClassVar[str] = ""
    discrete_latents: ClassVar[bool] = False
    #: Passed to DistributedDataParallel; a model whose steps leave some
    #: parameters out of a backward pass (GAN critic/generator) sets it True.
    ddp_find_unused_parameters: ClassVar[bool] = False

    def __init__(
        self, arch: str, info: DataInfo, num_latents: int, encoder_features: int, decoder_features: int | None = None
    ):
        super().__init__()
        check_int("num_latents", num_latents, 1)
        self.arch, self.info, self.num_latents = arch, info, num_latents
        self.encoder, self.decoder = build_backbone(
            arch, info.num_channels, encoder_features, decoder_features or num_latents
        )

    # -- published defaults -------------------------------------------------

    @classmethod
    def defaults(cls, dataset: str) -> dict[str, Any]:
        """Top-level config values (``lr``, ``weight_decay``, ...) published for this model on ``dataset``."""
        return published(cls.name, dataset)[0]

    @classmethod
    def default_options(cls, dataset: str) -> dict[str, Any]:
        """Model-specific hyperparameters (``--option KEY=VALUE``) and their published values."""
        return published(cls.name, dataset)[1]

    # -- the interface ------------------------------------------------------

    def forward(self, x: torch.Tensor) -> StepOutput:
        raise NotImplementedError

    def encode(self, x: torch.Tensor) -> Encoding:
        raise NotImplementedError

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return self.decoder(z)

    def traversal(self, z: torch.Tensor, latent: int, codes: torch.Tensor, steps: int) -> torch.Tensor:
        """``(s, b, L)`` copies of ``z`` with latent ``latent`` swept. Continuous default:
        ``mean + linspace(-2, 2, steps) * sd`` of that latent's codes over the evaluation set."""
        col = codes[:, latent].float()
        return sweep_latent(z, latent, col.mean() + torch.linspace(-2, 2, steps, device=z.device) * col.std())

    def codebook_parameters(self) -> list[nn.Parameter]:
        """Parameters of learned codebooks: never decayed or clipped."""
        return []

    def split_parameters(self) -> tuple[dict[str, nn.Parameter], dict[str, nn.Parameter]]:
        """The rule of the optimizer split, in one place: ``(decay, no_decay)`` by name.

        Decayed and clipped: every encoder/decoder weight that is not a bias,
        norm scales and the style decoder's learned constant included (as in
        the authors' ``param_labels``: everything but ``bias`` leaves and the
        latent layer). Not decayed, not clipped: biases and codebook values.
        """
        codebook = {id(p) for p in self.codebook_parameters()}
        decay, no_decay = {}, {}
        for name, p in self.named_parameters():
            if not p.requires_grad:
                continue
            if id(p) in codebook or name.endswith("bias"):
                no_decay[name] = p
            else:
                decay[name] = p
        return decay, no_decay

    def weight_norms(self) -> dict[str, float]:
        """The L2 norm of each group of parameters that weight decay treats alike, to
        watch the weights reach decay's stationary state: ``conv`` and ``linear`` (the
        decayed weights of convolutions and linear layers), ``other`` (the other decayed
        weights: norm scales, learned constants) and ``values`` (the codebook, not
        decayed). Groups the model lacks are left out. One host sync.

        >>> from latentquant.models import build_model
        >>> from latentquant.models.base import DataInfo
        >>> model = build_model("qlae", arch="small", info=DataInfo("shapes", 3, 6, 1000), num_latents=12)
        >>> sorted(model.weight_norms())
        ['conv', 'linear', 'values']
        """
        kinds = ((nn.modules.conv._ConvNd, "conv"), (nn.Linear, "linear"))
        layer_of = {}
        for module_name, module in self.named_modules():
            kind = next((k for t, k in kinds if isinstance(module, t)), None)
            for name, _ in module.named_parameters(recurse=False) if kind else ():
                layer_of[f"{module_name}.{name}" if module_name else name] = kind
        decay, _ = self.split_parameters()
        groups: dict[str, list[torch.Tensor]] = {"conv": [], "linear": [], "other": []}
        for name, p in decay.items():
            groups[layer_of.get(name, "other")].append(p)
        groups["values"] = list(self.codebook_parameters())
        groups = {k: ps for k, ps in groups.items() if ps}
        if not groups:
            return {}
        squares = [torch.stack([p.detach().float().square().sum() for p in ps]).sum() for ps in groups.values()]
        return dict(zip(groups, torch.stack(squares).sqrt().tolist()))

    def param_groups(
        self, weight_decay: float, clip: float | None, keep: Callable[[str], bool] = lambda name: True
    ) -> list[dict[str, Any]]:
        """The optimizer's two groups (``split_parameters``), of the parameters whose name ``keep`` accepts:
        ``decay`` (decoupled ``weight_decay``, gradients clipped element-wise to ``[-clip, clip]``) and
        ``no_decay`` (neither)."""
        decay, no_decay = self.split_parameters()
        return [
            {
                "params": [p for n, p in decay.items() if keep(n)],
                "weight_decay": weight_decay,
                "clip_value": clip,
                "group": "decay",
            },
            {
                "params": [p for n, p in no_decay.items() if keep(n)],
                "weight_decay": 0.0,
                "clip_value": None,
                "group": "no_decay",
            },
        ]

    def configure_optimizers(
        self, lr: float, weight_decay: float, clip: float | None = 1.0, betas: tuple[float, float] = (0.9, 0.999)
    ) -> dict[str, torch.optim.Optimizer]:
        """AdamW (decoupled ``weight_decay``) with element-wise gradient clipping to
        ``[-clip, clip]`` on the decayed group; plain Adam (AdamW with zero decay is
        exactly Adam) without clipping on biases and codebook values.

        Hsu et al. (2023), kylehkhsu/latent_quantization ``disentangle/models/ae.py``
        ``construct_optimizer``: ``optax.chain(clip(1.), adamw(lr, l2))`` on the
        regularized labels, ``adam(lr)`` on the rest.
        """
        return {"model": adamw(self.param_groups(weight_decay, clip), lr, betas)}

    def training_step(
        self,
        net: Callable[..., StepOutput],
        x: torch.Tensor,
        optimizers: dict[str, torch.optim.Optimizer],
        step: int,
        autocast: Callable[[], Any] = nullcontext,
    ) -> dict[str, torch.Tensor]:
        """One update. ``net`` is this model as the loop runs it (compiled and/or
        wrapped in DistributedDataParallel): call it, not ``self``, for forward
        passes that need gradients. Returns the detached loss parts."""
        opt = optimizers["model"]
        with autocast():
            out = net(x)
        out.loss.backward()
        clip_gradients(opt)
        opt.step()
        opt.zero_grad(set_to_none=True)
        return out.parts

    def extra_figures(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """Model-specific figures, ``{name: (rows, cols, c, h, w) images in [0, 1]}``; none by default."""
        return {}

    def extra_repr(self) -> str:
        return f"arch={self.arch!r}, num_latents={self.num_latents}, discrete_latents={self.discrete_latents}"


def clip_gradients(optimizer: torch.optim.Optimizer) -> None:
    """Clamp gradients element-wise to ``[-c, c]`` in every param group that has ``clip_value=c``.

    ``LatentModel.configure_optimizers`` sets ``clip_value`` on the decayed
    weights' group; ``training_step`` calls this between ``backward`` and the
    optimizer's step. Groups without ``clip_value`` (or with None or 0) are
    left alone.

    Parameters
    ----------
    optimizer : torch.optim.Optimizer
        The optimizer whose parameters' gradients are clamped in place.

    Returns
    -------
    None

    Examples
    --------
    >>> import torch
    >>> from latentquant.models import clip_gradients
    >>> w = torch.nn.Parameter(torch.zeros(3))
    >>> opt = torch.optim.SGD([{"params": [w], "clip_value": 1.0}], lr=0.1)
    >>> w.grad = torch.tensor([-5.0, 0.5, 3.0])
    >>> clip_gradients(opt)
    >>> w.grad
    tensor([-1.0000,  0.5000,  1.0000])
    """
    for group in optimizer.param_groups:
        c = group.get("clip_value")
        if c:
            grads = [p.grad for p in group["params"] if p.grad is not None]
            if grads:
                torch._foreach_clamp_min_(grads, -c)
                torch._foreach_clamp_max_(grads, c)


def adamw(groups: list[dict[str, Any]], lr: float, betas: tuple[float, float]) -> torch.optim.AdamW:
    """The optimizer of every model: AdamW over ``groups`` (``LatentModel.param_groups``), foreach kernels."""
    return torch.optim.AdamW(groups, lr=lr, betas=betas, foreach=True)


def sweep_latent(z: torch.Tensor, latent: int, values: torch.Tensor) -> torch.Tensor:
    """``(s, b, L)``: ``s = len(values)`` copies of the latents ``z`` ``(b, L)``, latent ``latent`` set to
    ``values[i]`` in copy ``i``, the rest unchanged (a traversal figure's rows)."""
    out = z.unsqueeze(0).repeat(len(values), 1, 1)
    out[:, :, latent] = values.detach().to(z)[:, None]
    return out


def codebook_traversal(
    model: LatentModel, z: torch.Tensor, latent: int, codes: torch.Tensor, steps: int
) -> torch.Tensor:
    """The ``traversal`` of a model whose latents are a ``LatentQuantize`` ``model.quantizer``:
    every learned value of latent ``latent`` (``steps`` is ignored: the sweep is the codebook). Set it in the
    class body, ``traversal = codebook_traversal``."""
    return sweep_latent(z, latent, model.quantizer.values_per_latent[latent])
