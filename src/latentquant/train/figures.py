"""Figures of a run, written to ``OUT/figures/``:

``reconstructions.png``  evaluation images (top) and their reconstructions (bottom)
``traversals.png``       one row per latent: decode the latent's sweep (its learned values when
                         quantized, mean -2..2 sd when continuous) from a few base images
``nmi.png``              the normalized mutual information heatmap, sources x latents
``usage.png``            models with a ``LatentQuantize``: how often the evaluation images take each
                         latent's values, with each latent's perplexity and unused values
plus any ``model.extra_figures`` (e.g. a generator's samples).
"""

from __future__ import annotations

import io
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from latentquant import _quantize_usage
from latentquant._atomic import atomic_open, atomic_write_bytes
from latentquant.metrics.plots import plot_nmi
from latentquant.quantize import LatentQuantize

NUM_BASES = 3
CONTINUOUS_STEPS = 9


def tile(images: torch.Tensor, gap: int = 2, group: int | None = None, group_gap: int = 8) -> np.ndarray:
    """``(rows, cols, c, h, w)`` in [0, 1] -> one ``(H, W, 3)`` array; a wider gap every ``group`` columns."""
    rows, cols, c, h, w = images.shape
    img = images.float().clamp(0, 1).cpu().numpy()
    if c == 1:
        img = np.repeat(img, 3, axis=2)
    col_x = [j * (w + gap) + (j // group) * group_gap if group else j * (w + gap) for j in range(cols)]
    width = col_x[-1] + w
    canvas = np.ones((rows * (h + gap) - gap, width, 3), dtype=np.float32)
    for i in range(rows):
        for j in range(cols):
            canvas[i * (h + gap) : i * (h + gap) + h, col_x[j] : col_x[j] + w] = img[i, j].transpose(1, 2, 0)
    return canvas


def _grid_figure(
    canvas: np.ndarray,
    row_labels: Sequence[str],
    row_height: float,
    title: str,
    path: Path,
    label_colors: Sequence[str] | None = None,
) -> None:
    """Write ``canvas`` (H, W, 3) in [0, 1] as a PNG with a title and row labels (PIL: fast, no matplotlib)."""
    from PIL import Image, ImageDraw

    left, top = 64, 20
    h, w = canvas.shape[:2]
    image = Image.new("RGB", (w + left + 4, h + top + 4), "white")
    image.paste(Image.fromarray((canvas * 255).round().astype(np.uint8)), (left, top))
    draw = ImageDraw.Draw(image)
    draw.text((left, 4), title, fill="black")
    colors = label_colors or ["black"] * len(row_labels)
    for i, (label, color) in enumerate(zip(row_labels, colors)):
        draw.text((4, top + (i + 0.5) * row_height - 6), label, fill=color)
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    atomic_write_bytes(Path(path), buf.getvalue())


@torch.no_grad()
def _decode(model, z: torch.Tensor, device, autocast, batch_size: int = 256) -> torch.Tensor:
    out = []
    for start in range(0, len(z), batch_size):
        with autocast():
            out.append(torch.sigmoid(model.decode(z[start : start + batch_size].to(device)).float()).cpu())
    return torch.cat(out)


def reconstructions(model, images: torch.Tensor, z: torch.Tensor, path: Path, device, autocast) -> None:
    recon = _decode(model, z, device, autocast)
    canvas = tile(torch.stack([images, recon]))
    _grid_figure(canvas, ["data", "recon."], images.shape[-2] + 2, "reconstructions", path)


def traversals(model, z: torch.Tensor, codes: torch.Tensor, active: np.ndarray, path: Path, device, autocast) -> None:
    base = z[:NUM_BASES].to(device)
    rows, steps = [], None
    for i in range(model.num_latents):
        swept = model.traversal(base, i, codes.to(device), CONTINUOUS_STEPS)  # (s, b, ...)
        s, b = swept.shape[:2]
        imgs = _decode(model, swept.flatten(0, 1), device, autocast).unflatten(0, (s, b))  # (s, b, c, h, w)
        imgs = imgs.transpose(0, 1).flatten(0, 1)  # (b * s, c, h, w): base-major
        steps = max(steps or 0, s)
        rows.append(imgs)
    width = max(r.shape[0] for r in rows)
    padded = torch.ones(len(rows), width, *rows[0].shape[1:])
    for i, r in enumerate(rows):
        padded[i, : r.shape[0]] = r
    canvas = tile(padded, group=width // NUM_BASES if width % NUM_BASES == 0 else None)
    labels = [f"z{i}" + ("" if active[i] else " (off)") for i in range(len(rows))]
    colors = ["black" if active[i] else "red" for i in range(len(rows))]
    kind = "learned values" if model.discrete_latents else "mean -2..2 sd"
    _grid_figure(
        canvas,
        labels,
        rows[0].shape[-2] + 2,
        f"traversals ({kind}) from {min(NUM_BASES, len(base))} images",
        path,
        colors,
    )


def nmi_heatmap(
    nmi: np.ndarray,
    active: np.ndarray,
    factor_names: Sequence[str],
    path: Path,
    title: str = "normalized mutual information I(s; z) / H(s)",
) -> None:
    plot_nmi(nmi, path, source_names=list(factor_names), active=active, title=title)


def value_usage(codes: torch.Tensor, num_values: Sequence[int], path: Path) -> _quantize_usage.Usage:
    """Per latent (rows), the fraction of the images assigned each of its values (columns,
    slots past the latent's own values blank), and on the right its perplexity exp(H) and
    the number of values no image took. ``codes`` (N, d) per-latent slots (-1: a NaN
    latent, counted nowhere). Returns the figures drawn."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    d, width = codes.shape[1], max(num_values)
    # the layer's own counting: (N, d) slots as N positions of one codebook; a NaN latent's -1 counts nowhere
    counts = _quantize_usage.count(codes.long().unsqueeze(-1), 1, width, None)[0]  # (d, width)
    usage = _quantize_usage.summarize(counts.unsqueeze(0), torch.tensor(list(num_values)))
    share = (counts.double() / max(len(codes), 1)).numpy()
    share[np.arange(width)[None, :] >= np.asarray(num_values)[:, None]] = np.nan  # no such value
    fig = Figure(figsize=(min(3.5 + 0.35 * width, 16.0), min(1.2 + 0.3 * d, 20.0)), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    top = float(np.nanmax(share)) if np.isfinite(share).any() and np.nanmax(share) > 0 else 1.0
    image = ax.imshow(share, cmap="magma", vmin=0.0, vmax=top, aspect="auto")  # the scale to the largest share
    fig.colorbar(image, ax=ax, fraction=0.04, pad=0.25, label="share of images")
    ax.set_yticks(range(d), [f"z{i}" for i in range(d)])
    ax.set_xticks(range(width))
    ax.set_xlabel("value (slot)")
    twin = ax.secondary_yaxis("right")
    labels = [f"ppl {p:.1f}, unused {u}" for p, u in zip(usage.perplexity_all.tolist(), usage.dead_all.tolist())]
    twin.set_yticks(range(d), labels, fontsize=7)
    ax.set_title(f"value usage on {len(codes):,} evaluation images")
    fig.tight_layout()
    with atomic_open(Path(path), "wb") as handle:
        fig.savefig(handle, format="png")
    return usage


def write_figures(
    model, result, factor_names: Sequence[str], folder: Path, device, autocast: Callable[[], Any]
) -> list[Path]:
    """All figures of an :class:`~latentquant.train.evaluate.EvalResult`; returns their paths."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    was_training = model.training
    model.eval()
    try:
        paths = [folder / "reconstructions.png", folder / "traversals.png", folder / "nmi.png"]
        reconstructions(model, result.images, result.z, paths[0], device, autocast)
        traversals(model, result.z, result.codes, result.active, paths[1], device, autocast)
        nmi_heatmap(result.nmi, result.active, factor_names, paths[2])
        quantizers = [m for m in model.modules() if isinstance(m, LatentQuantize)]
        if len(quantizers) == 1 and result.codes.shape[1] == quantizers[0].codebook_dim:
            paths.append(folder / "usage.png")
            value_usage(result.codes, quantizers[0].levels, paths[-1])
        with torch.no_grad():
            for name, grid in model.extra_figures(result.images.to(device)).items():
                p = folder / f"{name}.png"
                _grid_figure(tile(grid), [""] * grid.shape[0], grid.shape[-2] + 2, name, p)
                paths.append(p)
    finally:
        model.train(was_training)
    return paths
