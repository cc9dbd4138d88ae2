"""latentquant: disentanglement via latent quantization (Hsu et al., NeurIPS 2023).

``from latentquant import LatentQuantize`` gives the layer (torch, einops and
numpy only). It is imported on first use, so ``latentquant.metrics`` and
``latentquant.data`` can be used without paying for modules they do not need;
the models, data, metrics and training tools live in their own subpackages.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

try:
    # the one place the version is written is pyproject.toml; the installed metadata carries it
    __version__ = version("latentquant")
except PackageNotFoundError:  # the source tree on sys.path without an install
    __version__ = "0+unknown"

__all__ = ["LatentQuantize", "LossBreakdown", "Return", "__version__"]

_LAYER = {"LatentQuantize", "LossBreakdown", "Return"}


def __getattr__(name: str):
    if name in _LAYER:
        from latentquant import quantize

        return getattr(quantize, name)
    raise AttributeError(f"module 'latentquant' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | _LAYER)
