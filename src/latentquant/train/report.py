"""``OUT/report.md``: one page linking everything a run wrote."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from latentquant._atomic import atomic_write_text
from latentquant.train.checkpoint import list_checkpoints
from latentquant.train.scores import SCORES, format_score


def write_report(
    run, config: dict[str, Any], scores: dict[str, Any], figures: list[Path], train_seconds: float | None = None
) -> Path:
    """Write ``report.md`` of the run ``run`` (a :class:`~latentquant.train.rundir.RunDir`);
    its config block is the YAML of ``config.yaml``."""
    import yaml  # the train extra's, as in config.py

    out = run.path
    lines = [
        f"# {config['model']} on {config['dataset']} ({config['arch']} arch, seed {config['seed']})",
        "",
        f"Evaluated at step {scores['step']:,} of {config['steps']:,} on {scores.get('eval_samples', '?'):,} "
        f"images (in-sample: drawn from the training pool); DCI classifier: `{scores.get('dci_model', '?')}`; "
        f"active latents: {scores.get('active_latents', '?')} of {scores.get('num_latents', '?')}."
        + (f" Training time: {train_seconds / 60:.1f} min." if train_seconds else ""),
        "",
        "| metric | value |",
        "|---|---|",
        *[f"| {s.label} | {format_score(scores.get(s.key), 4)} |" for s in SCORES],
        "",
        "## Figures",
        "",
    ]
    for p in figures:
        rel = Path(p).relative_to(out) if Path(p).is_relative_to(out) else Path(p)
        lines += [f"### {rel.stem}", "", f"![{rel.stem}]({rel.as_posix()})", ""]
    ckpts = list_checkpoints(run.checkpoints)
    lines += [
        "## Files",
        "",
        "- [config.yaml](config.yaml): the resolved config (`latentquant train --config config.yaml`)",
        "- [metrics.jsonl](metrics.jsonl): training losses, one JSON line per logged step",
        "- [eval.json](eval.json): these scores; [evals.jsonl](evals.jsonl): every evaluation",
        "- checkpoints: " + (", ".join(f"[{p.name}](checkpoints/{p.name})" for p in ckpts) or "none"),
        "",
        f"Resume with `latentquant train --resume {out}`; recompute this page with `latentquant evaluate {out}`.",
        "",
        "<details><summary>config</summary>",
        "",
        "```yaml",
        yaml.safe_dump(config, sort_keys=False).rstrip("\n"),
        "```",
        "</details>",
        "",
    ]
    atomic_write_text(run.report, "\n".join(lines))
    return run.report
