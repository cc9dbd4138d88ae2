"""The scores of ``eval.json``: their keys, labels and how they are printed.

A leaf module: ``evaluate.py`` writes these scores, ``report.py``,
``latentquant table`` and the command lines show them; all read the names here.
"""

from __future__ import annotations

from typing import Any, NamedTuple


class Score(NamedTuple):
    key: str  # in eval.json
    label: str  # in report.md
    title: str  # a column of latentquant table
    in_table: bool = True


#: The scores of eval.json, in the paper's order; everything that reads or shows them uses this.
SCORES = (
    Score("infom", "InfoM (modularity)", "InfoM"),
    Score("infoe", "InfoE (explicitness)", "InfoE"),
    Score("infoc", "InfoC (compactness)", "InfoC"),
    Score("dci_d", "DCI disentanglement", "D"),
    Score("dci_c", "DCI completeness", "C"),
    Score("dci_i", "DCI informativeness (test)", "I"),
    Score("mig", "MIG", "MIG", in_table=False),
    Score("psnr", "PSNR (dB)", "PSNR"),
)
SCORE_KEYS = tuple(s.key for s in SCORES)


def format_score(value: Any, digits: int = 3) -> str:
    """``value`` with ``digits`` decimals (``n/a`` for a missing score); a score that
    rounds to zero prints as ``0.000``, never ``-0.000``."""
    if value is None:
        return "n/a"
    if not isinstance(value, float):
        return str(value)
    text = f"{value:.{digits}f}"
    return text[1:] if text.startswith("-") and float(text) == 0 else text


def score_line(scores: dict[str, Any], digits: int = 3) -> str:
    """``infom 0.512, infoe 0.611, ...``: the defined scores of an evaluation, in order."""
    return ", ".join(f"{k} {format_score(scores[k], digits)}" for k in SCORE_KEYS if isinstance(scores.get(k), float))
