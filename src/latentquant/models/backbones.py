"""Image encoders and decoders shared by every model, chosen with ``--arch``.

Three architectures, all for 64 x 64 images with ``C`` channels:

``paper``
    The backbone of Hsu et al. (2023), as published in their repository
    (kylehkhsu/latent_quantization: ``configs/encoder_partial/image.yaml``,
    ``configs/decoder_partial/style_image.yaml``, ``disentangle/blocks/style.py``).
    Encoder: 12 conv blocks (no bias) -> instance norm (affine, eps 1e-6) -> LeakyReLU(0.2),
    widths [32]*3 + [64]*3 + [128]*3 + [256]*3, kernels [3, 3, 4] x 4, strides
    [1, 1, 2] x 4, padding 1, so 64 -> 4 pixels; then Linear 256, ReLU,
    Linear 256, ReLU and a linear head. Decoder ("style" decoder): ``z`` -> MLP
    (256, 256, ReLU) -> ``w``; a learned constant ``0.1 * ones(256, 4, 4)``
    goes through 12 blocks ConvTranspose (no bias) -> LeakyReLU(0.2) ->
    instance norm (no affine) -> ``x * scale + bias`` with
    ``[scale, bias] = ReLU(Linear(w))``; a final 3 x 3 conv (no bias, as in the
    authors' ``Conv2DBlock``) gives per-channel logits.

``compact``
    The authors' smaller design (``configs/encoder_partial/image_small.yaml``,
    ``configs/decoder_partial/style_image_small.yaml``) at a CPU-sized width:
    4 conv blocks (no bias) -> instance norm (affine, eps 1e-6) -> LeakyReLU(0.2)
    with kernel 4, stride 2, padding 1 and widths 12, 24, 48, 96 (theirs: 64,
    128, 256, 512), so 64 -> 4 pixels; Linear 256, ReLU (theirs: 512) and a
    linear head. Decoder: the style decoder above with one hidden layer of 256,
    a learned constant ``0.1 * ones(96, 4, 4)``, 4 style blocks of widths 96,
    48, 24, 12 (kernel 4, stride 2) and the final 3 x 3 conv. As in ``paper``,
    every convolution is followed by an instance norm, so its weights are
    scale-invariant and weight decay changes their effective learning rate, not
    the function. The widths keep a training step under twice ``small``'s
    (``benchmarks/train_step.py``).

``small``
    The convolutional network of Burgess et al. (2018, arXiv 1804.03599), as used
    by disentanglement_lib, not the authors' ``image_small``: 4 conv layers (32,
    32, 64, 64; kernel 4, stride 2, padding 1) with ReLU, Linear 256, ReLU and a
    linear head; the decoder mirrors it with transposed convolutions. No
    normalization: weight decay shrinks the function itself.

Shapes: b batch, c image channels, h w pixels (64), d features/latents.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from latentquant._images import IMAGE_SIZE
from latentquant.validation import check_choice, check_int

ARCHS = ("paper", "small", "compact")
"""The backbone names ``build_backbone`` and ``--arch`` accept: the authors' network
(``paper``), their small design at CPU width (``compact``) and Burgess et al.'s small
CPU network (``small``)."""

# the authors' conv stacks (encoder; the decoder reverses the widths)
PAPER_WIDTHS = (32, 32, 32, 64, 64, 64, 128, 128, 128, 256, 256, 256)
PAPER_KERNELS = (3, 3, 4) * 4
PAPER_STRIDES = (1, 1, 2) * 4
PAPER_MLP = (256, 256)

# the authors' smaller design (``image_small`` / ``style_image_small``: widths 64, 128, 256, 512,
# kernel 4, stride 2, one dense layer of 512) at a CPU-sized width, see ``compact`` above
COMPACT_WIDTHS = (12, 24, 48, 96)
COMPACT_MLP = (256,)

SMALL_WIDTHS = (32, 32, 64, 64)
SMALL_HIDDEN = 256


class Backbone(NamedTuple):
    encoder: nn.Module
    decoder: nn.Module


def _check_image(x: torch.Tensor, channels: int) -> None:
    if x.ndim != 4 or x.shape[1] != channels or x.shape[-2:] != (IMAGE_SIZE, IMAGE_SIZE):
        raise ValueError(f"expected images of shape (b, {channels}, {IMAGE_SIZE}, {IMAGE_SIZE}), got {tuple(x.shape)}")


# ---------------------------------------------------------------------------
# the authors' family (``paper``, ``compact``): conv blocks with instance norm, a style decoder


class ConvSpec(NamedTuple):
    """One architecture of the authors' family: conv stack, MLP, decoder constant."""

    widths: tuple[int, ...]  # encoder conv widths; the decoder's style blocks take them reversed
    kernels: tuple[int, ...]
    strides: tuple[int, ...]
    mlp: tuple[int, ...]  # hidden widths of the encoder's and the decoder's MLP

    @property
    def side(self) -> int:
        """Pixels per side after the encoder's convolutions (the decoder's constant)."""
        return IMAGE_SIZE // 2 ** self.strides.count(2)


