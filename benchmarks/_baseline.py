"""Another version of latentquant in the same process, for before/after benchmarks.

``--baseline SRC`` in a benchmark names a folder holding an older ``latentquant``
package (``git archive <commit> src | tar -x -C /tmp/base``, then
``--baseline /tmp/base/src``). Timed in the same rounds as the current code, both
see the same machine load.
"""

from __future__ import annotations

import importlib
import pkgutil
import sys


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
