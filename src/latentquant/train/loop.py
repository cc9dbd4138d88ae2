"""The training loop. ``train`` reads top to bottom: the config resolved once
against the data, processes and devices, the run directory taken (marked and
locked, ``rundir.RunDir``), resume, model and optimizers, then one loop of
short blocks (a step, the log, checkpoint and evaluation) and the final
evaluation (``evaluate.evaluate_run``). The helpers it uses come first: the
distributed bookkeeping, the batch stream, the stop flag, the loss meter and
the log sinks.

One process: ``latentquant train ...``. Several: ``torchrun --nproc_per_node=N
-m latentquant train ...`` runs DistributedDataParallel from torchrun's
environment variables (gloo on CPU, NCCL on GPU); the global batch is split
across ranks and only rank 0 writes anything.

The model owns its objective and its update (``LatentModel.training_step``),
so a model with several optimizers and its own schedule (a GAN) runs in this
same loop. ``train(config)`` is the API the CLI and ``latentquant sweep`` call.

Data order: the batch of step ``t`` is ``rng(seed, t).integers(N, size=B)``,
split across ranks, so it depends on nothing but the seed and the step, and a
resumed run sees exactly the batches the uninterrupted run would. A
background thread renders the next batches (vectorized ``get_images``) while
the current one trains. Losses accumulate on the device and are read back
(one host sync) only every ``log_every`` steps.
"""

from __future__ import annotations

import json
import math
import os
import queue
import signal
import sys
import threading
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass
from datetime import timedelta
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch

from latentquant.train.checkpoint import load_latest, restore, save_checkpoint
from latentquant.train.config import RUNTIME_FIELDS, TrainConfig, resolve
from latentquant.train.evaluate import evaluate_run
from latentquant.train.loggers import open_loggers
from latentquant.train.rundir import RunDir
from latentquant.validation import UserError


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite; the last good checkpoint was kept."""


class TrainingInterrupted(RuntimeError):
    """Stopped by SIGINT/SIGTERM after writing a checkpoint."""


# ---------------------------------------------------------------------------
# distributed setup and devices


@dataclass
class Dist:
    rank: int = 0
    local_rank: int = 0
    world: int = 1
    device: torch.device = torch.device("cpu")

    @property
    def master(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world > 1


def setup_distributed(device: str) -> Dist:
    """Read torchrun's RANK / LOCAL_RANK / WORLD_SIZE; start the process group when WORLD_SIZE > 1."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank, local_rank = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
    dev = resolve_device(device, local_rank if world > 1 else None)
    if world > 1:
        import torch.distributed as tdist

        if not tdist.is_initialized():
            backend = "nccl" if dev.type == "cuda" else "gloo"
            if dev.type == "cuda":
                torch.cuda.set_device(dev)
            tdist.init_process_group(backend=backend, timeout=timedelta(minutes=30))
    return Dist(rank, local_rank, world, dev)


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """Sum ``tensor`` over the ranks in place; return once the backend has let go of it.

    Gloo runs a collective on a worker thread, which drops the finished work,
    and with it its reference to ``tensor``, a moment after ``all_reduce``
    returns. Releasing a tensor that Python also holds takes the GIL; were the
    worker still waiting for it when the interpreter shuts down, Python ends
    the thread inside C++ code and the process aborts ("terminate called
    without an active exception"). Waiting here, with the GIL released, until
    ``tensor`` is ours alone means no worker holds a Python tensor at exit.
    """
    import torch.distributed as tdist

    tdist.all_reduce(tensor)
    if tdist.get_backend() == "gloo":
        wait_released(tensor)
    return tensor


def wait_released(*tensors: torch.Tensor, timeout: float = 60.0) -> None:
    """Sleep until no one but the caller holds ``tensors`` (see :func:`all_reduce_sum`)."""
    deadline = time.monotonic() + timeout
    while any(t._use_count() > 1 for t in tensors) and time.monotonic() < deadline:
        time.sleep(1e-4)


