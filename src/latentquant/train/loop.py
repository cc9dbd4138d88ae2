"""The training loop. ``train`` reads top to bottom: the config resolved once
(``config.resolve``: validated, data opened, defaults filled, model built),
processes and devices (``distributed.py``), the run directory taken (marked
and locked, ``rundir.RunDir``), resume, optimizers, then ``run_members``: one
loop of short blocks (a step, the log, checkpoint and evaluation) and the final
evaluation (``evaluate.evaluate_run``). The loop is written for K runs stepped
together: a run is a stack of one (``OneRun``), and ``stacked.train_stack``
passes its stack (``stacked.StackTrainer``) to the same loop. The helpers it
uses follow it: the stop flag, the loss meter, the log sinks and the checks of
a step.

One process: ``latentquant train ...``. Several: ``torchrun --nproc_per_node=N
-m latentquant train ...`` runs DistributedDataParallel; the global batch is
split across ranks and only rank 0 writes anything.

The model owns its objective and its update (``LatentModel.training_step``),
so a model with several optimizers and its own schedule (a GAN) runs in this
same loop. ``train(config)`` is the API the CLI and ``latentquant sweep`` call.
The batches come from ``batches.Prefetcher`` (a function of seed and step, so a
resumed run sees the batches of the uninterrupted one); losses accumulate on
the device and are read back (one host sync) only every ``log_every`` steps.
"""

from __future__ import annotations

import json
import math
import os
import signal
import sys
import threading
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import torch

from latentquant.quantize import LatentQuantize
from latentquant.train.batches import Prefetcher
from latentquant.train.checkpoint import load_latest, restore, save_checkpoint
from latentquant.train.config import RUNTIME_FIELDS, Resolved, TrainConfig, resolve
from latentquant.train.distributed import (
    Dist,
    all_reduce_sum,
    close_distributed,
    make_autocast,
    setup_distributed,
    wrap_ddp,
)
from latentquant.train.evaluate import evaluate_run
from latentquant.train.loggers import open_loggers
from latentquant.train.rundir import RunDir
from latentquant.validation import UserError

# settings a resumed run cannot change, checked before resolving (a resumed run's model
# resolved under another model's settings would fail with a message about those settings)
IDENTITY_FIELDS = ("model", "dataset", "arch")


def train(
    config: TrainConfig, resume: bool = False, overwrite: bool = False, *, kind: str = "train"
) -> dict[str, Any] | None:
    """Train (or with ``resume``, continue) the run described by ``config``.

    Everything the run will need is checked before step 1: the config (resolved
    once against the data, ``resolve``), the run
    directory (ours, and not in use), and on resume the run's own config, which
    ``config`` may change only in its steps (to more than done) and in how it
    runs (device, threads, ...), and which must be the one its checkpoint was
    written under. ``overwrite`` replaces a finished or interrupted run in the
    same folder, deleting only the files a run writes. ``kind`` is recorded in
    the run's marker: ``"demo"`` for ``latentquant demo``, whose ``overwrite``
    replaces only an earlier demo run.

    Parameters
    ----------
    config : TrainConfig
        The run; ``config.out`` is its folder.
    resume : bool, default False
        Continue the run in ``config.out`` from its latest checkpoint.
    overwrite : bool, default False
        Replace a finished or interrupted run in the same folder.
    kind : str, default "train"
        Recorded in the run's marker (``"demo"`` for ``latentquant demo``).

    Returns
    -------
    dict or None
        The final evaluation scores, as in ``eval.json`` (``infom``, ``infoe``,
        ``infoc``, ``dci_d``, ``dci_c``, ``dci_i``, ``mig``, ``psnr``,
        ``step``) on rank 0; None on other ranks.

    Raises
    ------
    latentquant.validation.UserError
        A ``ValueError``, for bad input: the config, a folder that is not a
        run's or is in use, a resume that does not match the run.
    TrainingDiverged
        When the loss becomes NaN or infinite.
    TrainingInterrupted
        After checkpointing on SIGINT/SIGTERM.

    Examples
    --------
    Training takes minutes even for a short run, so this example is not run
    by the tests:

    >>> from latentquant.train import TrainConfig, train
    >>> config = TrainConfig(dataset="sprites", model="qlae", arch="small", steps=300,
    ...                      batch_size=32, eval_every=0, eval_samples=2000, out="runs/tiny")
    >>> scores = train(config)  # doctest: +SKIP
    >>> sorted(scores)  # doctest: +SKIP
    ['dci_c', 'dci_d', 'dci_i', 'infoc', 'infoe', 'infom', 'mig', 'psnr', 'step']
    """
    if resume and config.out is not None:
        check_resumed_identity(RunDir(config.out), config)
    resolved = resolve(config)
    cfg = resolved.config
    dist = setup_distributed(cfg.device)
    try:
        if cfg.batch_size % dist.world:
            raise UserError(f"batch_size {cfg.batch_size} is not divisible by the {dist.world} processes")
        run = RunDir(cfg.out)
        if not dist.master:
            return _train(resolved, run, resume, dist)
        with run.acquire(new=not resume, overwrite=overwrite, kind=kind):  # the lock is held for the run's lifetime
            if run.kept:
                shown = ", ".join(run.kept[:5]) + (f" and {len(run.kept) - 5} more" if len(run.kept) > 5 else "")
                print(f"--overwrite: kept {len(run.kept)} file(s) latentquant did not write: {shown}", file=sys.stderr)
            return _train(resolved, run, resume, dist)
    finally:
        close_distributed(dist)


