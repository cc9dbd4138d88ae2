"""Where a run's numbers go besides ``metrics.jsonl``: TensorBoard, Weights & Biases, or nowhere.

``--logger tensorboard wandb`` (the config's ``logger`` list) opens one sink
per name; the loop talks to all of them through :class:`Loggers`, which has
the four calls every sink implements::

    log_config(config)            the resolved config, once at the start
    log_scalars(values, step)     {"train/loss": 0.1, ...} or {"eval/infom": 0.6, ...}
    log_figures(paths, step)      the PNGs of an evaluation (figures/*.png)
    close()

``tensorboard`` writes ``OUT/tensorboard/`` and is silently skipped when the
tensorboard package is missing (it is the default, so a bare install must
still train). ``wandb`` is imported only when asked for; a missing package is
a one-line error naming the extra, ``pip install 'latentquant[wandb]'``.
wandb reads its own environment (``WANDB_PROJECT``, ``WANDB_ENTITY``,
``WANDB_MODE=offline``, ``WANDB_DIR``, ...); without ``WANDB_DIR`` its files go
to ``OUT/wandb/``. A resumed run continues the same wandb run (its id is kept
in ``OUT/wandb/run_id``).
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

from latentquant._optional import MissingExtra, require
from latentquant.validation import UserError

NAMES = ("tensorboard", "wandb", "none")


def check(names: Sequence[str]) -> None:
    """Validate a ``logger`` list without importing anything: known names, ``none`` alone, wandb installed."""
    if isinstance(names, str) or not isinstance(names, (list, tuple)) or not names:
        raise UserError(f"logger must be a list of names from {', '.join(NAMES)}, got {names!r}")
    unknown = [n for n in names if n not in NAMES]
    if unknown:
        raise UserError(f"unknown logger {unknown[0]!r}; valid choices: {', '.join(NAMES)}")
    if "none" in names and len(names) > 1:
        raise UserError(f"logger 'none' cannot be combined with others, got {' '.join(names)}")
    if "wandb" in names and importlib.util.find_spec("wandb") is None:
        raise MissingExtra("--logger wandb needs the wandb package: pip install 'latentquant[wandb]'")


class Logger(Protocol):
    def log_config(self, config: Mapping[str, Any]) -> None: ...

    def log_scalars(self, values: Mapping[str, float], step: int) -> None: ...

    def log_figures(self, paths: Sequence[Path], step: int) -> None: ...

    def close(self) -> None: ...


class TensorBoardLogger:
    """Scalars and figures as TensorBoard events in ``OUT/tensorboard/``."""

    def __init__(self, out: Path):
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(str(Path(out) / "tensorboard"))

    def log_config(self, config: Mapping[str, Any]) -> None:
        import yaml

        self.writer.add_text("config", "```\n" + yaml.safe_dump(dict(config), sort_keys=False) + "```")

    def log_scalars(self, values: Mapping[str, float], step: int) -> None:
        for key, value in values.items():
            self.writer.add_scalar(key, value, step)

    def log_figures(self, paths: Sequence[Path], step: int) -> None:
        import numpy as np
        from PIL import Image

        for path in paths:
            image = np.asarray(Image.open(path).convert("RGB"))
            self.writer.add_image(f"figures/{Path(path).stem}", image, step, dataformats="HWC")

    def close(self) -> None:
        self.writer.close()


class WandbLogger:
    """One Weights & Biases run per run directory: config, scalars and figures (as ``wandb.Image``)."""

    def __init__(self, out: Path, name: str, group: str):
        self.wandb = require("wandb", "wandb", "--logger wandb")
        id_file = Path(out) / "wandb" / "run_id"
        id_file.parent.mkdir(parents=True, exist_ok=True)
        run_id = id_file.read_text().strip() if id_file.is_file() else None  # None: wandb makes one
        try:
            self.run = self.wandb.init(
                project=os.environ.get("WANDB_PROJECT", "latentquant"),
                name=name,
                group=group,
                id=run_id,
                resume="allow",
                dir=os.environ.get("WANDB_DIR") or str(out),
            )
        except self.wandb.errors.Error as err:  # no API key, no network, a bad entity: one line
            first = (str(err).strip().splitlines() or [type(err).__name__])[0]
            raise UserError(f"--logger wandb: {first} (WANDB_MODE=offline logs without an account)") from None
        id_file.write_text(self.run.id + "\n")

    def log_config(self, config: Mapping[str, Any]) -> None:
        self.run.config.update(dict(config), allow_val_change=True)  # a resumed run may extend --steps

    def log_scalars(self, values: Mapping[str, float], step: int) -> None:
        self.run.log(dict(values), step=step)

    def log_figures(self, paths: Sequence[Path], step: int) -> None:
        self.run.log({f"figures/{Path(p).stem}": self.wandb.Image(str(p)) for p in paths}, step=step)

    def close(self) -> None:
        self.run.finish()


class Loggers:
    """All sinks of a run behind the one interface; what the loop holds."""

    def __init__(self, sinks: Sequence[Logger]):
        self.sinks = list(sinks)

    def log_config(self, config: Mapping[str, Any]) -> None:
        for sink in self.sinks:
            sink.log_config(config)

    def log_scalars(self, values: Mapping[str, float], step: int) -> None:
        for sink in self.sinks:
            sink.log_scalars(values, step)

    def log_figures(self, paths: Sequence[Path], step: int) -> None:
        for sink in self.sinks:
            sink.log_figures(paths, step)

    def close(self) -> None:
        for sink in self.sinks:
            sink.close()


def open_loggers(config) -> Loggers:
    """The sinks named by ``config.logger`` for the run in ``config.out``, given the resolved config."""
    check(config.logger)
    out = Path(config.out)
    sinks: list[Logger] = []
    if "tensorboard" in config.logger and importlib.util.find_spec("tensorboard") is not None:
        sinks.append(TensorBoardLogger(out))
    if "wandb" in config.logger:
        # a sweep's OUT/<dataset>/<model>/seed<k>: the seeds of one cell share a group
        sinks.append(WandbLogger(out, name=str(out), group=str(out.parent)))
    loggers = Loggers(sinks)
    loggers.log_config(config.to_dict())
    return loggers
