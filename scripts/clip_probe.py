"""Does the element-wise gradient clip bind? Train a short run through the CLI and record, at every
call of ``clip_gradients``, the largest gradient element of the clipped groups and how many
elements exceed the clip. For models whose authors do not clip (FactorQVAE, the categorical VAE),
where ``--clip 1`` is this project's default (docs/training.md).

    python scripts/clip_probe.py MODEL STEPS OUT [train flags ...]
    python scripts/clip_probe.py factorqvae 300 /tmp/probe_f -o lr_period=10000 -o temperature_decay=1e-4

Prints one JSON line: optimizer steps seen, the largest |grad| and the steps and elements clipped.
"""

from __future__ import annotations

import json
import sys

import latentquant.models.base as base
from latentquant.cli import main

ORIGINAL = base.clip_gradients
RECORDS: list[tuple[float, int]] = []


def recording_clip(optimizer) -> None:
    top, above = 0.0, 0
    for group in optimizer.param_groups:
        clip = group.get("clip_value")
        for p in group["params"] if clip else ():
            if p.grad is not None:
                size = p.grad.detach().abs()
                top, above = max(top, float(size.max())), above + int((size > clip).sum())
    RECORDS.append((top, above))
    ORIGINAL(optimizer)


def run(argv: list[str]) -> dict:
    """Train ``MODEL STEPS OUT [flags]`` with every clip recorded (the patch is undone on return)."""
    model, steps, out, *extra = argv
    RECORDS.clear()
    patched = [  # every module that imported the function by name
        m
        for m in list(sys.modules.values())
        if getattr(m, "__name__", "").startswith("latentquant") and getattr(m, "clip_gradients", None) is ORIGINAL
    ]
    for module in patched:
        module.clip_gradients = recording_clip
    flags = ["--dataset", "shapes", "--model", model, "--arch", "small", "--steps", steps, "--threads", "1"]
    try:
        rc = main(["train", *flags, "--eval-every", str(10**9), "--out", out, *extra])
    finally:
        for module in patched:
            module.clip_gradients = ORIGINAL
    return {
        "model": model,
        "rc": rc,
        "optimizer_steps": len(RECORDS),
        "max_abs_grad": max((t for t, _ in RECORDS), default=0.0),
        "steps_clipped": sum(1 for _, n in RECORDS if n),
        "elements_clipped": sum(n for _, n in RECORDS),
    }


if __name__ == "__main__":
    if len(sys.argv) < 4:
        sys.exit(__doc__)
    print(json.dumps(run(sys.argv[1:])))