def resolve_device(device: str, local_rank: int | None = None) -> torch.device:
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise UserError(f"device {device!r} requested but CUDA is not available; valid here: cpu")
        if device == "cuda" and local_rank is not None:
            device = f"cuda:{local_rank}"
    if device == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise UserError("device 'mps' requested but MPS is not available; valid here: cpu")
    return torch.device(device)


def make_autocast(precision: str, device: torch.device) -> Callable[[], Any]:
    """A context factory: bf16 autocast ('bf16', or 'auto' on a CUDA device that supports it), else nothing."""
    if precision == "auto":
        precision = "bf16" if device.type == "cuda" and torch.cuda.is_bf16_supported() else "fp32"
    if precision == "bf16":
        return partial(torch.autocast, device_type=device.type, dtype=torch.bfloat16)
    return nullcontext


# ---------------------------------------------------------------------------
# data: a deterministic index stream and a background prefetcher


def batch_indices(seed: int, step: int, batch_size: int, num_items: int, rank: int = 0, world: int = 1) -> np.ndarray:
    """Dataset positions of this rank's share of the global batch of ``step``."""
    idx = np.random.default_rng([seed, step]).integers(0, num_items, size=batch_size)
    return idx[rank::world]


class Prefetcher:
    """Loads the batches of steps ``start .. stop - 1`` in a background thread, ``depth`` ahead."""

    def __init__(self, dataset, seed: int, batch_size: int, start: int, stop: int, dist: Dist, depth: int = 4):
        self.dataset, self.seed, self.batch_size, self.dist = dataset, seed, batch_size, dist
        self.queue: queue.Queue = queue.Queue(maxsize=depth)
        self.pin = dist.device.type == "cuda"
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._work, args=(start, stop), daemon=True, name="prefetch")
        self._thread.start()

    def _work(self, start: int, stop: int) -> None:
        try:
            for step in range(start, stop):
                idx = batch_indices(
                    self.seed, step, self.batch_size, len(self.dataset), self.dist.rank, self.dist.world
                )
                x = self.dataset.get_images(idx)
                if self.pin:
                    x = x.pin_memory()
                if not self._put(x):
                    return
        except BaseException as err:  # handed to the consumer
            self._put(err)

    def _put(self, item) -> bool:
        while not self._stop.is_set():
            try:
                self.queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def __next__(self) -> torch.Tensor:
        item = self.queue.get()
        if isinstance(item, BaseException):
            raise item
        return item.to(self.dist.device, non_blocking=True)

    def close(self) -> None:
        """Stop and join the thread, so that it never runs into interpreter shutdown
        (it finishes at most the batch it is rendering)."""
        self._stop.set()
        self._thread.join()


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

    def read(self, dist: Dist, stop: bool = False) -> tuple[dict[str, float], bool]:
        """Window means (averaged over ranks) and whether any rank asked to stop; resets the window."""
        keys = sorted(self.sums)
        flag = torch.tensor(1.0 if stop else 0.0, device=dist.device)  # summed: > 0 when any rank asked
        vec = torch.stack(
            [*(self.sums[k] for k in keys), *(flag.new_tensor(float(self.counts[k])) for k in keys), flag]
        )
        if dist.enabled:
            all_reduce_sum(vec)
        values, n = vec.tolist(), len(keys)
        self.sums, self.counts = {}, {}
        return {k: values[i] / max(values[n + i], 1.0) for i, k in enumerate(keys)}, values[-1] > 0


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
        self.figures = run.figures if run else None
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

    def losses(self, record: dict[str, Any], img_s: float) -> None:
        if self.file is None:
            return
        self.file.write(json.dumps(record) + "\n")
        self.file.flush()
        self.progress.set_postfix(loss=f"{record.get('loss', float('nan')):.4f}", img_s=f"{img_s:.0f}", refresh=False)
        self.loggers.log_scalars(
            {f"train/{k}": v for k, v in record.items() if k not in ("step", "lr", "seconds")}, record["step"]
        )

    def scores(self, scores: dict[str, Any]) -> None:
        """An evaluation's scores (counts, seed and names are not plotted) and figures."""
        if self.loggers is not None:
            self.loggers.log_scalars(
                {f"eval/{k}": v for k, v in scores.items() if isinstance(v, float)}, scores["step"]
            )
            self.loggers.log_figures(sorted(self.figures.glob("*.png")), scores["step"])

    def close(self) -> None:
        self.progress.close()
        if self.file is not None:
            self.file.close()
        if self.loggers is not None:
            self.loggers.close()  # and their background threads


