"""The NMI heatmap (sources x latents), written as a PNG.

matplotlib is imported only when a plot is drawn, and through
``matplotlib.figure.Figure`` with the Agg canvas, so no global backend is
selected and no window is ever opened.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from latentquant._atomic import atomic_open


def plot_nmi(
    nmi,
    path,
    *,
    source_names: Sequence[str] | None = None,
    latent_names: Sequence[str] | None = None,
    active=None,
    title: str | None = None,
) -> Path:
    """Draw ``nmi`` (K, L) as an annotated heatmap and write it to ``path``.

    Colours span [0, 1]; each cell shows its value to 2 decimals. Inactive
    latents (``active[j]`` False) are hatched and their labels greyed. The
    PNG is written to a temporary file beside ``path`` and moved into place
    (atomic on one filesystem). Returns the path.
    """
    nmi = np.asarray(nmi, dtype=np.float64)
    if nmi.ndim != 2:
        raise ValueError(f"nmi must be a 2-D (sources, latents) array, got shape {nmi.shape}")
    num_sources, num_latents = nmi.shape
    source_names = [f"s{i}" for i in range(num_sources)] if source_names is None else list(source_names)
    latent_names = [f"z{j}" for j in range(num_latents)] if latent_names is None else list(latent_names)
    if len(source_names) != num_sources or len(latent_names) != num_latents:
        raise ValueError(
            f"got {len(source_names)} source and {len(latent_names)} latent names for an nmi of shape {nmi.shape}"
        )
    active = np.ones(num_latents, bool) if active is None else np.asarray(active, bool)
    if active.shape != (num_latents,):
        raise ValueError(f"active must have shape ({num_latents},), got {active.shape}")

    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.patches import Rectangle

    width = min(2.0 + 0.55 * num_latents, 30.0)
    height = min(1.5 + 0.45 * num_sources, 20.0)
    fig = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    image = ax.imshow(nmi, cmap="viridis", vmin=0.0, vmax=1.0, aspect="auto")
    fig.colorbar(image, ax=ax, fraction=0.04, pad=0.02, label="I(s; z) / H(s)")
    if num_sources * num_latents <= 900:
        for i in range(num_sources):
            for j in range(num_latents):
                value = nmi[i, j]
                ax.text(
                    j,
                    i,
                    "nan" if not np.isfinite(value) else f"{value:.2f}",
                    ha="center",
                    va="center",
                    fontsize=7,
                    color="black" if np.isfinite(value) and value > 0.6 else "white",
                )
    for j in np.flatnonzero(~active):
        hatch = Rectangle((j - 0.5, -0.5), 1, num_sources, fill=False, hatch="//", edgecolor="grey", lw=0)
        ax.add_patch(hatch)
    ax.set_xticks(range(num_latents), latent_names, rotation=90 if num_latents > 12 else 0)
    ax.set_yticks(range(num_sources), source_names)
    for j, label in enumerate(ax.get_xticklabels()):
        if not active[j]:
            label.set_color("grey")
    ax.set_xlabel("latent (grey, hatched: inactive)" if not active.all() else "latent")
    ax.set_ylabel("source")
    if title:
        ax.set_title(title)
    fig.tight_layout()

    path = Path(path)
    with atomic_open(path, "wb") as handle:
        fig.savefig(handle, format="png")
    return path
