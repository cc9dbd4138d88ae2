"""The ``compact`` backbone: the authors' ``image_small`` / ``style_image_small`` design at CPU width."""

import torch
import torch.nn.functional as F

from latentquant.models import DataInfo, build_model
from latentquant.models.backbones import COMPACT, ConvNormEncoder, StyleDecoder, build_backbone


def test_compact_arch_has_the_authors_small_design():
    enc, dec = build_backbone("compact", 3, 10, 7)
    assert isinstance(enc, ConvNormEncoder) and isinstance(dec, StyleDecoder)
    kinds = [type(m).__name__ for m in enc.conv]
    assert kinds == ["Conv2d", "InstanceNorm2d", "LeakyReLU"] * 4  # a norm after every convolution
    convs = [m for m in enc.conv if isinstance(m, torch.nn.Conv2d)]
    assert [c.out_channels for c in convs] == [12, 24, 48, 96]
    assert all(c.kernel_size == (4, 4) and c.stride == (2, 2) and c.padding == (1, 1) and c.bias is None for c in convs)
    norms = [m for m in enc.conv if isinstance(m, torch.nn.InstanceNorm2d)]
    assert all(n.affine and n.eps == 1e-6 for n in norms)
    assert all(m.negative_slope == 0.2 for m in enc.conv if isinstance(m, torch.nn.LeakyReLU))
    assert [type(m).__name__ for m in enc.mlp] == ["Linear", "ReLU"]
    assert enc.mlp[0].in_features == 96 * 4 * 4 and enc.mlp[0].out_features == 256
    assert enc.head.out_features == 10
    # decoder: MLP -> w; constant (96, 4, 4) -> 4 style blocks (ConvTranspose, LeakyReLU, norm, FiLM) -> 3x3 conv
    assert [type(m).__name__ for m in dec.mlp] == ["Linear", "ReLU"] and dec.mlp[0].in_features == 7
    assert torch.equal(dec.constant, torch.full((96, 4, 4), 0.1))
    assert [b.conv.out_channels for b in dec.blocks] == [96, 48, 24, 12]
    assert all(
        b.conv.kernel_size == (4, 4)
        and b.conv.stride == (2, 2)
        and b.conv.bias is None
        and not b.norm.affine
        and b.norm.eps == 1e-6
        for b in dec.blocks
    )
    assert dec.out.kernel_size == (3, 3) and dec.out.out_channels == 3 and dec.out.bias is None
    # one block against its formula: norm(leaky_relu(convT(x))) * scale + bias, [scale, bias] = ReLU(Linear(w))
    block = dec.blocks[1]
    x, w = torch.randn(2, 96, 8, 8), torch.randn(2, 256)
    h = F.leaky_relu(F.conv_transpose2d(x, block.conv.weight, stride=2, padding=1), 0.2)
    h = (h - h.mean((2, 3), keepdim=True)) / (h.var((2, 3), unbiased=False, keepdim=True) + 1e-6).sqrt()
    scale, bias = F.relu(w @ block.style.weight.T + block.style.bias).chunk(2, dim=1)
    torch.testing.assert_close(block(x, w), h * scale[..., None, None] + bias[..., None, None])
    assert dec(torch.randn(2, 7)).shape == (2, 3, 64, 64)


def test_compact_convolutions_are_scale_invariant():
    # the property that makes strong weight decay harmless to the function: scaling a
    # convolution's weight (followed by an instance norm) changes nothing downstream
    torch.manual_seed(0)
    enc, dec = build_backbone("compact", 3, 10, 7)
    enc, dec = enc.double(), dec.double()
    for m in (*enc.modules(), *dec.modules()):  # the invariance is exact but for the norms' eps
        if isinstance(m, torch.nn.InstanceNorm2d):
            m.eps = 0.0
    x, z = torch.rand(3, 3, 64, 64, dtype=torch.float64), torch.randn(3, 7, dtype=torch.float64)
    before_enc, before_dec = enc(x), dec(z)
    with torch.no_grad():
        for m in (*enc.conv, *(b.conv for b in dec.blocks)):
            if isinstance(m, (torch.nn.Conv2d, torch.nn.ConvTranspose2d)):
                m.weight.mul_(4.0)
    torch.testing.assert_close(enc(x), before_enc)
    torch.testing.assert_close(dec(z), before_dec)
    # the small arch has no such invariance: the same scaling changes its output
    enc_s, _ = build_backbone("small", 3, 10, 7)
    before = enc_s(x.float())
    with torch.no_grad():
        enc_s.conv[0].weight.mul_(4.0)
    assert not torch.allclose(enc_s(x.float()), before, rtol=1e-3, atol=1e-3)


def test_compact_weights_are_decayed_like_paper():
    model = build_model("qlae", "compact", DataInfo("shapes", 3, 6, 480_000))
    opts = model.configure_optimizers(lr=1e-3, weight_decay=0.1)
    decayed = {id(p) for opt in opts.values() for g in opt.param_groups if g["weight_decay"] > 0 for p in g["params"]}
    convs = [m.weight for m in model.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.ConvTranspose2d))]
    assert convs and all(id(w) in decayed for w in convs)
    assert id(model.quantizer.values) not in decayed
    assert COMPACT.side == 4
