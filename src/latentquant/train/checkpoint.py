"""Checkpoints: one safetensors file per saved step, written atomically.

``OUT/checkpoints/step_00001000.safetensors`` holds every tensor of the run

    model.<name>                   the model's state_dict (load it alone with safetensors)
    optim.<opt>.<param>.<key>      optimizer state tensors (Adam moments, step counts)
    rng.torch, rng.cuda.<i>        torch's random generators

and, in the file's string metadata, a JSON document ``state`` with the step,
whether the checkpoint is a regular one or was written on a time limit or an
interrupt (``regular``, which :func:`prune` reads), the resolved config, the
optimizers' param groups and non-tensor state, and how the data order is made (a
function of seed and step, so nothing else is needed to replay it). The file is
written to a hidden temp file in the same folder, flushed to disk, then renamed
over its final name: a crash at any moment leaves either the old set of
checkpoints or the new one, never a half-written file under a checkpoint name.
Older checkpoints beyond ``keep`` are deleted only after the new one is in
place, and loading falls back to the previous file if the newest cannot be read.
"""

from __future__ import annotations

import json
import re
import sys
import time
from pathlib import Path
from typing import Any

import torch

from latentquant._atomic import atomic_write_bytes
from latentquant.validation import UserError

FORMAT = "latentquant-checkpoint-1"
STALE_TEMP_SECONDS = 600.0
_NAME = re.compile(r"^step_(\d+)\.safetensors$")


# -- listing ------------------------------------------------------------------


def checkpoint_path(folder: Path, step: int) -> Path:
    return Path(folder) / f"step_{step:08d}.safetensors"


def list_checkpoints(folder: Path) -> list[Path]:
    """Complete checkpoint files in ``folder``, oldest first (temp files are ignored)."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in folder.iterdir() if (m := _NAME.match(p.name))]
    return [p for _, p in sorted(found)]


def checkpoint_step(path: Path) -> int:
    """The step of a checkpoint file (``step_<step>.safetensors``)."""
    m = _NAME.match(Path(path).name)
    if m is None:
        raise ValueError(f"{path} is not a checkpoint file name (step_<step>.safetensors)")
    return int(m.group(1))


def latest_checkpoint(folder: Path) -> Path | None:
    found = list_checkpoints(folder)
    return found[-1] if found else None


# -- save ---------------------------------------------------------------------


def _jsonable(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        raise TypeError("tensors go in the tensor table")
    if isinstance(value, tuple):
        return {"__tuple__": [_jsonable(v) for v in value]}
    if isinstance(value, list):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    return value


def _unjson(value: Any) -> Any:
    if isinstance(value, dict):
        if set(value) == {"__tuple__"}:
            return tuple(_unjson(v) for v in value["__tuple__"])
        return {k: _unjson(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_unjson(v) for v in value]
    return value


def save_checkpoint(
    folder: Path,
    step: int,
    model: torch.nn.Module,
    optimizers: dict[str, torch.optim.Optimizer],
    state: dict[str, Any] | None = None,
    keep: int = 2,
    every: int | None = None,
    regular: bool | None = None,
) -> Path:
    """Write ``checkpoints/step_<step>.safetensors`` atomically; keep the newest ``keep`` files
    (with ``every``: of the regular ones, see :func:`prune`). ``regular`` records whether this is
    one of the run's regular checkpoints (on its ``checkpoint_every`` grid, or its last step) rather
    than one written on a time limit or an interrupt; by default, whether ``step`` is a multiple
    of ``every``."""
    from safetensors.torch import save

    tensors: dict[str, torch.Tensor] = {}
    for name, value in model.state_dict().items():
        tensors[f"model.{name}"] = value.detach().to("cpu", copy=True).contiguous()
    optim_meta = {}
    for opt_name, opt in optimizers.items():
        sd = opt.state_dict()
        scalars = {}
        for pid, entries in sd["state"].items():
            for key, value in entries.items():
                if isinstance(value, torch.Tensor):
                    tensors[f"optim.{opt_name}.{pid}.{key}"] = value.detach().to("cpu", copy=True).contiguous()
                else:
                    scalars.setdefault(str(pid), {})[key] = value
        optim_meta[opt_name] = {"param_groups": _jsonable(sd["param_groups"]), "scalars": _jsonable(scalars)}
    tensors["rng.torch"] = torch.get_rng_state()
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"rng.cuda.{i}"] = s
    if regular is None:
        regular = not every or step % every == 0
    doc = {"format": FORMAT, "step": int(step), "regular": bool(regular), "optimizers": optim_meta, **(state or {})}
    data = save(tensors, metadata={"state": json.dumps(doc)})
    path = checkpoint_path(folder, step)
    atomic_write_bytes(path, data)
    prune(folder, keep, every, newest=path)
    return path


def prune(folder: Path, keep: int, every: int | None = None, newest: Path | None = None) -> None:
    """Delete all but the newest ``keep`` checkpoints, and stale temp files.

    ``newest`` (the checkpoint just written) is never deleted, and checkpoints of later
    steps are left alone: a resume that skipped an unreadable newer file continues from
    an older one, and its own checkpoints must not count as older than that file's.

    With ``every`` (the run's ``checkpoint_every``), the ``keep`` are counted among the
    regular checkpoints; one written on a time limit (``checkpoint_seconds``) or on an
    interrupt survives only while it is the newest, so frequent timed checkpoints never
    push out the run's regular ones. Each file records which it is (``regular`` in its
    state), so a resume that changes ``checkpoint_every`` keeps the earlier grid's files
    as regular ones; a file without the record (older code) or unreadable counts as
    regular when its step is a multiple of ``every``.

    A temp file (``.step_*.safetensors.<random>.tmp``, see ``latentquant._atomic``)
    outlives its write only when the writing process was killed outright; one
    untouched for ``STALE_TEMP_SECONDS`` is such a leftover, never a write in
    progress, and is removed.
    """
    found = list_checkpoints(folder)
    if newest is not None:
        found = [p for p in found if checkpoint_step(p) <= checkpoint_step(newest)]
    if every:
        on_grid = [p for p in found if _is_regular(p, every)]
        stale = [p for p in found if p not in on_grid and p != found[-1]] + on_grid[:-keep]
    else:
        stale = found[:-keep]
    for old in stale if keep > 0 else []:
        old.unlink(missing_ok=True)
    now = time.time()
    for tmp in Path(folder).glob(".step_*.safetensors.*tmp*"):
        try:
            if now - tmp.stat().st_mtime > STALE_TEMP_SECONDS:
                tmp.unlink(missing_ok=True)
        except OSError:  # gone meanwhile
            pass


def _is_regular(path: Path, every: int) -> bool:
    """Whether ``path`` is one of its run's regular checkpoints (see :func:`prune`); only the
    file's header is read."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            recorded = json.loads((f.metadata() or {}).get("state", "{}")).get("regular")
    except Exception:  # unreadable or foreign: judged by its name, as older code did
        recorded = None
    return bool(recorded) if isinstance(recorded, bool) else checkpoint_step(path) % every == 0


