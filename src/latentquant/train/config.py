"""One config object for a training run, resolved against the published defaults.

Precedence, lowest first: the dataclass defaults below; the model's published
values for the dataset (the table of ``latentquant.models.defaults``, with
their sources, read through ``LatentModel.defaults`` / ``default_options``); a YAML file
(``--config FILE.yaml``); command-line flags. The resolved config (no ``None``
left) is written to ``OUT/config.yaml`` and is all that ``--resume`` and
``latentquant evaluate`` need to rebuild the run.

``resolve`` is the one way from a config to a run: it validates the config
once, opens the data, fills the defaults and builds the model, and returns them
as a ``Resolved``; nothing downstream re-validates or rebuilds.

Authors' values (kylehkhsu/latent_quantization, ``configs/train_ae.yaml``):
lr 1e-3, batch 128, 2e5 steps, gradient clip 1 (element-wise), evaluation and
checkpoint every 5e3 steps on 10,000 images drawn from the training pool.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import torch

from latentquant._atomic import atomic_write_text
from latentquant._optional import MissingExtra
from latentquant.data import FactorDataset, get_dataset, list_datasets
from latentquant.metrics.dci import MODELS as DCI_MODELS
from latentquant.models import (
    ARCHS,
    DataInfo,
    LatentModel,
    available_models,
    build_model,
    default_num_latents,
    get_model_class,
)
from latentquant.train.loggers import check as check_loggers
from latentquant.validation import UserError, check_choice, check_flag, check_instance, check_int, check_number

PRECISIONS = ("auto", "fp32", "bf16")
# Upper bounds of the sizes a user can pass, checked before anything is allocated: far above
# any published setting, low enough that no value makes the process allocate without bound.
MAX_EVAL_SAMPLES = 1_000_000  # the metrics hold (N, factors + latents) arrays and fit classifiers on them
MAX_LATENTS = 1024  # the paper uses 2 x factors (at most 20)
MAX_VALUES = 1024  # per latent; the paper uses 10
MAX_BATCH = 8192  # images per step (the paper: 128; a batch of 64 x 64 x 3 floats is 48 KiB an image)
MAX_PREFETCH = 16  # batches held ahead by the loader thread
MAX_THREADS = 1024
MAX_STEPS = 10**9
MAX_INT_OPTION = 4096  # an integer model option (vqvae's num_embeddings: 512, n_critic: 5)
STEP_OPTIONS = ("anneal_steps", "lr_period")  # integer options that count steps, bounded as --steps is
MAX_SEED = 2**31 - 1  # the seed of rank r is seed + 7919 r + step: all stay within torch's 64 bits
PATH_FIELDS = ("out", "data_root", "data_path")
# fields that change how a run is executed, not what it computes: a resumed run, a sweep
# and a table may differ in them
RUNTIME_FIELDS = (
    "out",
    "device",
    "threads",
    "prefetch",
    "data_root",
    "data_path",
    "log_every",
    "keep_checkpoints",
    "checkpoint_every",
    "checkpoint_seconds",
    "eval_every",
    "compile",
    "logger",
)


def _field(default: Any, help: str, **kwargs: Any) -> Any:
    """A config field with its ``--flag`` help text (flags are generated from the fields)."""
    return field(default=default, metadata={"help": help, **kwargs})


@dataclass(frozen=True)
class TrainConfig:
    """Everything that defines a run. ``None`` means "the published default for this model and dataset".

    A frozen dataclass: one field per ``latentquant train`` flag (``--batch-size``
    is ``batch_size``), with the flag's default; ``options`` holds the model's
    own settings (``--option KEY=VALUE``). A run directory's ``config.yaml`` is
    this config with every ``None`` filled in (see ``resolve``).
    ``docs/training.md`` lists the flags and the published defaults; the
    fields not listed below (evaluation, logging, checkpoints, device,
    precision) are the flags of ``latentquant train --help``.

    Parameters
    ----------
    dataset, model, arch : str
        What to train: a dataset of ``latentquant.data.list_datasets()``, a
        model of ``latentquant.models.available_models()`` and a backbone of
        ``latentquant.models.ARCHS``.
    steps : int
        Training steps (the authors' 200,000 by default).
    batch_size, lr, weight_decay, num_latents, values_per_latent : optional
        None: the model's published value for the dataset.
    weight_decay_timescale : float, optional
        Set the weight decay so that its time constant ``1 / (lr x wd)`` is
        this fraction of the run, instead of ``weight_decay``.
    out : str, optional
        The run directory; default ``runs/<dataset>-<model>-<arch>-seed<seed>``.
    options : dict, optional
        The model's own settings, e.g. ``{"global_codebook": True}`` for QLAE.

    Raises
    ------
    latentquant.validation.UserError
        A ``ValueError``, from ``validate()`` or ``resolve`` (not from the
        constructor), for an unknown name, a value out of range or a
        wrong type.

    Examples
    --------
    >>> from latentquant.train import TrainConfig
    >>> config = TrainConfig(dataset="shapes", model="qlae", arch="small", steps=3000)
    >>> config.batch_size is None  # the published default, filled in by resolve
    True
    >>> config.replace(steps=5000).steps
    5000
    >>> TrainConfig(steps=0).validate()
    Traceback (most recent call last):
        ...
    latentquant.validation.UserError: steps must be an integer in 1..1,000,000,000, got 0
    """

    dataset: str = _field("sprites", "dataset name (latentquant data info lists them); default sprites")
    model: str = _field(
        "qlae",
        "qlae; baselines ae, bioae, vae, tcvae, vqvae; GANs infowgan, qlinfowgan "
        "(+ any registered model); default qlae",
    )
    arch: str = _field(
        "paper", "backbone: paper (the authors'), compact (their small design) or small (Burgess et al.); default paper"
    )
    steps: int = _field(200_000, "training steps (default 200000, as the authors)")
    batch_size: int | None = _field(None, "global batch size, split across processes (default: model's, 128)")
    lr: float | None = _field(None, "learning rate (default: model's, 1e-3)")
    weight_decay: float | None = _field(
        None, "decoupled weight decay of the non-bias weights (default: model's, e.g. qlae 0.1, ae 1e-3)"
    )
    # decay time constant 1 / (lr x weight_decay) as a fraction of the run's steps; when set,
    # weight_decay = 1 / (fraction x lr x steps) (Wang & Aitchison 2024, arXiv 2405.13698)
    weight_decay_timescale: float | None = _field(
        None,
        "set the weight decay so that its time constant 1/(lr x wd) is this fraction of the run: "
        "wd = 1/(F x lr x steps); instead of --weight-decay",
    )
    clip: float | None = _field(1.0, "element-wise gradient clip of the decayed weights, 0 = off (default 1)")
    num_latents: int | None = _field(None, "latents (default 2 x number of factors)")
    values_per_latent: int | None = _field(None, "values per latent of quantized models (default 10)")
    options: dict[str, Any] = field(default_factory=dict)  # model-specific, see --option
    eval_every: int = _field(5000, "evaluate at step 0 and every N steps, 0 = only at the end (default 5000)")
    eval_samples: int = _field(
        10_000, "images per evaluation, drawn from the training pool (in-sample, as the authors; default 10000)"
    )
    dci_model: str = _field("fast", "DCI classifier: fast (default) or gbt (disentanglement_lib's)")
    log_every: int = _field(50, "log losses every N steps (default 50)")
    checkpoint_every: int | None = _field(None, "checkpoint every N steps (default: --eval-every)")
    keep_checkpoints: int = _field(2, "checkpoints kept (default 2)")
    checkpoint_seconds: float | None = _field(
        None,
        "also checkpoint once this many seconds have passed since the last checkpoint: a run killed "
        "outright loses at most that much (under torchrun: at the first log step after it); only the "
        "newest such checkpoint is kept (default off)",
    )
    seed: int = _field(0, "random seed: weights, data order, evaluation set (default 0)")
    out: str | None = _field(None, "run directory (default runs/<dataset>-<model>-<arch>-seed<seed>)")
    device: str = _field("auto", "auto, cpu, cuda, cuda:N or mps (default auto)")
    compile: bool = _field(False, "torch.compile the model (for GPUs)")
    precision: str = _field("auto", "auto (bf16 autocast on CUDA), fp32 or bf16 (default auto)")
    data_root: str | None = _field(None, "folder of the public dataset files")
    data_path: str | None = _field(None, "explicit file or folder of a public dataset")
    prefetch: int = _field(4, "batches loaded ahead by the background thread (default 4)")
    threads: int | None = _field(None, "torch CPU threads (default: torch's; a per-rank share under DDP)")
    # where scalars and figures go besides metrics.jsonl (train/loggers.py)
    logger: list[str] = field(
        default_factory=lambda: ["tensorboard"],
        metadata={"help": "where scalars and figures go: tensorboard, wandb and/or none (default tensorboard)"},
    )

    # -- construction -------------------------------------------------------

    @classmethod
    def field_names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in fields(cls))

    @classmethod
    def from_dict(cls, values: dict[str, Any], source: str = "config") -> TrainConfig:
        """A config from a mapping (a YAML file): unknown keys and wrong types are a UserError.

        Numbers written as strings are read as numbers (PyYAML reads ``1e-3`` as a string)."""
        if not isinstance(values, dict):
            raise UserError(f"{source}: expected a mapping of config keys, got {type(values).__name__}")
        unknown = sorted(set(values) - set(cls.field_names()), key=str)
        if unknown:
            raise UserError(
                f"{source}: unknown key(s) {', '.join(map(str, unknown))}; valid keys: {', '.join(cls.field_names())}"
            )
        values = {k: _number(k, v, _FIELD_TYPES[k], source) for k, v in values.items()}
        if "options" in values and not isinstance(values["options"], dict):
            raise UserError(
                f"{source}: options must be a mapping of model options (KEY: VALUE), got {values['options']!r}"
            )
        return cls(**values)

    def replace(self, **changes: Any) -> TrainConfig:
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def differences(self, other: TrainConfig, ignore: tuple[str, ...] = RUNTIME_FIELDS) -> dict[str, tuple]:
        """``{key: (self's value, other's value)}`` for the fields that differ, ``ignore`` aside.
        An option one side lacks counts as its published default (a config written before
        the option existed, e.g. qlae's global_codebook)."""
        a, b = self.to_dict(), other.to_dict()
        for side, there in ((a, b), (b, a)):
            missing = set(there["options"]) - set(side["options"])
            if missing and side["model"] == there["model"] and side["model"] in available_models():
                published = get_model_class(side["model"]).default_options(side["dataset"])
                side["options"] = {**side["options"], **{k: published[k] for k in missing if k in published}}
        return {k: (a[k], b[k]) for k in a if k not in ignore and a[k] != b[k]}

    def override(self, **changes: Any) -> TrainConfig:
        """This config with ``changes`` a user gave over it (flags over a file or a resumed run).

        The weight-decay rule, here and in ``_resolve_weight_decay`` only: the decay is
        set either by ``weight_decay`` or by ``weight_decay_timescale``; giving one replaces
        the other's value in the base config, giving both at once is an error."""
        if "weight_decay" in changes and "weight_decay_timescale" in changes:
            raise UserError("use either --weight-decay or --weight-decay-timescale, not both")
        if "weight_decay" in changes:
            changes = {"weight_decay_timescale": None, **changes}
        elif "weight_decay_timescale" in changes:
            changes = {"weight_decay": None, **changes}
        return self.replace(**changes)

    # -- validation -----------------------------------------------------------

    def validate(self) -> TrainConfig:
        """Check types, names and ranges (every size within its ``MAX_*`` bound), before any work;
        UserError naming the field and the valid choices or range. Fields left ``None`` are
        checked once ``resolve`` has filled them from the published defaults."""
        try:
            self._validate()
        except MissingExtra:  # --logger wandb without the package: its own one line
            raise
        except (ValueError, TypeError) as err:  # the check primitives' errors, about a config field
            raise UserError(str(err)) from None
        return self

    def _validate(self) -> None:
        for name in PATH_FIELDS:
            value = getattr(self, name)
            if value is not None:
                check_instance(name, value, (str, os.PathLike), "a path (text)")
                if "\x00" in str(value):
                    raise ValueError(f"{name} must be a path without NUL characters, got {str(value)!r}")
        if self.out is not None and not str(self.out).strip():
            raise ValueError("out is empty; name a run directory, e.g. --out runs/q")
        check_choice("dataset", self.dataset, list_datasets())
        check_choice("model", self.model, available_models())
        check_choice("arch", self.arch, ARCHS)
        check_choice("precision", self.precision, PRECISIONS)
        check_choice("dci_model", self.dci_model, DCI_MODELS)
        check_device("device", self.device)
        check_int("steps", self.steps, 1, MAX_STEPS)
        check_int("eval_every", self.eval_every, 0)
        check_int("eval_samples", self.eval_samples, 10, MAX_EVAL_SAMPLES)
        check_int("log_every", self.log_every, 1)
        check_int("keep_checkpoints", self.keep_checkpoints, 1)
        check_int("prefetch", self.prefetch, 1, MAX_PREFETCH)
        check_int("seed", self.seed, 0, MAX_SEED)
        # MIG compares each factor's two most informative latents: one latent cannot be scored
        for name, low, high in (
            ("batch_size", 1, MAX_BATCH),
            ("num_latents", 2, MAX_LATENTS),
            ("values_per_latent", 2, MAX_VALUES),
            ("checkpoint_every", 1, None),
            ("threads", 1, MAX_THREADS),
        ):
            if getattr(self, name) is not None:
                check_int(name, getattr(self, name), low, high)
        for name in ("weight_decay", "clip"):
            if getattr(self, name) is not None:
                check_number(name, getattr(self, name))
        if self.checkpoint_seconds is not None:
            check_number("checkpoint_seconds", self.checkpoint_seconds, low_open=True)
        if self.lr is not None:
            check_number("lr", self.lr, low_open=True)
        if self.weight_decay_timescale is not None:
            check_number("weight_decay_timescale", self.weight_decay_timescale, low_open=True)
        check_instance("options", self.options, dict, "a mapping of model options (KEY: VALUE)")
        check_flag("compile", self.compile)
        check_loggers(self.logger)

    def model_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of the model class (``num_latents``, ``values_per_latent`` when used, options)."""
        kwargs = {"num_latents": self.num_latents, **self.options}
        if self.values_per_latent is not None:
            kwargs["values_per_latent"] = self.values_per_latent
        return kwargs


_FIELD_TYPES = {f.name: f.type for f in fields(TrainConfig)}


def _number(key: str, value: Any, annotation: str, source: str) -> Any:
    """A YAML string such as ``'1e-3'`` in a numeric field, as a number."""
    if not isinstance(value, str) or not any(t in annotation for t in ("int", "float")):
        return value
    try:
        number = float(value)
    except ValueError:
        raise UserError(f"{source}: {key} must be a number, got {value!r}") from None
    if annotation.startswith("int") and number.is_integer():
        return int(number)
    return number


def check_device(name: str, value: Any) -> str:
    """``value`` if it names a device: auto, cpu, mps, cuda or cuda:N; ValueError otherwise."""
    if not isinstance(value, str) or not re.fullmatch(r"auto|cpu|mps|cuda(:\d+)?", value):
        raise ValueError(f"unknown {name} {value!r}; valid choices: auto, cpu, cuda, cuda:N, mps")
    return value


# -- resolution: from a config and its data to what a run needs ----------------------------


@dataclass
class Resolved:
    """What a run needs, built once by ``resolve`` from a config and its data.

    Nothing downstream re-validates or rebuilds: ``train`` and ``latentquant evaluate``
    consume this, and a trainer of several runs consumes one per member.

    Attributes
    ----------
    config : TrainConfig
        The complete config: every ``None`` replaced by the published default for
        its model and dataset (what ``config.yaml`` holds).
    dataset : FactorDataset
        The run's data, opened from ``config.dataset`` / ``data_root`` / ``data_path``
        (or the dataset given to ``resolve``).
    info : DataInfo
        What the model knows of the data (name, channels, factors, size).
    model : LatentModel
        The model, built once on the CPU right after ``torch.manual_seed(config.seed)``,
        so its initial weights are a function of the seed alone; ``train`` moves it to its
        device, restores a checkpoint into it when resuming, and trains it.

    Examples
    --------
    >>> from latentquant.train import TrainConfig, resolve
    >>> config, dataset, info, model = vars(resolve(TrainConfig(arch="small", steps=10))).values()
    >>> info
    DataInfo(name='sprites', num_channels=1, num_factors=5, size=737280)
    """

    config: TrainConfig
    dataset: FactorDataset
    info: DataInfo
    model: LatentModel


def resolve(config: TrainConfig, data: FactorDataset | None = None) -> Resolved:
    """Validate ``config`` (once), open its data (unless ``data`` is given), fill every
    ``None`` with the published default for the model and dataset, and build the model.

    Model options are checked against the model's ``default_options`` (unknown keys and
    wrong types are a UserError), and every argument the model itself rejects is rejected
    here (a one-line UserError), before a run directory is touched. Nothing is written.

    Parameters
    ----------
    config : TrainConfig
        The run's settings; ``None`` fields take the published defaults.
    data : FactorDataset, optional
        The dataset to use instead of opening ``config.dataset``.

    Returns
    -------
    Resolved
        The complete config, the dataset, its ``DataInfo`` and the model
        (built right after ``torch.manual_seed(config.seed)``).

    Raises
    ------
    latentquant.validation.UserError
        A ``ValueError``: a bad value, an unknown dataset, model or option.
    OSError
        When a public dataset's files cannot be read.

    Examples
    --------
    >>> from latentquant.train import TrainConfig, resolve
    >>> resolved = resolve(TrainConfig(dataset="sprites", model="qlae", arch="small", steps=100))
    >>> c = resolved.config
    >>> c.lr, c.batch_size, c.weight_decay, c.num_latents, c.values_per_latent
    (0.001, 128, 0.1, 10, 10)
    >>> type(resolved.model).__name__
    'QLAE'
    """
    config.validate()
    dataset = get_dataset(config.dataset, root=config.data_root, path=config.data_path) if data is None else data
    info = DataInfo(config.dataset, dataset.num_channels, dataset.num_factors, len(dataset))
    c = _complete(config, info)
    torch.manual_seed(c.seed)
    try:
        model = build_model(c.model, c.arch, info, **c.model_kwargs())
    except (ValueError, TypeError) as err:  # the model's own argument checks
        raise UserError(str(err)) from None
    return Resolved(c, dataset, info, model)


def _complete(config: TrainConfig, info: DataInfo) -> TrainConfig:
    """``config`` (validated) with every ``None`` replaced by the published default."""
    cls = get_model_class(config.model)
    published = cls.defaults(config.dataset)
    c = config.replace(options=dict(config.options))
    for name in ("lr", "batch_size"):
        if getattr(c, name) is None:
            c = c.replace(**{name: published[name]})
    c = c.replace(weight_decay=_resolve_weight_decay(c, published["weight_decay"]))
    if c.num_latents is None:
        c = c.replace(num_latents=default_num_latents(info))
    takes_values = "values_per_latent" in published
    if takes_values and c.values_per_latent is None:
        c = c.replace(values_per_latent=published["values_per_latent"])
    elif not takes_values and c.values_per_latent is not None:
        raise UserError(f"values_per_latent applies to quantized-latent models only, not {c.model!r}")
    c = c.replace(options=resolve_options(cls, c.dataset, c.options))
    if c.checkpoint_every is None:
        c = c.replace(checkpoint_every=c.eval_every or c.steps)
    if c.out is None:
        c = c.replace(out=str(Path("runs") / f"{c.dataset}-{c.model}-{c.arch}-seed{c.seed}"))
    if c.clip == 0:
        c = c.replace(clip=None)
    return c


def timescale_weight_decay(fraction: float, lr: float, steps: int) -> float:
    """The weight decay whose AdamW time constant ``1 / (lr x wd)`` is ``fraction`` of ``steps``."""
    return 1.0 / (fraction * lr * steps)


def _resolve_weight_decay(c: TrainConfig, published: float) -> float:
    """``c.weight_decay``, or the one ``c.weight_decay_timescale`` implies, or the published value
    (the weight-decay rule's other half: ``TrainConfig.override``).

    A config holding both (a resolved ``config.yaml``) must agree to 1e-9; else
    one of the two was changed, and which one the user meant is unknown."""
    if c.weight_decay_timescale is None:
        return published if c.weight_decay is None else c.weight_decay
    implied = timescale_weight_decay(c.weight_decay_timescale, c.lr, c.steps)
    if not math.isfinite(implied):
        raise UserError(
            f"weight_decay_timescale {c.weight_decay_timescale:g} gives an infinite weight decay "
            f"for lr {c.lr:g} and {c.steps} steps; give a larger fraction"
        )
    if c.weight_decay is not None and abs(c.weight_decay - implied) > 1e-9 * implied:
        raise UserError(
            f"weight_decay {c.weight_decay:g} and weight_decay_timescale {c.weight_decay_timescale:g} disagree "
            f"(the timescale gives {implied:g} for lr {c.lr:g} and {c.steps} steps); give one of them: "
            f"--weight-decay W keeps a fixed decay, --weight-decay-timescale F sets it for the run's length"
        )
    return implied


def resolve_options(cls: type, dataset: str, given: dict[str, Any]) -> dict[str, Any]:
    """The model's published options for ``dataset`` updated with ``given`` (coerced to the default's type).

    An integer option counts or sizes something (a codebook's entries, critic steps):
    it is at most ``MAX_INT_OPTION``, checked before the model allocates anything; one
    that counts training steps (``STEP_OPTIONS``: a schedule's length) allocates
    nothing and is bounded as ``--steps`` is."""
    defaults = cls.default_options(dataset)
    unknown = sorted((set(given) - set(defaults)), key=str)
    if unknown:
        valid = ", ".join(defaults) or "none"
        shown = ", ".join(map(str, unknown))
        raise UserError(f"unknown option(s) {shown} for model {cls.name!r}; valid options: {valid}")
    out = dict(defaults)
    for key, value in given.items():
        out[key] = coerce_option(key, value, defaults[key])
        bound = MAX_STEPS if key in STEP_OPTIONS else MAX_INT_OPTION
        if type(defaults[key]) is int and abs(out[key]) > bound:
            raise UserError(f"option {key} must be an integer of at most {bound:,}, got {out[key]:,}")
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
        raise UserError(f"option {key}={value!r}: expected a {type(default).__name__} like {default!r}") from None
    return value


def parse_option(text: str) -> tuple[str, str]:
    """``'beta=4'`` -> ``('beta', '4')``."""
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise UserError(f"--option expects KEY=VALUE, got {text!r}")
    return key.strip().replace("-", "_"), value.strip()


# -- YAML -------------------------------------------------------------------


def load_yaml(path: str | os.PathLike) -> dict[str, Any]:
    """The mapping in a YAML config file (FileNotFoundError / ValueError with the file's name)."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise UserError(f"config file not found: {path}")
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise UserError(
            f"{path}: not UTF-8 text (byte {raw[err.start]:#04x} at position {err.start}); "
            "a config file is YAML text, e.g. a run's config.yaml"
        ) from None
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as err:
        raise UserError(f"{path}: not valid YAML ({str(err).splitlines()[0]})") from None
    if not isinstance(data, dict):
        raise UserError(f"{path}: expected a mapping of config keys, got {type(data).__name__}")
    return data


def load_config(path: str | os.PathLike) -> TrainConfig:
    """A ``TrainConfig`` from a YAML file (a run's ``config.yaml`` or a user's file).

    Parameters
    ----------
    path : str or os.PathLike
        The YAML file: a mapping of ``TrainConfig`` fields; absent fields keep
        their defaults, numbers written as strings are read as numbers.

    Returns
    -------
    TrainConfig
        The config, not yet validated (``resolve`` does that).

    Raises
    ------
    latentquant.validation.UserError
        A ``ValueError``: the file is missing or unreadable, not a mapping,
        or holds an unknown key or a value of the wrong type.

    Examples
    --------
    >>> from pathlib import Path
    >>> from latentquant.train import load_config
    >>> _ = Path("my.yaml").write_text("model: ae\\narch: small\\nlr: 1e-4\\n")
    >>> config = load_config("my.yaml")
    >>> config.model, config.lr, config.dataset
    ('ae', 0.0001, 'sprites')
    """
    return TrainConfig.from_dict(load_yaml(path), source=str(path))


def save_config(config: TrainConfig, path: str | os.PathLike) -> None:
    """Write ``config`` as YAML atomically (temp file + rename).

    ``load_config`` reads the file back to an equal config.

    Parameters
    ----------
    config : TrainConfig
        The config to write.
    path : str or os.PathLike
        The file; its folder must exist. An existing file is replaced whole.

    Returns
    -------
    None

    Raises
    ------
    OSError
        When the file cannot be written.

    Examples
    --------
    >>> from latentquant.train import TrainConfig, load_config, save_config
    >>> config = TrainConfig(model="vae", arch="small", steps=500)
    >>> save_config(config, "config.yaml")
    >>> load_config("config.yaml") == config
    True
    """
    import yaml

    text = "# latentquant train: resolved config (load with --config, or --resume the run)\n"
    text += yaml.safe_dump(config.to_dict(), sort_keys=False)
    atomic_write_text(Path(path), text)
