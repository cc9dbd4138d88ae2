"""One config object for a training run, resolved against the published defaults.

Precedence, lowest first: the dataclass defaults below; the model's published
values for the dataset (``LatentModel.defaults`` / ``default_options``, with
their sources in the model docstrings and ``docs/training.md``); a YAML file
(``--config FILE.yaml``); command-line flags. The resolved config (no ``None``
left) is written to ``OUT/config.yaml`` and is all that ``--resume`` and
``latentquant evaluate`` need to rebuild the run.

Authors' values (kylehkhsu/latent_quantization, ``configs/train_ae.yaml``):
lr 1e-3, batch 128, 2e5 steps, gradient clip 1 (element-wise), evaluation and
checkpoint every 5e3 steps on 10,000 held-out images.
"""

from __future__ import annotations

import dataclasses
import inspect
import os
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

PRECISIONS = ("auto", "fp32", "bf16")


@dataclass
class TrainConfig:
    """Everything that defines a run. ``None`` means "the published default for this model and dataset"."""

    dataset: str = "sprites"
    model: str = "qlae"
    arch: str = "paper"
    steps: int = 200_000
    batch_size: int | None = None  # global batch (split across DDP ranks); model default 128 (64 for GANs)
    lr: float | None = None
    weight_decay: float | None = None
    # decay time constant 1 / (lr x weight_decay) as a fraction of the run's steps; when set,
    # weight_decay = 1 / (fraction x lr x steps) (Wang & Aitchison 2024, arXiv 2405.13698)
    weight_decay_timescale: float | None = None
    clip: float | None = 1.0  # element-wise gradient clip of the decayed weights; None or 0 disables
    num_latents: int | None = None  # default 2 x number of factors
    values_per_latent: int | None = None  # quantized-latent models only; default 10
    options: dict[str, Any] = field(default_factory=dict)  # model-specific, see --option
    eval_every: int = 5000  # 0: evaluate only at the end
    eval_samples: int = 10_000
    dci_model: str = "fast"  # DCI classifier: fast (20 boosting stages) or gbt (disentanglement_lib's)
    log_every: int = 50
    checkpoint_every: int | None = None  # default: eval_every (or steps when that is 0)
    keep_checkpoints: int = 2
    seed: int = 0
    out: str | None = None  # default runs/<dataset>-<model>-<arch>-seed<seed>
    device: str = "auto"  # auto, cpu, cuda, cuda:N, mps
    compile: bool = False
    precision: str = "auto"  # auto: bf16 autocast on CUDA when supported, else fp32
    data_root: str | None = None
    data_path: str | None = None
    prefetch: int = 4  # batches a background thread loads ahead
    threads: int | None = None  # torch CPU threads per process; default torch's (per-rank share under DDP)
    # [issue 14 hook] where scalars and figures go besides metrics.jsonl: tensorboard, wandb, none (loggers.py)
    logger: list[str] = field(default_factory=lambda: ["tensorboard"])

    # -- construction -------------------------------------------------------

    @classmethod
    def field_names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in fields(cls))

    @classmethod
    def from_dict(cls, values: dict[str, Any], source: str = "config") -> "TrainConfig":
        """A config from a mapping; unknown keys raise ValueError naming the valid ones."""
        if not isinstance(values, dict):
            raise ValueError(f"{source}: expected a mapping of config keys, got {type(values).__name__}")
        unknown = sorted(set(values) - set(cls.field_names()))
        if unknown:
            raise ValueError(f"{source}: unknown key(s) {', '.join(unknown)}; valid keys: "
                             f"{', '.join(cls.field_names())}")
        return cls(**values)

    def replace(self, **changes: Any) -> "TrainConfig":
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    # -- validation and resolution ------------------------------------------

    def validate(self) -> "TrainConfig":
        """Check names and ranges; ValueError naming the valid choices or range."""
        from latentquant.data import list_datasets
        from latentquant.models import ARCHS, available_models

        _choice("dataset", self.dataset, list_datasets())
        _choice("model", self.model, available_models())
        _choice("arch", self.arch, ARCHS)
        _choice("precision", self.precision, PRECISIONS)
        from latentquant.metrics.dci import MODELS as DCI_MODELS

        _choice("dci_model", self.dci_model, DCI_MODELS)
        _device_ok(self.device)
        _int("steps", self.steps, 1)
        _int("eval_every", self.eval_every, 0)
        _int("eval_samples", self.eval_samples, 10)
        _int("log_every", self.log_every, 1)
        _int("keep_checkpoints", self.keep_checkpoints, 1)
        _int("seed", self.seed, 0)
        _int("prefetch", self.prefetch, 1)
        for name, low in (("batch_size", 1), ("num_latents", 1), ("values_per_latent", 2),
                          ("checkpoint_every", 1), ("threads", 1)):
            if getattr(self, name) is not None:
                _int(name, getattr(self, name), low)
        for name in ("lr", "weight_decay", "clip"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))
                                      or not value >= 0 or value != value or value == float("inf")):
                raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
        if self.lr is not None and self.lr == 0:
            raise ValueError("lr must be > 0, got 0")
        tau = self.weight_decay_timescale
        if tau is not None and (isinstance(tau, bool) or not isinstance(tau, (int, float))
                                or not 0 < tau < float("inf")):
            raise ValueError(f"weight_decay_timescale must be a finite number > 0 (the decay time constant "
                             f"as a fraction of the run), got {tau!r}")
        if not isinstance(self.options, dict):
            raise ValueError(f"options must be a mapping of model options, got {self.options!r}")
        if not isinstance(self.compile, bool):
            raise ValueError(f"compile must be true or false, got {self.compile!r}")
        from latentquant.train.loggers import check as check_loggers  # [issue 14 hook]

        check_loggers(self.logger)
        return self

    def resolve(self, num_factors: int) -> "TrainConfig":
        """A copy with every ``None`` replaced by the published default for this model and dataset.

        ``num_factors`` is the dataset's number of ground-truth factors (latents
        default to twice as many). Model options are checked against the
        model's ``default_options`` (unknown keys and wrong types raise ValueError).
        """
        from latentquant.models import get_model_class

        self.validate()
        cls = get_model_class(self.model)
        published = cls.defaults(self.dataset)
        c = self.replace(options=dict(self.options))
        for name in ("lr", "batch_size"):
            if getattr(c, name) is None:
                c = c.replace(**{name: published[name]})
        c = c.replace(weight_decay=_resolve_weight_decay(c, published["weight_decay"]))
        if c.num_latents is None:
            c = c.replace(num_latents=2 * int(num_factors))
        takes_values = "values_per_latent" in inspect.signature(cls.__init__).parameters
        if takes_values and c.values_per_latent is None:
            c = c.replace(values_per_latent=published.get("values_per_latent", 10))
        elif not takes_values and c.values_per_latent is not None:
            raise ValueError(f"values_per_latent applies to quantized-latent models only, not {c.model!r}")
        c = c.replace(options=resolve_options(cls, c.dataset, c.options))
        if c.checkpoint_every is None:
            c = c.replace(checkpoint_every=c.eval_every or c.steps)
        if c.out is None:
            c = c.replace(out=str(Path("runs") / f"{c.dataset}-{c.model}-{c.arch}-seed{c.seed}"))
        if c.clip == 0:
            c = c.replace(clip=None)
        return c.validate()

    def model_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of the model class (``num_latents``, ``values_per_latent`` when used, options)."""
        kwargs = {"num_latents": self.num_latents, **self.options}
        if self.values_per_latent is not None:
            kwargs["values_per_latent"] = self.values_per_latent
        return kwargs


def timescale_weight_decay(fraction: float, lr: float, steps: int) -> float:
    """The weight decay whose AdamW time constant ``1 / (lr x wd)`` is ``fraction`` of ``steps``."""
    return 1.0 / (fraction * lr * steps)


def _resolve_weight_decay(c: TrainConfig, published: float) -> float:
    """``c.weight_decay``, or the one ``c.weight_decay_timescale`` implies, or the published value.

    A config holding both (a resolved ``config.yaml``) must agree to 1e-9; else
    one of the two was changed, and which one the user meant is unknown."""
    if c.weight_decay_timescale is None:
        return published if c.weight_decay is None else c.weight_decay
    implied = timescale_weight_decay(c.weight_decay_timescale, c.lr, c.steps)
    if c.weight_decay is not None and abs(c.weight_decay - implied) > 1e-9 * implied:
        raise ValueError(
            f"weight_decay {c.weight_decay:g} and weight_decay_timescale {c.weight_decay_timescale:g} disagree "
            f"(the timescale gives {implied:g} for lr {c.lr:g} and {c.steps} steps); give one of them: "
            f"--weight-decay W keeps a fixed decay, --weight-decay-timescale F sets it for the run's length")
    return implied


def resolve_options(cls: type, dataset: str, given: dict[str, Any]) -> dict[str, Any]:
    """The model's published options for ``dataset`` updated with ``given`` (coerced to the default's type)."""
    defaults = cls.default_options(dataset)
    unknown = sorted(set(given) - set(defaults))
    if unknown:
        valid = ", ".join(defaults) or "none"
        raise ValueError(f"unknown option(s) {', '.join(unknown)} for model {cls.name!r}; valid options: {valid}")
    out = dict(defaults)
    for key, value in given.items():
        out[key] = coerce_option(key, value, defaults[key])
    return out


def coerce_option(key: str, value: Any, default: Any) -> Any:
    """Convert ``value`` (often a string from ``--option key=value``) to the type of ``default``."""
    try:
        if isinstance(default, bool):
            if isinstance(value, str):
                if value.lower() in ("1", "true", "yes", "on"):
                    return True
                if value.lower() in ("0", "false", "no", "off"):
                    return False
                raise ValueError
            return bool(value)
        if isinstance(default, int):
            if isinstance(value, float) and not value.is_integer():
                raise ValueError
            return int(value)
        if isinstance(default, float):
            out = float(value)
            if out != out:
                raise ValueError
            return out
    except (TypeError, ValueError):
        raise ValueError(f"option {key}={value!r}: expected a {type(default).__name__} like {default!r}") from None
    return value


def parse_option(text: str) -> tuple[str, str]:
    """``'beta=4'`` -> ``('beta', '4')``."""
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise ValueError(f"--option expects KEY=VALUE, got {text!r}")
    return key.strip().replace("-", "_"), value.strip()


# -- YAML -------------------------------------------------------------------


def load_yaml(path: str | os.PathLike) -> dict[str, Any]:
    """The mapping in a YAML config file (FileNotFoundError / ValueError with the file's name)."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"config file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise ValueError(f"{path}: not valid YAML ({str(err).splitlines()[0]})") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a mapping of config keys, got {type(data).__name__}")
    return data


def load_config(path: str | os.PathLike) -> TrainConfig:
    """A :class:`TrainConfig` from a YAML file (a run's ``config.yaml`` or a user's file)."""
    return TrainConfig.from_dict(load_yaml(path), source=str(path))


def save_config(config: TrainConfig, path: str | os.PathLike) -> None:
    """Write ``config`` as YAML atomically (temp file + rename)."""
    import yaml

    from latentquant._atomic import atomic_write_text

    text = "# latentquant train: resolved config (load with --config, or --resume the run)\n"
    text += yaml.safe_dump(config.to_dict(), sort_keys=False)
    atomic_write_text(Path(path), text)


# -- helpers ----------------------------------------------------------------


def _choice(name: str, value: Any, choices) -> None:
    choices = tuple(choices)
    if value not in choices:
        raise ValueError(f"unknown {name} {value!r}; valid choices: {', '.join(map(str, choices))}")


def _int(name: str, value: Any, low: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")


def _device_ok(device: str) -> None:
    import re

    if not isinstance(device, str) or not re.fullmatch(r"auto|cpu|mps|cuda(:\d+)?", device):
        raise ValueError(f"unknown device {device!r}; valid choices: auto, cpu, cuda, cuda:N, mps")