# -- load ---------------------------------------------------------------------


def read_checkpoint(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """The tensors and the state document of a checkpoint file (ValueError when unreadable)."""
    from safetensors import safe_open

    path = Path(path)
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            meta = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (safe_open is no mapping)
        doc = json.loads(meta["state"])
    except FileNotFoundError:
        raise
    except Exception as err:  # safetensors raises its own error types
        raise UserError(f"{path}: not a readable checkpoint ({type(err).__name__}: {err})") from None
    if doc.get("format") != FORMAT:
        raise UserError(f"{path}: unknown checkpoint format {doc.get('format')!r}, expected {FORMAT!r}")
    return tensors, doc


def model_state(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The model's state_dict among a checkpoint's tensors."""
    return {k[len("model.") :]: v for k, v in tensors.items() if k.startswith("model.")}


def load_model_state(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Only the model's state_dict and the state document (for evaluation)."""
    tensors, doc = read_checkpoint(path)
    return model_state(tensors), doc


def load_model_weights(model: torch.nn.Module, state: dict[str, torch.Tensor]) -> None:
    """``model.load_state_dict(state)``; ValueError (one line) when the weights are of another model."""
    try:
        model.load_state_dict(state)
    except RuntimeError as err:  # another model, arch or size than the one that wrote the checkpoint
        detail = " ".join(str(err).split())
        raise UserError(
            f"the checkpoint does not fit this model (were --model/--arch/--num-latents changed?): {detail[:300]}"
        ) from None


def restore(
    tensors: dict[str, torch.Tensor],
    doc: dict[str, Any],
    model: torch.nn.Module,
    optimizers: dict[str, torch.optim.Optimizer] | None = None,
    rng: bool = True,
) -> int:
    """Load model, optimizers and RNG state from a read checkpoint; returns its step."""
    load_model_weights(model, model_state(tensors))
    for opt_name, opt in (optimizers or {}).items():
        if opt_name not in doc["optimizers"]:
            raise UserError(f"checkpoint has no optimizer {opt_name!r} (it has {', '.join(doc['optimizers'])})")
        meta = doc["optimizers"][opt_name]
        state: dict[int, dict[str, Any]] = {}
        prefix = f"optim.{opt_name}."
        for key, value in tensors.items():
            if key.startswith(prefix):
                pid, name = key[len(prefix) :].split(".", 1)
                state.setdefault(int(pid), {})[name] = value
        for pid, scalars in _unjson(meta["scalars"]).items():
            state.setdefault(int(pid), {}).update(scalars)
        opt.load_state_dict({"state": state, "param_groups": _unjson(meta["param_groups"])})
    if rng:
        torch.set_rng_state(tensors["rng.torch"])
        cuda = [tensors[k] for k in sorted(t for t in tensors if t.startswith("rng.cuda."))]
        if cuda and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(cuda[: torch.cuda.device_count()])
    return int(doc["step"])


def load_latest(folder: Path) -> tuple[Path, dict[str, torch.Tensor], dict[str, Any]] | None:
    """The newest readable checkpoint in ``folder`` (falling back to older ones, each
    skipped file named in a line on stderr), or None when there is none; UserError
    naming the newest file and its problem when none is readable."""
    errors = []
    for path in reversed(list_checkpoints(folder)):
        try:
            tensors, doc = read_checkpoint(path)
        except UserError as err:
            print(f"latentquant: skipping unreadable checkpoint: {err}", file=sys.stderr)
            errors.append(err)
            continue
        return path, tensors, doc
    if errors:
        raise UserError(f"no readable checkpoint in {folder}: {errors[0]}")
    return None
