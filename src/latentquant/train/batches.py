"""The batch stream of a run: a deterministic index per step, rendered ahead in a thread.

Data order: the batch of step ``t`` is ``rng(seed, t).integers(N, size=B)``,
split across ranks (rank ``r`` takes rows ``r, r + world, ...``), so it depends
on nothing but the seed and the step, and a resumed run sees exactly the
batches the uninterrupted run would. A background thread renders the next
batches (vectorized ``get_images``) while the current one trains.
"""

from __future__ import annotations

import queue
import threading

import numpy as np
import torch

from latentquant.train.distributed import Dist


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
