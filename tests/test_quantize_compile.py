"""torch.compile(fullgraph=True) of a module using LatentQuantize (issue 25 section 3).

fullgraph=True makes any graph break an error. The aot_eager backend needs no
C++ compiler and checks the tracing (with a mask and usage counting too);
inductor, the default backend, also generates code, and is skipped only where
the machine has no C++ compiler.
"""

from __future__ import annotations

import shutil

import pytest
import torch
from torch import nn

from latentquant import LatentQuantize


class Tokenizer(nn.Module):
    def __init__(self, **kwargs):
        super().__init__()
        self.encode = nn.Conv2d(3, 8, 1)
        self.quantize = LatentQuantize([5, 6, 7], dim=8, **kwargs)

    def forward(self, x, mask=None):
        out = self.quantize(self.encode(x), mask=mask)
        return out.quantized, out.indices, out.loss


def run(module, x, mask):
    module.zero_grad()
    x.grad = None
    q, idx, loss = module(x, mask)
    (q.square().mean() + loss).backward()
    grads = [p.grad.clone() for p in module.parameters()]
    return q.detach(), idx, loss.detach(), x.grad.clone(), grads


NO_CXX = shutil.which("c++") is None and shutil.which("g++") is None and shutil.which("cc") is None


@pytest.mark.parametrize(
    "backend, masked",
    [
        ("aot_eager", False),
        ("aot_eager", True),
        pytest.param(  # one case: inductor compiles for about a minute on a loaded 2-core machine
            "inductor",
            True,
            marks=pytest.mark.skipif(NO_CXX, reason="inductor generates C++ on the CPU: no C++ compiler here"),
        ),
    ],
)
def test_fullgraph_compile_matches_eager(backend, masked):
    torch.manual_seed(0)
    model = Tokenizer(track_usage=masked).train()
    compiled = torch.compile(model, fullgraph=True, backend=backend)
    x = torch.randn(2, 3, 6, 6, requires_grad=True)
    mask = (torch.rand(2, 6, 6) < 0.7) if masked else None
    got = run(compiled, x, mask)
    usage = model.quantize.usage(running=False).counts.clone() if masked else None
    want = run(model, x, mask)
    torch.testing.assert_close(got[0], want[0], rtol=1e-6, atol=1e-6)
    assert torch.equal(got[1], want[1])
    torch.testing.assert_close(got[2], want[2], rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(got[3], want[3], rtol=1e-6, atol=1e-6)
    for a, b in zip(got[4], want[4]):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    if masked:
        assert torch.equal(usage, model.quantize.usage(running=False).counts)
