"""Evaluation of a model: disentanglement metrics and PSNR, and ``evaluate_run``, which writes them.

The evaluation set is ``eval_samples`` images drawn uniformly (with
replacement) from the dataset by a generator seeded from the run's seed
alone, so every evaluation of a run, during training or by ``latentquant
evaluate``, scores the same images. They are in-sample: drawn from the pool
the training batches come from, as in the authors' code. Each image is encoded (the model's ``code``: per-latent value
indices for quantized models, the mean/encoding otherwise) and reconstructed.

``eval.json`` keys:
    infom, infoe, infoc   InfoMEC (Hsu et al. 2023), discrete estimator for discrete codes, kNN otherwise
    dci_d, dci_c, dci_i   DCI disentanglement, completeness, informativeness (test accuracy)
    mig                   mutual information gap
    psnr                  mean over images of 10 log10(1 / MSE(sigmoid(logits), x)), pixels in [0, 1]
    step                  the training step of the weights
plus ``dci_model`` (the DCI classifier), ``dci_i_train``, ``eval_samples``,
``active_latents``, ``model``, ``dataset``, ``arch``. NaN scores are written as null.
The score names and labels live in ``scores.py``.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch

from latentquant.metrics import MetricWarning, dci, infomec, mig
from latentquant.train.figures import write_figures
from latentquant.train.report import write_report

_EVAL_STREAM = 0x5EED_E7A1  # second word of the evaluation generator's seed


class EvalResult(NamedTuple):
    scores: dict[str, Any]  # what eval.json holds
    nmi: np.ndarray  # (K, L)
    active: np.ndarray  # (L,) bool
    codes: torch.Tensor  # (N, L) on CPU
    images: torch.Tensor  # (n, c, 64, 64) a few evaluation images, CPU
    z: torch.Tensor  # (n, ...) their decoder inputs, CPU


def eval_indices(dataset, num_samples: int, seed: int) -> np.ndarray:
    """The run's fixed evaluation positions."""
    return dataset.sample_indices(num_samples, np.random.default_rng([seed, _EVAL_STREAM]))


@torch.no_grad()
def encode_all(
    model,
    dataset,
    indices: np.ndarray,
    device: torch.device,
    batch_size: int | None = None,
    autocast: Callable[[], Any] = nullcontext,
) -> tuple[torch.Tensor, float, torch.Tensor]:
    """Codes ``(N, L)`` (CPU), mean PSNR in dB, and the decoder inputs of the first 16 images.

    Batches of 64 on a CPU (cache-sized: ~40% faster than 256), 256 elsewhere.
    The batch size changes only the summation order inside the convolutions
    (floats equal to about 1e-6 relative, not bitwise); rows come back in
    ``indices`` order. The PSNR is summed in float32 over groups of 256 images
    whatever the batch."""
    batch_size = batch_size or (64 if torch.device(device).type == "cpu" else 256)
    was_training = model.training
    model.eval()
    codes, psnrs, z_first = [], [], []
    try:
        for start in range(0, len(indices), batch_size):
            x = dataset.get_images(indices[start : start + batch_size]).to(device)
            with autocast():
                enc = model.encode(x)
                logits = model.decode(enc.z)
            mse = (torch.sigmoid(logits.float()) - x).square().flatten(1).mean(1).clamp_min(1e-10)
            psnrs.append(-10 * torch.log10(mse))
            code = enc.code.detach()
            codes.append((code.float() if code.is_floating_point() else code).cpu())  # bf16 under autocast
            if start < 16:
                z_first.append(enc.z.detach().float().cpu()[: 16 - start])
    finally:
        model.train(was_training)
    psnr = torch.cat(psnrs)
    psnr_sum = sum(float(psnr[start : start + 256].sum()) for start in range(0, len(psnr), 256))
    return torch.cat(codes), psnr_sum / len(indices), torch.cat(z_first)