# ---------------------------------------------------------------------------
# the run


def train(config: TrainConfig, resume: bool = False, overwrite: bool = False) -> dict[str, Any] | None:
    """Train (or with ``resume``, continue) the run described by ``config``.

    Everything the run will need is checked before step 1: the config (resolved
    once against the data), the run directory (ours, and not in use), and on
    resume the run's own config, which ``config`` may change only in its steps
    (to more than done) and in how it runs (device, threads, ...).
    ``overwrite`` replaces a finished or interrupted run in the same folder,
    deleting only the files a run writes.

    Returns the final evaluation scores (rank 0; None on other ranks). Raises
    :class:`~latentquant.validation.UserError` for bad input, :class:`TrainingDiverged`
    on a NaN/inf loss and :class:`TrainingInterrupted` after checkpointing on SIGINT/SIGTERM.
    """
    from latentquant.data import get_dataset
    from latentquant.models import DataInfo

    # -- config and data: resolved once, before any work ------------------------
    config.validate()
    dataset = get_dataset(config.dataset, root=config.data_root, path=config.data_path)
    info = DataInfo(config.dataset, dataset.num_channels, dataset.num_factors, len(dataset))
    cfg = resolve(config, info)
    dist = setup_distributed(cfg.device)
    try:
        if cfg.batch_size % dist.world:
            raise UserError(f"batch_size {cfg.batch_size} is not divisible by the {dist.world} processes")
        run = RunDir(cfg.out)
        if not dist.master:
            return _train(cfg, dataset, info, run, resume, dist)
        with run.acquire(new=not resume, overwrite=overwrite):  # the lock is held for the run's lifetime
            return _train(cfg, dataset, info, run, resume, dist)
    finally:
        close_distributed(dist)


def close_distributed(dist: Dist) -> None:
    if dist.enabled:
        import torch.distributed as tdist

        if tdist.is_initialized():
            tdist.destroy_process_group()


