"""latentquant: disentanglement via latent quantization (Hsu et al., NeurIPS 2023).

Importing the package loads only the layer (torch, einops-free core); the
models, data, metrics and training tools are imported from their modules.
"""

from latentquant.quantize import LatentQuantize, LossBreakdown, Return

__version__ = "0.1.0"

__all__ = ["LatentQuantize", "LossBreakdown", "Return", "__version__"]