def _train(resolved: Resolved, run: RunDir, resume: bool, dist: Dist) -> dict[str, Any] | None:
    cfg, model = resolved.config, resolved.model
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    elif dist.enabled and dist.device.type == "cpu":  # share the cores among the local ranks
        local_world = int(os.environ.get("LOCAL_WORLD_SIZE", dist.world))
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // local_world))

    # -- resume: the checkpoint, a config.yaml it was written under, flags that agree ---
    found = resume_point(run, cfg) if resume else None
    start = int(found[2]["step"]) if found else 0
    if found and dist.master:
        run.truncate_logs(start)

    # -- model and optimizers; the same loop as a stack of runs, with one member ----------
    model.to(dist.device)
    trainer = OneRun(model, cfg.lr, cfg.weight_decay, cfg.clip)
    if found is not None:
        trainer.restore(0, found)
        if dist.master:
            print(f"resuming {run.path} from {found[0].name} (step {start:,} of {cfg.steps:,})", file=sys.stderr)
    del found
    if dist.rank > 0:  # independent noise per rank (rank 0 keeps the checkpointed stream)
        torch.manual_seed(cfg.seed + 7919 * dist.rank + start)
    if dist.master:
        run.write_config(cfg)
    trainer.wrap(cfg.compile, dist)
    (result,) = run_members(trainer, [resolved], [run], dist, start)
    if isinstance(result, Exception):
        raise result
    return result


def resume_point(run: RunDir, cfg: TrainConfig) -> tuple[Path, dict, dict]:
    """The checkpoint a resumed run continues from (its newest readable one), checked: written
    by this run, under the config.yaml it has, which ``cfg`` changes only as a resume may."""
    found = load_latest(run.checkpoints)
    if found is None:
        raise UserError(f"cannot resume: no checkpoint in {run.checkpoints}")
    saved = run.check_checkpoint(found[0], found[2])
    check_resume(saved, cfg, int(found[2]["step"]))
    return found


class OneRun:
    """What ``run_members`` trains for one run: its model (compiled and in DistributedDataParallel
    when asked) and its optimizers, stepped by the model's own ``training_step``. The stacked
    trainer (``stacked.StackTrainer``) answers the same calls for K runs."""

    def __init__(self, model, lr: float, weight_decay: float, clip: float | None):
        self.models = [model]
        self.active = [True]
        self.counts_usage = True  # its quantizers' counts are logged (``read_usage``)
        self.optimizers = model.configure_optimizers(lr=lr, weight_decay=weight_decay, clip=clip)
        self.net = model
        self.meter = LossMeter()

    def restore(self, k: int, found) -> None:
        _, tensors, doc = found
        restore(tensors, doc, self.models[0], self.optimizers)

    def wrap(self, compile: bool, dist: Dist) -> None:
        model = self.models[0]
        self.net = torch.compile(model) if compile else model
        if dist.enabled:
            self.net = wrap_ddp(self.net, model, dist, model.ddp_find_unused_parameters)

    def member_rng(self, k: int):
        return nullcontext()

    def step(self, batches: list[torch.Tensor], step: int, autocast) -> None:
        self.models[0].train()
        self.meter.add(self.models[0].training_step(self.net, batches[0], self.optimizers, step, autocast))

    def read(self, dist: Dist, stop: bool, due: bool = False) -> tuple[list[dict[str, float]], bool, bool]:
        """Each member's window means of the loss parts, whether any rank asked to stop, and
        whether any rank's timed checkpoint is due."""
        logged, stop_all, due_all = self.meter.read(dist, stop, due)
        return [logged], stop_all, due_all

    def lr(self, k: int) -> float:
        return self.optimizers[next(iter(self.optimizers))].param_groups[0]["lr"]

    def checkpoint(self, k: int, cfg: TrainConfig, step: int, run: RunDir, dist: Dist, log: RunLog) -> Path | None:
        return save(self.models[0], self.optimizers, cfg, step, run, dist, log)