def _train(cfg: TrainConfig, dataset, info, run: RunDir, resume: bool, dist: Dist) -> dict[str, Any] | None:
    from latentquant.models import build_model

    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    elif dist.enabled and dist.device.type == "cpu":  # share the cores among the local ranks
        local_world = int(os.environ.get("LOCAL_WORLD_SIZE", dist.world))
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // local_world))

    # -- resume: the checkpoint, and flags that agree with the run ----------------
    start, found = 0, None
    if resume:
        found = load_latest(run.checkpoints)
        if found is None:
            raise UserError(f"cannot resume: no checkpoint in {run.checkpoints}")
        start = int(found[2]["step"])
        check_resume(run.read_config(), cfg, start)

    # -- model and optimizers -------------------------------------------------------
    torch.manual_seed(cfg.seed)
    model = build_model(cfg.model, cfg.arch, info, **cfg.model_kwargs()).to(dist.device)
    optimizers = model.configure_optimizers(lr=cfg.lr, weight_decay=cfg.weight_decay, clip=cfg.clip)
    if found is not None:
        path, tensors, doc = found
        restore(tensors, doc, model, optimizers)
        del tensors, found
        if dist.master:
            print(f"resuming {run.path} from {path.name} (step {start:,} of {cfg.steps:,})", file=sys.stderr)
    if dist.rank > 0:  # independent noise per rank (rank 0 keeps the checkpointed stream)
        torch.manual_seed(cfg.seed + 7919 * dist.rank + start)
    if dist.master:
        run.write_config(cfg)
        run.truncate_logs(start)

    net = torch.compile(model) if cfg.compile else model
    if dist.enabled:
        from torch.nn.parallel import DistributedDataParallel

        net = DistributedDataParallel(
            net,
            device_ids=[dist.device.index] if dist.device.type == "cuda" else None,
            find_unused_parameters=model.ddp_find_unused_parameters,
        )
    autocast = make_autocast(cfg.precision, dist.device)

    # -- the loop ------------------------------------------------------------------
    log = RunLog(run if dist.master else None, cfg, start)
    stream = Prefetcher(dataset, cfg.seed, cfg.batch_size, start, cfg.steps, dist, cfg.prefetch)
    meter, t_start, step = LossMeter(), time.time(), start
    window = (start, t_start)  # (step, time) where the current logging window began, for img/s
    try:
        with StopFlag() as stop:
            while step < cfg.steps:
                # one step
                x = next(stream)
                model.train()
                meter.add(model.training_step(net, x, optimizers, step, autocast))
                step += 1
                log.progress.update(1)

                # log: losses averaged over ranks, which also agree here on a stop request
                want_ckpt = step % cfg.checkpoint_every == 0 or step == cfg.steps
                if step % cfg.log_every == 0 or want_ckpt or (stop.requested and not dist.enabled):
                    logged, stop_all = meter.read(dist, stop.requested)
                    check_finite_loss(logged, step, run)
                    now = time.time()
                    lr = optimizers[next(iter(optimizers))].param_groups[0]["lr"]
                    img_s = cfg.batch_size * (step - window[0]) / max(now - window[1], 1e-9)
                    log.losses({"step": step, **logged, "lr": lr, "seconds": round(now - t_start, 3)}, img_s)
                    window = (step, now)
                    if stop_all and step < cfg.steps:
                        path = save(model, optimizers, cfg, step, run, dist)
                        raise TrainingInterrupted(
                            f"interrupted at step {step}; checkpoint {path}; "
                            f"continue with: latentquant train --resume {run.path}"
                        )

                # checkpoint and evaluate
                want_eval = cfg.eval_every and step % cfg.eval_every == 0 and step < cfg.steps
                if want_ckpt:
                    save(model, optimizers, cfg, step, run, dist)
                if want_eval and dist.master:
                    log.scores(evaluate_run(model, dataset, cfg, step, dist.device, run, time.time() - t_start))
                if want_ckpt or want_eval:
                    window = (step, time.time())  # img/s counts training steps, not saving or evaluating

        # the final evaluation (rank 0)
        if not dist.master:
            return None
        scores = evaluate_run(model, dataset, cfg, step, dist.device, run, time.time() - t_start)
        log.scores(scores)
    finally:
        stream.close()
        log.close()
    print(f"run directory: {run.path}  (report: {run.report})", file=sys.stderr)
    return scores


# ---------------------------------------------------------------------------
# the checks and the checkpoint of a step


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


def check_finite_loss(logged: dict[str, float], step: int, run: RunDir) -> None:
    bad = {k: v for k, v in logged.items() if not math.isfinite(v)}
    if bad:
        raise TrainingDiverged(
            f"non-finite loss at step {step} ({', '.join(f'{k}={v}' for k, v in bad.items())}); stopped. "
            f"Last good checkpoint: {run.latest_checkpoint() or 'none'}; lower --lr or check the data"
        )


def save(model, optimizers, cfg: TrainConfig, step: int, run: RunDir, dist: Dist) -> Path | None:
    """Checkpoint ``step`` (rank 0 writes), unless the weights are no longer finite.

    The losses so far were finite, but a NaN/inf gradient of the last step may have
    poisoned the weights: those are never saved over a good checkpoint (the same
    answer on every rank, whose weights DDP keeps identical)."""
    tensors = [t.detach() for t in (*model.parameters(), *model.buffers()) if t.is_floating_point()]
    if tensors and not bool(torch.stack([t.isfinite().all() for t in tensors]).all()):
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
        state={
            "config": cfg.to_dict(),
            "data_order": "numpy default_rng([seed, step]).integers(N, size=batch)",
        },
    )
