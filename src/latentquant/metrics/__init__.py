"""Disentanglement metrics: InfoMEC, DCI, MIG and SAP (numpy and scikit-learn).

Inputs are ``sources`` (N, K) ground-truth factor labels and ``latents``
(N, L); numpy arrays, or torch tensors (detached and moved to the CPU; torch
is never imported here). Definitions, degenerate cases and references:
``docs/metrics.md``.
"""

from ._mi import MetricWarning
from .dci import DCI, dci
from .infomec import InfoMEC, active_latents, explicitness, infomec, normalized_mutual_info
from .mig import mig
from .sap import sap

__all__ = [
    "DCI",
    "InfoMEC",
    "MetricWarning",
    "active_latents",
    "dci",
    "explicitness",
    "infomec",
    "mig",
    "normalized_mutual_info",
    "sap",
]
