"""Where the runs of a grid lie: ``<root>/<dataset>/<model>/seed<k>/``, the one path rule of ``results``.

``sweep`` writes runs by :func:`run_path`; ``table`` and ``curves`` find them
with :func:`find_runs`, at any depth below the folder they are given, so
``latentquant table results/curves`` reads the runs of
``results/curves/small/<dataset>/<model>/seed<k>/`` too. A run's label is the
path below that folder: the model is the folder above ``seed<k>``, the
dataset is everything between the root and the model
(``small/sprites`` there, ``sprites`` when the root is ``results/curves/small``).
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import NamedTuple

SEED_DIR = re.compile(r"seed(\d+)")


def run_path(root: str | os.PathLike, dataset: str, model: str, seed: int) -> Path:
    """The folder of one run of a grid: ``root/dataset/model/seed<k>``."""
    return Path(root) / dataset / model / f"seed{seed}"


def check_component(kind: str, name: str) -> str:
    """``name`` if it is one plain folder name (it names a folder of the grid); ValueError otherwise.

    A name holding a path separator, ``.`` or ``..`` would put a run somewhere
    else than ``root/<dataset>/<model>/seed<k>``, possibly outside the root."""
    bad = (
        not isinstance(name, str)
        or name in ("", ".", "..")
        or "/" in name
        or "\\" in name
        or "\0" in name
        or (os.altsep is not None and os.altsep in name)
    )
    if bad:
        raise ValueError(
            f"{kind} {name!r} must be a plain folder name (it names the runs' folder "
            "<out>/<dataset>/<model>/seed<k>): no '/', '\\', '.' or '..'"
        )
    return name


class FoundRun(NamedTuple):
    path: Path  # the seed<k> folder
    dataset: str  # the path below the root down to the model folder, e.g. "small/sprites"
    model: str
    seed: str  # the k of seed<k>, as text


def find_runs(root: str | os.PathLike, filename: str) -> list[FoundRun]:
    """Every ``seed<k>`` folder holding ``filename`` at any depth below ``root``, in path order.

    A ``seed<k>`` folder is a run: nothing below it is searched. Symbolic links
    to folders are not followed (a link to a parent would never end)."""
    root = Path(root)
    found = []
    for folder, subfolders, files in os.walk(root):
        path = Path(folder)
        match = SEED_DIR.fullmatch(path.name)
        if match:
            subfolders[:] = []  # a run's own folders (checkpoints, figures) hold no runs
            if filename in files:
                dataset, model = _labels(root, path)
                found.append(FoundRun(path, dataset, model, match.group(1)))
        else:
            subfolders.sort()
    return sorted(found, key=lambda run: run.path)


def _labels(root: Path, run: Path) -> tuple[str, str]:
    """(dataset, model) of the run folder ``run`` found under ``root``."""
    below = run.relative_to(root).parts
    if len(below) >= 3:
        return "/".join(below[:-2]), below[-2]
    # the root is a dataset folder, a model folder or the run itself: the names above the run
    names = ("", "", *run.resolve().parts)
    return names[-3], names[-2]
