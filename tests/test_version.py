"""The package version is written once, in pyproject.toml, and read back by ``latentquant.__version__``."""

from pathlib import Path

import pytest

import latentquant

tomllib = pytest.importorskip("tomllib")  # Python 3.11+


def test_version_matches_pyproject():
    pyproject = tomllib.loads((Path(__file__).resolve().parents[1] / "pyproject.toml").read_text())
    assert latentquant.__version__ == pyproject["project"]["version"]