def evaluate(
    model,
    dataset,
    *,
    num_samples: int,
    seed: int,
    step: int,
    device: torch.device,
    dci_model: str = "fast",
    autocast: Callable[[], Any] = nullcontext,
) -> EvalResult:
    """Score ``model`` on the run's evaluation set (see the module docstring)."""
    idx = eval_indices(dataset, num_samples, seed)
    factors = dataset.get_factors(idx).numpy()
    codes, psnr, z_first = encode_all(model, dataset, idx, device, autocast=autocast)
    latents = codes.numpy().astype(np.int64 if model.discrete_latents else np.float64)
    info = infomec(factors, latents, discrete_latents=model.discrete_latents, seed=0)
    d = dci(factors, latents, seed=0, model=dci_model)
    scores = {
        "infom": info.infom,
        "infoe": info.infoe,
        "infoc": info.infoc,
        "dci_d": d.disentanglement,
        "dci_c": d.completeness,
        "dci_i": d.informativeness_test,
        "mig": mig(factors, latents, discrete_latents=model.discrete_latents),
        "psnr": psnr,
        "step": int(step),
        "dci_i_train": d.informativeness_train,
        "dci_model": dci_model,
        "eval_samples": int(num_samples),
        "active_latents": int(np.sum(info.active)),
        "num_latents": int(latents.shape[1]),
    }
    scores = {
        k: (
            None
            if isinstance(v, float) and not math.isfinite(v)
            else float(v)
            if isinstance(v, (float, np.floating))
            else v
        )
        for k, v in scores.items()
    }
    images = dataset.get_images(idx[:16])
    return EvalResult(scores, np.asarray(info.nmi), np.asarray(info.active, dtype=bool), codes, images, z_first)


def evaluate_run(
    model, dataset, cfg, step: int, device: torch.device, run, train_seconds: float | None = None
) -> tuple[dict[str, Any], list[Path]]:
    """Evaluate the model of the run ``run`` (a :class:`~latentquant.train.rundir.RunDir`)
    and write its ``eval.json`` (and a line of ``evals.jsonl``), figures and ``report.md``;
    returns the scores and the paths of the figures written.

    Always in float32, whatever the training precision: under bf16 autocast the
    continuous models' latents would be rounded to 8 bits before scoring.

    Runs on its own random stream (torch seeded from ``cfg.seed``, the training
    stream saved and restored around it): an evaluation in the middle of a run
    changes nothing in the steps after it, so a resumed run still matches the
    uninterrupted one, and random figures (a GAN's samples) come out the same
    from ``latentquant evaluate``.
    """
    with own_stream(cfg.seed, device):
        scores, result = score_run(model, dataset, cfg, step, device)
        run.write_eval(scores)
        figures = write_figures(model, result, dataset.factor_names, run.figures, device, nullcontext)
    write_report(run, cfg.to_dict(), scores, figures, train_seconds)
    return scores, figures


def score_run(model, dataset, cfg, step: int, device: torch.device) -> tuple[dict[str, Any], EvalResult]:
    """The scores ``evaluate_run`` writes (the run's evaluation settings and its names added),
    and the evaluation they come from; writes nothing. Call it inside ``own_stream``.

    At step 0 the metrics' warnings are not shown: an initialized quantized model often
    gives every image the same code, so that InfoM, InfoC and DCI are undefined (null)
    there, as expected."""
    with warnings.catch_warnings():
        if step == 0:
            warnings.simplefilter("ignore", MetricWarning)
        result = evaluate(
            model,
            dataset,
            num_samples=cfg.eval_samples,
            seed=cfg.seed,
            step=step,
            device=device,
            dci_model=cfg.dci_model,
        )
    scores = {**result.scores, "model": cfg.model, "dataset": cfg.dataset, "arch": cfg.arch, "seed": cfg.seed}
    return scores, result


@contextmanager
def own_stream(seed: int, device: torch.device) -> Iterator[None]:
    """The evaluation's random stream: torch seeded from ``seed`` inside, the caller's restored after."""
    cuda = [device.index if device.index is not None else torch.cuda.current_device()] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=cuda):
        torch.manual_seed(seed)
        yield
