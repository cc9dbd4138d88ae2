"""Optional packages: import one only when a feature asks for it, or say which extra installs it."""

from __future__ import annotations

import importlib
from types import ModuleType


class MissingExtra(ValueError):
    """An optional package is not installed; the message names the extra to install (one line on the CLI)."""


def require(package: str, extra: str, feature: str) -> ModuleType:
    """``import package``, or raise :class:`MissingExtra`: "FEATURE needs the PACKAGE package: pip install ..."."""
    try:
        return importlib.import_module(package)
    except ImportError:
        raise MissingExtra(f"{feature} needs the {package} package: pip install 'latentquant[{extra}]'") from None