PAPER = ConvSpec(PAPER_WIDTHS, PAPER_KERNELS, PAPER_STRIDES, PAPER_MLP)
COMPACT = ConvSpec(COMPACT_WIDTHS, (4,) * 4, (2,) * 4, COMPACT_MLP)


class ConvNormEncoder(nn.Module):
    """The encoder of the authors' family, ``paper`` and ``compact``: (b, c, 64, 64) -> (b, out_features) through
    conv blocks Conv (no bias) -> instance norm -> LeakyReLU(0.2), an MLP with ReLU and a linear head.
    ``spec`` chooses the authors' ``image`` (:data:`PAPER`, default) or :data:`COMPACT`."""

    def __init__(self, in_channels: int, out_features: int, spec: ConvSpec = PAPER):
        super().__init__()
        self.in_channels, self.out_features = in_channels, out_features
        blocks, c_in = [], in_channels
        for width, k, s in zip(spec.widths, spec.kernels, spec.strides):
            blocks += [
                nn.Conv2d(c_in, width, k, s, padding=1, bias=False),
                nn.InstanceNorm2d(width, affine=True, eps=1e-6),
                nn.LeakyReLU(0.2),
            ]
            c_in = width
        self.conv = nn.Sequential(*blocks)
        self.mlp = _mlp(c_in * spec.side * spec.side, spec.mlp)
        self.head = nn.Linear(spec.mlp[-1], out_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _check_image(x, self.in_channels)
        h = rearrange(self.conv(x), "b c h w -> b (c h w)")
        return self.head(self.mlp(h))


def _mlp(in_features: int, widths: tuple[int, ...]) -> nn.Sequential:
    layers = []
    for width in widths:
        layers += [nn.Linear(in_features, width), nn.ReLU()]
        in_features = width
    return nn.Sequential(*layers)


class StyleBlock(nn.Module):
    """ConvTranspose -> LeakyReLU(0.2) -> instance norm -> x * scale + bias, [scale, bias] = ReLU(Linear(w))."""

    def __init__(self, in_channels: int, out_channels: int, kernel: int, stride: int, w_dim: int):
        super().__init__()
        self.conv = nn.ConvTranspose2d(in_channels, out_channels, kernel, stride, padding=1, bias=False)
        self.norm = nn.InstanceNorm2d(out_channels, affine=False, eps=1e-6)
        self.style = nn.Linear(w_dim, 2 * out_channels)

    def forward(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        scale, bias = rearrange(F.relu(self.style(w)), "b (two c) -> two b c 1 1", two=2)
        x = self.norm(F.leaky_relu(self.conv(x), 0.2))
        return x * scale + bias


class StyleDecoder(nn.Module):
    """(b, d) -> (b, c, 64, 64) logits: MLP -> w; a learned constant modulated by w through style blocks
    (the encoder's widths reversed), then a 3 x 3 conv. ``spec`` as for ``ConvNormEncoder``."""

    def __init__(self, in_features: int, out_channels: int, spec: ConvSpec = PAPER):
        super().__init__()
        self.in_features, self.out_channels = in_features, out_channels
        self.mlp = _mlp(in_features, spec.mlp)
        widths = spec.widths[::-1]
        self.constant = nn.Parameter(0.1 * torch.ones(widths[0], spec.side, spec.side))
        c_in, blocks = widths[0], []
        for width, k, s in zip(widths, spec.kernels, spec.strides):
            blocks.append(StyleBlock(c_in, width, k, s, spec.mlp[-1]))
            c_in = width
        self.blocks = nn.ModuleList(blocks)
        self.out = nn.Conv2d(c_in, out_channels, 3, 1, padding=1, bias=False)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        w = self.mlp(z)
        x = self.constant.expand(z.shape[0], *self.constant.shape)
        for block in self.blocks:
            x = block(x, w)
        return self.out(x)


# ---------------------------------------------------------------------------
# small


class SmallEncoder(nn.Module):
    """(b, c, 64, 64) -> (b, out_features): 4 strided convs (32, 32, 64, 64), Linear 256, linear head."""

    def __init__(self, in_channels: int, out_features: int):
        super().__init__()
        self.in_channels, self.out_features = in_channels, out_features
        layers, c_in = [], in_channels
        for width in SMALL_WIDTHS:
            layers += [nn.Conv2d(c_in, width, 4, 2, padding=1), nn.ReLU()]
            c_in = width
        self.conv = nn.Sequential(*layers)
        side = IMAGE_SIZE // 2 ** len(SMALL_WIDTHS)
        self.mlp = nn.Sequential(nn.Linear(c_in * side * side, SMALL_HIDDEN), nn.ReLU())
        self.head = nn.Linear(SMALL_HIDDEN, out_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _check_image(x, self.in_channels)
        h = rearrange(self.conv(x), "b c h w -> b (c h w)")
        return self.head(self.mlp(h))


class SmallDecoder(nn.Module):
    """(b, d) -> (b, c, 64, 64) logits: the mirror of ``SmallEncoder``."""

    def __init__(self, in_features: int, out_channels: int):
        super().__init__()
        self.in_features, self.out_channels = in_features, out_channels
        self.side = IMAGE_SIZE // 2 ** len(SMALL_WIDTHS)
        widths = SMALL_WIDTHS[::-1]
        self.mlp = nn.Sequential(
            nn.Linear(in_features, SMALL_HIDDEN),
            nn.ReLU(),
            nn.Linear(SMALL_HIDDEN, widths[0] * self.side * self.side),
            nn.ReLU(),
        )
        layers = []
        for c_in, c_out in zip(widths, widths[1:] + (out_channels,)):
            layers += [nn.ConvTranspose2d(c_in, c_out, 4, 2, padding=1), nn.ReLU()]
        self.deconv = nn.Sequential(*layers[:-1])  # no activation on the logits

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = rearrange(self.mlp(z), "b (c h w) -> b c h w", h=self.side, w=self.side)
        return self.deconv(h)


# ---------------------------------------------------------------------------


def build_backbone(arch: str, in_channels: int, encoder_features: int, decoder_features: int) -> Backbone:
    """The encoder and decoder networks of architecture ``arch``.

    Parameters
    ----------
    arch : str
        One of ``ARCHS``: ``"paper"``, ``"compact"`` or ``"small"``.
    in_channels : int
        Image channels (1 or 3).
    encoder_features : int
        Width of the encoder's output.
    decoder_features : int
        Width of the decoder's input.

    Returns
    -------
    Backbone
        A named tuple ``(encoder, decoder)`` of modules: the encoder maps
        ``(b, in_channels, 64, 64)`` images to ``(b, encoder_features)``, the
        decoder ``(b, decoder_features)`` to ``(b, in_channels, 64, 64)``
        logits.

    Raises
    ------
    ValueError
        For an unknown ``arch`` or a size below 1.

    Examples
    --------
    >>> import torch
    >>> from latentquant.models import build_backbone
    >>> encoder, decoder = build_backbone("small", in_channels=1, encoder_features=10, decoder_features=10)
    >>> z = encoder(torch.rand(2, 1, 64, 64))
    >>> z.shape, decoder(z).shape
    (torch.Size([2, 10]), torch.Size([2, 1, 64, 64]))
    """
    check_choice("arch", arch, ARCHS)
    in_channels = check_int("in_channels", in_channels, 1)
    encoder_features = check_int("encoder_features", encoder_features, 1)
    decoder_features = check_int("decoder_features", decoder_features, 1)
    if arch in ("paper", "compact"):
        spec = PAPER if arch == "paper" else COMPACT
        return Backbone(
            ConvNormEncoder(in_channels, encoder_features, spec), StyleDecoder(decoder_features, in_channels, spec)
        )
    return Backbone(SmallEncoder(in_channels, encoder_features), SmallDecoder(decoder_features, in_channels))
