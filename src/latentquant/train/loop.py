"""The training loop, top to bottom: config, distributed setup, data, model,
optimizers, resume, the loop (log, checkpoint, evaluate), and the final
evaluation with figures and a report.

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
from contextlib import nullcontext
from dataclasses import dataclass
from datetime import timedelta
from functools import partial
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from latentquant._atomic import atomic_write_text
from latentquant.train.checkpoint import (
    latest_checkpoint, list_checkpoints, load_latest, restore, save_checkpoint,
)
from latentquant.train.config import TrainConfig, load_config, save_config
from latentquant.train.loggers import open_loggers


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


def resolve_device(device: str, local_rank: int | None = None) -> torch.device:
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ValueError(f"device {device!r} requested but CUDA is not available; valid here: cpu")
        if device == "cuda" and local_rank is not None:
            device = f"cuda:{local_rank}"
    if device == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise ValueError("device 'mps' requested but MPS is not available; valid here: cpu")
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


def batch_indices(seed: int, step: int, batch_size: int, num_items: int, rank: int = 0,
                  world: int = 1) -> np.ndarray:
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
                idx = batch_indices(self.seed, step, self.batch_size, len(self.dataset), self.dist.rank,
                                    self.dist.world)
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
        self._stop.set()
        self._thread.join(timeout=5)


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
        if keys:
            vec = torch.stack([self.sums[k] for k in keys]
                              + [self.sums[keys[0]].new_tensor(float(self.counts[k])) for k in keys])
        else:
            vec = torch.zeros(1, device=dist.device)
        flag = torch.tensor([1.0 if stop else 0.0], device=vec.device)
        if dist.enabled:
            import torch.distributed as tdist

            tdist.all_reduce(vec)
            tdist.all_reduce(flag, op=tdist.ReduceOp.MAX)
        values, n = vec.tolist(), len(keys)
        self.sums, self.counts = {}, {}
        return {k: values[i] / max(values[n + i], 1.0) for i, k in enumerate(keys)}, bool(flag.item())


def _truncate_jsonl(path: Path, last_step: int) -> None:
    """Drop lines logged after ``last_step`` (a crash after the last checkpoint), atomically."""
    if not path.exists():
        return
    kept = [line for line in path.read_text().splitlines()
            if line.strip() and json.loads(line).get("step", 0) <= last_step]
    atomic_write_text(path, "".join(line + "\n" for line in kept))


# ---------------------------------------------------------------------------
# the run


def run_status(out: str | os.PathLike) -> str:
    """'done' (eval.json at the configured step), 'resume' (a checkpoint exists) or 'new'."""
    out = Path(out)
    try:
        steps = load_config(out / "config.yaml").steps
        if json.loads((out / "eval.json").read_text())["step"] >= steps:
            return "done"
    except (FileNotFoundError, ValueError, KeyError):
        pass
    return "resume" if latest_checkpoint(out / "checkpoints") else "new"


def train(config: TrainConfig, resume: bool = False) -> dict[str, Any] | None:
    """Train (or with ``resume``, continue) the run described by ``config``.

    Returns the final evaluation scores (rank 0; None on other ranks). Raises
    ValueError for bad configs, :class:`TrainingDiverged` on a NaN/inf loss and
    :class:`TrainingInterrupted` after checkpointing on SIGINT/SIGTERM.
    """
    from latentquant.data import get_dataset
    from latentquant.models import DataInfo, build_model

    # -- config, processes, devices ------------------------------------------
    config.validate()
    dist = setup_distributed(config.device)
    try:
        return _train(config, resume, dist, get_dataset, DataInfo, build_model)
    finally:
        if dist.enabled:
            import torch.distributed as tdist

            if tdist.is_initialized():
                tdist.destroy_process_group()


def _train(config, resume, dist, get_dataset, DataInfo, build_model):
    if config.threads:
        torch.set_num_threads(config.threads)
    elif dist.enabled and dist.device.type == "cpu":  # share the cores among the local ranks
        local_world = int(os.environ.get("LOCAL_WORLD_SIZE", dist.world))
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // local_world))

    # -- data ----------------------------------------------------------------
    dataset = get_dataset(config.dataset, root=config.data_root, path=config.data_path)
    cfg = config.resolve(dataset.num_factors)
    if cfg.batch_size % dist.world:
        raise ValueError(f"batch_size {cfg.batch_size} is not divisible by the {dist.world} processes")
    out = Path(cfg.out)
    ckpt_dir = out / "checkpoints"
    info = DataInfo(cfg.dataset, dataset.num_channels, dataset.num_factors, len(dataset))

    # -- model and optimizers --------------------------------------------------
    torch.manual_seed(cfg.seed)
    model = build_model(cfg.model, cfg.arch, info, **cfg.model_kwargs()).to(dist.device)
    optimizers = model.configure_optimizers(lr=cfg.lr, weight_decay=cfg.weight_decay, clip=cfg.clip)

    # -- resume ------------------------------------------------------------------
    start = 0
    if resume:
        found = load_latest(ckpt_dir)
        if found is None:
            raise FileNotFoundError(f"no checkpoint to resume from in {ckpt_dir}")
        path, tensors, doc = found
        start = restore(tensors, doc, model, optimizers)
        del tensors
        if dist.master:
            print(f"resuming {out} from {path.name} (step {start:,} of {cfg.steps:,})", file=sys.stderr)
    elif list_checkpoints(ckpt_dir):
        raise ValueError(f"{out} already holds checkpoints; continue it with --resume {out} or choose another --out")
    if dist.rank > 0:  # independent noise per rank (rank 0 keeps the checkpointed stream)
        torch.manual_seed(cfg.seed + 7919 * dist.rank + start)

    if dist.master:
        out.mkdir(parents=True, exist_ok=True)
        save_config(cfg, out / "config.yaml")
        _truncate_jsonl(out / "metrics.jsonl", start)
        _truncate_jsonl(out / "evals.jsonl", start)

    # -- compile and DDP -------------------------------------------------------
    net = torch.compile(model) if cfg.compile else model
    if dist.enabled:
        from torch.nn.parallel import DistributedDataParallel

        net = DistributedDataParallel(net, device_ids=[dist.device.index] if dist.device.type == "cuda" else None,
                                      find_unused_parameters=model.ddp_find_unused_parameters)
    autocast = make_autocast(cfg.precision, dist.device)

    def checkpoint(step: int) -> Path | None:
        # the losses so far were finite, but a NaN/inf gradient of the last step may have
        # poisoned the weights: never save those over a good checkpoint (the same answer on
        # every rank, whose weights DDP keeps identical)
        if not _all_finite(model):
            raise TrainingDiverged(
                f"non-finite weights after step {step} (NaN/inf gradients); stopped. Last good checkpoint: "
                f"{latest_checkpoint(ckpt_dir) or 'none'}; lower --lr or check the data")
        if not dist.master:
            return None
        return save_checkpoint(ckpt_dir, step, model, optimizers, keep=cfg.keep_checkpoints, state={
            "config": cfg.to_dict(), "data_order": "numpy default_rng([seed, step]).integers(N, size=batch)",
        })

    def evaluate_and_report(step: int) -> dict[str, Any]:
        scores = evaluate_run(model, dataset, cfg, step, dist.device, train_seconds=time.time() - t_start)
        if loggers is not None:  # [issue 14 hook] the scores (counts, seed and names are not plotted) and figures
            loggers.log_scalars({f"eval/{k}": v for k, v in scores.items() if isinstance(v, float)}, step)
            loggers.log_figures(sorted((out / "figures").glob("*.png")), step)
        return scores

    # -- the loop --------------------------------------------------------------
    loggers = open_loggers(cfg) if dist.master else None  # [issue 14 hook] tensorboard / wandb / none
    metrics_file = open(out / "metrics.jsonl", "a") if dist.master else None
    meter, t_start = LossMeter(), time.time()
    window = (start, t_start)  # (step, time) where the current logging window began, for img/s
    stream = Prefetcher(dataset, cfg.seed, cfg.batch_size, start, cfg.steps, dist, cfg.prefetch)
    progress = _progress(cfg.steps, start, dist.master)
    step = start
    try:
        with StopFlag() as stop:
            while step < cfg.steps:
                x = next(stream)
                model.train()
                parts = model.training_step(net, x, optimizers, step, autocast)
                meter.add(parts)
                step += 1
                progress.update(1)

                want_ckpt = step % cfg.checkpoint_every == 0 or step == cfg.steps
                if step % cfg.log_every == 0 or want_ckpt or (stop.requested and not dist.enabled):
                    logged, stop_all = meter.read(dist, stop.requested)
                    now = time.time()
                    record = {"step": step, **logged, "lr": optimizers[next(iter(optimizers))].param_groups[0]["lr"],
                              "seconds": round(now - t_start, 3)}
                    if not all(math.isfinite(v) for v in logged.values()):
                        bad = {k: v for k, v in logged.items() if not math.isfinite(v)}
                        last = latest_checkpoint(ckpt_dir)
                        raise TrainingDiverged(
                            f"non-finite loss at step {step} ({', '.join(f'{k}={v}' for k, v in bad.items())}); "
                            f"stopped. Last good checkpoint: {last or 'none'}; lower --lr or check the data")
                    if dist.master:
                        metrics_file.write(json.dumps(record) + "\n")
                        metrics_file.flush()
                        img_s = cfg.batch_size * (step - window[0]) / max(now - window[1], 1e-9)
                        progress.set_postfix(loss=f"{logged.get('loss', float('nan')):.4f}",
                                             img_s=f"{img_s:.0f}", refresh=False)
                        if loggers is not None:  # [issue 14 hook]
                            loggers.log_scalars({f"train/{k}": v for k, v in logged.items()}, step)
                    window = (step, now)
                    if stop_all and step < cfg.steps:
                        path = checkpoint(step)
                        raise TrainingInterrupted(f"interrupted at step {step}; checkpoint {path}; "
                                                  f"continue with: latentquant train --resume {out}")
                want_eval = cfg.eval_every and step % cfg.eval_every == 0 and step < cfg.steps
                if want_ckpt:
                    checkpoint(step)
                if want_eval and dist.master:
                    evaluate_and_report(step)
                if want_ckpt or want_eval:
                    window = (step, time.time())  # img/s counts training steps, not saving or evaluating
    except BaseException:
        if loggers is not None:  # [issue 14 hook] a stopped run still flushes what it logged
            loggers.close()
        raise
    finally:
        stream.close()
        progress.close()
        if metrics_file is not None:
            metrics_file.close()

    # -- final evaluation ---------------------------------------------------------
    if not dist.master:
        return None
    try:
        scores = evaluate_and_report(step)
    finally:
        loggers.close()  # [issue 14 hook]
    print(f"run directory: {out}  (report: {out / 'report.md'})", file=sys.stderr)
    return scores


def _all_finite(model: torch.nn.Module) -> bool:
    """Whether every floating-point parameter and buffer is finite (one host sync)."""
    tensors = [t.detach() for t in (*model.parameters(), *model.buffers()) if t.is_floating_point()]
    return not tensors or bool(torch.stack([t.isfinite().all() for t in tensors]).all())


def _progress(total: int, initial: int, enabled: bool):
    from tqdm import tqdm

    interactive = sys.stderr.isatty()  # in a log file (a sweep's train.log), a line every 30 s is plenty
    return tqdm(total=total, initial=initial, disable=not enabled, unit="step", dynamic_ncols=True,
                smoothing=0.05, file=sys.stderr, mininterval=0.5 if interactive else 30.0)


def evaluate_run(model, dataset, cfg: TrainConfig, step: int, device: torch.device,
                 train_seconds: float | None = None) -> dict[str, Any]:
    """Evaluate, write ``eval.json`` (and append to ``evals.jsonl``), the figures and ``report.md``.

    Always in float32, whatever the training precision: under bf16 autocast the
    continuous models' latents would be rounded to 8 bits before scoring.

    Runs on its own random stream (torch seeded from ``cfg.seed``, the training
    stream saved and restored around it): an evaluation in the middle of a run
    changes nothing in the steps after it, so a resumed run still matches the
    uninterrupted one, and random figures (a GAN's samples) come out the same
    from ``latentquant evaluate``.
    """
    from latentquant.train.evaluate import evaluate, write_eval
    from latentquant.train.figures import write_figures
    from latentquant.train.report import write_report

    out = Path(cfg.out)
    cuda = [device.index if device.index is not None else torch.cuda.current_device()] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=cuda):
        torch.manual_seed(cfg.seed)
        result = evaluate(model, dataset, num_samples=cfg.eval_samples, seed=cfg.seed, step=step, device=device,
                          dci_model=cfg.dci_model)
        scores = {**result.scores, "model": cfg.model, "dataset": cfg.dataset, "arch": cfg.arch, "seed": cfg.seed}
        write_eval(out / "eval.json", scores)
        with open(out / "evals.jsonl", "a") as f:
            f.write(json.dumps(scores) + "\n")
        figures = write_figures(model, result, dataset.factor_names, out / "figures", device, nullcontext)
    write_report(out, cfg.to_dict(), scores, figures, train_seconds)
    return scores
