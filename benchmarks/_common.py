"""What the benchmarks share: interleaved timing, and another version of latentquant beside ours.

:func:`interleaved_medians` times several runners in rounds, every runner once a
round and the order rotated each round, so that load from other processes (this
machine is shared) hits them alike; each figure is a median over the rounds.

``--baseline SRC`` in a benchmark names a folder holding an older ``latentquant``
package (``git archive <commit> src | tar -x -C /tmp/base``, then
``--baseline /tmp/base/src``). Timed in the same rounds as the current code, both
see the same machine load.
"""

from __future__ import annotations

import importlib
import pkgutil
import statistics
import sys
import time
from collections.abc import Callable, Hashable, Mapping


def interleaved_medians(
    runners: Mapping[Hashable, Callable[[], object]],
    rounds: int,
    sync: Callable[[], object] = lambda: None,
    warmup: int = 0,
) -> dict[Hashable, float]:
    """Median seconds of one call of each runner, over ``rounds`` rounds.

    Each runner is first called ``warmup`` times (compilation, caches). Each round
    calls every runner once, starting one further along than the round before, so
    no runner is always first; ``sync`` (``torch.cuda.synchronize`` on a GPU) runs
    before and after each timed call, so queued work is counted where it was made.
    """
    if rounds < 1:
        raise ValueError(f"rounds must be at least 1, got {rounds}")
    for run in runners.values():
        for _ in range(warmup):
            run()
    names = list(runners)
    times: dict[Hashable, list[float]] = {name: [] for name in names}
    for r in range(rounds):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            sync()
            start = time.perf_counter()
            runners[name]()
            sync()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in times.items()}


def import_beside(src: str, module: str):
    """The module ``module`` of the ``latentquant`` package under ``src``, imported beside
    ours: our modules are set aside while its whole package imports (its modules bind their
    imports, and its registries fill, then), and restored after. Exits naming ``src`` when
    it resolves to the package already imported."""
    ours = {k: m for k, m in sys.modules.items() if k == "latentquant" or k.startswith("latentquant.")}
    current = importlib.import_module(module)
    for k in ours:
        del sys.modules[k]
    sys.path.insert(0, src)
    try:
        found = importlib.import_module(module)
        package = importlib.import_module("latentquant")
        for info in pkgutil.walk_packages(package.__path__, "latentquant."):  # every module now
            if not info.name.endswith("__main__"):  # a registry filled lazily later would import ours
                importlib.import_module(info.name)
    finally:
        sys.path.remove(src)
        for k in [k for k in sys.modules if k == "latentquant" or k.startswith("latentquant.")]:
            del sys.modules[k]
        sys.modules.update(ours)
    if found is current:
        raise SystemExit(f"--baseline {src}: that is the package already imported")
    return found