def run_members(
    trainer, members: list[Resolved], runs: list[RunDir], dist: Dist, start: int
) -> list[dict[str, Any] | Exception | None]:
    """The loop, for the runs ``members`` that ``trainer`` steps together (one, or a stack):
    a step, the log, checkpoints and evaluations, then the final evaluation. Returns per
    member its final scores (None on ranks other than 0), or the :class:`TrainingDiverged`
    that stopped it while the others went on. Raises :class:`TrainingInterrupted` after
    checkpointing every member on SIGINT/SIGTERM. The first member's config sets the
    cadences, ``checkpoint_seconds`` among them (also checkpoint once that many seconds
    have passed since the last checkpoint)."""
    cfgs = [r.config for r in members]
    cfg0, dataset, K = cfgs[0], members[0].dataset, len(members)
    checkpoint_seconds = cfg0.checkpoint_seconds
    autocast = make_autocast(cfg0.precision, dist.device)
    quantizers = [usage_trackers(m) if trainer.counts_usage else [] for m in trainer.models]
    logs = [RunLog(run if dist.master else None, c, start) for run, c in zip(runs, cfgs)]
    for log in logs[1:]:  # one progress bar
        log.progress.disable = True
    streams = [Prefetcher(dataset, c.seed, c.batch_size, start, c.steps, dist, c.prefetch) for c in cfgs]
    results: list[Any] = [None] * K
    t_start, step = time.time(), start
    window, last_ckpt = (start, t_start), t_start  # window: (step, time) where img/s counts from

    def stop_member(k: int, err: Exception) -> None:
        trainer.active[k] = False
        results[k] = err
        if K > 1:  # one run's error is raised by train()
            print(f"latentquant train: {runs[k].path}: {err}", file=sys.stderr)

    def checkpoint(k: int) -> Path | None:
        try:
            with trainer.member_rng(k):
                return trainer.checkpoint(k, cfgs[k], step, runs[k], dist, logs[k])
        except TrainingDiverged as err:
            stop_member(k, err)

    def evaluate(k: int):
        with trainer.member_rng(k):
            return evaluate_run(trainer.models[k], dataset, cfgs[k], step, dist.device, runs[k], time.time() - t_start)

    def curve_point() -> None:  # an evaluation of every member still training, on rank 0
        for k in range(K):
            if trainer.active[k] and dist.master:
                logs[k].scores(*evaluate(k))
        for m in (q for qs in quantizers for q in qs):  # an evaluation's forwards are not training's usage
            m.reset_usage()

    try:
        with StopFlag() as stop:
            if start == 0 and cfg0.eval_every:  # the initialization: each curve's first point
                curve_point()
                window = (step, time.time())
            while step < cfg0.steps and any(trainer.active):
                # one step
                trainer.step([next(s) for s in streams], step, autocast)
                step += 1
                logs[0].progress.update(1)

                # log: losses averaged over ranks, which also agree here on a stop request and
                # on a timed checkpoint (each rank's clock differs: under torchrun one is taken
                # at the first log step after checkpoint_seconds, all ranks together);
                # a member with a non-finite loss stops (alone, in a stack)
                want_ckpt = regular_checkpoint(cfg0, step)
                due = bool(checkpoint_seconds) and time.time() - last_ckpt >= checkpoint_seconds
                alone = not dist.enabled
                if step % cfg0.log_every == 0 or want_ckpt or (alone and (stop.requested or due)):
                    logged, stop_all, due_all = trainer.read(dist, stop.requested, due)
                    want_ckpt = want_ckpt or due_all  # a short lease: at most checkpoint_seconds lost
                    now = time.time()
                    img_s = cfg0.batch_size * (step - window[0]) / max(now - window[1], 1e-9)
                    for k in range(K):
                        if not trainer.active[k]:
                            continue
                        usage = read_usage(quantizers[k], dist)  # a collective under DDP, as the read
                        record = {"step": step, **logged[k], "lr": trainer.lr(k), "seconds": round(now - t_start, 3)}
                        norms = trainer.models[k].weight_norms() if dist.master else {}  # ~1 ms for `small`
                        logs[k].losses(record, img_s, usage, norms)
                        bad = {n: v for n, v in logged[k].items() if not math.isfinite(v)}
                        if bad:  # after the line: the run's record shows the step
                            shown = ", ".join(f"{n}={v}" for n, v in bad.items())
                            stop_member(
                                k,
                                TrainingDiverged(
                                    f"non-finite loss at step {step} ({shown}); stopped. Last good checkpoint: "
                                    f"{runs[k].latest_checkpoint() or 'none'}; lower --lr or check the data"
                                ),
                            )
                    window = (step, now)
                    if stop_all and step < cfg0.steps:
                        paths = [checkpoint(k) for k in range(K) if trainer.active[k]]
                        if K == 1:
                            raise TrainingInterrupted(
                                f"interrupted at step {step}; checkpoint {paths[0] if paths else None}; "
                                f"continue with: latentquant train --resume {runs[0].path}"
                            )
                        raise TrainingInterrupted(
                            f"interrupted at step {step}; checkpoints written; continue with: latentquant train "
                            f"--resume DIR for each of {', '.join(str(r.path) for r in runs)}"
                        )

                # checkpoint, then evaluate
                want_eval = cfg0.eval_every and step % cfg0.eval_every == 0 and step < cfg0.steps
                for k in range(K):
                    if want_ckpt and trainer.active[k]:
                        checkpoint(k)
                if want_eval:
                    curve_point()
                if want_ckpt:
                    last_ckpt = time.time()
                if want_ckpt or want_eval:
                    window = (step, time.time())  # img/s counts training steps, not saving or evaluating

        # the final evaluation of the members that finished (rank 0)
        for k in range(K):
            if trainer.active[k] and dist.master:
                scores, figures = evaluate(k)
                logs[k].scores(scores, figures)
                results[k] = scores
                print(f"run directory: {runs[k].path}  (report: {runs[k].report})", file=sys.stderr)
    finally:
        for s in streams:
            s.close()
        for log in logs:
            log.close()
    return results


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite; the last good checkpoint was kept.

    Raised by ``train``. A ``RuntimeError``; ``latentquant train`` reports it
    and exits. Lower the learning rate or resume from the checkpoint kept.

    Examples
    --------
    >>> from latentquant.train import TrainingDiverged
    >>> issubclass(TrainingDiverged, RuntimeError)
    True
    """


class TrainingInterrupted(RuntimeError):
    """Stopped by SIGINT/SIGTERM after writing a checkpoint.

    Raised by ``train``; ``train(config, resume=True)`` (``latentquant train
    --resume``) continues from that checkpoint. A ``RuntimeError``.

    Examples
    --------
    >>> from latentquant.train import TrainingInterrupted
    >>> issubclass(TrainingInterrupted, RuntimeError)
    True
    """


# ---------------------------------------------------------------------------
# the checks and the checkpoint of a step


def check_resumed_identity(run: RunDir, requested: TrainConfig) -> None:
    """Before anything is resolved: a resumed run keeps its model, dataset and backbone."""
    saved = run.read_config()
    for name in IDENTITY_FIELDS:
        if getattr(requested, name) != getattr(saved, name):
            raise UserError(
                f"--resume {run.path}: a resumed run keeps its {name} ({getattr(saved, name)!r}), "
                f"got {getattr(requested, name)!r}; start a new run with another --out instead"
            )


def check_resume(saved: TrainConfig, requested: TrainConfig, done: int) -> None:
    """A resumed run keeps its config: only more steps than done, and how it runs, may change."""
    changed = requested.differences(saved, ignore=RUNTIME_FIELDS + ("steps",))
    if changed:
        shown = ", ".join(f"{k} {new!r} (the run has {old!r})" for k, (new, old) in changed.items())
        raise UserError(
            f"--resume {saved.out or requested.out}: {shown}; a resumed run keeps its settings "
            "(only a larger --steps may change): start a new run with another --out instead"
        )
    if requested.steps <= done:
        raise UserError(
            f"--resume: the run is at step {done:,}; --steps must be larger than that "
            f"to continue it, got {requested.steps:,}"
        )


def regular_checkpoint(cfg: TrainConfig, step: int) -> bool:
    """Whether ``step`` is one of the run's regular checkpoints: on its ``checkpoint_every`` grid,
    or its last step (the others are timed or interrupt checkpoints, see ``checkpoint.prune``)."""
    return step % cfg.checkpoint_every == 0 or step == cfg.steps


def save(model, optimizers, cfg: TrainConfig, step: int, run: RunDir, dist: Dist, log: RunLog) -> Path | None:
    """Checkpoint ``step`` (rank 0 writes), unless the weights are no longer finite.

    The losses so far were finite, but a NaN/inf gradient of the last step may have
    poisoned the weights: those are never saved over a good checkpoint (the same
    answer on every rank, whose weights DDP keeps identical); ``metrics.jsonl`` gets
    a line saying so."""
    tensors = [t.detach() for t in (*model.parameters(), *model.buffers()) if t.is_floating_point()]
    if tensors and not bool(torch.stack([t.isfinite().all() for t in tensors]).all()):
        log.nonfinite(step, ["weights"])
        raise TrainingDiverged(
            f"non-finite weights after step {step} (NaN/inf gradients); stopped. Last good checkpoint: "
            f"{run.latest_checkpoint() or 'none'}; lower --lr or check the data"
        )
    if not dist.master:
        return None
    return save_checkpoint(
        run.checkpoints,
        step,
        model,
        optimizers,
        keep=cfg.keep_checkpoints,
        every=cfg.checkpoint_every,
        regular=regular_checkpoint(cfg, step),
        state={
            "config": cfg.to_dict(),
            "run_id": run.run_id(),
            "data_order": "numpy default_rng([seed, step]).integers(N, size=batch)",
        },
    )


# ---------------------------------------------------------------------------
# stopping on SIGINT / SIGTERM


class StopFlag:
    """The first SIGINT/SIGTERM asks the loop to checkpoint and stop after the current step;
    a second one interrupts at once. Handlers are installed only in the main thread."""

    def __init__(self):
        self.requested, self._old = False, {}

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._old[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame):
        self.requested = True
        for sig, old in self._old.items():  # a second signal acts as usual
            signal.signal(sig, old)

    def __exit__(self, *exc):
        for sig, old in self._old.items():
            signal.signal(sig, old)


# ---------------------------------------------------------------------------
# logging


class LossMeter:
    """Sums of the loss parts on the device; read back (one sync) at the logging cadence.

    Each part is averaged over the steps that reported it: a part a step leaves
    out (a GAN's generator loss on critic-only steps) is not diluted."""

    def __init__(self):
        self.sums: dict[str, torch.Tensor] = {}
        self.counts: dict[str, int] = {}

    def add(self, parts: dict[str, torch.Tensor]) -> None:
        for k, v in parts.items():
            v = v.detach().float()
            self.sums[k] = self.sums[k] + v if k in self.sums else v.clone()
            self.counts[k] = self.counts.get(k, 0) + 1

    def read(self, dist: Dist, stop: bool = False, due: bool = False) -> tuple[dict[str, float], bool, bool]:
        """Window means (averaged over ranks), whether any rank asked to stop and whether any
        rank's timed checkpoint is due; resets the window."""
        keys = sorted(self.sums)
        flag = torch.tensor(float(stop), device=dist.device)  # the flags are summed: > 0 when any rank
        counts = [flag.new_tensor(float(self.counts[k])) for k in keys]
        vec = torch.stack([*(self.sums[k] for k in keys), *counts, flag, flag.new_tensor(float(due))])
        if dist.enabled:
            all_reduce_sum(vec)
        values, n = vec.tolist(), len(keys)
        self.sums, self.counts = {}, {}
        return {k: values[i] / max(values[n + i], 1.0) for i, k in enumerate(keys)}, values[-2] > 0, values[-1] > 0


def usage_trackers(model) -> list[LatentQuantize]:
    """The model's quantizers that count their values' usage (``track_usage=True``)."""
    return [m for m in model.modules() if isinstance(m, LatentQuantize) and m.track_usage]


def read_usage(quantizers: list[LatentQuantize], dist: Dist) -> dict[str, list]:
    """Per latent, the perplexity exp(H) of the values' assignments and the number of values
    never assigned, over the training forwards since the last read (summed over ranks), then
    reset: ``{"perplexity": [...], "dead": [...]}`` (``perplexity_1``, ... for further quantizers)."""
    record = {}
    for j, m in enumerate(quantizers):
        u = m.usage(all_ranks=dist.enabled)
        m.reset_usage()
        suffix = f"_{j}" if j else ""
        record[f"perplexity{suffix}"] = [round(v, 4) for v in u.perplexity_all.tolist()]
        record[f"dead{suffix}"] = u.dead_all.tolist()
    return record


class RunLog:
    """The sinks of a run's numbers on rank 0: ``metrics.jsonl``, the loggers of
    ``config.logger`` (TensorBoard, wandb: ``loggers.py``) and the progress bar.
    Other ranks get a silent one."""

    def __init__(self, run: RunDir | None, cfg: TrainConfig, start: int):
        from tqdm import tqdm

        try:
            self.loggers = open_loggers(cfg) if run else None
        except ValueError as err:  # loggers.py's convention for a logger that cannot start (no wandb account)
            raise UserError(str(err)) from None
        self.file = open(run.metrics, "a") if run else None  # noqa: SIM115 (open for the run, closed by close())
        interactive = sys.stderr.isatty()  # in a log file (a sweep's train.log), a line every 30 s is plenty
        self.progress = tqdm(
            total=cfg.steps,
            initial=start,
            disable=run is None,
            unit="step",
            dynamic_ncols=True,
            smoothing=0.05,
            file=sys.stderr,
            mininterval=0.5 if interactive else 30.0,
        )

    def losses(
        self, record: dict[str, Any], img_s: float, usage: dict[str, list] | None = None, norms: dict | None = None
    ) -> None:
        """A line of ``metrics.jsonl``: the losses, the weights' norms per group
        (``LatentModel.weight_norms``, as ``norm_<group>``) and, for quantized models,
        the values' usage per latent (``read_usage``). A non-finite number is written as
        null and named under ``nonfinite`` (JSON has no NaN), so a diverged step stays on
        record. The loggers get ``train/<loss>``, ``weights/norm_<group>`` and
        ``usage/<figure>/z<i>`` scalars."""
        if self.file is None:
            return
        record = {**record, **{f"norm_{k}": v for k, v in (norms or {}).items()}}
        usage = usage or {}
        bad = [k for k, v in record.items() if isinstance(v, float) and not math.isfinite(v)]
        if bad:
            self._write({**{k: None if k in bad else v for k, v in record.items()}, **usage, "nonfinite": bad})
            return
        self._write({**record, **usage})
        self.progress.set_postfix(loss=f"{record.get('loss', float('nan')):.4f}", img_s=f"{img_s:.0f}", refresh=False)
        scalars = {
            f"weights/{k}" if k.startswith("norm_") else f"train/{k}": v
            for k, v in record.items()
            if k not in ("step", "lr", "seconds")
        }
        for name, per_latent in usage.items():
            scalars.update({f"usage/{name}/z{i}": float(v) for i, v in enumerate(per_latent)})
        self.loggers.log_scalars(scalars, record["step"])

    def nonfinite(self, step: int, names: list[str]) -> None:
        """The record of a step whose ``names`` (e.g. the weights) are no longer finite."""
        if self.file is not None:
            self._write({"step": step, "nonfinite": names})

    def _write(self, record: dict[str, Any]) -> None:
        self.file.write(json.dumps(record, allow_nan=False) + "\n")
        self.file.flush()

    def scores(self, scores: dict[str, Any], figures: list[Path]) -> None:
        """An evaluation's scores (counts, seed and names are not plotted) and the figures it wrote
        (not whatever else lies in ``figures/``)."""
        if self.loggers is not None:
            self.loggers.log_scalars(
                {f"eval/{k}": v for k, v in scores.items() if isinstance(v, float)}, scores["step"]
            )
            self.loggers.log_figures(figures, scores["step"])

    def close(self) -> None:
        self.progress.close()
        if self.file is not None:
            self.file.close()
        if self.loggers is not None:
            self.loggers.close()  # and their background threads
